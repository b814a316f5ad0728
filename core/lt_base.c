/* lt_base.c -- status messages, dtype table, f16 conversion, file helpers, RNG. */
#define _POSIX_C_SOURCE 200809L
#include "lt_base.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

lt_status lt_fail(lt_err *err, lt_status st, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return st;
}

lt_status lt_wrap(lt_err *err, lt_status st, const char *fmt, ...) {
    if (err) {
        char buf[2 * LT_ERR_MSG_MAX + 2];
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(buf, LT_ERR_MSG_MAX, fmt, ap);
        va_end(ap);
        if (n < 0) n = 0;
        if (n > LT_ERR_MSG_MAX - 1) n = LT_ERR_MSG_MAX - 1;
        buf[n++] = ':';
        buf[n++] = ' ';
        size_t old_len = strnlen(err->msg, LT_ERR_MSG_MAX - 1);
        memcpy(buf + n, err->msg, old_len);
        buf[(size_t)n + old_len] = 0;
        memcpy(err->msg, buf, LT_ERR_MSG_MAX - 1);
        err->msg[LT_ERR_MSG_MAX - 1] = 0;
    }
    return st;
}

const char *lt_status_name(lt_status st) {
    switch (st) {
    case LT_OK: return "ok";
    case LT_ERR_IO: return "I/O error";
    case LT_ERR_FORMAT: return "format error";
    case LT_ERR_INVALID: return "invalid argument";
    case LT_ERR_UNSUPPORTED: return "unsupported";
    case LT_ERR_NOMEM: return "out of memory";
    case LT_ERR_RANGE: return "out of range";
    case LT_ERR_BACKEND: return "backend error";
    case LT_ERR_NONFINITE: return "non-finite value";
    }
    return "unknown status";
}

static const struct {
    const char *name;
    size_t size;
} dtype_info[LT_DTYPE_COUNT] = {
    [LT_F32] = {"F32", 4}, [LT_BF16] = {"BF16", 2}, [LT_F16] = {"F16", 2},
    [LT_I32] = {"I32", 4}, [LT_I64] = {"I64", 8},   [LT_U8] = {"U8", 1},
    [LT_F64] = {"F64", 8}, [LT_BOOL] = {"BOOL", 1},
};

size_t lt_dtype_size(lt_dtype t) { return (unsigned)t < LT_DTYPE_COUNT ? dtype_info[t].size : 0; }
const char *lt_dtype_name(lt_dtype t) { return (unsigned)t < LT_DTYPE_COUNT ? dtype_info[t].name : "?"; }

float lt_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal: value = man * 2^-24 */
            float f = (float)man * 5.9604644775390625e-8f;
            return sign ? -f : f;
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 112) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t lt_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u);
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* overflow -> inf */
    if (a < 0x38800000u) {                                    /* subnormal or zero */
        float af;
        memcpy(&af, &a, 4);
        return (uint16_t)(sign | (uint32_t)lrintf(af * 16777216.0f));
    }
    uint32_t r = a + 0xfffu + ((a >> 13) & 1u) - (112u << 23);
    return (uint16_t)(sign | (r >> 13));
}

lt_status lt_read_file(const char *path, char **data, size_t *len, lt_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) return lt_fail(err, LT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0) {
        fclose(f);
        return lt_fail(err, LT_ERR_IO, "%s: cannot seek", path);
    }
    long n = ftell(f);
    if (n < 0) {
        fclose(f);
        return lt_fail(err, LT_ERR_IO, "%s: cannot tell size", path);
    }
    rewind(f);
    char *buf = malloc((size_t)n + 1);
    if (!buf) {
        fclose(f);
        return lt_fail(err, LT_ERR_NOMEM, "%s: cannot allocate %ld bytes", path, n);
    }
    if (n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        fclose(f);
        return lt_fail(err, LT_ERR_IO, "%s: short read", path);
    }
    fclose(f);
    buf[n] = 0;
    *data = buf;
    if (len) *len = (size_t)n;
    return LT_OK;
}

void lt_tmp_tag(char *out, size_t cap) {
    char host[256] = "";
    if (gethostname(host, sizeof host - 1) != 0 || !host[0]) snprintf(host, sizeof host, "localhost");
    host[64] = 0;
    for (char *c = host; *c; c++)
        if (!isalnum((unsigned char)*c) && *c != '_' && *c != '.') *c = '_';
    snprintf(out, cap, "%s-%ld", host, (long)getpid());
}

lt_status lt_write_file_atomic(const char *path, const void *data, size_t len, lt_err *err) {
    char tmp[4096], tag[128];
    lt_tmp_tag(tag, sizeof tag);
    if (snprintf(tmp, sizeof tmp, "%s.tmp-%s", path, tag) >= (int)sizeof tmp)
        return lt_fail(err, LT_ERR_INVALID, "%s: path too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return lt_fail(err, LT_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    const char *p = data;
    size_t left = len;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            close(fd);
            unlink(tmp);
            return lt_fail(err, LT_ERR_IO, "%s: write failed: %s", tmp, strerror(e));
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        unlink(tmp);
        return lt_fail(err, LT_ERR_IO, "%s: sync/close failed: %s", tmp, strerror(errno));
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return lt_fail(err, LT_ERR_IO, "%s: rename from %s failed: %s", path, tmp, strerror(e));
    }
    lt_fsync_parent(path);
    return LT_OK;
}

void lt_fsync_parent(const char *path) {
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (!slash) {
        snprintf(dir, sizeof dir, ".");
    } else {
        size_t n = (size_t)(slash - path);
        if (n == 0) n = 1; /* "/file" -> "/" */
        if (n >= sizeof dir) return;
        memcpy(dir, path, n);
        dir[n] = 0;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        (void)fsync(fd); /* best effort: makes the rename itself durable */
        close(fd);
    }
}

int lt_path_join(char *out, size_t cap, const char *dir, const char *name) {
    size_t n = strlen(dir);
    int r = (n && dir[n - 1] == '/') ? snprintf(out, cap, "%s%s", dir, name)
                                     : snprintf(out, cap, "%s/%s", dir, name);
    return r >= 0 && (size_t)r < cap;
}

char *lt_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

int lt_str_ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

int lt_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int lt_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

double lt_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

long lt_peak_rss_kib(void) {
    struct rusage u;
    return getrusage(RUSAGE_SELF, &u) ? -1 : u.ru_maxrss;
}

/* splitmix64 to expand the seed, xoshiro256** for the stream */
static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void lt_rng_seed(lt_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t lt_rng_u64(lt_rng *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

float lt_rng_uniform(lt_rng *r) { return (float)(lt_rng_u64(r) >> 40) * (1.0f / 16777216.0f); }

float lt_rng_normal(lt_rng *r) {
    /* Box-Muller; u1 in (0, 1] so log is finite */
    float u1 = 1.0f - lt_rng_uniform(r), u2 = lt_rng_uniform(r);
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853071795864f * u2);
}
