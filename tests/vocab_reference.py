#!/usr/bin/env python3
"""Check `luxtrain vocab add`'s tokenizer against Hugging Face tokenizers.

Usage: vocab_reference.py ORIG_JSON OURS_JSON TOKENS SPECIAL CORPUS OURS_PREFIX
  ORIG_JSON    the tokenizer.json tokens were added to
  OURS_JSON    luxtrain's result (lt_tok_add_tokens)
  TOKENS       one token per line ("\\n" or "\\r\\n"; empty lines skipped)
  SPECIAL      1: add_special_tokens(list), 0: add_tokens(list) (what
               transformers 5's tokenizer.add_tokens(list[, special_tokens]) calls)
  CORPUS       one text per line
  OURS_PREFIX  .meta ("added N" / "old_len N" / "new_len N" / "ids a b ...") and
               .ids (per corpus line "ids without specials<TAB>ids with")
               written by tests/test_vocab_add.c from luxtrain's tokenizer
               loading OURS_JSON
Checks: the whole JSON document equals tokenizers' own after add_tokens (and
after loading OURS_JSON), the returned count, len(tokenizer) before / after,
each token's id, and the ids of every corpus line. Exit 1 on a difference.
"""
import json
import sys

from tokenizers import Tokenizer


def main():
    orig, ours, tokens_path, special, corpus, prefix = sys.argv[1:7]
    with open(tokens_path, 'rb') as f:
        lines = f.read().split(b'\n')
    toks = []
    for ln in lines:
        if ln.endswith(b'\r'):
            ln = ln[:-1]
        if ln:
            toks.append(ln.decode('utf-8'))
    ref = Tokenizer.from_file(orig)
    old_len = ref.get_vocab_size(with_added_tokens=True)
    n = ref.add_special_tokens(toks) if special == '1' else ref.add_tokens(toks)
    bad = 0

    def fail(msg):
        nonlocal bad
        bad += 1
        if bad <= 20:
            print('MISMATCH', msg)

    with open(ours, encoding='utf-8') as f:
        ours_doc = json.load(f)
    with open(orig, encoding='utf-8') as f:
        orig_doc = json.load(f)
    ref_doc = json.loads(ref.to_str())
    # tokenizers rewrites some members of any file it saves (e.g. the merges'
    # spelling): where its own round trip of the original differs from the
    # original, ours must keep the original; elsewhere equal tokenizers'
    round_trip = json.loads(Tokenizer.from_file(orig).to_str())
    for k in sorted(set(ours_doc) | set(ref_doc) | set(orig_doc)):
        want = ref_doc.get(k) if round_trip.get(k) == orig_doc.get(k) else orig_doc.get(k)
        if ours_doc.get(k) != want:
            fail('tokenizer.json member %r differs' % k)
            if k == 'added_tokens':
                print('  ours', ours_doc.get(k)[-5:])
                print('  ref ', want[-5:])
    back = Tokenizer.from_file(ours)
    if back.to_str() != ref.to_str():
        fail('tokenizers loading our file does not give its own add_tokens result')
    meta = {}
    with open(prefix + '.meta', encoding='utf-8') as f:
        for ln in f:
            k, _, v = ln.rstrip('\n').partition(' ')
            meta[k] = v
    if int(meta['added']) != n:
        fail('added: ours %s, tokenizers %d' % (meta['added'], n))
    if int(meta['old_len']) != old_len:
        fail('old len: ours %s, tokenizers %d' % (meta['old_len'], old_len))
    new_len = ref.get_vocab_size(with_added_tokens=True)
    if int(meta['new_len']) != new_len:
        fail('new len: ours %s, tokenizers %d' % (meta['new_len'], new_len))
    ids = [int(x) for x in meta['ids'].split()]
    want = [ref.token_to_id(t) for t in toks]
    if ids != want:
        fail('token ids: ours %s, tokenizers %s' % (ids, want))
    with open(corpus, encoding='utf-8') as f:
        texts = f.read().split('\n')[:-1]
    with open(prefix + '.ids', encoding='utf-8') as f:
        got = f.read().split('\n')[:-1]
    if len(got) != len(texts):
        fail('%d id lines for %d texts' % (len(got), len(texts)))
    nids = 0
    for i, (text, line) in enumerate(zip(texts, got)):
        a, b = line.split('\t')
        for add, mine in ((False, a), (True, b)):
            r = ref.encode(text, add_special_tokens=add).ids
            m = [int(x) for x in mine.split()]
            nids += len(r)
            if m != r:
                fail('line %d (add_special %s) %r: ours %s, tokenizers %s' % (i + 1, add, text[:60], m[:20], r[:20]))
    print('%s: %d tokens (special %s), %d added, len %d -> %d, %d texts, %d ids: %s' %
          (orig, len(toks), special, n, old_len, new_len, len(texts), nids, 'ok' if not bad else '%d MISMATCHES' % bad))
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
