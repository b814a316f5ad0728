#!/usr/bin/env python3
"""What Hugging Face tokenizers does with every code point, for
tests/test_tokenizer_unicode.c (which compares data/lt_unicode.c with it).

Usage: tokenizer_unicode.py OUTDIR
Writes
  OUTDIR/classes.bin   0x110000 bytes, one per code point (0 for surrogates):
                         1  \\p{L}  in a Split pre-tokenizer regex (Oniguruma)
                         2  \\p{N}  (Oniguruma)
                         4  \\s     (Oniguruma)
                         8  \\w     as a single_word added token tests its neighbours (Rust regex)
                        16  \\s     as an rstrip added token strips (Rust regex)
  OUTDIR/nfc_in.txt    probe lines (UTF-8, '\\n'-separated): per code point X, "X",
                       "a" U+0345 "X" (reordered iff X has a known combining class
                       below 240) and, for a composite, its decomposition
  OUTDIR/nfc_out.txt   tokenizers' NFC normalizer applied to nfc_in.txt
"""
import os
import sys

try:  # (probe inputs only: the pinned Unicode 16 data reaches every composite)
    import unicodedata2 as unicodedata
except ImportError:
    import unicodedata

from tokenizers import AddedToken, Regex, Tokenizer, models, normalizers, pre_tokenizers

CPS = [c for c in range(0x110000) if not 0xD800 <= c < 0xE000]


def regex_members(text, pattern):
    """indices of the characters of text that pattern (one character) matches"""
    pieces = pre_tokenizers.Split(Regex(pattern), 'removed').pre_tokenize_str(text)
    member = bytearray(b'\x01') * len(text)
    for _, (a, b) in pieces:
        member[a:b] = bytes(b - a)
    return member


def added_token_probe(text, stride, **kw):
    """(start, end) character offsets of the matches of the added token 'x' in text"""
    tok = Tokenizer(models.WordLevel({'[UNK]': 0}, unk_token='[UNK]'))
    tok.add_tokens([AddedToken('x', normalized=False, **kw)])
    enc = tok.encode(text, add_special_tokens=False)
    return [(a // stride, b - a) for i, (a, b) in zip(enc.ids, enc.offsets) if i == 1]


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    cls = bytearray(0x110000)
    text = ''.join(chr(c) for c in CPS)
    for bit, pat in ((1, r'\p{L}'), (2, r'\p{N}'), (4, r'\s')):
        m = regex_members(text, pat)
        for k, c in enumerate(CPS):
            if m[k]:
                cls[c] |= bit
    # single_word: 'x' after X is kept iff X is not a word character
    kept = {k for k, _ in added_token_probe(''.join(chr(c) + 'x ' for c in CPS), 3, single_word=True)}
    for k, c in enumerate(CPS):
        if k not in kept:
            cls[c] |= 8
    # rstrip: 'x' followed by X takes X iff X is a space
    for k, n in added_token_probe(''.join('x' + chr(c) + '|' for c in CPS), 3, rstrip=True):
        if n == 2:
            cls[CPS[k]] |= 16
    with open(os.path.join(out, 'classes.bin'), 'wb') as f:
        f.write(cls)

    lines = []
    for c in CPS:
        if c == 0x0A:
            continue
        x = chr(c)
        lines.append(x)
        lines.append('a\u0345' + x)
        d = unicodedata.normalize('NFD', x)
        if d != x:
            lines.append(d)
    probe = '\n'.join(lines)
    with open(os.path.join(out, 'nfc_in.txt'), 'wb') as f:
        f.write(probe.encode('utf-8', 'surrogatepass'))
    with open(os.path.join(out, 'nfc_out.txt'), 'wb') as f:
        f.write(normalizers.NFC().normalize_str(probe).encode('utf-8', 'surrogatepass'))


if __name__ == '__main__':
    main()
