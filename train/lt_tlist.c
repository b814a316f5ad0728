/* lt_tlist.c -- see lt_tlist.h */
#define _POSIX_C_SOURCE 200809L
#include "lt_tlist.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void lt_tlist_init(lt_tlist *l) { memset(l, 0, sizeof *l); }

void lt_tlist_free(lt_tlist *l) {
    if (!l) return;
    for (size_t i = 0; i < l->n; i++) {
        free(l->items[i].name);
        free(l->items[i].data);
    }
    free(l->items);
    memset(l, 0, sizeof *l);
}

const lt_tlist_item *lt_tlist_find(const lt_tlist *l, const char *name) {
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->items[i].name, name)) return &l->items[i];
    return NULL;
}

static lt_status tl_new(lt_tlist *l, const char *name, lt_dtype dt, int ndim, const int64_t *shape, void **out,
                        lt_err *err) {
    *out = NULL;
    if (!name || !*name) return lt_fail(err, LT_ERR_INVALID, "tensor list: empty tensor name");
    if (ndim < 0 || ndim > LT_ST_MAX_DIMS || lt_dtype_size(dt) == 0) {
        return lt_fail(err, LT_ERR_INVALID, "tensor '%s': bad rank %d or dtype", name, ndim);
    }
    if (lt_tlist_find(l, name)) {
        return lt_fail(err, LT_ERR_INVALID, "tensor '%s' added twice", name);
    }
    size_t numel = 1, bytes;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0 || !lt_mul_ok(numel, (size_t)shape[d], &numel)) {
            return lt_fail(err, LT_ERR_INVALID, "tensor '%s': bad dimension %d (%lld)", name, d, (long long)shape[d]);
        }
    }
    if (!lt_mul_ok(numel, lt_dtype_size(dt), &bytes)) {
        return lt_fail(err, LT_ERR_NOMEM, "tensor '%s': size overflows", name);
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        lt_tlist_item *it = realloc(l->items, cap * sizeof *it);
        if (!it) {
            return lt_fail(err, LT_ERR_NOMEM, "tensor list: cannot grow to %zu entries", cap);
        }
        l->items = it;
        l->cap = cap;
    }
    lt_tlist_item *it = &l->items[l->n];
    memset(it, 0, sizeof *it);
    it->name = strdup(name);
    it->data = calloc(bytes ? bytes : 1, 1);
    if (!it->name || !it->data) {
        free(it->name);
        free(it->data);
        return lt_fail(err, LT_ERR_NOMEM, "tensor '%s': cannot allocate %zu bytes", name, bytes);
    }
    it->dtype = dt;
    it->ndim = ndim;
    for (int d = 0; d < ndim; d++) it->shape[d] = shape[d];
    it->numel = numel;
    l->n++;
    *out = it->data;
    return LT_OK;
}

void *lt_tlist_new(lt_tlist *l, const char *name, lt_dtype dt, int ndim, const int64_t *shape, lt_err *err) {
    void *p;
    return tl_new(l, name, dt, ndim, shape, &p, err) == LT_OK ? p : NULL;
}

lt_status lt_tlist_add(lt_tlist *l, const char *name, lt_dtype dt, int ndim, const int64_t *shape,
                       const void *data, lt_err *err) {
    void *p;
    lt_status st = tl_new(l, name, dt, ndim, shape, &p, err);
    if (st != LT_OK) return st;
    memcpy(p, data, l->items[l->n - 1].numel * lt_dtype_size(dt));
    return LT_OK;
}

static float elem_f32(const void *data, lt_dtype dt, size_t i) {
    switch (dt) {
    case LT_F32: return ((const float *)data)[i];
    case LT_BF16: return lt_bf16_to_f32(((const uint16_t *)data)[i]);
    case LT_F16: return lt_f16_to_f32(((const uint16_t *)data)[i]);
    case LT_F64: return (float)((const double *)data)[i];
    default: return 0.0f;
    }
}

lt_status lt_tlist_check_finite(const lt_tlist *l, const char *what, lt_err *err) {
    for (size_t t = 0; t < l->n; t++) {
        const lt_tlist_item *it = &l->items[t];
        if (it->dtype != LT_F32 && it->dtype != LT_BF16 && it->dtype != LT_F16 && it->dtype != LT_F64) continue;
        for (size_t i = 0; i < it->numel; i++) {
            float x = elem_f32(it->data, it->dtype, i);
            if (!isfinite(x))
                return lt_fail(err, LT_ERR_NONFINITE, "%s: tensor '%s' holds %s at element %zu of %zu", what,
                               it->name, isnan(x) ? "NaN" : "Inf", i, it->numel);
        }
    }
    return LT_OK;
}

lt_status lt_tlist_write(const lt_tlist *l, const char *path, const char *const *meta_keys,
                         const char *const *meta_values, size_t n_meta, lt_err *err) {
    lt_st_write_tensor *ts = calloc(l->n ? l->n : 1, sizeof *ts);
    if (!ts) return lt_fail(err, LT_ERR_NOMEM, "%s: cannot allocate the tensor table", path);
    for (size_t i = 0; i < l->n; i++) {
        ts[i].name = l->items[i].name;
        ts[i].dtype = l->items[i].dtype;
        ts[i].ndim = l->items[i].ndim;
        memcpy(ts[i].shape, l->items[i].shape, sizeof ts[i].shape);
        ts[i].data = l->items[i].data;
    }
    lt_status st = lt_st_write(path, ts, l->n, meta_keys, meta_values, n_meta, err);
    free(ts);
    return st;
}
