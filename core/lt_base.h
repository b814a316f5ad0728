/*
 * lt_base.h -- what every luxtrain module shares: status codes, the error
 * message buffer, element types, bf16/f16 conversion and small helpers.
 *
 * Conventions (all modules):
 *   - Every fallible function returns lt_status and takes an `lt_err *err`
 *     as its last argument. On failure it fills err->msg with a sentence that
 *     names the file / tensor / field / line and what was expected, e.g.
 *       "model.safetensors: tensor 'lm_head.weight': shape [10, 8] but
 *        expected [12, 8]"
 *     err may be NULL (the message is then dropped).
 *   - Library code never calls exit() or abort() on bad input.
 *   - Names are prefixed lt_<module>_; everything a module does not export
 *     is static.
 */
#ifndef LT_BASE_H
#define LT_BASE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    LT_OK = 0,
    LT_ERR_IO,          /* open/read/write/rename failed */
    LT_ERR_FORMAT,      /* a file is malformed (header, JSON, HDF5 layout) */
    LT_ERR_INVALID,     /* bad argument / option / config value */
    LT_ERR_UNSUPPORTED, /* valid, but a feature we refuse to approximate */
    LT_ERR_NOMEM,       /* allocation failed or a size overflowed */
    LT_ERR_RANGE,       /* an index / token id / size out of range */
    LT_ERR_BACKEND,     /* a device / library call failed */
    LT_ERR_NONFINITE,   /* NaN or Inf where a finite value is required */
} lt_status;

#define LT_ERR_MSG_MAX 1024
typedef struct lt_err {
    char msg[LT_ERR_MSG_MAX];
} lt_err;

/* Fill err (if not NULL) with a printf-style message; returns `st`. */
lt_status lt_fail(lt_err *err, lt_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* Prepend "prefix: " to an existing message (adds context on the way up). */
lt_status lt_wrap(lt_err *err, lt_status st, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
const char *lt_status_name(lt_status st);

/* ---- element types ---- */
typedef enum {
    LT_F32 = 0,
    LT_BF16,
    LT_F16,
    LT_I32,
    LT_I64,
    LT_U8,
    LT_F64,  /* safetensors metadata-ish tensors; not used by the runtime */
    LT_BOOL, /* 1 byte per element */
    LT_DTYPE_COUNT
} lt_dtype;

size_t lt_dtype_size(lt_dtype t);
const char *lt_dtype_name(lt_dtype t); /* safetensors spelling: "F32", "BF16", ... */

/* bf16 <-> f32 (round to nearest even; NaN stays NaN) */
static inline float lt_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline uint16_t lt_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}
float lt_f16_to_f32(uint16_t h);
uint16_t lt_f32_to_f16(float f);

/* ---- checked size arithmetic: return 0 on overflow ---- */
static inline int lt_mul_ok(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return 0;
    *out = a * b;
    return 1;
}
static inline int lt_add_ok(size_t a, size_t b, size_t *out) {
    if (b > SIZE_MAX - a) return 0;
    *out = a + b;
    return 1;
}

/* ---- small utilities ---- */
/* Read a whole file into a malloc'd, NUL-terminated buffer. */
lt_status lt_read_file(const char *path, char **data, size_t *len, lt_err *err);
/* Temporary names end in "-<host>-<pid>" (e.g. "final.tmp-node7-4242"), so a
 * folder on a file system shared by several machines is cleaned only by the
 * machine that can tell whether the writer still runs (train/lt_fs.h
 * lt_fs_tmp_owner). lt_tmp_tag writes this process's "<host>-<pid>"; <host>
 * is gethostname() with every character outside [A-Za-z0-9_.] ('-' included)
 * replaced by '_'. */
void lt_tmp_tag(char *out, size_t cap);
/* Write `len` bytes to path atomically: path.tmp-<host>-<pid>, fsync, rename. */
lt_status lt_write_file_atomic(const char *path, const void *data, size_t len, lt_err *err);
/* fsync the folder holding `path` (best effort), so a rename into it is durable. */
void lt_fsync_parent(const char *path);
/* Join dir and name into out (size cap); returns 0 if it did not fit. */
int lt_path_join(char *out, size_t cap, const char *dir, const char *name);
int lt_file_exists(const char *path);
/* malloc'd copy of s (NULL if out of memory); 1 if s ends with suffix */
char *lt_strdup(const char *s);
int lt_str_ends_with(const char *s, const char *suffix);
int lt_is_dir(const char *path);
double lt_now_s(void); /* monotonic seconds */
/* This process's peak resident set size so far, KiB (getrusage's ru_maxrss:
 * Linux's VmHWM of /proc/self/status); -1 if unknown. */
long lt_peak_rss_kib(void);

/* Deterministic RNG (xoshiro256**-style; same sequence on every platform). */
typedef struct lt_rng {
    uint64_t s[4];
} lt_rng;
void lt_rng_seed(lt_rng *r, uint64_t seed);
uint64_t lt_rng_u64(lt_rng *r);
float lt_rng_uniform(lt_rng *r); /* [0, 1) */
float lt_rng_normal(lt_rng *r);  /* N(0, 1) */

#ifdef __cplusplus
}
#endif
#endif
