/*
 * lt_safetensors.h -- reading and writing safetensors files, and opening a
 * Hugging Face model folder (model.safetensors, or shards listed in
 * model.safetensors.index.json).
 *
 * Validation on open follows the reference implementation: 8-byte little-endian
 * header length <= 100 MB and within the file, header is JSON starting with
 * '{', every entry has a known dtype, a shape and data_offsets [begin, end]
 * with end - begin == prod(shape) * dtype size (overflow-checked), the ranges
 * tile the data section exactly (no holes, no overlaps, sorted by begin they
 * cover [0, data_len)), no duplicate names, and the file length equals
 * 8 + header length + data length. "__metadata__" is a string->string map.
 * Files are memory-mapped read-only; only the pages read become resident
 * (lt_st_read_f32 drops them again).
 *
 * The header's JSON is read with the reference's grammar (serde_json, see
 * lt_json_check_strict): invalid UTF-8, raw control characters in strings,
 * control bytes as whitespace, leading zeros, and integers written as 8.0,
 * 8e0 or -0 are refused as the `safetensors` crate refuses them.
 * Deliberately stricter than the reference: integers (shape, offsets) must be
 * below 2^53 (the reference takes any u64/usize); a tensor name or a
 * "__metadata__" key given twice is refused, whatever the reference's map
 * makes of it; dtypes luxtrain cannot compute with are refused by name; at most
 * LT_ST_MAX_DIMS dimensions.
 */
#ifndef LT_SAFETENSORS_H
#define LT_SAFETENSORS_H

#include "lt_base.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LT_ST_MAX_DIMS 8

typedef struct lt_st_tensor {
    char *name;
    lt_dtype dtype;
    int ndim;
    int64_t shape[LT_ST_MAX_DIMS];
    size_t numel;
    const void *data; /* into the mapping */
    size_t nbytes;
    const char *file; /* path of the file holding it */
} lt_st_tensor;

typedef struct lt_st_file lt_st_file;

lt_status lt_st_open(const char *path, lt_st_file **out, lt_err *err);
void lt_st_close(lt_st_file *f);
size_t lt_st_count(const lt_st_file *f);
const lt_st_tensor *lt_st_get(const lt_st_file *f, size_t i);
const lt_st_tensor *lt_st_find(const lt_st_file *f, const char *name);
/* value of a __metadata__ key, or NULL */
const char *lt_st_metadata(const lt_st_file *f, const char *key);

/* A model folder: one file or an index of shards. */
typedef struct lt_st_model lt_st_model;
lt_status lt_st_open_model(const char *dir, lt_st_model **out, lt_err *err);
void lt_st_close_model(lt_st_model *m);
size_t lt_st_model_count(const lt_st_model *m);
const lt_st_tensor *lt_st_model_get(const lt_st_model *m, size_t i);
const lt_st_tensor *lt_st_model_find(const lt_st_model *m, const char *name);
/* Read a model's tensors under other names: a tensor whose name starts with
 * ren[k].file is seen (count, get, find) as ren[k].view + the rest of its
 * name; one under a prefix in `aside` (NULL-terminated, may be NULL) is set
 * aside: no longer counted or found, listed by lt_st_model_aside under its
 * file name. Others keep their names. Once per model; two tensors read
 * under one name are refused. */
typedef struct lt_st_rename {
    const char *file, *view;
} lt_st_rename;
lt_status lt_st_model_rename(lt_st_model *m, const lt_st_rename *ren, size_t nren, const char *const *aside,
                             lt_err *err);
size_t lt_st_model_aside_count(const lt_st_model *m);
const lt_st_tensor *lt_st_model_aside(const lt_st_model *m, size_t i);

/* Copy a tensor into host f32 (converting BF16/F16), n must equal numel. */
lt_status lt_st_to_f32(const lt_st_tensor *t, float *dst, size_t n, lt_err *err);
/* Elements [off, off + len) of a tensor into host f32 (converted as
 * lt_st_to_f32), reading only those bytes of the mapping; the whole pages of
 * the range are then dropped from this process's resident memory
 * (lt_st_drop_pages), so a file read range by range never holds more than a
 * range (and a page at either end) resident. LT_ERR_RANGE outside the tensor. */
lt_status lt_st_read_f32(const lt_st_tensor *t, size_t off, size_t len, float *dst, lt_err *err);
/* Drop the whole pages inside [p, p + bytes) of a read-only file mapping from
 * the resident memory (madvise MADV_DONTNEED; a later read faults them in
 * from the file again). */
void lt_st_drop_pages(const void *p, size_t bytes);
/* Find `name`, check its shape equals shape[0..ndim), convert into dst.
 * Errors name the file and tensor: missing, wrong shape, unsupported dtype. */
lt_status lt_st_model_load_f32(const lt_st_model *m, const char *name, int ndim, const int64_t *shape,
                               float *dst, lt_err *err);

/* shape[0..ndim) as "[2, 3]" for error messages, cut to fit cap bytes. */
void lt_st_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape);

/* Writing: tensors given as host data of the stated dtype. Written to a
 * temporary file and renamed into place. Metadata pairs may be NULL. */
typedef struct lt_st_write_tensor {
    const char *name;
    lt_dtype dtype;
    int ndim;
    int64_t shape[LT_ST_MAX_DIMS];
    const void *data;
} lt_st_write_tensor;
lt_status lt_st_write(const char *path, const lt_st_write_tensor *tensors, size_t n, const char *const *meta_keys,
                      const char *const *meta_values, size_t n_meta, lt_err *err);
/* The same file, the data of tensor i asked for when it is written (in
 * order, once each; tensors[i].data unused): data(ctx, i, &bytes, err) points
 * bytes at its nbytes, valid until the next call, or fails (the file is then
 * not created). Lets a writer hold one tensor at a time. Once every tensor is
 * written, data is called once more with i = n (bytes unused) before the
 * file is synced (fsync, long for a large file): a writer reporting progress
 * can say so; a failure there still leaves no file. */
typedef lt_status (*lt_st_data_fn)(void *ctx, size_t i, const void **bytes, lt_err *err);
lt_status lt_st_write_stream(const char *path, const lt_st_write_tensor *tensors, size_t n,
                             const char *const *meta_keys, const char *const *meta_values, size_t n_meta,
                             lt_st_data_fn data, void *ctx, lt_err *err);

#ifdef __cplusplus
}
#endif
#endif
