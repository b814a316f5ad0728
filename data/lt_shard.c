/* lt_shard.c -- HDF5 token shards (see lt_shard.h, docs/shards.md). */
#define _POSIX_C_SOURCE 200809L
#include "lt_shard.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHUNK_TOKENS ((hsize_t)1 << 15)
#define CHUNK_OFFSETS ((hsize_t)1 << 12)
#define FLUSH_TOKENS ((size_t)1 << 20)

static void quiet_hdf5(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

/* ------------------------------------------------------------------ */
/* attributes                                                          */

/* Strings are written fixed-length (NUL-padded, UTF-8): their bytes live in
 * the attribute itself, not in libhdf5's global heap, whose reads of a
 * corrupted file can crash or hang the library. */
static hid_t fixed_str_type(size_t len) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, len ? len : 1);
    H5Tset_strpad(t, H5T_STR_NULLPAD);
    H5Tset_cset(t, H5T_CSET_UTF8);
    return t;
}

static int attr_write_str(hid_t obj, const char *name, const char *value) {
    size_t len = strlen(value);
    char *buf = calloc(len + 1, 1);
    if (!buf) return 0;
    memcpy(buf, value, len);
    hid_t t = fixed_str_type(len);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    int ok = a >= 0 && H5Awrite(a, t, buf) >= 0;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    free(buf);
    return ok;
}

static int attr_write_strs(hid_t obj, const char *name, const char **values, size_t n) {
    size_t w = 1;
    for (size_t i = 0; i < n; i++) w = strlen(values[i]) > w ? strlen(values[i]) : w;
    char *buf = calloc(n ? n : 1, w);
    if (!buf) return 0;
    for (size_t i = 0; i < n; i++) memcpy(buf + i * w, values[i], strlen(values[i]));
    hid_t t = fixed_str_type(w);
    hsize_t dim = n;
    hid_t sp = H5Screate_simple(1, &dim, NULL);
    hid_t a = H5Acreate2(obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    int ok = a >= 0 && H5Awrite(a, t, buf) >= 0;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    free(buf);
    return ok;
}

static int attr_write_i64(hid_t obj, const char *name, int64_t v) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    int ok = a >= 0 && H5Awrite(a, H5T_NATIVE_INT64, &v) >= 0;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    return ok;
}

/* 1 found and read, 0 absent, -1 present but not a scalar string */
static int attr_read_str(hid_t obj, const char *name, char *buf, size_t cap) {
    if (H5Aexists(obj, name) <= 0) return 0;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t ft = H5Aget_type(a), sp = H5Aget_space(a);
    int ok = -1;
    hssize_t npts = H5Sget_simple_extent_npoints(sp);
    if (H5Tget_class(ft) == H5T_STRING && npts == 1) {
        if (H5Tis_variable_str(ft) > 0) {
            hid_t mt = H5Tcopy(H5T_C_S1);
            H5Tset_size(mt, H5T_VARIABLE);
            H5Tset_cset(mt, H5Tget_cset(ft));
            char *s = NULL;
            if (H5Aread(a, mt, &s) >= 0 && s) {
                snprintf(buf, cap, "%s", s);
                H5free_memory(s);
                ok = 1;
            }
            H5Tclose(mt);
        } else {
            size_t sz = H5Tget_size(ft);
            char *tmp = calloc(sz + 1, 1);
            hid_t mt = H5Tcopy(ft);
            if (tmp && H5Aread(a, mt, tmp) >= 0) {
                snprintf(buf, cap, "%s", tmp);
                ok = 1;
            }
            H5Tclose(mt);
            free(tmp);
        }
    }
    H5Sclose(sp);
    H5Tclose(ft);
    H5Aclose(a);
    return ok;
}

/* sources: a scalar string or a 1-D array of strings, joined with '\n' */
static void attr_read_sources(hid_t obj, char *buf, size_t cap) {
    buf[0] = 0;
    if (H5Aexists(obj, "sources") <= 0) return;
    if (attr_read_str(obj, "sources", buf, cap) == 1) return;
    hid_t a = H5Aopen(obj, "sources", H5P_DEFAULT);
    if (a < 0) return;
    hid_t ft = H5Aget_type(a), sp = H5Aget_space(a);
    hssize_t n = H5Sget_simple_extent_npoints(sp);
    size_t sz = H5Tget_size(ft);
    if (H5Tget_class(ft) == H5T_STRING && H5Tis_variable_str(ft) == 0 && n > 0 && n < 100000 && sz > 0 &&
        sz < 65536) { /* fixed-length strings (what luxtrain writes) */
        char *v = calloc((size_t)n, sz);
        hid_t mt = H5Tcopy(ft);
        if (v && H5Aread(a, mt, v) >= 0) {
            size_t used = 0;
            for (hssize_t i = 0; i < n; i++) {
                const char *e = v + (size_t)i * sz;
                size_t len = strnlen(e, sz);
                int w = snprintf(buf + used, cap - used, "%s%.*s", i ? "\n" : "", (int)len, e);
                if (w < 0 || (size_t)w >= cap - used) break;
                used += (size_t)w;
            }
        }
        H5Tclose(mt);
        free(v);
    } else if (H5Tget_class(ft) == H5T_STRING && H5Tis_variable_str(ft) > 0 && n > 0 && n < 100000) {
        char **v = calloc((size_t)n, sizeof(char *));
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, H5T_VARIABLE);
        H5Tset_cset(mt, H5Tget_cset(ft));
        if (v && H5Aread(a, mt, v) >= 0) {
            size_t used = 0;
            for (hssize_t i = 0; i < n; i++) {
                int w = snprintf(buf + used, cap - used, "%s%s", i ? "\n" : "", v[i] ? v[i] : "");
                if (w < 0 || (size_t)w >= cap - used) break;
                used += (size_t)w;
            }
            H5Dvlen_reclaim(mt, sp, H5P_DEFAULT, v);
        }
        H5Tclose(mt);
        free(v);
    }
    H5Sclose(sp);
    H5Tclose(ft);
    H5Aclose(a);
}

/* 1 read, 0 absent, -1 not a scalar integer */
static int attr_read_i64(hid_t obj, const char *name, int64_t *v) {
    if (H5Aexists(obj, name) <= 0) return 0;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return -1;
    hid_t ft = H5Aget_type(a), sp = H5Aget_space(a);
    int ok = -1;
    if (H5Tget_class(ft) == H5T_INTEGER && H5Sget_simple_extent_npoints(sp) == 1)
        ok = H5Aread(a, H5T_NATIVE_INT64, v) >= 0 ? 1 : -1;
    H5Sclose(sp);
    H5Tclose(ft);
    H5Aclose(a);
    return ok;
}

/* ------------------------------------------------------------------ */
/* checksums: CRC-32 (IEEE 802.3, zlib's crc32 / Python's zlib.crc32) of each
 * dataset's little-endian bytes, in the dataset's attribute "crc32"         */

static uint32_t crc_table[256];

static void crc_init(void) {
    if (crc_table[1]) return; /* (set by the first call; the same values on every thread) */
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

/* crc = crc32(previous bytes); returns crc32(previous bytes + p[0..n)) */
static uint32_t crc32_update(uint32_t crc, const void *p, size_t n) {
    crc_init();
    const unsigned char *b = p;
    crc = ~crc;
    for (size_t i = 0; i < n; i++) crc = crc_table[(crc ^ b[i]) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

/* ------------------------------------------------------------------ */
/* writer                                                              */

struct lt_shard_writer {
    char path[1024], tmp[1100];
    lt_shard_meta meta;
    hid_t file, d_tokens, d_mask, d_offsets;
    int64_t n_tokens, n_docs;         /* appended so far */
    int64_t flushed_tokens, flushed_offsets;
    uint32_t *buf_tok;                /* pending tokens */
    uint8_t *buf_mask;
    size_t buf_n, buf_cap;
    uint64_t *buf_off;                /* pending offsets */
    size_t off_n, off_cap;
    uint32_t crc_tok, crc_mask, crc_off; /* of what was flushed (little-endian hosts: memory = file bytes) */
};

static hid_t make_dataset(hid_t file, const char *name, hid_t type, hsize_t chunk) {
    hsize_t dim = 0, maxdim = H5S_UNLIMITED;
    hid_t sp = H5Screate_simple(1, &dim, &maxdim);
    hid_t pl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(pl, 1, &chunk);
    hid_t d = H5Dcreate2(file, name, type, sp, H5P_DEFAULT, pl, H5P_DEFAULT);
    H5Pclose(pl);
    H5Sclose(sp);
    return d;
}

static int append(hid_t d, hid_t memtype, int64_t at, const void *data, size_t n) {
    if (n == 0) return 1;
    hsize_t newsize = (hsize_t)at + n, start = (hsize_t)at, count = n;
    if (H5Dset_extent(d, &newsize) < 0) return 0;
    hid_t fs = H5Dget_space(d);
    hid_t ms = H5Screate_simple(1, &count, NULL);
    int ok = H5Sselect_hyperslab(fs, H5S_SELECT_SET, &start, NULL, &count, NULL) >= 0 &&
             H5Dwrite(d, memtype, ms, fs, H5P_DEFAULT, data) >= 0;
    H5Sclose(ms);
    H5Sclose(fs);
    return ok;
}

static lt_status flush(lt_shard_writer *w, lt_err *err) {
    if (!append(w->d_tokens, H5T_NATIVE_UINT32, w->flushed_tokens, w->buf_tok, w->buf_n) ||
        !append(w->d_mask, H5T_NATIVE_UINT8, w->flushed_tokens, w->buf_mask, w->buf_n) ||
        !append(w->d_offsets, H5T_NATIVE_UINT64, w->flushed_offsets, w->buf_off, w->off_n))
        return lt_fail(err, LT_ERR_IO, "%s: writing datasets failed (disk full?)", w->tmp);
    w->crc_tok = crc32_update(w->crc_tok, w->buf_tok, w->buf_n * sizeof *w->buf_tok);
    w->crc_mask = crc32_update(w->crc_mask, w->buf_mask, w->buf_n);
    w->crc_off = crc32_update(w->crc_off, w->buf_off, w->off_n * sizeof *w->buf_off);
    w->flushed_tokens += (int64_t)w->buf_n;
    w->flushed_offsets += (int64_t)w->off_n;
    w->buf_n = 0;
    w->off_n = 0;
    return LT_OK;
}

static void writer_free(lt_shard_writer *w) {
    if (!w) return;
    if (w->d_tokens >= 0) H5Dclose(w->d_tokens);
    if (w->d_mask >= 0) H5Dclose(w->d_mask);
    if (w->d_offsets >= 0) H5Dclose(w->d_offsets);
    if (w->file >= 0) H5Fclose(w->file);
    free(w->buf_tok);
    free(w->buf_mask);
    free(w->buf_off);
    free(w);
}

void lt_shard_tmp_path(const char *path, char *out, size_t cap) {
    const char *slash = strrchr(path, '/');
    int dirlen = slash ? (int)(slash - path + 1) : 0;
    char tag[128];
    lt_tmp_tag(tag, sizeof tag);
    snprintf(out, cap, "%.*s.%s.tmp-%s", dirlen, path, slash ? slash + 1 : path, tag);
}

lt_status lt_shard_writer_open(const char *path, const lt_shard_meta *meta, lt_shard_writer **out, lt_err *err) {
    quiet_hdf5();
    *out = NULL;
    lt_shard_writer *w = calloc(1, sizeof *w);
    if (!w) return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", path);
    w->file = w->d_tokens = w->d_mask = w->d_offsets = -1;
    if (snprintf(w->path, sizeof w->path, "%s", path) >= (int)sizeof w->path) {
        free(w);
        return lt_fail(err, LT_ERR_INVALID, "%s: path too long", path);
    }
    lt_shard_tmp_path(path, w->tmp, sizeof w->tmp);
    w->meta = *meta;
    w->buf_cap = FLUSH_TOKENS;
    w->off_cap = 1 << 14;
    w->buf_tok = malloc(w->buf_cap * sizeof *w->buf_tok);
    w->buf_mask = malloc(w->buf_cap);
    w->buf_off = malloc(w->off_cap * sizeof *w->buf_off);
    if (!w->buf_tok || !w->buf_mask || !w->buf_off) {
        writer_free(w);
        return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", path);
    }
    w->file = H5Fcreate(w->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (w->file < 0) {
        lt_status st = lt_fail(err, LT_ERR_IO, "%s: cannot create file", w->tmp);
        writer_free(w);
        return st;
    }
    w->d_tokens = make_dataset(w->file, "tokens", H5T_STD_U32LE, CHUNK_TOKENS);
    w->d_mask = make_dataset(w->file, "loss_mask", H5T_STD_U8LE, CHUNK_TOKENS);
    w->d_offsets = make_dataset(w->file, "doc_offsets", H5T_STD_U64LE, CHUNK_OFFSETS);
    if (w->d_tokens < 0 || w->d_mask < 0 || w->d_offsets < 0) {
        lt_status st = lt_fail(err, LT_ERR_IO, "%s: cannot create datasets", w->tmp);
        lt_shard_writer_abort(w);
        return st;
    }
    w->buf_off[w->off_n++] = 0; /* doc_offsets[0] */
    *out = w;
    return LT_OK;
}

lt_status lt_shard_writer_add(lt_shard_writer *w, const int32_t *tokens, const uint8_t *mask, size_t n, lt_err *err) {
    if (n == 0) return lt_fail(err, LT_ERR_INVALID, "%s: empty document", w->path);
    /* check the whole document first: a refused one leaves the shard as it was */
    for (size_t i = 0; i < n; i++)
        if (tokens[i] < 0 || (w->meta.vocab_size > 0 && tokens[i] >= w->meta.vocab_size))
            return lt_fail(err, LT_ERR_RANGE, "%s: document %lld: token id %d at position %zu out of range [0, %lld)",
                           w->path, (long long)w->n_docs, (int)tokens[i], i, (long long)w->meta.vocab_size);
    for (size_t i = 0; i < n; i++) {
        if (w->buf_n == w->buf_cap) {
            lt_status st = flush(w, err);
            if (st) return st;
        }
        w->buf_tok[w->buf_n] = (uint32_t)tokens[i];
        w->buf_mask[w->buf_n] = (i > 0 && mask[i]) ? 1 : 0;
        w->buf_n++;
    }
    w->n_tokens += (int64_t)n;
    w->n_docs++;
    if (w->off_n == w->off_cap) {
        lt_status st = flush(w, err);
        if (st) return st;
    }
    w->buf_off[w->off_n++] = (uint64_t)w->n_tokens;
    return LT_OK;
}

int64_t lt_shard_writer_num_tokens(const lt_shard_writer *w) { return w->n_tokens; }
int64_t lt_shard_writer_num_docs(const lt_shard_writer *w) { return w->n_docs; }
const char *lt_shard_writer_tmp_path(const lt_shard_writer *w) { return w->tmp; }

static int fsync_path(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    int r = fsync(fd);
    int e = errno;
    close(fd);
    errno = e;
    return r;
}

lt_status lt_shard_writer_finish(lt_shard_writer *w, lt_err *err) {
    lt_status st = flush(w, err);
    if (st) {
        lt_shard_writer_abort(w);
        return st;
    }
    /* split sources on '\n' */
    const char *src[256];
    size_t nsrc = 0;
    char srcbuf[sizeof w->meta.sources];
    memcpy(srcbuf, w->meta.sources, sizeof srcbuf);
    for (char *p = srcbuf; *p && nsrc < 256;) {
        src[nsrc++] = p;
        char *nl = strchr(p, '\n');
        if (!nl) break;
        *nl = 0;
        p = nl + 1;
    }
    hid_t f = w->file;
    int ok = attr_write_str(f, "format", LT_SHARD_FORMAT) &&
             attr_write_i64(f, "format_version", LT_SHARD_FORMAT_VERSION) &&
             attr_write_i64(f, "vocab_size", w->meta.vocab_size) &&
             attr_write_str(f, "tokenizer_sha256", w->meta.tokenizer_sha256) &&
             attr_write_str(f, "template", w->meta.template_name) && attr_write_i64(f, "num_docs", w->n_docs) &&
             attr_write_i64(f, "num_tokens", w->n_tokens) && attr_write_strs(f, "sources", src, nsrc) &&
             attr_write_i64(w->d_tokens, "crc32", w->crc_tok) && attr_write_i64(w->d_mask, "crc32", w->crc_mask) &&
             attr_write_i64(w->d_offsets, "crc32", w->crc_off);
    ok = ok && H5Fflush(f, H5F_SCOPE_GLOBAL) >= 0;
    H5Dclose(w->d_tokens);
    H5Dclose(w->d_mask);
    H5Dclose(w->d_offsets);
    w->d_tokens = w->d_mask = w->d_offsets = -1;
    ok = H5Fclose(f) >= 0 && ok;
    w->file = -1;
    if (!ok) {
        st = lt_fail(err, LT_ERR_IO, "%s: writing attributes / closing failed", w->tmp);
        lt_shard_writer_abort(w);
        return st;
    }
    /* HDF5 does not fsync: make the data durable before the rename publishes it */
    if (fsync_path(w->tmp) != 0) {
        st = lt_fail(err, LT_ERR_IO, "%s: fsync failed: %s", w->tmp, strerror(errno));
        lt_shard_writer_abort(w);
        return st;
    }
    if (rename(w->tmp, w->path) != 0) {
        st = lt_fail(err, LT_ERR_IO, "%s: cannot rename to %s", w->tmp, w->path);
        lt_shard_writer_abort(w);
        return st;
    }
    lt_fsync_parent(w->path);
    writer_free(w);
    return LT_OK;
}

void lt_shard_writer_abort(lt_shard_writer *w) {
    if (!w) return;
    char tmp[sizeof w->tmp];
    memcpy(tmp, w->tmp, sizeof tmp);
    writer_free(w);
    unlink(tmp);
}

/* ------------------------------------------------------------------ */
/* reader                                                              */

void lt_shard_free(lt_shard *s) {
    if (!s) return;
    free(s->tokens);
    free(s->loss_mask);
    free(s->doc_offsets);
    s->tokens = NULL;
    s->loss_mask = NULL;
    s->doc_offsets = NULL;
}

/* Open a 1-D dataset of an integer type of `size` bytes and signedness;
 * returns its length in *n. */
static lt_status open_dataset(hid_t f, const char *path, const char *name, size_t size, H5T_sign_t sign, hid_t *out,
                              int64_t *n, lt_err *err) {
    if (H5Lexists(f, name, H5P_DEFAULT) <= 0)
        return lt_fail(err, LT_ERR_FORMAT, "%s: dataset '%s' is missing", path, name);
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0) return lt_fail(err, LT_ERR_FORMAT, "%s: '%s' is not a dataset", path, name);
    hid_t t = H5Dget_type(d), sp = H5Dget_space(d);
    int rank = H5Sget_simple_extent_ndims(sp);
    hsize_t dim = 0;
    lt_status st = LT_OK;
    if (H5Tget_class(t) != H5T_INTEGER || H5Tget_size(t) != size || H5Tget_sign(t) != sign)
        st = lt_fail(err, LT_ERR_FORMAT, "%s: dataset '%s' has the wrong type (expected %s%zu)", path, name,
                     sign == H5T_SGN_NONE ? "uint" : "int", size * 8);
    else if (rank != 1)
        st = lt_fail(err, LT_ERR_FORMAT, "%s: dataset '%s' has rank %d (expected 1-D)", path, name, rank);
    else
        H5Sget_simple_extent_dims(sp, &dim, NULL);
    H5Sclose(sp);
    H5Tclose(t);
    if (st) {
        H5Dclose(d);
        return st;
    }
    *out = d;
    *n = (int64_t)dim;
    return LT_OK;
}

lt_status lt_shard_read(const char *path, int64_t model_vocab, lt_shard *s, lt_err *err) {
    quiet_hdf5();
    memset(s, 0, sizeof *s);
    snprintf(s->path, sizeof s->path, "%s", path);
    if (!lt_file_exists(path)) return lt_fail(err, LT_ERR_IO, "%s: no such file", path);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return lt_fail(err, LT_ERR_FORMAT, "%s: not an HDF5 file (or unreadable)", path);
    hid_t dt = -1, dm = -1, dof = -1;
    lt_status st = LT_OK;
    int r;
    int64_t n_tok = 0, n_mask = 0, n_off = 0;

    if ((r = attr_read_str(f, "format", s->format, sizeof s->format)) != 1) {
        st = lt_fail(err, LT_ERR_FORMAT, "%s: root attribute 'format' is %s (expected \"%s\")", path,
                     r == 0 ? "missing" : "not a string", LT_SHARD_FORMAT);
        goto done;
    }
    if (strcmp(s->format, LT_SHARD_FORMAT) != 0) {
        st = lt_fail(err, LT_ERR_FORMAT, "%s: attribute format = \"%s\" (expected \"%s\")", path, s->format,
                     LT_SHARD_FORMAT);
        goto done;
    }
    if ((r = attr_read_i64(f, "format_version", &s->format_version)) != 1) {
        st = lt_fail(err, LT_ERR_FORMAT, "%s: root attribute 'format_version' is %s", path,
                     r == 0 ? "missing" : "not an integer");
        goto done;
    }
    if (s->format_version != LT_SHARD_FORMAT_VERSION) {
        st = lt_fail(err, LT_ERR_UNSUPPORTED, "%s: format_version %lld is not supported (this luxtrain reads %d)",
                     path, (long long)s->format_version, LT_SHARD_FORMAT_VERSION);
        goto done;
    }
    const char *need_int[] = {"vocab_size", "num_docs", "num_tokens"};
    int64_t *dst_int[] = {&s->meta.vocab_size, &s->num_docs, &s->num_tokens};
    for (int i = 0; i < 3; i++) {
        if ((r = attr_read_i64(f, need_int[i], dst_int[i])) != 1) {
            st = lt_fail(err, LT_ERR_FORMAT, "%s: root attribute '%s' is %s", path, need_int[i],
                         r == 0 ? "missing" : "not an integer");
            goto done;
        }
        if (*dst_int[i] < 0) {
            st = lt_fail(err, LT_ERR_FORMAT, "%s: attribute %s = %lld is negative", path, need_int[i],
                         (long long)*dst_int[i]);
            goto done;
        }
    }
    if (s->meta.vocab_size < 1) {
        st = lt_fail(err, LT_ERR_FORMAT, "%s: attribute vocab_size = 0", path);
        goto done;
    }
    if (attr_read_str(f, "tokenizer_sha256", s->meta.tokenizer_sha256, sizeof s->meta.tokenizer_sha256) < 0 ||
        attr_read_str(f, "template", s->meta.template_name, sizeof s->meta.template_name) < 0) {
        st = lt_fail(err, LT_ERR_FORMAT, "%s: attribute tokenizer_sha256 / template is not a string", path);
        goto done;
    }
    attr_read_sources(f, s->meta.sources, sizeof s->meta.sources);

    if ((st = open_dataset(f, path, "tokens", 4, H5T_SGN_NONE, &dt, &n_tok, err))) goto done;
    if ((st = open_dataset(f, path, "loss_mask", 1, H5T_SGN_NONE, &dm, &n_mask, err))) goto done;
    if ((st = open_dataset(f, path, "doc_offsets", 8, H5T_SGN_NONE, &dof, &n_off, err))) goto done;
    if (n_tok != s->num_tokens) {
        st = lt_fail(err, LT_ERR_FORMAT, "%s: dataset tokens has %lld entries but num_tokens = %lld", path,
                     (long long)n_tok, (long long)s->num_tokens);
        goto done;
    }
    if (n_mask != n_tok) {
        st = lt_fail(err, LT_ERR_FORMAT, "%s: dataset loss_mask has %lld entries but tokens has %lld", path,
                     (long long)n_mask, (long long)n_tok);
        goto done;
    }
    if (n_off < 1 || n_off - 1 != s->num_docs) { /* (num_docs + 1 would overflow at INT64_MAX) */
        st = lt_fail(err, LT_ERR_FORMAT, "%s: dataset doc_offsets has %lld entries (expected num_docs + 1, num_docs = %lld)",
                     path, (long long)n_off, (long long)s->num_docs);
        goto done;
    }
    /* the whole shard is read into memory: sizes from the file, checked */
    size_t tok_bytes = 0, off_bytes = 0;
    if (!lt_mul_ok((size_t)n_tok + 1, 4, &tok_bytes) || !lt_mul_ok((size_t)n_off, 8, &off_bytes) ||
        (uint64_t)n_tok >= (uint64_t)SIZE_MAX / 8) {
        st = lt_fail(err, LT_ERR_NOMEM, "%s: num_tokens = %lld, num_docs = %lld: too large to read into memory", path,
                     (long long)n_tok, (long long)s->num_docs);
        goto done;
    }
    s->tokens = malloc(tok_bytes);
    s->loss_mask = malloc((size_t)n_tok + 1);
    s->doc_offsets = malloc(off_bytes);
    if (!s->tokens || !s->loss_mask || !s->doc_offsets) {
        st = lt_fail(err, LT_ERR_NOMEM, "%s: out of memory for %lld tokens (%.3g GB)", path, (long long)n_tok,
                     (double)(tok_bytes + (size_t)n_tok + off_bytes) / 1e9);
        goto done;
    }
    if ((n_tok && (H5Dread(dt, H5T_NATIVE_UINT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, s->tokens) < 0 ||
                   H5Dread(dm, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, s->loss_mask) < 0)) ||
        H5Dread(dof, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, s->doc_offsets) < 0) {
        st = lt_fail(err, LT_ERR_IO, "%s: reading the datasets failed", path);
        goto done;
    }
    /* checksums (luxtrain writes all three; shards from other writers may have none) */
    {
        hid_t ds[3] = {dt, dm, dof};
        const char *names[3] = {"tokens", "loss_mask", "doc_offsets"};
        const void *data[3] = {s->tokens, s->loss_mask, s->doc_offsets};
        size_t bytes[3] = {(size_t)n_tok * 4, (size_t)n_tok, (size_t)n_off * 8};
        int64_t want[3];
        int have[3], n_have = 0;
        for (int i = 0; i < 3; i++) {
            have[i] = attr_read_i64(ds[i], "crc32", &want[i]);
            if (have[i] < 0 || (have[i] == 1 && (want[i] < 0 || want[i] > 0xFFFFFFFFll))) {
                st = lt_fail(err, LT_ERR_FORMAT, "%s: dataset %s: attribute crc32 is not a 32-bit checksum", path,
                             names[i]);
                goto done;
            }
            n_have += have[i];
        }
        for (int i = 0; i < 3 && n_have; i++) {
            if (!have[i]) {
                st = lt_fail(err, LT_ERR_FORMAT, "%s: dataset %s has no crc32 attribute (the others have one): the "
                             "file is damaged", path, names[i]);
                goto done;
            }
            uint32_t got = crc32_update(0, data[i], bytes[i]);
            if (got != (uint32_t)want[i]) {
                st = lt_fail(err, LT_ERR_FORMAT, "%s: dataset %s: CRC-32 %08x, but the file records %08x: the shard "
                             "is corrupt (tokenize it again)", path, names[i], got, (unsigned)want[i]);
                goto done;
            }
        }
    }
    /* offsets: 0, non-decreasing, end at num_tokens */
    if (s->doc_offsets[0] != 0) {
        st = lt_fail(err, LT_ERR_FORMAT, "%s: doc_offsets[0] = %llu (expected 0)", path,
                     (unsigned long long)s->doc_offsets[0]);
        goto done;
    }
    for (int64_t i = 1; i < n_off; i++)
        if (s->doc_offsets[i] < s->doc_offsets[i - 1]) {
            st = lt_fail(err, LT_ERR_FORMAT, "%s: doc_offsets not monotone: [%lld] = %llu < [%lld] = %llu", path,
                         (long long)i, (unsigned long long)s->doc_offsets[i], (long long)i - 1,
                         (unsigned long long)s->doc_offsets[i - 1]);
            goto done;
        }
    if (s->doc_offsets[n_off - 1] != (uint64_t)n_tok) {
        st = lt_fail(err, LT_ERR_FORMAT, "%s: doc_offsets ends at %llu but there are %lld tokens", path,
                     (unsigned long long)s->doc_offsets[n_off - 1], (long long)n_tok);
        goto done;
    }
    /* token ids and mask values */
    {
        uint64_t lim = (uint64_t)s->meta.vocab_size;
        if (model_vocab > 0 && (uint64_t)model_vocab < lim) lim = (uint64_t)model_vocab;
        if (lim > (uint64_t)INT32_MAX + 1) lim = (uint64_t)INT32_MAX + 1; /* ids are int32 downstream */
        uint32_t maxid = 0;
        uint8_t maxm = 0;
        for (int64_t i = 0; i < n_tok; i++) {
            maxid = s->tokens[i] > maxid ? s->tokens[i] : maxid;
            maxm |= s->loss_mask[i];
        }
        if (n_tok && (uint64_t)maxid >= lim) {
            int64_t at = 0;
            while (s->tokens[at] != maxid) at++;
            st = lt_fail(err, LT_ERR_RANGE,
                         "%s: token id %u at position %lld is >= the vocabulary size %llu (shard vocab_size %lld, "
                         "model %lld)",
                         path, maxid, (long long)at, (unsigned long long)lim, (long long)s->meta.vocab_size,
                         (long long)model_vocab);
            goto done;
        }
        if (maxm > 1) {
            int64_t at = 0;
            while (s->loss_mask[at] <= 1) at++;
            st = lt_fail(err, LT_ERR_FORMAT, "%s: loss_mask[%lld] = %u (expected 0 or 1)", path, (long long)at,
                         s->loss_mask[at]);
            goto done;
        }
    }
done:
    if (dt >= 0) H5Dclose(dt);
    if (dm >= 0) H5Dclose(dm);
    if (dof >= 0) H5Dclose(dof);
    H5Fclose(f);
    if (st) lt_shard_free(s);
    return st;
}
