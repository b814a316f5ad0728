/* lt_safetensors.c -- safetensors reading (mmap + validation), model folders
 * (single file or sharded index) and writing. See lt_safetensors.h.
 *
 * File layout:  [u64 LE header length N][N bytes JSON header][data section]
 * Header:       {"__metadata__": {str: str}?,
 *                "<name>": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}, ...}
 * Offsets are relative to the start of the data section.
 */
#define _DEFAULT_SOURCE /* madvise */
#define _POSIX_C_SOURCE 200809L
#include "lt_safetensors.h"

#include "lt_json.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define LT_ST_MAX_HEADER 100000000ull /* as the reference crate */

struct lt_st_file {
    char *path;
    void *map;
    size_t map_len;
    size_t n;
    lt_st_tensor *t;   /* (n) in data order */
    size_t *by_name;   /* (n) indices into t sorted by name */
    size_t n_meta;
    char **meta_k, **meta_v;
};

struct lt_st_model {
    char *dir;
    size_t n_files;
    lt_st_file **files;
    size_t n;
    const lt_st_tensor **t;       /* (n) in file order, shard by shard */
    const lt_st_tensor **by_name; /* (n) sorted by name */
    /* lt_st_model_rename: tensors seen under other names, and those set aside */
    lt_st_tensor *renamed;
    size_t n_renamed;
    const lt_st_tensor **aside;
    size_t n_aside;
};

/* ---- dtypes ---- */

static int dtype_from_name(const char *s, lt_dtype *out) {
    for (int i = 0; i < LT_DTYPE_COUNT; i++) {
        if (strcmp(s, lt_dtype_name((lt_dtype)i)) == 0) {
            *out = (lt_dtype)i;
            return 1;
        }
    }
    return 0;
}

/* dtypes the format defines but luxtrain does not read */
static int dtype_known_elsewhere(const char *s) {
    static const char *other[] = {"I8",      "I16",     "U16",     "U32",      "U64",     "F8_E5M2",
                                  "F8_E4M3", "F8_E8M0", "F6_E2M3", "F6_E3M2",  "F4",      "C64"};
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++)
        if (strcmp(s, other[i]) == 0) return 1;
    return 0;
}

void lt_st_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, cap - k, "[");
    for (int i = 0; i < ndim && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
}

/* A JSON number that is an integer in [0, 2^53]; returns 0 otherwise. */
static int json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d >= 0.0) || d > 9007199254740992.0 || floor(d) != d) return 0;
    *out = (uint64_t)d;
    return 1;
}


/* ---- opening one file ---- */

typedef struct range {
    uint64_t begin, end;
    size_t idx; /* header order */
} range;

static int cmp_range(const void *a, const void *b) {
    const range *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static _Thread_local const lt_st_tensor *g_sort_t; /* qsort has no context pointer in C11 */
static int cmp_name_idx(const void *a, const void *b) {
    return strcmp(g_sort_t[*(const size_t *)a].name, g_sort_t[*(const size_t *)b].name);
}

void lt_st_close(lt_st_file *f) {
    if (!f) return;
    if (f->map && f->map != MAP_FAILED) munmap(f->map, f->map_len);
    for (size_t i = 0; i < f->n; i++) free(f->t[i].name);
    for (size_t i = 0; i < f->n_meta; i++) {
        free(f->meta_k[i]);
        free(f->meta_v[i]);
    }
    free(f->meta_k);
    free(f->meta_v);
    free(f->t);
    free(f->by_name);
    free(f->path);
    free(f);
}

/* Parse one header entry into t (data holds the begin offset for now). */
static lt_status parse_entry(const char *path, const cJSON *e, lt_st_tensor *t, uint64_t *begin, uint64_t *end,
                             lt_err *err) {
    const char *name = e->string;
    if (!cJSON_IsObject(e))
        return lt_fail(err, LT_ERR_FORMAT, "%s: tensor '%s': expected an object with dtype/shape/data_offsets, found %s",
                       path, name, lt_json_kind(e));
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *jo = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(jd))
        return lt_fail(err, LT_ERR_FORMAT, "%s: tensor '%s': \"dtype\" must be a string, found %s", path, name,
                       lt_json_kind(jd));
    if (!dtype_from_name(jd->valuestring, &t->dtype)) {
        if (dtype_known_elsewhere(jd->valuestring))
            return lt_fail(err, LT_ERR_UNSUPPORTED,
                           "%s: tensor '%s': dtype '%s' is not supported (supported: F32, BF16, F16, F64, I64, I32, "
                           "U8, BOOL)",
                           path, name, jd->valuestring);
        return lt_fail(err, LT_ERR_FORMAT,
                       "%s: tensor '%s': unknown dtype '%s' (expected one of F32, BF16, F16, F64, I64, I32, U8, BOOL)",
                       path, name, jd->valuestring);
    }
    if (!cJSON_IsArray(js))
        return lt_fail(err, LT_ERR_FORMAT, "%s: tensor '%s': \"shape\" must be an array, found %s", path, name,
                       lt_json_kind(js));
    int nd = cJSON_GetArraySize(js);
    if (nd > LT_ST_MAX_DIMS)
        return lt_fail(err, LT_ERR_UNSUPPORTED, "%s: tensor '%s': %d dimensions, at most %d supported", path, name,
                       nd, LT_ST_MAX_DIMS);
    t->ndim = nd;
    size_t numel = 1;
    int i = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, js) {
        uint64_t v;
        if (!json_uint(d, &v)) {
            if (cJSON_IsNumber(d))
                return lt_fail(err, LT_ERR_FORMAT,
                               "%s: tensor '%s': shape[%d] = %g, expected a non-negative integer", path, name, i,
                               d->valuedouble);
            return lt_fail(err, LT_ERR_FORMAT, "%s: tensor '%s': shape[%d] is %s, expected a non-negative integer",
                           path, name, i, lt_json_kind(d));
        }
        t->shape[i++] = (int64_t)v;
        if (v > SIZE_MAX || !lt_mul_ok(numel, (size_t)v, &numel))
            return lt_fail(err, LT_ERR_FORMAT, "%s: tensor '%s': number of elements overflows", path, name);
    }
    t->numel = numel;
    if (!lt_mul_ok(numel, lt_dtype_size(t->dtype), &t->nbytes))
        return lt_fail(err, LT_ERR_FORMAT, "%s: tensor '%s': byte size overflows", path, name);
    if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2)
        return lt_fail(err, LT_ERR_FORMAT, "%s: tensor '%s': \"data_offsets\" must be an array [begin, end], found %s",
                       path, name, cJSON_IsArray(jo) ? "an array of another length" : lt_json_kind(jo));
    if (!json_uint(cJSON_GetArrayItem(jo, 0), begin) || !json_uint(cJSON_GetArrayItem(jo, 1), end))
        return lt_fail(err, LT_ERR_FORMAT, "%s: tensor '%s': data_offsets must be non-negative integers", path, name);
    if (*end < *begin)
        return lt_fail(err, LT_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] end before begin", path, name,
                       (unsigned long long)*begin, (unsigned long long)*end);
    if (*end - *begin != (uint64_t)t->nbytes) {
        char sh[256];
        lt_st_shape_str(sh, sizeof sh, t->ndim, t->shape);
        return lt_fail(err, LT_ERR_FORMAT,
                       "%s: tensor '%s': data_offsets [%llu, %llu] span %llu bytes but shape %s x %s needs %zu", path,
                       name, (unsigned long long)*begin, (unsigned long long)*end,
                       (unsigned long long)(*end - *begin), sh, lt_dtype_name(t->dtype), t->nbytes);
    }
    return LT_OK;
}

static lt_status parse_metadata(lt_st_file *f, const cJSON *m, lt_err *err) {
    if (cJSON_IsNull(m)) return LT_OK;
    if (!cJSON_IsObject(m))
        return lt_fail(err, LT_ERR_FORMAT, "%s: \"__metadata__\" must be an object of strings, found %s", f->path,
                       lt_json_kind(m));
    size_t n = (size_t)cJSON_GetArraySize(m);
    f->meta_k = calloc(n ? n : 1, sizeof *f->meta_k);
    f->meta_v = calloc(n ? n : 1, sizeof *f->meta_v);
    if (!f->meta_k || !f->meta_v) return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", f->path);
    const cJSON *e;
    cJSON_ArrayForEach(e, m) {
        if (!cJSON_IsString(e))
            return lt_fail(err, LT_ERR_FORMAT, "%s: __metadata__ key '%s': value must be a string, found %s", f->path,
                           e->string, lt_json_kind(e));
        for (size_t j = 0; j < f->n_meta; j++)
            if (strcmp(f->meta_k[j], e->string) == 0)
                return lt_fail(err, LT_ERR_FORMAT, "%s: __metadata__ key '%s' appears twice", f->path, e->string);
        f->meta_k[f->n_meta] = lt_strdup(e->string);
        f->meta_v[f->n_meta] = lt_strdup(e->valuestring);
        f->n_meta++;
        if (!f->meta_k[f->n_meta - 1] || !f->meta_v[f->n_meta - 1])
            return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", f->path);
    }
    return LT_OK;
}

/* Validate the header and build the tensor table (map already set). */
static lt_status parse_header(lt_st_file *f, size_t file_len, lt_err *err) {
    const unsigned char *b = f->map;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | b[i];
    if (hlen > LT_ST_MAX_HEADER)
        return lt_fail(err, LT_ERR_FORMAT, "%s: header length %llu exceeds the 100000000-byte limit", f->path,
                       (unsigned long long)hlen);
    if (8 + hlen > file_len)
        return lt_fail(err, LT_ERR_FORMAT, "%s: header length %llu runs past the end of the %zu-byte file", f->path,
                       (unsigned long long)hlen, file_len);
    if (hlen == 0 || b[8] != '{')
    {
        if (hlen == 0) return lt_fail(err, LT_ERR_FORMAT, "%s: header does not start with '{' (it is empty)", f->path);
        unsigned c = b[8];
        if (c >= 0x20 && c < 0x7f)
            return lt_fail(err, LT_ERR_FORMAT, "%s: header does not start with '{' (found '%c')", f->path, (char)c);
        return lt_fail(err, LT_ERR_FORMAT, "%s: header does not start with '{' (found byte 0x%02x)", f->path, c);
    }
    const char *hdr = (const char *)b + 8, *end = NULL;
    char why[200];
    /* the reference's grammar (serde_json) first: cJSON alone accepts more */
    if (!lt_json_check_strict(hdr, (size_t)hlen, 1, why, sizeof why))
        return lt_fail(err, LT_ERR_FORMAT, "%s: header is not valid JSON as safetensors reads it: %s", f->path, why);
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, (size_t)hlen, &end, 0);
    if (!root) {
        size_t at = end ? (size_t)(end - hdr) : 0;
        const char *ep = cJSON_GetErrorPtr();
        if (ep >= hdr && ep <= hdr + hlen) at = (size_t)(ep - hdr);
        return lt_fail(err, LT_ERR_FORMAT, "%s: header is not valid JSON (error near byte %zu of %llu)", f->path, at,
                       (unsigned long long)hlen);
    }
    lt_status st = LT_OK;
    /* only whitespace may follow the JSON object (the writer pads with spaces) */
    for (const char *p = end; p < hdr + hlen; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            st = lt_fail(err, LT_ERR_FORMAT, "%s: header has trailing bytes after the JSON object (at byte %zu)",
                         f->path, (size_t)(p - hdr));
            goto done;
        }
    }
    if (!cJSON_IsObject(root)) {
        st = lt_fail(err, LT_ERR_FORMAT, "%s: header is not a JSON object", f->path);
        goto done;
    }
    size_t n = 0, n_members = (size_t)cJSON_GetArraySize(root);
    int have_meta = 0;
    f->t = calloc(n_members ? n_members : 1, sizeof *f->t);
    range *rg = calloc(n_members ? n_members : 1, sizeof *rg);
    lt_st_tensor *tmp_t = calloc(n_members ? n_members : 1, sizeof *tmp_t);
    if (!f->t || !rg || !tmp_t) {
        free(rg);
        free(tmp_t);
        st = lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", f->path);
        goto done;
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (have_meta++) {
                st = lt_fail(err, LT_ERR_FORMAT, "%s: \"__metadata__\" appears twice", f->path);
                break;
            }
            if ((st = parse_metadata(f, e, err)) != LT_OK) break;
            continue;
        }
        lt_st_tensor *t = &f->t[n];
        uint64_t tb = 0, te = 0;
        if ((st = parse_entry(f->path, e, t, &tb, &te, err)) != LT_OK) break;
        t->name = lt_strdup(e->string);
        if (!t->name) {
            st = lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", f->path);
            break;
        }
        t->file = f->path;
        rg[n] = (range){tb, te, n};
        n++;
    }
    f->n = n;
    if (st != LT_OK) {
        free(rg);
        free(tmp_t);
        goto done;
    }

    /* put the tensors in data order */
    qsort(rg, n, sizeof *rg, cmp_range);
    memcpy(tmp_t, f->t, n * sizeof *tmp_t);
    for (size_t i = 0; i < n; i++) f->t[i] = tmp_t[rg[i].idx];
    free(tmp_t);

    /* the ranges, sorted by begin, must tile [0, data_len) */
    uint64_t data_len = (uint64_t)file_len - 8 - hlen, pos = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t tb = rg[i].begin, te = rg[i].end;
        if (tb != pos) {
            free(rg);
            if (tb > pos)
                st = lt_fail(err, LT_ERR_FORMAT,
                             "%s: tensor '%s': data_offsets begin at %llu but the previous tensor ends at %llu "
                             "(hole in the data section)",
                             f->path, f->t[i].name, (unsigned long long)tb, (unsigned long long)pos);
            else
                st = lt_fail(err, LT_ERR_FORMAT,
                             "%s: tensor '%s': data_offsets begin at %llu, overlapping the previous tensor "
                             "(%s, ends at %llu)",
                             f->path, f->t[i].name, (unsigned long long)tb, f->t[i - 1].name,
                             (unsigned long long)pos);
            goto done;
        }
        pos = te;
    }
    free(rg);
    if (pos != data_len) {
        st = lt_fail(err, LT_ERR_FORMAT,
                     "%s: tensors cover %llu bytes of data but the file holds %llu bytes after the header "
                     "(file length %zu, expected 8 + %llu + %llu = %llu)",
                     f->path, (unsigned long long)pos, (unsigned long long)data_len, file_len,
                     (unsigned long long)hlen, (unsigned long long)pos, (unsigned long long)(8 + hlen + pos));
        goto done;
    }
    /* validated: the tensors sit back to back from the start of the data section */
    const char *data = (const char *)f->map + 8 + hlen;
    for (size_t i = 0; i < n; i++) {
        f->t[i].data = data;
        data += f->t[i].nbytes;
    }

    /* names: sorted index, no duplicates (cJSON keeps both copies) */
    f->by_name = malloc((n ? n : 1) * sizeof *f->by_name);
    if (!f->by_name) {
        st = lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", f->path);
        goto done;
    }
    for (size_t i = 0; i < n; i++) f->by_name[i] = i;
    g_sort_t = f->t;
    qsort(f->by_name, n, sizeof *f->by_name, cmp_name_idx);
    for (size_t i = 1; i < n; i++) {
        if (strcmp(f->t[f->by_name[i]].name, f->t[f->by_name[i - 1]].name) == 0) {
            st = lt_fail(err, LT_ERR_FORMAT, "%s: tensor '%s' appears twice in the header", f->path,
                         f->t[f->by_name[i]].name);
            goto done;
        }
    }
done:
    cJSON_Delete(root);
    return st;
}

lt_status lt_st_open(const char *path, lt_st_file **out, lt_err *err) {
    *out = NULL;
    lt_st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = lt_strdup(path))) {
        free(f);
        return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", path);
    }
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        lt_status st = lt_fail(err, LT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        lt_st_close(f);
        return st;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        lt_st_close(f);
        return lt_fail(err, LT_ERR_IO, "%s: not a regular file", path);
    }
    size_t len = (size_t)sb.st_size;
    if (len < 8) {
        close(fd);
        lt_st_close(f);
        return lt_fail(err, LT_ERR_FORMAT, "%s: file is %zu bytes, too short for the 8-byte header length", path,
                       len);
    }
    f->map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (f->map == MAP_FAILED) {
        int e = errno;
        f->map = NULL;
        lt_st_close(f);
        return lt_fail(err, LT_ERR_IO, "%s: mmap failed: %s", path, strerror(e));
    }
    f->map_len = len;
    lt_status st = parse_header(f, len, err);
    if (st != LT_OK) {
        lt_st_close(f);
        return st;
    }
    *out = f;
    return LT_OK;
}

size_t lt_st_count(const lt_st_file *f) { return f->n; }
const lt_st_tensor *lt_st_get(const lt_st_file *f, size_t i) { return i < f->n ? &f->t[i] : NULL; }

const lt_st_tensor *lt_st_find(const lt_st_file *f, const char *name) {
    size_t lo = 0, hi = f->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(f->t[f->by_name[mid]].name, name);
        if (c == 0) return &f->t[f->by_name[mid]];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const char *lt_st_metadata(const lt_st_file *f, const char *key) {
    for (size_t i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta_k[i], key) == 0) return f->meta_v[i];
    return NULL;
}

/* ---- model folders ---- */

void lt_st_close_model(lt_st_model *m) {
    if (!m) return;
    for (size_t i = 0; i < m->n_files; i++) lt_st_close(m->files[i]);
    free(m->files);
    free(m->t);
    free(m->by_name);
    for (size_t i = 0; i < m->n_renamed; i++) free(m->renamed[i].name);
    free(m->renamed);
    free(m->aside);
    free(m->dir);
    free(m);
}

static int cmp_tensor_ptr_name(const void *a, const void *b) {
    return strcmp((*(const lt_st_tensor *const *)a)->name, (*(const lt_st_tensor *const *)b)->name);
}

/* Gather all tensors of all files, sort by name, refuse duplicates. */
static lt_status model_index_tensors(lt_st_model *m, lt_err *err) {
    size_t n = 0;
    for (size_t i = 0; i < m->n_files; i++) n += m->files[i]->n;
    m->t = malloc((n ? n : 1) * sizeof *m->t);
    m->by_name = malloc((n ? n : 1) * sizeof *m->by_name);
    if (!m->t || !m->by_name) return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", m->dir);
    size_t k = 0;
    for (size_t i = 0; i < m->n_files; i++)
        for (size_t j = 0; j < m->files[i]->n; j++) m->t[k++] = &m->files[i]->t[j];
    m->n = n;
    memcpy(m->by_name, m->t, n * sizeof *m->t);
    qsort(m->by_name, n, sizeof *m->by_name, cmp_tensor_ptr_name);
    for (size_t i = 1; i < n; i++)
        if (strcmp(m->by_name[i]->name, m->by_name[i - 1]->name) == 0)
            return lt_fail(err, LT_ERR_FORMAT, "%s: tensor '%s' is in both %s and %s", m->dir, m->by_name[i]->name,
                           m->by_name[i - 1]->file, m->by_name[i]->file);
    return LT_OK;
}

static int has_prefix(const char *s, const char *p) { return !strncmp(s, p, strlen(p)); }

lt_status lt_st_model_rename(lt_st_model *m, const lt_st_rename *ren, size_t nren, const char *const *aside,
                             lt_err *err) {
    if (m->renamed || m->aside) return lt_fail(err, LT_ERR_INVALID, "%s: tensors renamed twice", m->dir);
    m->renamed = calloc(m->n + 1, sizeof *m->renamed);
    m->aside = calloc(m->n + 1, sizeof *m->aside);
    if (!m->renamed || !m->aside) return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", m->dir);
    size_t k = 0;
    for (size_t i = 0; i < m->n; i++) {
        const lt_st_tensor *t = m->t[i];
        int off = 0;
        for (const char *const *a = aside; a && *a && !off; a++) off = has_prefix(t->name, *a);
        if (off) {
            m->aside[m->n_aside++] = t;
            continue;
        }
        for (size_t r = 0; r < nren; r++) {
            if (!has_prefix(t->name, ren[r].file)) continue;
            const char *rest = t->name + strlen(ren[r].file);
            lt_st_tensor *c = &m->renamed[m->n_renamed];
            *c = *t;
            if (!(c->name = malloc(strlen(ren[r].view) + strlen(rest) + 1)))
                return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", m->dir);
            strcpy(c->name, ren[r].view);
            strcat(c->name, rest);
            m->n_renamed++;
            t = c;
            break;
        }
        m->t[k++] = t;
    }
    m->n = k;
    memcpy(m->by_name, m->t, k * sizeof *m->t);
    qsort(m->by_name, k, sizeof *m->by_name, cmp_tensor_ptr_name);
    for (size_t i = 1; i < k; i++)
        if (strcmp(m->by_name[i]->name, m->by_name[i - 1]->name) == 0)
            return lt_fail(err, LT_ERR_FORMAT, "%s: two tensors are read as '%s' (a file holding the same tensor "
                           "under two layouts?)", m->dir, m->by_name[i]->name);
    return LT_OK;
}

size_t lt_st_model_aside_count(const lt_st_model *m) { return m->n_aside; }
const lt_st_tensor *lt_st_model_aside(const lt_st_model *m, size_t i) { return i < m->n_aside ? m->aside[i] : NULL; }

static int shard_name_ok(const char *s) {
    if (!*s || strcmp(s, ".") == 0 || strcmp(s, "..") == 0) return 0;
    if (strchr(s, '/') || strchr(s, '\\')) return 0;
    return 1;
}

static lt_status open_index(lt_st_model *m, const char *index_path, lt_err *err) {
    cJSON *root = NULL;
    lt_status st = lt_json_load_file(index_path, &root, err);
    if (st != LT_OK) return st;
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    const cJSON *e;
    if (!cJSON_IsObject(wm)) {
        st = lt_fail(err, LT_ERR_FORMAT, "%s: \"weight_map\" must be an object, found %s", index_path, lt_json_kind(wm));
        goto done;
    }
    size_t n_entries = (size_t)cJSON_GetArraySize(wm);
    m->files = calloc(n_entries ? n_entries : 1, sizeof *m->files);
    if (!m->files) {
        st = lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", index_path);
        goto done;
    }
    /* pass 1: check names, open each distinct shard once (in first-mention order) */
    cJSON_ArrayForEach(e, wm) {
        if (!cJSON_IsString(e)) {
            st = lt_fail(err, LT_ERR_FORMAT, "%s: weight_map entry '%s' must be a file name, found %s", index_path,
                         e->string, lt_json_kind(e));
            goto done;
        }
        if (!shard_name_ok(e->valuestring)) {
            st = lt_fail(err, LT_ERR_FORMAT,
                         "%s: tensor '%s': shard path '%s' must be a plain file name inside the model folder "
                         "(no '/' or '..')",
                         index_path, e->string, e->valuestring);
            goto done;
        }
        char path[4096];
        if (!lt_path_join(path, sizeof path, m->dir, e->valuestring)) {
            st = lt_fail(err, LT_ERR_INVALID, "%s: path too long", index_path);
            goto done;
        }
        int seen = 0;
        for (size_t i = 0; i < m->n_files && !seen; i++) seen = strcmp(m->files[i]->path, path) == 0;
        if (seen) continue;
        if (!lt_file_exists(path)) {
            st = lt_fail(err, LT_ERR_IO, "%s: shard '%s' (holding tensor '%s') does not exist", index_path,
                         e->valuestring, e->string);
            goto done;
        }
        if ((st = lt_st_open(path, &m->files[m->n_files], err)) != LT_OK) goto done;
        m->n_files++;
    }
    if (m->n_files == 0) {
        st = lt_fail(err, LT_ERR_FORMAT, "%s: weight_map is empty", index_path);
        goto done;
    }
    /* pass 2: every listed tensor is in the shard the map names */
    cJSON_ArrayForEach(e, wm) {
        char path[4096];
        lt_path_join(path, sizeof path, m->dir, e->valuestring);
        for (size_t i = 0; i < m->n_files; i++) {
            if (strcmp(m->files[i]->path, path) != 0) continue;
            if (!lt_st_find(m->files[i], e->string)) {
                st = lt_fail(err, LT_ERR_FORMAT, "%s: tensor '%s' is listed in %s but absent from the shard",
                             path, e->string, index_path);
                goto done;
            }
        }
    }
    st = model_index_tensors(m, err);
done:
    cJSON_Delete(root);
    return st;
}

lt_status lt_st_open_model(const char *dir, lt_st_model **out, lt_err *err) {
    *out = NULL;
    lt_st_model *m = calloc(1, sizeof *m);
    if (!m || !(m->dir = lt_strdup(dir))) {
        free(m);
        return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", dir);
    }
    char single[4096], index[4096];
    if (!lt_path_join(single, sizeof single, dir, "model.safetensors") ||
        !lt_path_join(index, sizeof index, dir, "model.safetensors.index.json")) {
        lt_st_close_model(m);
        return lt_fail(err, LT_ERR_INVALID, "%s: path too long", dir);
    }
    lt_status st;
    if (lt_file_exists(single)) {
        m->files = calloc(1, sizeof *m->files);
        if (!m->files)
            st = lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", dir);
        else if ((st = lt_st_open(single, &m->files[0], err)) == LT_OK) {
            m->n_files = 1;
            st = model_index_tensors(m, err);
        }
    } else if (lt_file_exists(index)) {
        st = open_index(m, index, err);
    } else {
        st = lt_fail(err, LT_ERR_IO, "%s: neither model.safetensors nor model.safetensors.index.json found", dir);
    }
    if (st != LT_OK) {
        lt_st_close_model(m);
        return st;
    }
    *out = m;
    return LT_OK;
}

size_t lt_st_model_count(const lt_st_model *m) { return m->n; }
const lt_st_tensor *lt_st_model_get(const lt_st_model *m, size_t i) { return i < m->n ? m->t[i] : NULL; }

const lt_st_tensor *lt_st_model_find(const lt_st_model *m, const char *name) {
    size_t lo = 0, hi = m->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(m->by_name[mid]->name, name);
        if (c == 0) return m->by_name[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* ---- conversion ---- */

/* elements [off, off + n) of t into dst (f32), the range already checked */
static lt_status convert_f32(const lt_st_tensor *t, size_t off, size_t n, float *dst, lt_err *err) {
    const unsigned char *p = (const unsigned char *)t->data + off * lt_dtype_size(t->dtype); /* may be unaligned: memcpy */
    switch (t->dtype) {
    case LT_F32:
        if (n) memcpy(dst, p, n * 4);
        return LT_OK;
    case LT_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = lt_bf16_to_f32(h);
        }
        return LT_OK;
    case LT_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = lt_f16_to_f32(h);
        }
        return LT_OK;
    case LT_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            dst[i] = (float)d;
        }
        return LT_OK;
    default:
        return lt_fail(err, LT_ERR_UNSUPPORTED,
                       "%s: tensor '%s': dtype %s cannot be read as floating point (expected F32, BF16, F16 or F64)",
                       t->file, t->name, lt_dtype_name(t->dtype));
    }
}

lt_status lt_st_to_f32(const lt_st_tensor *t, float *dst, size_t n, lt_err *err) {
    if (n != t->numel)
        return lt_fail(err, LT_ERR_INVALID, "%s: tensor '%s': has %zu elements but the destination holds %zu",
                       t->file, t->name, t->numel, n);
    return convert_f32(t, 0, n, dst, err);
}

void lt_st_drop_pages(const void *p, size_t bytes) {
    long pg = sysconf(_SC_PAGESIZE);
    if (pg <= 0 || !bytes) return;
    uintptr_t a = (uintptr_t)p, b = a + bytes;
    a = (a + (uintptr_t)pg - 1) / (uintptr_t)pg * (uintptr_t)pg;
    b = b / (uintptr_t)pg * (uintptr_t)pg;
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

lt_status lt_st_read_f32(const lt_st_tensor *t, size_t off, size_t len, float *dst, lt_err *err) {
    if (off > t->numel || len > t->numel - off)
        return lt_fail(err, LT_ERR_RANGE, "%s: tensor '%s': elements [%zu, %zu) asked for, it has %zu", t->file,
                       t->name, off, off + len, t->numel);
    lt_status st = convert_f32(t, off, len, dst, err);
    if (!st) lt_st_drop_pages((const char *)t->data + off * lt_dtype_size(t->dtype), len * lt_dtype_size(t->dtype));
    return st;
}

lt_status lt_st_model_load_f32(const lt_st_model *m, const char *name, int ndim, const int64_t *shape, float *dst,
                               lt_err *err) {
    const lt_st_tensor *t = lt_st_model_find(m, name);
    if (!t) return lt_fail(err, LT_ERR_FORMAT, "%s: tensor '%s' not found in the checkpoint", m->dir, name);
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (!same) {
        char got[256], want[256];
        lt_st_shape_str(got, sizeof got, t->ndim, t->shape);
        lt_st_shape_str(want, sizeof want, ndim, shape);
        return lt_fail(err, LT_ERR_FORMAT, "%s: tensor '%s': shape %s but expected %s", t->file, name, got, want);
    }
    return lt_st_to_f32(t, dst, t->numel, err);
}

/* ---- writing ---- */

typedef struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }
static void sb_fmt_u64(sbuf *b, uint64_t v) {
    char tmp[32];
    int k = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
    sb_put(b, tmp, (size_t)k);
}
/* JSON string literal with escapes */
static void sb_json_str(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char tmp[8];
        if (*p == '"' || *p == '\\') {
            tmp[0] = '\\';
            tmp[1] = (char)*p;
            sb_put(b, tmp, 2);
        } else if (*p < 0x20) {
            snprintf(tmp, sizeof tmp, "\\u%04x", *p);
            sb_put(b, tmp, 6);
        } else {
            sb_put(b, (const char *)p, 1);
        }
    }
    sb_put(b, "\"", 1);
}

static lt_status write_all(int fd, const void *data, size_t len, const char *tmp, lt_err *err) {
    const char *p = data;
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR) continue;
            return lt_fail(err, LT_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
        }
        p += w;
        len -= (size_t)w;
    }
    return LT_OK;
}

static lt_status data_of(void *ctx, size_t i, const void **bytes, lt_err *err) {
    (void)err;
    *bytes = ((const lt_st_write_tensor *)ctx)[i].data;
    return LT_OK;
}

lt_status lt_st_write(const char *path, const lt_st_write_tensor *tensors, size_t n, const char *const *meta_keys,
                      const char *const *meta_values, size_t n_meta, lt_err *err) {
    return lt_st_write_stream(path, tensors, n, meta_keys, meta_values, n_meta, data_of, (void *)tensors, err);
}

lt_status lt_st_write_stream(const char *path, const lt_st_write_tensor *tensors, size_t n,
                             const char *const *meta_keys, const char *const *meta_values, size_t n_meta,
                             lt_st_data_fn data, void *ctx, lt_err *err) {
    const int given = data == data_of; /* the tensors' own data: checked up front */
    size_t *nbytes = malloc((n ? n : 1) * sizeof *nbytes);
    if (!nbytes) return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", path);
    lt_status st = LT_OK;
    /* check the inputs before creating anything */
    for (size_t i = 0; i < n && st == LT_OK; i++) {
        const lt_st_write_tensor *w = &tensors[i];
        if (!w->name || !*w->name || strcmp(w->name, "__metadata__") == 0)
            st = lt_fail(err, LT_ERR_INVALID, "%s: tensor %zu: invalid name '%s'", path, i, w->name ? w->name : "");
        else if ((unsigned)w->dtype >= LT_DTYPE_COUNT)
            st = lt_fail(err, LT_ERR_INVALID, "%s: tensor '%s': invalid dtype %d", path, w->name, (int)w->dtype);
        else if (w->ndim < 0 || w->ndim > LT_ST_MAX_DIMS)
            st = lt_fail(err, LT_ERR_INVALID, "%s: tensor '%s': ndim %d out of [0, %d]", path, w->name, w->ndim,
                         LT_ST_MAX_DIMS);
        if (st != LT_OK) break;
        size_t numel = 1;
        for (int d = 0; d < w->ndim && st == LT_OK; d++) {
            if (w->shape[d] < 0 || (uint64_t)w->shape[d] > SIZE_MAX || !lt_mul_ok(numel, (size_t)w->shape[d], &numel))
                st = lt_fail(err, LT_ERR_INVALID, "%s: tensor '%s': bad shape[%d] = %lld", path, w->name, d,
                             (long long)w->shape[d]);
        }
        if (st == LT_OK && !lt_mul_ok(numel, lt_dtype_size(w->dtype), &nbytes[i]))
            st = lt_fail(err, LT_ERR_INVALID, "%s: tensor '%s': byte size overflows", path, w->name);
        if (st == LT_OK && given && nbytes[i] && !w->data)
            st = lt_fail(err, LT_ERR_INVALID, "%s: tensor '%s': data is NULL", path, w->name);
        for (size_t j = 0; j < i && st == LT_OK; j++)
            if (strcmp(tensors[j].name, w->name) == 0)
                st = lt_fail(err, LT_ERR_INVALID, "%s: tensor '%s' given twice", path, w->name);
    }
    for (size_t i = 0; i < n_meta && st == LT_OK; i++)
        if (!meta_keys[i] || !meta_values[i])
            st = lt_fail(err, LT_ERR_INVALID, "%s: metadata entry %zu is NULL", path, i);
    if (st != LT_OK) {
        free(nbytes);
        return st;
    }

    sbuf h = {0};
    sb_str(&h, "{");
    if (n_meta) {
        sb_str(&h, "\"__metadata__\":{");
        for (size_t i = 0; i < n_meta; i++) {
            if (i) sb_str(&h, ",");
            sb_json_str(&h, meta_keys[i]);
            sb_str(&h, ":");
            sb_json_str(&h, meta_values[i]);
        }
        sb_str(&h, "}");
    }
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const lt_st_write_tensor *w = &tensors[i];
        if (i || n_meta) sb_str(&h, ",");
        sb_json_str(&h, w->name);
        sb_str(&h, ":{\"dtype\":");
        sb_json_str(&h, lt_dtype_name(w->dtype));
        sb_str(&h, ",\"shape\":[");
        for (int d = 0; d < w->ndim; d++) {
            if (d) sb_str(&h, ",");
            sb_fmt_u64(&h, (uint64_t)w->shape[d]);
        }
        sb_str(&h, "],\"data_offsets\":[");
        sb_fmt_u64(&h, off);
        sb_str(&h, ",");
        off += nbytes[i];
        sb_fmt_u64(&h, off);
        sb_str(&h, "]}");
    }
    sb_str(&h, "}");
    while (h.n % 8) sb_str(&h, " "); /* pad so the data section starts 8-aligned */
    if (h.oom) {
        free(h.p);
        free(nbytes);
        return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory building the header", path);
    }

    char tmp[4096], tag[128];
    lt_tmp_tag(tag, sizeof tag);
    if (snprintf(tmp, sizeof tmp, "%s.tmp-%s", path, tag) >= (int)sizeof tmp) {
        free(h.p);
        free(nbytes);
        return lt_fail(err, LT_ERR_INVALID, "%s: path too long", path);
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        st = lt_fail(err, LT_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        free(h.p);
        free(nbytes);
        return st;
    }
    unsigned char len8[8];
    uint64_t hl = h.n;
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)(hl >> (8 * i));
    st = write_all(fd, len8, 8, tmp, err);
    if (st == LT_OK) st = write_all(fd, h.p, h.n, tmp, err);
    for (size_t i = 0; i < n && st == LT_OK; i++) {
        const void *bytes = NULL;
        if (nbytes[i]) st = data(ctx, i, &bytes, err);
        if (st == LT_OK && nbytes[i] && !bytes)
            st = lt_fail(err, LT_ERR_INVALID, "%s: tensor '%s': no data", path, tensors[i].name);
        if (st == LT_OK) st = write_all(fd, bytes, nbytes[i], tmp, err);
    }
    if (st == LT_OK && !given) { /* every tensor written: the caller's word before the sync */
        const void *none = NULL;
        st = data(ctx, n, &none, err);
    }
    free(h.p);
    free(nbytes);
    if (st == LT_OK && fsync(fd) != 0) st = lt_fail(err, LT_ERR_IO, "%s: fsync failed: %s", tmp, strerror(errno));
    if (close(fd) != 0 && st == LT_OK) st = lt_fail(err, LT_ERR_IO, "%s: close failed: %s", tmp, strerror(errno));
    if (st == LT_OK && rename(tmp, path) != 0)
        st = lt_fail(err, LT_ERR_IO, "%s: rename from %s failed: %s", path, tmp, strerror(errno));
    if (st != LT_OK) unlink(tmp);
    else lt_fsync_parent(path);
    return st;
}
