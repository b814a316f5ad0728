/*
 * lt_tlist.h -- a list of named host tensors (name, dtype, shape, bytes): what
 * the trainer hands to the checkpoint writer and the exporters, and what the
 * optimizer exports as its state. The list owns its names and data.
 */
#ifndef LT_TLIST_H
#define LT_TLIST_H

#include "lt_base.h"
#include "lt_safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lt_tlist_item {
    char *name;
    lt_dtype dtype;
    int ndim;
    int64_t shape[LT_ST_MAX_DIMS];
    size_t numel;
    void *data; /* numel * lt_dtype_size(dtype) bytes, owned by the list */
} lt_tlist_item;

typedef struct lt_tlist {
    lt_tlist_item *items;
    size_t n, cap;
} lt_tlist;

/* Zero-initialized list: `lt_tlist l = {0};` is valid too. */
void lt_tlist_init(lt_tlist *l);
void lt_tlist_free(lt_tlist *l);

/* Append a tensor and return its (zeroed) data buffer to fill, or NULL on
 * failure (err says why: duplicate name, bad shape, no memory). */
void *lt_tlist_new(lt_tlist *l, const char *name, lt_dtype dt, int ndim, const int64_t *shape, lt_err *err);
/* Append a copy of `data`. */
lt_status lt_tlist_add(lt_tlist *l, const char *name, lt_dtype dt, int ndim, const int64_t *shape,
                       const void *data, lt_err *err);
const lt_tlist_item *lt_tlist_find(const lt_tlist *l, const char *name);

/* LT_ERR_NONFINITE naming `what`, the tensor and the first bad index if any
 * floating-point tensor (F32/BF16/F16/F64) holds NaN or Inf. */
lt_status lt_tlist_check_finite(const lt_tlist *l, const char *what, lt_err *err);

/* Write as one safetensors file (temporary name + rename, via lt_st_write). */
lt_status lt_tlist_write(const lt_tlist *l, const char *path, const char *const *meta_keys,
                         const char *const *meta_values, size_t n_meta, lt_err *err);

#ifdef __cplusplus
}
#endif
#endif
