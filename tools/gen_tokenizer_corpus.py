#!/usr/bin/env python3
"""Build the tokenizer exactness corpus (stdlib only, deterministic).

Usage: gen_tokenizer_corpus.py SEED_TXT OUT [--bytes N] [--seed S]

OUT holds records "<decimal byte length>\\n<bytes>\\n" (so texts may contain
newlines, NULs and invalid UTF-8). The texts mix the seed paragraphs
(tests/fixtures/tokenizer/seed.txt; \\n \\t \\r \\uXXXX \\\\ escapes are
expanded) with whitespace runs, NFC/NFD variants, special-token strings,
control characters, random code points, digit runs, long texts and invalid
UTF-8 (lone continuation bytes, truncated sequences, overlongs, UTF-8-encoded
surrogates, bytes C0 C1 F5-FF, code points above U+10FFFF).
"""
import random
import re
import sys
import unicodedata


def unescape(s):
    def rep(m):
        t = m.group(0)
        if t == '\\n':
            return '\n'
        if t == '\\t':
            return '\t'
        if t == '\\r':
            return '\r'
        if t == '\\\\':
            return '\\'
        return chr(int(t[2:], 16))
    return re.sub(r'\\u[0-9A-Fa-f]{4}|\\[ntr\\]', rep, s)


SPECIALS = ['<|begin_of_text|>', '<|end_of_text|>', '<|eot_id|>', '<|start_header_id|>', '<|end_header_id|>',
            '<|reserved_special_token_7|>', '<|python_tag|>', '<|im_start|>', '<|im_end|>', '<|endoftext|>',
            '<think>', '</think>', '<tool_call>', '<|fim_prefix|>', '<start_of_turn>', '<end_of_turn>', '<bos>',
            '<eos>', '<pad>', '<unk>', '<mask>', '<s>', '</s>', '<start_of_image>', '<unused0>', '<unused99>',
            '[@BOS@]', '<0x0A>', '<|eot_id', 'eot_id|>', '<start_of', '<|im_', '<', '|>', '<<s>>', '<s><s>']
SEPS = ['\n', '\n\n', '\r\n', ' ', '  ', '\t', ' \n ', '\n\n\n', '   \n', '\t\t', '\r', '\n \n', '\u3000', '\u00a0']
INVALID = [b'\x80', b'\xbf', b'\x80\x80\x80', b'\xc0', b'\xc1\xbf', b'\xc0\xaf', b'\xe0\x80\xaf', b'\xf0\x80\x80\xaf',
           b'\xed\xa0\x80', b'\xed\xbf\xbf', b'\xed\xa0\xbd\xed\xb2\xa9', b'\xe2\x82', b'\xe2', b'\xf0\x9f\x98',
           b'\xf0\x9f', b'\xf4\x90\x80\x80', b'\xf5', b'\xf8\x88\x80\x80\x80', b'\xfc', b'\xfe', b'\xff',
           b'\xc3', b'\xc3\x28', b'\xe2\x28\xa1', b'\xf0\x28\x8c\xbc', b'\xa0\xa1', b'\xef\xbf\xbd']
CONTROLS = [chr(c) for c in list(range(0, 32)) + [0x7f, 0x85, 0xa0, 0xad, 0x200b, 0x200c, 0x200d, 0x200e, 0x2028,
                                                    0x2029, 0x202e, 0x2060, 0xfeff, 0xfffd, 0xfffe, 0x1680, 0x180e]]
RANGES = [(0x20, 0x7e), (0xa0, 0x24f), (0x300, 0x36f), (0x370, 0x3ff), (0x400, 0x4ff), (0x590, 0x5ff), (0x600, 0x6ff),
          (0x900, 0x97f), (0xe00, 0xe7f), (0x1100, 0x11ff), (0x1e00, 0x1eff), (0x1f00, 0x1fff), (0x2000, 0x206f),
          (0x20a0, 0x20cf), (0x2100, 0x22ff), (0x3040, 0x30ff), (0x4e00, 0x9fff), (0xac00, 0xd7a3), (0xf900, 0xfaff),
          (0xfb00, 0xfb4f), (0xfe20, 0xfe2f), (0xff00, 0xffef), (0x10000, 0x1007f), (0x1d400, 0x1d7ff),
          (0x1f300, 0x1faff), (0x20000, 0x2a6df), (0xe0000, 0xe007f), (0x1e900, 0x1e95f), (0x11000, 0x1107f),
          (0x0f00, 0x0fff), (0x1ab0, 0x1aff), (0x1dc0, 0x1dff), (0x0890, 0x08ff), (0x11900, 0x1195f)]
DIGITS = '0123456789' + '٠١٢٣٤٥٦٧٨٩' + '०१२३४५६७८९' + '０１２３４５６７８９' + '²³¹⁰½¼Ⅻ①𝟘'


def rand_cp(r):
    a, b = r.choice(RANGES)
    while True:
        c = r.randint(a, b)
        if not (0xD800 <= c < 0xE000):
            return chr(c)


def record(r, paras):
    k = r.randrange(16)
    p = r.choice(paras)
    if k == 0:
        return p.encode()
    if k == 1:
        return r.choice(SEPS).join(r.choice(paras) for _ in range(r.randint(2, 5))).encode()
    if k == 2:
        form = r.choice(['NFD', 'NFC', 'NFKD', 'NFKC'])
        return unicodedata.normalize(form, p).encode()
    if k == 3:  # byte slice (may cut characters)
        b = r.choice(paras).encode() + r.choice(paras).encode()
        i = r.randrange(len(b))
        return b[i:i + r.randint(1, 200)]
    if k == 4:  # special tokens in text
        parts = []
        for _ in range(r.randint(1, 6)):
            w = p.split(' ')
            i = r.randrange(len(w))
            parts.append(' '.join(w[i:i + r.randint(0, 8)]))
            parts.append(r.choice(SPECIALS) + r.choice(['', ' ', '\n', '  ']))
        return ''.join(parts).encode()
    if k == 5:  # invalid UTF-8
        b = bytearray(p.encode())
        for _ in range(r.randint(1, 5)):
            i = r.randrange(len(b) + 1)
            b[i:i] = r.choice(INVALID)
        return bytes(b)
    if k == 6:  # control characters and odd spaces
        s = list(p)
        for _ in range(r.randint(1, 8)):
            s.insert(r.randrange(len(s) + 1), r.choice(CONTROLS))
        return ''.join(s).encode()
    if k == 7:  # whitespace runs
        out = []
        for w in p.split(' '):
            out.append(w)
            out.append(''.join(r.choice(' \t\n\r\u00a0\u3000') if r.random() < 0.3 else ' '
                               for _ in range(r.choice([1, 1, 1, 2, 3, 5, 17]))))
        s = ''.join(out)
        return (r.choice(['', ' ', '  ', '\n', '\t ']) + s + r.choice(['', ' ', '   ', '\n', ' \n\n'])).encode()
    if k == 8:  # digits
        return ' '.join(''.join(r.choice(DIGITS[:10] if r.random() < 0.7 else DIGITS) for _ in range(r.randint(1, 25)))
                        + r.choice(['', '.', ',', '%', 'km', ' €', 'th', "'s"]) for _ in range(r.randint(1, 12))).encode()
    if k == 9:  # random code points
        return ''.join(rand_cp(r) for _ in range(r.randint(1, 60))).encode()
    if k == 10:  # random code points mixed with words and spaces
        w = p.split(' ')
        return ' '.join(x if r.random() < 0.6 else ''.join(rand_cp(r) for _ in range(r.randint(1, 6))) for x in w).encode()
    if k == 11:  # long text (one "word" for SentencePiece-style tokenizers)
        return '\n'.join(r.choice(paras) for _ in range(r.randint(20, 120))).encode()
    if k == 12:  # tiny
        return r.choice(['', ' ', '  ', '\n', 'a', "'", "'s", ' \n', '\u2581', '\u2581\u2581a', '<s>', ' <s> ',
                         'é', 'e\u0301', '\x00', '\r\n', '\t\t', '\ufeff', '<0x41>', 'ſ', "'ſ", '1', '12345',
                         '   x', 'x   ', '\u00a0', '\u0301', '\u0301a']).encode()
    if k == 13:  # words of the paragraph shuffled with random case
        w = p.split(' ')
        r.shuffle(w)
        return ' '.join(x.upper() if r.random() < 0.2 else x for x in w).encode()
    if k == 14:  # repeated characters (long runs)
        c = r.choice(['a', ' ', '\n', '=', '-', '.', '0', 'ä', '😀', '\t', '▁', '中'])
        return (c * r.randint(2, 300) + r.choice(['', 'x', ' y'])).encode()
    # NFD with reordered marks, decomposed Hangul
    s = unicodedata.normalize('NFD', p)
    s = ''.join(ch + (r.choice('\u0323\u0301\u0308\u0327\u031b\u0345\u05b0\u0e48\u302a') if r.random() < 0.05 else '')
                for ch in s)
    return s.encode()


def read_corpus(path):
    """the records of a corpus file written by main(), as bytes"""
    d = open(path, 'rb').read()
    out, i = [], 0
    while i < len(d):
        j = d.index(b'\n', i)
        n = int(d[i:j])
        out.append(d[j + 1:j + 1 + n])
        i = j + 1 + n + 1
    return out


def main():
    args = sys.argv[1:]
    if len(args) < 2:
        sys.exit(__doc__)
    total = 2_300_000
    seed = 1234
    if '--bytes' in args:
        total = int(args[args.index('--bytes') + 1])
    if '--seed' in args:
        seed = int(args[args.index('--seed') + 1])
    with open(args[0], encoding='utf-8') as f:
        paras = [unescape(line.rstrip('\n')) for line in f if line.strip()]
    r = random.Random(seed)
    n = 0
    out = bytearray()
    fixed = [p.encode() for p in paras]
    for rec in fixed:
        out += b'%d\n' % len(rec) + rec + b'\n'
        n += len(rec)
    while n < total:
        rec = record(r, paras)
        out += b'%d\n' % len(rec) + rec + b'\n'
        n += len(rec)
    with open(args[1], 'wb') as f:
        f.write(out)


if __name__ == '__main__':
    main()
