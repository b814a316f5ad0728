#!/usr/bin/env python3
"""Write synthetic tokenizer.json variants that exercise the features the four
real tokenizers do not use (tests/test_tokenizer_features.c compares
lt_tokenizer with Hugging Face tokenizers on each).

Usage: tokenizer_features.py SEED_TXT OUTDIR   (prints one path per line)
The BPE models are trained here with tokenizers' own trainer (deterministic).
"""
import json
import os
import sys

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tools'))
from gen_tokenizer_corpus import unescape  # noqa: E402

LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|"
          r"\s+(?!\S)|\s+")


def texts(seed):
    with open(seed, encoding='utf-8') as f:
        paras = [unescape(x.rstrip('\n')) for x in f if x.strip()]
    return paras * 3


def added(tok):
    tok.add_special_tokens([AddedToken('<|endoftext|>', special=True, normalized=False),
                            AddedToken('<s>', special=True, normalized=False, lstrip=True, rstrip=True)])
    tok.add_tokens([AddedToken('cat', single_word=True, normalized=False),
                    AddedToken('ing', normalized=True),
                    AddedToken('[X]', lstrip=True, normalized=False),
                    AddedToken(' end', rstrip=True, normalized=False),
                    AddedToken('Größe', normalized=True)])


def main():
    seed, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    data = texts(seed)
    paths = []

    def save(tok, name):
        p = os.path.join(out, name + '.json')
        tok.save(p)
        paths.append(p)

    # 1. GPT-2 style: ByteLevel with add_prefix_space and its regex, legacy merges
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.train_from_iterator(data, trainers.BpeTrainer(vocab_size=1500, show_progress=False,
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    added(tok)
    save(tok, 'gpt2_bytelevel')
    d = json.load(open(paths[-1], encoding='utf-8'))
    d['model']['merges'] = ['#version: 0.2'] + [' '.join(m) for m in d['model']['merges']]
    json.dump(d, open(os.path.join(out, 'gpt2_legacy_merges.json'), 'w', encoding='utf-8'), ensure_ascii=False)
    paths.append(os.path.join(out, 'gpt2_legacy_merges.json'))

    # 2. Llama 3 regex + ByteLevel, ignore_merges, NFC, template with BOS and EOS
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3), behavior='isolated'),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(data, trainers.BpeTrainer(vocab_size=1200, show_progress=False, special_tokens=['<bos>', '<eos>'],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.TemplateProcessing(single='<bos> $A <eos>', special_tokens=[('<bos>', 0), ('<eos>', 1)])
    added(tok)
    save(tok, 'llama3_like_bos_eos')

    # 3. Metaspace (always, split) with unk (no byte fallback), Metaspace decoder
    for scheme, split, fuse, name in (('always', True, False, 'metaspace_always'), ('first', False, True, 'metaspace_first'),
                                      ('never', True, True, 'metaspace_never')):
        tok = Tokenizer(models.BPE(unk_token='<unk>', fuse_unk=fuse))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement='\u2581', prepend_scheme=scheme, split=split)
        tok.decoder = decoders.Metaspace(replacement='\u2581', prepend_scheme=scheme, split=split)
        tok.train_from_iterator(data[::2], trainers.BpeTrainer(vocab_size=800, show_progress=False, special_tokens=['<unk>'],
                                                               limit_alphabet=60))
        added(tok)
        save(tok, name)

    # 4. Split variants on a literal string, then ByteLevel; Strip + Fuse decoders
    for beh, inv in (('removed', False), ('merged_with_next', False), ('merged_with_previous', True),
                     ('contiguous', False), ('isolated', True)):
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(' ', behavior=beh, invert=inv),
            pre_tokenizers.Split('e', behavior=beh, invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        tok.decoder = decoders.Sequence([decoders.ByteLevel(), decoders.Strip(content=' ', left=2, right=1)])
        tok.train_from_iterator(data, trainers.BpeTrainer(vocab_size=700, show_progress=False,
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        save(tok, 'split_%s%s' % (beh, '_invert' if inv else ''))

    # 5. SentencePiece style with byte fallback and normalized added tokens
    tok = Tokenizer(models.BPE(unk_token='<unk>', byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend('\u2581'), normalizers.Replace(' ', '\u2581'),
                                           normalizers.NFC()])
    tok.decoder = decoders.Sequence([decoders.Replace('\u2581', ' '), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(content=' ', left=1, right=0)])
    tok.train_from_iterator(data, trainers.BpeTrainer(vocab_size=900, show_progress=False, limit_alphabet=80,
                                                      special_tokens=['<unk>', '<s>', '</s>'] +
                                                      ['<0x%02X>' % b for b in range(256)]))
    tok.post_processor = processors.TemplateProcessing(single='<s> $A', special_tokens=[('<s>', 1)])
    added(tok)
    # a special token matched on (and shown as) its normalized form '▁<start_of_turn>':
    # decode(skip_special_tokens=True) keeps it (0.23 compares the shown string)
    tok.add_special_tokens([AddedToken('<start_of_turn>', special=True, normalized=True)])
    save(tok, 'sentencepiece_fallback')

    for p in paths:
        print(p)


if __name__ == '__main__':
    main()
