/*
 * test_shard.c -- HDF5 token shards: write/read round trip with random
 * documents, the temporary-name protocol, and interoperability with h5py in
 * both directions (h5py reads luxtrain's shard and reports attributes,
 * dtypes and content hashes; h5py writes shards in the documented layout that
 * luxtrain must read -- and malformed ones it must refuse, naming the shard
 * and the problem).
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lt_shard.h"
#include "lt_test.h"

/* FNV-1a 64 over bytes (the Python side computes the same) */
static uint64_t fnv(const void *p, size_t n, uint64_t h) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}
#define FNV0 0xcbf29ce484222325ull

typedef struct {
    int32_t *tok;
    uint8_t *mask;
    uint64_t *off;
    int n_docs;
    size_t n_tok;
} corpus;

static void make_corpus(corpus *c, int n_docs, int vocab, uint64_t seed) {
    lt_rng r;
    lt_rng_seed(&r, seed);
    c->n_docs = n_docs;
    c->off = malloc((size_t)(n_docs + 1) * 8);
    c->off[0] = 0;
    for (int d = 0; d < n_docs; d++) c->off[d + 1] = c->off[d] + 1 + lt_rng_u64(&r) % 300;
    c->n_tok = c->off[n_docs];
    c->tok = malloc(c->n_tok * 4);
    c->mask = malloc(c->n_tok);
    for (size_t i = 0; i < c->n_tok; i++) {
        c->tok[i] = (int32_t)(lt_rng_u64(&r) % (uint64_t)vocab);
        c->mask[i] = (uint8_t)(lt_rng_u64(&r) & 1);
    }
    for (int d = 0; d < n_docs; d++) c->mask[c->off[d]] = 0; /* first token never a target */
}

static const char *python(void) {
    const char *p = getenv("LT_PYTHON");
    return p && *p ? p : LT_PYTHON;
}

int main(void) {
    lt_err err = {{0}};
    const char *dir = lt_test_tmpdir("test_shard");
    char path[4096], cmd[16384];
    const int vocab = 50000;
    corpus c;
    make_corpus(&c, 173, vocab, 1234);

    /* ---- write with luxtrain, read back ---- */
    snprintf(path, sizeof path, "%s/train-00000.h5", dir);
    unlink(path);
    lt_shard_meta meta = {0};
    meta.vocab_size = vocab;
    snprintf(meta.tokenizer_sha256, sizeof meta.tokenizer_sha256, "%064d", 7);
    snprintf(meta.template_name, sizeof meta.template_name, "qwen3");
    snprintf(meta.sources, sizeof meta.sources, "a.jsonl\nb.jsonl");
    lt_shard_writer *w = NULL;
    LT_CHECK_OK(lt_shard_writer_open(path, &meta, &w, &err), &err);
    LT_CHECK(!lt_file_exists(path), "final name exists before finish");
    LT_CHECK(lt_file_exists(lt_shard_writer_tmp_path(w)), "temporary file absent");
    char tmp_name[2048];
    snprintf(tmp_name, sizeof tmp_name, "%s", lt_shard_writer_tmp_path(w));
    for (int d = 0; d < c.n_docs; d++)
        LT_CHECK_OK(lt_shard_writer_add(w, c.tok + c.off[d], c.mask + c.off[d], c.off[d + 1] - c.off[d], &err), &err);
    /* a refused document (bad id last) leaves the shard as it was: the round
     * trip below sees exactly the corpus */
    int32_t badtok[3] = {5, 6, vocab};
    uint8_t m1[3] = {0, 1, 1};
    LT_CHECK(lt_shard_writer_add(w, badtok, m1, 3, &err) == LT_ERR_RANGE && strstr(err.msg, "position 2"),
             "token id = vocab accepted by the writer: %s", err.msg);
    LT_CHECK_OK(lt_shard_writer_finish(w, &err), &err);
    LT_CHECK(lt_file_exists(path) && !lt_file_exists(tmp_name), "rename did not happen");

    lt_shard s;
    LT_CHECK_OK(lt_shard_read(path, vocab, &s, &err), &err);
    LT_CHECK(s.num_docs == c.n_docs && s.num_tokens == (int64_t)c.n_tok, "counts %lld/%lld", (long long)s.num_docs,
             (long long)s.num_tokens);
    if (s.tokens) {
        int same = 1;
        for (size_t i = 0; i < c.n_tok; i++) same &= s.tokens[i] == (uint32_t)c.tok[i] && s.loss_mask[i] == c.mask[i];
        for (int d = 0; d <= c.n_docs; d++) same &= s.doc_offsets[d] == c.off[d];
        LT_CHECK(same, "round trip content differs");
        LT_CHECK(!strcmp(s.meta.template_name, "qwen3") && !strcmp(s.meta.sources, "a.jsonl\nb.jsonl") &&
                     s.meta.vocab_size == vocab && !strcmp(s.format, LT_SHARD_FORMAT) && s.format_version == 1,
                 "attributes: template '%s' sources '%s'", s.meta.template_name, s.meta.sources);
    }
    lt_shard_free(&s);
    LT_CHECK(lt_shard_read(path, 1000, &s, &err) == LT_ERR_RANGE && strstr(err.msg, path), "model vocab not enforced: %s",
             err.msg);

    /* abort leaves nothing */
    char path2[4096];
    snprintf(path2, sizeof path2, "%s/train-00001.h5", dir);
    unlink(path2);
    LT_CHECK_OK(lt_shard_writer_open(path2, &meta, &w, &err), &err);
    snprintf(tmp_name, sizeof tmp_name, "%s", lt_shard_writer_tmp_path(w));
    LT_CHECK_OK(lt_shard_writer_add(w, c.tok, c.mask, 10, &err), &err);
    lt_shard_writer_abort(w);
    LT_CHECK(!lt_file_exists(path2) && !lt_file_exists(tmp_name), "abort left a file");

    /* ---- h5py reads luxtrain's shard ---- */
    uint64_t h_tok = FNV0, h_mask = FNV0, h_off = FNV0;
    for (size_t i = 0; i < c.n_tok; i++) {
        uint32_t v = (uint32_t)c.tok[i];
        unsigned char le[4] = {v & 255, (v >> 8) & 255, (v >> 16) & 255, v >> 24};
        h_tok = fnv(le, 4, h_tok);
    }
    h_mask = fnv(c.mask, c.n_tok, h_mask);
    for (int d = 0; d <= c.n_docs; d++) {
        unsigned char le[8];
        for (int k = 0; k < 8; k++) le[k] = (unsigned char)(c.off[d] >> (8 * k));
        h_off = fnv(le, 8, h_off);
    }
    char script[4096];
    snprintf(script, sizeof script, "%s/read.py", dir);
    FILE *f = fopen(script, "w");
    fprintf(f, "import sys, h5py, numpy as np\n"
               "def fnv(b):\n"
               "    h = 0xcbf29ce484222325\n"
               "    for x in b: h = ((h ^ x) * 0x100000001b3) & 0xffffffffffffffff\n"
               "    return h\n"
               "import zlib\n"
               "f = h5py.File(sys.argv[1], 'r')\n"
               "def txt(v): return v.decode() if isinstance(v, bytes) else v\n"
               "a = {k: (txt(v) if isinstance(v, bytes) else [txt(x) for x in v] if k == 'sources' else v) for k, v in f.attrs.items()}\n"
               "for k, v in f.attrs.items():  # fixed-length strings: no variable-length (global heap) attributes\n"
               "    assert not h5py.check_string_dtype(f.attrs.get_id(k).dtype) or h5py.check_string_dtype(f.attrs.get_id(k).dtype).length, k\n"
               "for n in ('tokens', 'loss_mask', 'doc_offsets'):  # the CRC-32 of the little-endian bytes, as zlib computes it\n"
               "    d = f[n]\n"
               "    assert int(d.attrs['crc32']) == zlib.crc32(d[()].astype(d.dtype.newbyteorder('<')).tobytes()), n\n"
               "t, m, o = f['tokens'], f['loss_mask'], f['doc_offsets']\n"
               "assert t.dtype == np.uint32 and m.dtype == np.uint8 and o.dtype == np.uint64, (t.dtype, m.dtype, o.dtype)\n"
               "assert t.ndim == 1 and t.chunks is not None\n"
               "assert a['format'] == 'luxtrain-tokens' and int(a['format_version']) == 1, dict(a)\n"
               "assert int(a['num_docs']) + 1 == o.shape[0] and int(a['num_tokens']) == t.shape[0] == m.shape[0]\n"
               "assert list(a['sources']) == ['a.jsonl', 'b.jsonl'], a['sources']\n"
               "assert a['template'] == 'qwen3' and len(a['tokenizer_sha256']) == 64\n"
               "print(int(a['vocab_size']), int(a['num_docs']), int(a['num_tokens']), fnv(t[:].astype('<u4').tobytes()),"
               " fnv(m[:].tobytes()), fnv(o[:].astype('<u8').tobytes()))\n");
    fclose(f);
    char outp[4096];
    snprintf(outp, sizeof outp, "%s/read.out", dir);
    snprintf(cmd, sizeof cmd, "'%s' '%s' '%s' > '%s'", python(), script, path, outp);
    int rc = lt_test_system(cmd);
    LT_CHECK(rc == 0, "h5py could not read luxtrain's shard (rc %d)", rc);
    if (rc == 0) {
        f = fopen(outp, "r");
        unsigned long long v = 0, nd = 0, nt = 0, a = 0, b = 0, e = 0;
        int got = fscanf(f, "%llu %llu %llu %llu %llu %llu", &v, &nd, &nt, &a, &b, &e);
        fclose(f);
        LT_CHECK(got == 6 && v == (unsigned long long)vocab && nd == (unsigned long long)c.n_docs &&
                     nt == c.n_tok && a == h_tok && b == h_mask && e == h_off,
                 "h5py saw different content (%d fields)", got);
    }

    /* ---- h5py writes shards luxtrain reads (and bad ones it refuses) ---- */
    snprintf(script, sizeof script, "%s/write.py", dir);
    f = fopen(script, "w");
    fprintf(f,
            "import sys, os, h5py, numpy as np\n"
            "d = sys.argv[1]\n"
            "rng = np.random.default_rng(99)\n"
            "lens = rng.integers(1, 200, size=57)\n"
            "off = np.concatenate([[0], np.cumsum(lens)]).astype(np.uint64)\n"
            "tok = rng.integers(0, 32000, size=int(off[-1])).astype(np.uint32)\n"
            "mask = rng.integers(0, 2, size=int(off[-1])).astype(np.uint8)\n"
            "mask[off[:-1].astype(np.int64)] = 0\n"
            "tok.astype('<u4').tofile(os.path.join(d, 'ref_tokens.bin'))\n"
            "mask.tofile(os.path.join(d, 'ref_mask.bin'))\n"
            "off.astype('<u8').tofile(os.path.join(d, 'ref_off.bin'))\n"
            "def write(name, tok=tok, mask=mask, off=off, **over):\n"
            "    with h5py.File(os.path.join(d, name), 'w') as f:\n"
            "        a = dict(format='luxtrain-tokens', format_version=1, vocab_size=32000, tokenizer_sha256='ab'*32,\n"
            "                 template='llama3', num_docs=len(off) - 1, num_tokens=len(tok if tok is not None else mask), sources=['x.jsonl'])\n"
            "        a.update(over)\n"
            "        for k, v in a.items():\n"
            "            if v is not None: f.attrs[k] = v\n"
            "        if tok is not None: f.create_dataset('tokens', data=tok, chunks=True)\n"
            "        if mask is not None: f.create_dataset('loss_mask', data=mask, chunks=True)\n"
            "        if off is not None: f.create_dataset('doc_offsets', data=off)\n"
            "write('good.h5')\n"
            "write('bad_format.h5', format='something-else')\n"
            "write('bad_version.h5', format_version=2)\n"
            "write('no_format.h5', format=None)\n"
            "write('no_tokens.h5', tok=None)\n"
            "write('tokens_int64.h5', tok=tok.astype(np.int64))\n"
            "write('tokens_2d.h5', tok=tok[:len(tok)//2*2].reshape(-1, 2), num_tokens=len(tok)//2*2, off=np.array([0, len(tok)//2*2], np.uint64), mask=mask[:len(tok)//2*2], num_docs=1)\n"
            "write('mask_short.h5', mask=mask[:-1])\n"
            "write('num_tokens_wrong.h5', num_tokens=len(tok) + 1)\n"
            "o2 = off.copy(); o2[5], o2[6] = o2[6], o2[5]\n"
            "write('offsets_not_monotone.h5', off=o2)\n"
            "o3 = off.copy(); o3[0] = 1\n"
            "write('offsets_not_zero.h5', off=o3)\n"
            "write('offsets_count.h5', num_docs=len(off))\n"
            "write('num_docs_max.h5', num_docs=np.int64(2**63 - 1))  # num_docs + 1 would overflow\n"
            "t2 = tok.copy(); t2[100] = 32000\n"
            "write('token_too_big.h5', tok=t2)\n"
            "m2 = mask.copy(); m2[7] = 2\n"
            "write('mask_value.h5', mask=m2)\n"
            "open(os.path.join(d, 'not_hdf5.h5'), 'w').write('hello')\n"
            "t3 = tok.copy(); t3[3] = 2**31 + 5\n"
            "write('token_int32.h5', tok=t3, vocab_size=2**40)\n"
            "n = 2**62  # a sparse chunked dataset: a tiny file claiming 2^62 tokens\n"
            "with h5py.File(os.path.join(d, 'huge_tokens.h5'), 'w') as f:\n"
            "    for k, v in dict(format='luxtrain-tokens', format_version=1, vocab_size=32000, tokenizer_sha256='ab'*32,\n"
            "                     template='llama3', num_docs=1, num_tokens=n, sources=['x.jsonl']).items(): f.attrs[k] = v\n"
            "    f.create_dataset('tokens', shape=(n,), dtype='<u4', chunks=(1024,))\n"
            "    f.create_dataset('loss_mask', shape=(n,), dtype='u1', chunks=(1024,))\n"
            "    f.create_dataset('doc_offsets', data=np.array([0, n], np.uint64))\n");
    fclose(f);
    snprintf(cmd, sizeof cmd, "'%s' '%s' '%s'", python(), script, dir);
    rc = lt_test_system(cmd);
    LT_CHECK(rc == 0, "h5py writer script failed (rc %d)", rc);
    if (rc == 0) {
        char p[4096];
        snprintf(p, sizeof p, "%s/good.h5", dir);
        LT_CHECK_OK(lt_shard_read(p, 32000, &s, &err), &err);
        char *rt = NULL, *rm = NULL, *ro = NULL;
        size_t lt = 0, lm = 0, lo = 0;
        snprintf(p, sizeof p, "%s/ref_tokens.bin", dir);
        lt_read_file(p, &rt, &lt, &err);
        snprintf(p, sizeof p, "%s/ref_mask.bin", dir);
        lt_read_file(p, &rm, &lm, &err);
        snprintf(p, sizeof p, "%s/ref_off.bin", dir);
        lt_read_file(p, &ro, &lo, &err);
        LT_CHECK(s.tokens && rt && lt == (size_t)s.num_tokens * 4 && lm == (size_t)s.num_tokens &&
                     lo == (size_t)(s.num_docs + 1) * 8,
                 "h5py shard sizes differ");
        if (s.tokens && rt && lt == (size_t)s.num_tokens * 4)
            LT_CHECK(!memcmp(s.tokens, rt, lt) && !memcmp(s.loss_mask, rm, lm) && !memcmp(s.doc_offsets, ro, lo),
                     "h5py shard content differs");
        LT_CHECK(s.num_docs == 57 && !strcmp(s.meta.template_name, "llama3") && !strcmp(s.meta.sources, "x.jsonl"),
                 "h5py shard attributes: %lld docs, template %s, sources %s", (long long)s.num_docs,
                 s.meta.template_name, s.meta.sources);
        free(rt);
        free(rm);
        free(ro);
        lt_shard_free(&s);

        const char *bad[][2] = {{"bad_format.h5", "format"},
                                {"bad_version.h5", "format_version"},
                                {"no_format.h5", "format"},
                                {"no_tokens.h5", "tokens"},
                                {"tokens_int64.h5", "tokens"},
                                {"tokens_2d.h5", "rank"},
                                {"mask_short.h5", "loss_mask"},
                                {"num_tokens_wrong.h5", "num_tokens"},
                                {"offsets_not_monotone.h5", "monotone"},
                                {"offsets_not_zero.h5", "doc_offsets[0]"},
                                {"offsets_count.h5", "num_docs"},
                                {"num_docs_max.h5", "num_docs = 9223372036854775807"},
                                {"token_too_big.h5", "token id 32000"},
                                {"mask_value.h5", "loss_mask[7]"},
                                {"not_hdf5.h5", "HDF5"},
                                {"huge_tokens.h5", "too large"}};
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            snprintf(p, sizeof p, "%s/%s", dir, bad[i][0]);
            err.msg[0] = 0;
            lt_status st = lt_shard_read(p, 32000, &s, &err);
            LT_CHECK(st != LT_OK, "%s accepted", bad[i][0]);
            LT_CHECK(strstr(err.msg, bad[i][0]) && strstr(err.msg, bad[i][1]), "%s: message '%s' lacks '%s'",
                     bad[i][0], err.msg, bad[i][1]);
            if (getenv("LT_TEST_VERBOSE")) printf("  %s -> %s\n", bad[i][0], err.msg);
        }
        /* ids are int32 downstream: refused even without a model vocabulary */
        snprintf(p, sizeof p, "%s/token_int32.h5", dir);
        LT_CHECK(lt_shard_read(p, 0, &s, &err) == LT_ERR_RANGE && strstr(err.msg, "token id 2147483653 at position 3"),
                 "token id >= 2^31 accepted: %s", err.msg);
    }
    free(c.tok);
    free(c.mask);
    free(c.off);
    return lt_test_finish("test_shard");
}
