#!/usr/bin/env python3
"""Generate data/lt_unicode_tables.c from the Unicode 16.0 character database
(PyPI package unicodedata2, pinned in tools/requirements-test.txt: the stdlib
unicodedata follows the Python version -- Unicode 14 in 3.11, 15.1 in 3.13).

Why 16.0: Hugging Face tokenizers 0.23 (the version pinned in
tools/requirements-test.txt) matches its pre-tokenizer regexes with Oniguruma
and its added-token word / space tests with the Rust regex crate, both with
Unicode 16.0 classes. Its NFC is older (see HF_CCC_UNKNOWN below).
tests/test_tokenizer_unicode.c checks every code point against tokenizers.

Tables (all sorted, searched by binary search in data/lt_unicode.c):
  lt_uni_class_ranges   runs of code points with the same class flags
                        (LT_UNI_L letter, LT_UNI_N number, LT_UNI_WS White_Space,
                         LT_UNI_W regex \\w, LT_UNI_NFC_MAYBE / LT_UNI_NFC_NO quick check)
  lt_uni_ccc_ranges     canonical combining class (nonzero only)
  lt_uni_decomp_*       full canonical decomposition (Hangul excluded: algorithmic)
  lt_uni_comp_*         primary composites: (first, second) -> composite (Hangul excluded)

Usage: .venv/bin/python tools/gen_unicode_tables.py > data/lt_unicode_tables.c
"""
import sys

import unicodedata2 as ud

UNICODE_VERSION = '16.0.0'
if ud.unidata_version != UNICODE_VERSION:
    sys.exit('gen_unicode_tables.py: needs unicodedata2 with Unicode %s (tools/requirements-test.txt), found %s'
             % (UNICODE_VERSION, ud.unidata_version))

MAXCP = 0x110000
SBASE, LBASE, VBASE, TBASE = 0xAC00, 0x1100, 0x1161, 0x11A7
SCOUNT = 11172

# White_Space property (PropList.txt; unchanged since Unicode 6.3; not in unicodedata)
WHITE_SPACE = set(range(0x09, 0x0E)) | {0x20, 0x85, 0xA0, 0x1680} | set(range(0x2000, 0x200B)) | \
    {0x2028, 0x2029, 0x202F, 0x205F, 0x3000}
# Other_Alphabetic code points that are not marks (So): circled / squared letters
# (PropList.txt, not in unicodedata; the same in Unicode 16.0)
OTHER_ALPHA_NON_MARK = set(range(0x24B6, 0x24EA)) | set(range(0x1F130, 0x1F14A)) | \
    set(range(0x1F150, 0x1F16A)) | set(range(0x1F170, 0x1F18A))


# HF tokenizers' NFC (crate unicode-normalization-alignments, unchanged in 0.23)
# carries Unicode 9.0 data: combining marks assigned later have combining class 0
# there, and canonical composites assigned later neither decompose nor compose.
# Found by probing tokenizers ("a" + U+0345 + mark is reordered iff the mark's
# class is known; NFC of a later composite is itself); we follow it so that NFC
# output is identical to the reference. Up to Unicode 14 (probed with 0.21.1):
HF_CCC_UNKNOWN = [(0x7FD, 0x7FD), (0x898, 0x89F), (0x8CA, 0x8D3), (0x9FE, 0x9FE), (0xC3C, 0xC3C),
                  (0xD3B, 0xD3C), (0xEBA, 0xEBA), (0x1715, 0x1715), (0x1ABF, 0x1ACE), (0x1DF6, 0x1DFA),
                  (0xA82C, 0xA82C), (0x10D24, 0x10D27), (0x10EAB, 0x10EAC), (0x10F46, 0x10F50),
                  (0x10F82, 0x10F85), (0x11070, 0x11070), (0x1133B, 0x1133B), (0x1145E, 0x1145E),
                  (0x11839, 0x1183A), (0x1193D, 0x1193E), (0x11943, 0x11943), (0x119E0, 0x119E0),
                  (0x11A34, 0x11A34), (0x11A47, 0x11A47), (0x11A99, 0x11A99), (0x11D42, 0x11D42),
                  (0x11D44, 0x11D45), (0x11D97, 0x11D97), (0x16FF0, 0x16FF1), (0x1E130, 0x1E136),
                  (0x1E2AE, 0x1E2AE), (0x1E2EC, 0x1E2EF)]
# ... and the marks with a nonzero class assigned in Unicode 15.0-16.0 (probed with 0.23.2)
HF_CCC_UNKNOWN += [(0x897, 0x897), (0x10D69, 0x10D6D), (0x10EFD, 0x10EFF), (0x113CE, 0x113D0),
                   (0x11F41, 0x11F42), (0x1612F, 0x1612F), (0x1E08F, 0x1E08F), (0x1E4EC, 0x1E4EF),
                   (0x1E5EE, 0x1E5EF)]
# canonical composites after Unicode 9.0: 13.0 (U+11938), 16.0 (Tulu-Tigalari, Gurung
# Khema, Kirat Rai, Latin additions)
HF_NO_DECOMP = {0x11938, 0x105C9, 0x105E4, 0x11383, 0x11385, 0x1138E, 0x11391, 0x113C5, 0x113C7,
                0x113C8} | set(range(0x16121, 0x16129)) | set(range(0x16D68, 0x16D6B))


def canon_decomp(cp):
    d = ud.decomposition(chr(cp))
    if not d or d.startswith('<') or cp in HF_NO_DECOMP:
        return None
    return [int(x, 16) for x in d.split()]


def full_decomp(cp):
    d = canon_decomp(cp)
    if d is None:
        return [cp]
    out = []
    for c in d:
        out.extend(full_decomp(c))
    return out


def main():
    is_hangul_s = lambda cp: SBASE <= cp < SBASE + SCOUNT
    decomp = {}
    comp = {}
    for cp in range(MAXCP):
        if 0xD800 <= cp < 0xE000 or is_hangul_s(cp):
            continue
        d = canon_decomp(cp)
        if d is None:
            continue
        decomp[cp] = full_decomp(cp)
        # primary composite: a pair decomposition that NFC keeps
        if len(d) == 2 and ud.normalize('NFC', chr(cp)) == chr(cp):
            comp[(d[0], d[1])] = cp
    seconds = {b for (_, b) in comp}
    seconds |= set(range(VBASE, VBASE + 21)) | set(range(TBASE + 1, TBASE + 28))

    flags = bytearray(MAXCP)
    for cp in range(MAXCP):
        cat = ud.category(chr(cp))
        f = 0
        if cat[0] == 'L':
            f |= 1
        if cat[0] == 'N':
            f |= 2
        if cp in WHITE_SPACE:
            f |= 4
        if cat[0] in 'LM' or cat in ('Nd', 'Nl', 'Pc') or cp in (0x200C, 0x200D) or cp in OTHER_ALPHA_NON_MARK:
            f |= 8
        if cp in seconds:
            f |= 16
        if cp in decomp and not is_hangul_s(cp) and ud.normalize('NFC', chr(cp)) != chr(cp):
            f |= 32
        flags[cp] = f

    def runs(vals):
        out = []
        start = 0
        for cp in range(1, MAXCP + 1):
            if cp == MAXCP or vals[cp] != vals[start]:
                if vals[start]:
                    out.append((start, cp - 1, vals[start]))
                start = cp
        return out

    ccc = [0] * MAXCP
    for cp in range(MAXCP):
        ccc[cp] = ud.combining(chr(cp))
    for a, b in HF_CCC_UNKNOWN:
        for cp in range(a, b + 1):
            ccc[cp] = 0

    w = sys.stdout.write
    w('/* GENERATED by tools/gen_unicode_tables.py from unicodedata2 (Unicode %s).\n'
      ' * Do not edit. */\n' % ud.unidata_version)
    w('#include "lt_unicode.h"\n\n')
    w('const char lt_uni_version[] = "%s";\n\n' % ud.unidata_version)

    def emit_ranges(name, rs):
        w('const lt_uni_range %s[] = {\n' % name)
        for i, (a, b, v) in enumerate(rs):
            w('{0x%X,0x%X,%d},' % (a, b, v))
            if i % 6 == 5:
                w('\n')
        w('};\nconst size_t %s_n = %d;\n\n' % (name, len(rs)))

    emit_ranges('lt_uni_class_ranges', runs(flags))
    emit_ranges('lt_uni_ccc_ranges', runs(ccc))

    keys = sorted(decomp)
    w('const uint32_t lt_uni_decomp_cp[] = {\n')
    for i, k in enumerate(keys):
        w('0x%X,' % k + ('\n' if i % 12 == 11 else ''))
    w('};\nconst size_t lt_uni_decomp_n = %d;\n' % len(keys))
    w('const uint16_t lt_uni_decomp_off[] = {\n')
    off = 0
    for i, k in enumerate(keys):
        w('%d,' % off + ('\n' if i % 16 == 15 else ''))
        off += len(decomp[k])
    w('%d};\n' % off)
    w('const uint32_t lt_uni_decomp_data[] = {\n')
    i = 0
    for k in keys:
        for c in decomp[k]:
            w('0x%X,' % c + ('\n' if i % 12 == 11 else ''))
            i += 1
    w('};\n\n')

    pairs = sorted(comp)
    w('const uint32_t lt_uni_comp_pairs[][3] = {\n')
    for i, (a, b) in enumerate(pairs):
        w('{0x%X,0x%X,0x%X},' % (a, b, comp[(a, b)]) + ('\n' if i % 5 == 4 else ''))
    w('};\nconst size_t lt_uni_comp_n = %d;\n' % len(pairs))


if __name__ == '__main__':
    main()
