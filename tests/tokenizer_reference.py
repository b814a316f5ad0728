#!/usr/bin/env python3
"""Compare luxtrain's tokenizer output with Hugging Face tokenizers.

Usage: tokenizer_reference.py CORPUS TOKENIZER_JSON OURS_PREFIX
  CORPUS       records "<len>\\n<bytes>\\n" (tools/gen_tokenizer_corpus.py)
  OURS_PREFIX  files written by tests/test_tokenizer_exact.c:
     .ids0 / .ids1   per record one line "ids<TAB>offsets" (add_special 0 / 1)
     .dec            decoded samples: "<record> <skip> <len>\\n<bytes>\\n"
     .meta           vocab_size / prefix / suffix / sha256 / id_to_token samples
The reference encodes record.decode("utf-8", "replace"); offsets (character
offsets in the reference) are mapped to byte offsets in the original record.
Prints the first mismatches and counts; exit status 1 if anything differs.
"""
import codecs
import hashlib
import os
import sys

os.environ.setdefault('RUST_BACKTRACE', '0')  # (a reference panic prints one line, not a backtrace)
from tokenizers import Tokenizer  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'tools'))
from gen_tokenizer_corpus import read_corpus  # noqa: E402

_spans = []


def _rec(e):
    _spans.append((e.start, e.end))
    return ('\ufffd', e.end)


codecs.register_error('lt_record', _rec)


def decode_with_map(b):
    """lossy text and, per character, its byte offset in b (plus one past the end)"""
    _spans.clear()
    s = b.decode('utf-8', 'lt_record')
    spans = list(_spans)
    offs, p, k = [], 0, 0
    for c in s:
        offs.append(p)
        if k < len(spans) and spans[k][0] == p:
            p = spans[k][1]
            k += 1
        else:
            p += len(c.encode('utf-8', 'surrogatepass'))
    offs.append(len(b))
    return s, offs


def ref_decode(tok, ids, skip):
    if not ids:  # (tokenizers' Strip decoder panics on an empty token list)
        return b''
    return tok.decode(ids, skip_special_tokens=bool(skip)).encode('utf-8', 'surrogatepass')


def show(b):
    r = repr(b)
    return r if len(r) < 300 else r[:300] + '...'


def main():
    corpus_path, tok_path, ours = sys.argv[1:4]
    tok = Tokenizer.from_file(tok_path)
    recs = read_corpus(corpus_path)
    texts, maps = [], []
    for b in recs:
        s, m = decode_with_map(b)
        texts.append(s)
        maps.append(m)
    bad = 0
    name = tok_path
    for special in (0, 1):
        lines = open(ours + '.ids%d' % special, 'rb').read().decode().split('\n')
        ref = tok.encode_batch(texts, add_special_tokens=bool(special))
        n_id_bad = n_off_bad = 0
        for i, enc in enumerate(ref):
            ids_s, offs_s = lines[i].split('\t')
            ids = [int(x) for x in ids_s.split()]
            if ids != enc.ids:
                n_id_bad += 1
                if n_id_bad <= 5:
                    k = next((q for q in range(min(len(ids), len(enc.ids))) if ids[q] != enc.ids[q]),
                             min(len(ids), len(enc.ids)))
                    print('%s add_special=%d record %d: ids differ at token %d\n  text: %s\n  ours: %s\n  ref : %s'
                          % (name, special, i, k, show(recs[i]), ids[max(0, k - 3):k + 8], enc.ids[max(0, k - 3):k + 8]))
                continue
            if special == 0:
                offs = [int(x) for x in offs_s.split()]
                want = [maps[i][a] for a, _ in enc.offsets]
                if offs != want:
                    n_off_bad += 1
                    if n_off_bad <= 5:
                        k = next(q for q in range(len(offs)) if offs[q] != want[q])
                        print('%s record %d: offset of token %d (id %d): ours %d, ref %d\n  text: %s'
                              % (name, i, k, ids[k], offs[k], want[k], show(recs[i])))
        print('%s add_special=%d: %d records, %d id mismatches, %d offset mismatches'
              % (name, special, len(recs), n_id_bad, n_off_bad))
        bad += n_id_bad + n_off_bad
    # decode samples
    d = open(ours + '.dec', 'rb').read()
    i = n_dec = n_dec_bad = n_dec_panic = 0
    ids0 = open(ours + '.ids0', 'rb').read().decode().split('\n')
    while i < len(d):
        j = d.index(b'\n', i)
        rec, skip, n = (int(x) for x in d[i:j].split())
        got = d[j + 1:j + 1 + n]
        i = j + 1 + n + 1
        ids = [int(x) for x in ids0[rec].split('\t')[0].split()]
        if skip >= 2:  # the add_special ids
            ids = tok.encode(texts[rec], add_special_tokens=True).ids
            skip -= 2
        try:
            want = ref_decode(tok, ids, skip)
        except BaseException:  # tokenizers panics on a few inputs (Strip decoder, no tokens)
            n_dec_panic += 1
            continue
        n_dec += 1
        if got != want:
            n_dec_bad += 1
            if n_dec_bad <= 5:
                print('%s decode record %d skip=%d:\n  ours: %s\n  ref : %s' % (name, rec, skip, show(got), show(want)))
    print('%s decode: %d samples, %d mismatches%s' % (name, n_dec, n_dec_bad,
                                                    ' (%d where the reference panicked)' % n_dec_panic if n_dec_panic else ''))
    bad += n_dec_bad
    # metadata
    meta = {}
    for line in open(ours + '.meta', encoding='utf-8'):
        k, _, v = line.rstrip('\n').partition(' ')
        meta.setdefault(k, []).append(v)
    vocab = tok.get_vocab(with_added_tokens=True)
    checks = []
    checks.append(('vocab_size', int(meta['vocab_size'][0]), max(vocab.values()) + 1))
    e1 = tok.encode('x', add_special_tokens=True).ids
    e0 = tok.encode('x', add_special_tokens=False).ids
    k = e1.index(e0[0]) if e0 and e0[0] in e1 else 0
    checks.append(('prefix', [int(x) for x in meta['prefix'][0].split()], e1[:k]))
    checks.append(('suffix', [int(x) for x in meta['suffix'][0].split()], e1[k + len(e0):]))
    checks.append(('sha256', meta['sha256'][0], hashlib.sha256(open(tok_path, 'rb').read()).hexdigest()))
    for v in meta.get('id', []):
        idx, tokhex, special, back = v.split(' ')
        t = bytes.fromhex(tokhex).decode('utf-8') if tokhex != '-' else None
        checks.append(('id_to_token %s' % idx, t, tok.id_to_token(int(idx))))
        if t is not None:  # (not always idx: a normalized added token shows its normalized form)
            ref = tok.token_to_id(t)
            checks.append(('token_to_id %r' % t, int(back), -1 if ref is None else ref))
    added = {i: a for i, a in tok.get_added_tokens_decoder().items()}
    for v in meta.get('id', []):
        idx, _, special, _ = v.split(' ')
        want = 1 if int(idx) in added and added[int(idx)].special else 0
        checks.append(('is_special %s' % idx, int(special), want))
    for what, got, want in checks:
        if got != want:
            print('%s %s: ours %r, ref %r' % (name, what, got, want))
            bad += 1
    print('%s: %d metadata checks' % (name, len(checks)))
    sys.exit(1 if bad else 0)


if __name__ == '__main__':
    main()
