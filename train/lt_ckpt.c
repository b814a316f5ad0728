/* lt_ckpt.c -- atomic training checkpoints (see lt_ckpt.h). */
#define _DEFAULT_SOURCE
#define _POSIX_C_SOURCE 200809L
#include "lt_ckpt.h"
#include "lt_comm.h"
#include "lt_fs.h"
#include "lt_json.h"
#include "lt_optim.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CKPT_FORMAT "luxtrain-checkpoint-1"
static const char *const FILES[] = {"weights.safetensors", "optimizer.safetensors", "loader.bin", "state.json"};
enum { NFILES = 4 };
#define INDEX_FILE "index.json"
#define INDEX_FORMAT "luxtrain-sharded-1"
#define SLICES_KEY "luxtrain_slices"

/* ---- helpers ---- */

/* rank: this process's rank in a sharded write, -1 otherwise */
static void test_hook_rank(int stage, int rank) {
    const char *s = getenv("LT_CKPT_TEST_KILL_AT"), *r = getenv("LT_CKPT_TEST_KILL_RANK");
    if (s && atoi(s) == stage && (!r || !*r || atoi(r) == (rank < 0 ? 0 : rank))) raise(SIGKILL);
}

static void test_hook(int stage) { test_hook_rank(stage, -1); }


/* "step-<digits>" -> step; -1 if the name is not one */
static int64_t parse_step_name(const char *name) {
    if (strncmp(name, "step-", 5) != 0 || !name[5]) return -1;
    int64_t v = 0;
    for (const char *p = name + 5; *p; p++) {
        if (*p < '0' || *p > '9' || v > (INT64_MAX - 9) / 10) return -1;
        v = v * 10 + (*p - '0');
    }
    return v;
}

/* ---- state.json ---- */

static char *state_json(const lt_ckpt_state *st, lt_err *err) {
    cJSON *r = cJSON_CreateObject();
    char hex[4][17];
    cJSON_AddStringToObject(r, "format", CKPT_FORMAT);
    cJSON_AddNumberToObject(r, "step", (double)st->step);
    cJSON_AddNumberToObject(r, "epoch", (double)st->epoch);
    cJSON_AddNumberToObject(r, "total_steps", (double)st->total_steps);
    cJSON_AddNumberToObject(r, "tokens_seen", (double)st->tokens_seen);
    if (isfinite(st->lr)) cJSON_AddItemToObject(r, "lr", lt_json_exact_number(st->lr));
    else cJSON_AddNullToObject(r, "lr");
    if (isfinite(st->loss)) cJSON_AddItemToObject(r, "loss", lt_json_exact_number(st->loss));
    else cJSON_AddNullToObject(r, "loss");
    cJSON_AddStringToObject(r, "mode", st->mode);
    cJSON_AddStringToObject(r, "options_hash", st->options_hash);
    const char *hp[4];
    for (int i = 0; i < 4; i++) {
        snprintf(hex[i], sizeof hex[i], "%016" PRIx64, st->rng.s[i]);
        hp[i] = hex[i];
    }
    cJSON_AddItemToObject(r, "rng", cJSON_CreateStringArray(hp, 4));
    cJSON_AddNumberToObject(r, "loader_bytes", (double)st->loader_len);
    if (st->extra_json) {
        cJSON *x = cJSON_Parse(st->extra_json);
        if (!x || !cJSON_IsObject(x)) {
            cJSON_Delete(x);
            cJSON_Delete(r);
            lt_fail(err, LT_ERR_INVALID, "checkpoint: extra state is not a JSON object");
            return NULL;
        }
        cJSON_AddItemToObject(r, "extra", x);
    }
    char *s = cJSON_Print(r);
    cJSON_Delete(r);
    if (!s) lt_fail(err, LT_ERR_NOMEM, "checkpoint: cannot format state.json");
    return s;
}

static lt_status write_text(const char *dir, const char *name, const char *text, lt_err *err) {
    char path[4096];
    if (!lt_path_join(path, sizeof path, dir, name)) return lt_fail(err, LT_ERR_INVALID, "%s: path too long", dir);
    return lt_write_file_atomic(path, text, strlen(text), err);
}

/* ---- writing ---- */

lt_status lt_ckpt_write(const char *run_dir, const lt_ckpt_state *st, const lt_tlist *weights,
                        const lt_tlist *optim, int keep_last, char *out_dir, size_t cap, lt_err *err) {
    lt_status s;
    if (st->step < 0) return lt_fail(err, LT_ERR_INVALID, "checkpoint: negative step %lld", (long long)st->step);
    /* never write a checkpoint holding NaN / Inf */
    if ((s = lt_tlist_check_finite(weights, "checkpoint weights", err)) != LT_OK) return s;
    if (optim && (s = lt_tlist_check_finite(optim, "checkpoint optimizer state", err)) != LT_OK) return s;

    char ckdir[4096], name[64], tmp[4096], final[4096], path[4096];
    if (!lt_path_join(ckdir, sizeof ckdir, run_dir, "checkpoints"))
        return lt_fail(err, LT_ERR_INVALID, "%s: path too long", run_dir);
    if ((s = lt_fs_mkdir_p(ckdir, err)) != LT_OK) return s;
    snprintf(name, sizeof name, "step-%06lld", (long long)st->step);
    char tname[256];
    char tag[128];
    lt_tmp_tag(tag, sizeof tag);
    snprintf(tname, sizeof tname, ".tmp-%s-%s", name, tag);
    if (!lt_path_join(tmp, sizeof tmp, ckdir, tname) || !lt_path_join(final, sizeof final, ckdir, name))
        return lt_fail(err, LT_ERR_INVALID, "%s: path too long", ckdir);
    lt_fs_rm_rf(tmp); /* a leftover of this very process (a failed earlier try) */
    if (mkdir(tmp, 0755) != 0) return lt_fail(err, LT_ERR_IO, "%s: cannot create folder: %s", tmp, strerror(errno));
    test_hook(1);

    char *sj = NULL;
    cJSON *man = cJSON_CreateObject(), *files = cJSON_AddObjectToObject(man, "files");
    cJSON_AddNumberToObject(man, "step", (double)st->step);
    for (int f = 0; f < NFILES; f++) {
        if (f == 1 && !optim) continue;
        if (!lt_path_join(path, sizeof path, tmp, FILES[f])) {
            s = lt_fail(err, LT_ERR_INVALID, "%s: path too long", tmp);
            goto fail;
        }
        switch (f) {
        case 0: s = lt_tlist_write(weights, path, NULL, NULL, 0, err); break;
        case 1: s = lt_tlist_write(optim, path, NULL, NULL, 0, err); break;
        case 2: s = lt_write_file_atomic(path, st->loader_len ? st->loader : "", st->loader_len, err); break;
        case 3:
            sj = state_json(st, err);
            s = sj ? lt_write_file_atomic(path, sj, strlen(sj), err) : LT_ERR_INVALID;
            free(sj);
            break;
        }
        if (s != LT_OK) goto fail;
        cJSON_AddNumberToObject(files, FILES[f], (double)lt_fs_file_size(path));
        test_hook(f + 2);
    }
    char *mtext = cJSON_Print(man);
    if (!mtext) {
        s = lt_fail(err, LT_ERR_NOMEM, "checkpoint: cannot format the manifest");
        goto fail;
    }
    s = write_text(tmp, "COMPLETE", mtext, err);
    free(mtext);
    if (s != LT_OK) goto fail;
    test_hook(6);
    if ((s = lt_fs_fsync_dir(tmp, err)) != LT_OK) goto fail;

    /* into place; an existing folder of the same step is replaced */
    if ((s = lt_fs_replace_dir(tmp, final, err)) != LT_OK) goto fail;
    test_hook(7);
    cJSON_Delete(man);
    if (out_dir && cap) snprintf(out_dir, cap, "%s", final);
    if (keep_last > 0) return lt_ckpt_prune(run_dir, keep_last, err);
    return LT_OK;
fail:
    cJSON_Delete(man);
    lt_fs_rm_rf(tmp);
    return lt_wrap(err, s, "checkpoint %s", final);
}

/* ---- finding ---- */

int lt_ckpt_is_complete(const char *dir) { return lt_ckpt_check(dir, NULL) == LT_OK; }

lt_status lt_ckpt_check(const char *dir, lt_err *err) {
    char path[4096], missing[256] = "", *text = NULL;
    if (!lt_is_dir(dir))
        return lt_fail(err, LT_ERR_IO, "%s: %s", dir,
                       lt_file_exists(dir) ? "not a folder (a checkpoint is RUN_DIR/checkpoints/step-N/)"
                                           : "no such checkpoint folder");
    char ipath[4096];
    int sharded = lt_path_join(ipath, sizeof ipath, dir, INDEX_FILE) && lt_file_exists(ipath);
    for (int f = 0; f < NFILES; f++) {
        if (f == 1 || (f == 0 && sharded)) continue; /* optimizer state is optional; index.json names the shards */
        if (!lt_path_join(path, sizeof path, dir, FILES[f])) return lt_fail(err, LT_ERR_INVALID, "%s: path too long", dir);
        if (!lt_file_exists(path))
            snprintf(missing + strlen(missing), sizeof missing - strlen(missing), "%s%s", missing[0] ? ", " : "",
                     FILES[f]);
    }
    lt_path_join(path, sizeof path, dir, "COMPLETE");
    int has_complete = lt_file_exists(path);
    if (missing[0] && !has_complete)
        return lt_fail(err, LT_ERR_FORMAT, "%s: not a checkpoint folder: %s missing (expected RUN_DIR/checkpoints/step-N/ "
                       "with weights.safetensors, state.json, loader.bin and COMPLETE)", dir, missing);
    if (!has_complete)
        return lt_fail(err, LT_ERR_FORMAT, "%s: incomplete checkpoint: no COMPLETE marker (it is written last; the "
                       "process stopped while writing this checkpoint)", dir);
    lt_status s = lt_read_file(path, &text, NULL, err);
    if (s != LT_OK) return s;
    cJSON *m = cJSON_Parse(text);
    free(text);
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(m, "files"), *f;
    if (!cJSON_IsObject(files)) {
        cJSON_Delete(m);
        return lt_fail(err, LT_ERR_FORMAT, "%s: the COMPLETE manifest is not {\"step\": N, \"files\": {...}}", path);
    }
    for (int k = 0; k < NFILES; k++) /* weights.safetensors (or index.json) and state.json */
        if ((k == 0 || k == 3) && !cJSON_GetObjectItemCaseSensitive(files, k == 0 && sharded ? INDEX_FILE : FILES[k])) {
            cJSON_Delete(m);
            return lt_fail(err, LT_ERR_FORMAT, "%s: the COMPLETE manifest does not list %s", path,
                           k == 0 && sharded ? INDEX_FILE : FILES[k]);
        }
    s = LT_OK;
    cJSON_ArrayForEach(f, files) {
        int64_t size = -1, have;
        char fp[4096];
        if (!lt_json_int64(f, &size) || size < 0 || !lt_path_join(fp, sizeof fp, dir, f->string)) {
            s = lt_fail(err, LT_ERR_FORMAT, "%s: bad size for %s", path, f->string);
            break;
        }
        if ((have = lt_fs_file_size(fp)) != size) {
            s = have < 0 ? lt_fail(err, LT_ERR_FORMAT, "%s: missing (listed in COMPLETE with %lld bytes)", fp,
                                   (long long)size)
                         : lt_fail(err, LT_ERR_FORMAT, "%s: %lld bytes, but COMPLETE lists %lld (damaged checkpoint)", fp,
                                   (long long)have, (long long)size);
            break;
        }
    }
    cJSON_Delete(m);
    return s;
}

lt_status lt_ckpt_find_latest(const char *run_dir, char *out_dir, size_t cap, int64_t *step, lt_err *err) {
    char ckdir[4096], path[4096];
    *step = -1;
    if (out_dir && cap) out_dir[0] = 0;
    if (!lt_path_join(ckdir, sizeof ckdir, run_dir, "checkpoints"))
        return lt_fail(err, LT_ERR_INVALID, "%s: path too long", run_dir);
    DIR *d = opendir(ckdir);
    if (!d) {
        if (errno == ENOENT) return LT_OK;
        return lt_fail(err, LT_ERR_IO, "%s: cannot list: %s", ckdir, strerror(errno));
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        int64_t s = parse_step_name(e->d_name);
        if (s < 0 || s <= *step) continue;
        if (!lt_path_join(path, sizeof path, ckdir, e->d_name) || !lt_ckpt_is_complete(path)) continue;
        *step = s;
        if (out_dir && cap) snprintf(out_dir, cap, "%s", path);
    }
    closedir(d);
    return LT_OK;
}

static int cmp_i64_desc(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

lt_status lt_ckpt_prune(const char *run_dir, int keep_last, lt_err *err) {
    char ckdir[4096], path[4096];
    if (!lt_path_join(ckdir, sizeof ckdir, run_dir, "checkpoints"))
        return lt_fail(err, LT_ERR_INVALID, "%s: path too long", run_dir);
    DIR *d = opendir(ckdir);
    if (!d) return errno == ENOENT ? LT_OK : lt_fail(err, LT_ERR_IO, "%s: cannot list: %s", ckdir, strerror(errno));
    int64_t *steps = NULL;
    size_t n = 0, capn = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strncmp(e->d_name, ".tmp-", 5) || strstr(e->d_name, ".old-")) {
            /* leftovers of a process of this host that is gone: ".tmp-step-N-<host>-<pid>" */
            if (lt_fs_pid_name_stale(e->d_name) && lt_path_join(path, sizeof path, ckdir, e->d_name))
                lt_fs_rm_rf(path);
            continue;
        }
        int64_t s = parse_step_name(e->d_name);
        if (s < 0 || !lt_path_join(path, sizeof path, ckdir, e->d_name) || !lt_ckpt_is_complete(path)) continue;
        if (n == capn) {
            capn = capn ? 2 * capn : 16;
            int64_t *t = realloc(steps, capn * sizeof *t);
            if (!t) {
                free(steps);
                closedir(d);
                return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", ckdir);
            }
            steps = t;
        }
        steps[n++] = s;
    }
    closedir(d);
    if (keep_last > 0 && n > (size_t)keep_last) {
        qsort(steps, n, sizeof *steps, cmp_i64_desc);
        for (size_t i = (size_t)keep_last; i < n; i++) {
            char name[64];
            snprintf(name, sizeof name, "step-%06lld", (long long)steps[i]);
            if (lt_path_join(path, sizeof path, ckdir, name)) lt_fs_rm_rf(path);
        }
    }
    free(steps);
    return lt_fs_fsync_dir(ckdir, err);
}

/* ---- loading ---- */

static void index_free(lt_ckpt_index *x);

void lt_ckpt_close(lt_ckpt *c) {
    if (!c) return;
    lt_st_close(c->weights);
    lt_st_close(c->optim);
    for (int k = 0; k < 2; k++) index_free(c->index[k]);
    free(c->loader_buf);
    free(c->extra_buf);
    free(c);
}

/* a non-negative integer member (lt_json_int64: nothing out of range is cast) */
static int json_i64(const cJSON *r, const char *k, int64_t *out) {
    return lt_json_int64(cJSON_GetObjectItemCaseSensitive(r, k), out) && *out >= 0;
}

static double json_num_or_nan(const cJSON *r, const char *k) {
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(r, k);
    return cJSON_IsNumber(x) ? x->valuedouble : NAN;
}

static lt_status parse_state(lt_ckpt *c, const char *path, lt_err *err) {
    char *text = NULL;
    lt_status s = lt_read_file(path, &text, NULL, err);
    if (s != LT_OK) return s;
    cJSON *r = cJSON_Parse(text);
    free(text);
    lt_ckpt_state *st = &c->state;
    int64_t loader_bytes = 0;
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(r, "format");
    if (!r || !cJSON_IsString(fmt) || strcmp(fmt->valuestring, CKPT_FORMAT) != 0) {
        cJSON_Delete(r);
        return lt_fail(err, LT_ERR_FORMAT, "%s: not a luxtrain checkpoint state (expected \"format\": \"%s\")", path,
                       CKPT_FORMAT);
    }
    if (!json_i64(r, "step", &st->step) || !json_i64(r, "epoch", &st->epoch) ||
        !json_i64(r, "total_steps", &st->total_steps) || !json_i64(r, "tokens_seen", &st->tokens_seen) ||
        !json_i64(r, "loader_bytes", &loader_bytes)) {
        cJSON_Delete(r);
        return lt_fail(err, LT_ERR_FORMAT,
                       "%s: step, epoch, total_steps, tokens_seen and loader_bytes must be integers", path);
    }
    st->lr = json_num_or_nan(r, "lr");
    st->loss = json_num_or_nan(r, "loss");
    const cJSON *mode = cJSON_GetObjectItemCaseSensitive(r, "mode"),
                *hash = cJSON_GetObjectItemCaseSensitive(r, "options_hash"),
                *rng = cJSON_GetObjectItemCaseSensitive(r, "rng");
    if (!cJSON_IsString(mode) || !cJSON_IsString(hash) || !cJSON_IsArray(rng) || cJSON_GetArraySize(rng) != 4) {
        cJSON_Delete(r);
        return lt_fail(err, LT_ERR_FORMAT, "%s: mode, options_hash (strings) and rng (4 hex strings) are required",
                       path);
    }
    snprintf(st->mode, sizeof st->mode, "%s", mode->valuestring);
    snprintf(st->options_hash, sizeof st->options_hash, "%s", hash->valuestring);
    for (int i = 0; i < 4; i++) {
        const cJSON *x = cJSON_GetArrayItem(rng, i);
        char *end = NULL;
        if (!cJSON_IsString(x) || strlen(x->valuestring) != 16 ||
            (st->rng.s[i] = strtoull(x->valuestring, &end, 16), *end)) {
            cJSON_Delete(r);
            return lt_fail(err, LT_ERR_FORMAT, "%s: rng[%d] is not 16 hex digits", path, i);
        }
    }
    const cJSON *extra = cJSON_GetObjectItemCaseSensitive(r, "extra");
    if (extra) {
        c->extra_buf = cJSON_PrintUnformatted(extra);
        st->extra_json = c->extra_buf;
    }
    st->loader_len = (size_t)loader_bytes;
    cJSON_Delete(r);
    return LT_OK;
}

static lt_status index_open(lt_ckpt *c, const char *path, lt_err *err);

lt_status lt_ckpt_open(const char *dir, lt_ckpt **out, lt_err *err) {
    *out = NULL;
    if (!lt_ckpt_is_complete(dir))
        return lt_fail(err, LT_ERR_FORMAT, "%s: not a complete checkpoint (COMPLETE manifest missing or sizes differ)",
                       dir);
    lt_ckpt *c = calloc(1, sizeof *c);
    if (!c) return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", dir);
    snprintf(c->dir, sizeof c->dir, "%s", dir);
    char path[4096];
    lt_status s = LT_OK;
    lt_path_join(path, sizeof path, dir, "state.json");
    if ((s = parse_state(c, path, err)) != LT_OK) goto fail;
    const char *base = strrchr(dir, '/');
    int64_t named = parse_step_name(base ? base + 1 : dir);
    if (named >= 0 && named != c->state.step) {
        s = lt_fail(err, LT_ERR_FORMAT, "%s: state.json says step %lld, the folder's name step %lld", dir,
                    (long long)c->state.step, (long long)named);
        goto fail;
    }
    lt_path_join(path, sizeof path, dir, "loader.bin");
    size_t len = 0;
    if ((s = lt_read_file(path, (char **)&c->loader_buf, &len, err)) != LT_OK) goto fail;
    if (len != c->state.loader_len) {
        s = lt_fail(err, LT_ERR_FORMAT, "%s: %zu bytes but state.json says %zu", path, len, c->state.loader_len);
        goto fail;
    }
    c->state.loader = c->loader_buf;
    lt_path_join(path, sizeof path, dir, INDEX_FILE);
    if (lt_file_exists(path)) {
        if ((s = index_open(c, path, err)) != LT_OK) goto fail;
    } else {
        lt_path_join(path, sizeof path, dir, "weights.safetensors");
        if ((s = lt_st_open(path, &c->weights, err)) != LT_OK) goto fail;
        lt_path_join(path, sizeof path, dir, "optimizer.safetensors");
        if (lt_file_exists(path) && (s = lt_st_open(path, &c->optim, err)) != LT_OK) goto fail;
    }
    *out = c;
    return LT_OK;
fail:
    lt_ckpt_close(c);
    return s;
}

/* ---- sharded checkpoints ---- */

typedef struct ck_slice {
    const lt_st_tensor *t; /* the 1-D entry holding elements [start, end) */
    size_t start, end;
} ck_slice;

typedef struct ck_entry {
    lt_st_tensor info; /* name (owned), F32, the whole tensor's shape; data NULL */
    ck_slice *s;
    size_t ns;
} ck_entry;

struct lt_ckpt_index {
    ck_entry *e;
    size_t n;
    lt_st_file **files;
    char **fnames;
    size_t nf;
};

static void index_free(lt_ckpt_index *x) {
    if (!x) return;
    for (size_t i = 0; i < x->n; i++) {
        free(x->e[i].info.name);
        free(x->e[i].s);
    }
    for (size_t f = 0; f < x->nf; f++) {
        lt_st_close(x->files[f]);
        free(x->fnames[f]);
    }
    free(x->e);
    free(x->files);
    free(x->fnames);
    free(x);
}

static int cmp_slice(const void *a, const void *b) {
    const ck_slice *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start ? 1 : 0;
}

/* the file `name` of the checkpoint, opened once */
static lt_status index_file(lt_ckpt_index *x, const char *dir, const char *name, lt_st_file **out, lt_err *err) {
    for (size_t f = 0; f < x->nf; f++)
        if (!strcmp(x->fnames[f], name)) {
            *out = x->files[f];
            return LT_OK;
        }
    char path[4096];
    if (!name[0] || strchr(name, '/') || !lt_path_join(path, sizeof path, dir, name))
        return lt_fail(err, LT_ERR_FORMAT, "%s/" INDEX_FILE ": bad file name '%s'", dir, name);
    lt_st_file **nf = realloc(x->files, (x->nf + 1) * sizeof *nf);
    if (nf) x->files = nf;
    char **nn = nf ? realloc(x->fnames, (x->nf + 1) * sizeof *nn) : NULL;
    if (nn) x->fnames = nn;
    if (!nf || !nn || !(x->fnames[x->nf] = strdup(name))) return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", dir);
    lt_status s = lt_st_open(path, &x->files[x->nf], err);
    if (s != LT_OK) {
        free(x->fnames[x->nf]);
        return s;
    }
    *out = x->files[x->nf++];
    return LT_OK;
}

/* does rank file `fname` (opened: f) hold tensor `name`'s slice [a, b) as index.json says
 * (an F32 entry of b - a elements)? *out: that entry */
static lt_status slice_check(const lt_st_file *f, const char *dir, const char *fname, const char *name, int64_t a,
                             int64_t b, const lt_st_tensor **out, lt_err *err) {
    const lt_st_tensor *t = lt_st_find(f, name);
    if (!t || t->dtype != LT_F32 || t->numel != (size_t)(b - a))
        return lt_fail(err, LT_ERR_FORMAT, "%s/%s: %s tensor '%s' as %lld F32 elements (" INDEX_FILE ": [%lld, %lld))",
                       dir, fname, t ? "does not hold" : "has no", name, (long long)(b - a), (long long)a,
                       (long long)b);
    *out = t;
    return LT_OK;
}

/* one kind's list of index.json: [{"name", "shape", "slices": [[file, start, end], ...]}, ...] */
static lt_status index_parse(const char *dir, const cJSON *arr, lt_ckpt_index **out, lt_err *err) {
    const char *ip = INDEX_FILE;
    lt_ckpt_index *x = calloc(1, sizeof *x);
    size_t n = (size_t)cJSON_GetArraySize(arr);
    if (!x || !(x->e = calloc(n ? n : 1, sizeof *x->e))) {
        free(x);
        return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", dir);
    }
    *out = x;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr) {
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(it, "name"),
                    *sh = cJSON_GetObjectItemCaseSensitive(it, "shape"),
                    *sl = cJSON_GetObjectItemCaseSensitive(it, "slices");
        if (!cJSON_IsString(nm) || !cJSON_IsArray(sh) || !cJSON_IsArray(sl) || cJSON_GetArraySize(sh) < 1 ||
            cJSON_GetArraySize(sh) > 2)
            return lt_fail(err, LT_ERR_FORMAT, "%s/%s: tensor %zu: expected {\"name\", \"shape\": [1 or 2 sizes], "
                           "\"slices\": [[file, start, end], ...]}", dir, ip, x->n);
        ck_entry *e = &x->e[x->n++];
        if (!(e->info.name = strdup(nm->valuestring))) return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", dir);
        e->info.dtype = LT_F32;
        e->info.ndim = cJSON_GetArraySize(sh);
        e->info.numel = 1;
        for (int d = 0; d < e->info.ndim; d++)
            if (!lt_json_int64(cJSON_GetArrayItem(sh, d), &e->info.shape[d]) || e->info.shape[d] <= 0 ||
                !lt_mul_ok(e->info.numel, (size_t)e->info.shape[d], &e->info.numel))
                return lt_fail(err, LT_ERR_FORMAT, "%s/%s: tensor '%s': bad shape", dir, ip, e->info.name);
        size_t ns = (size_t)cJSON_GetArraySize(sl);
        if (!(e->s = calloc(ns ? ns : 1, sizeof *e->s))) return lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", dir);
        const cJSON *q;
        cJSON_ArrayForEach(q, sl) {
            int64_t a = -1, b = -1;
            const cJSON *fn = cJSON_GetArrayItem(q, 0);
            if (!cJSON_IsArray(q) || cJSON_GetArraySize(q) != 3 || !cJSON_IsString(fn) ||
                !lt_json_int64(cJSON_GetArrayItem(q, 1), &a) || !lt_json_int64(cJSON_GetArrayItem(q, 2), &b) || a < 0 ||
                b <= a || (size_t)b > e->info.numel)
                return lt_fail(err, LT_ERR_FORMAT, "%s/%s: tensor '%s': a slice is not [file, start, end] with "
                               "0 <= start < end <= %zu", dir, ip, e->info.name, e->info.numel);
            lt_st_file *f;
            const lt_st_tensor *t = NULL;
            lt_status s = index_file(x, dir, fn->valuestring, &f, err);
            if (!s) s = slice_check(f, dir, fn->valuestring, e->info.name, a, b, &t, err);
            if (s != LT_OK) return s;
            e->s[e->ns++] = (ck_slice){t, (size_t)a, (size_t)b};
        }
        /* the slices cover the tensor (replicas may overlap) */
        qsort(e->s, e->ns, sizeof *e->s, cmp_slice);
        size_t cur = 0;
        for (size_t k = 0; k < e->ns && cur < e->info.numel; k++) {
            if (e->s[k].start > cur) break;
            if (e->s[k].end > cur) cur = e->s[k].end;
        }
        if (cur < e->info.numel)
            return lt_fail(err, LT_ERR_FORMAT, "%s/%s: tensor '%s': elements from %zu on are in no shard file", dir, ip,
                           e->info.name, cur);
    }
    return LT_OK;
}

static lt_status index_open(lt_ckpt *c, const char *path, lt_err *err) {
    char *text = NULL;
    lt_status s = lt_read_file(path, &text, NULL, err);
    if (s != LT_OK) return s;
    cJSON *r = cJSON_Parse(text);
    free(text);
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(r, "format"), *w = cJSON_GetObjectItemCaseSensitive(r, "weights"),
                *o = cJSON_GetObjectItemCaseSensitive(r, "optimizer");
    int64_t world = 0;
    if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, INDEX_FORMAT) || !cJSON_IsArray(w) ||
        (o && !cJSON_IsArray(o)) || !lt_json_int64(cJSON_GetObjectItemCaseSensitive(r, "world"), &world) || world < 1 ||
        world > INT32_MAX)
        s = lt_fail(err, LT_ERR_FORMAT, "%s: not a sharded checkpoint index (expected \"format\": \"" INDEX_FORMAT
                    "\", \"world\", \"weights\" and \"optimizer\" lists)", path);
    c->world = (int)world;
    if (!s) s = index_parse(c->dir, w, &c->index[0], err);
    if (!s && o) s = index_parse(c->dir, o, &c->index[1], err);
    cJSON_Delete(r);
    return s;
}

size_t lt_ckpt_count(const lt_ckpt *c, int kind) {
    if (c->world) return c->index[kind] ? c->index[kind]->n : 0;
    const lt_st_file *f = kind ? c->optim : c->weights;
    return f ? lt_st_count(f) : 0;
}

const lt_st_tensor *lt_ckpt_get(const lt_ckpt *c, int kind, size_t i) {
    if (i >= lt_ckpt_count(c, kind)) return NULL;
    return c->world ? &c->index[kind]->e[i].info : lt_st_get(kind ? c->optim : c->weights, i);
}

static const ck_entry *index_find(const lt_ckpt_index *x, const char *name) {
    for (size_t i = 0; x && i < x->n; i++)
        if (!strcmp(x->e[i].info.name, name)) return &x->e[i];
    return NULL;
}

const lt_st_tensor *lt_ckpt_find(const lt_ckpt *c, int kind, const char *name) {
    if (c->world) {
        const ck_entry *e = index_find(c->index[kind], name);
        return e ? &e->info : NULL;
    }
    const lt_st_file *f = kind ? c->optim : c->weights;
    return f ? lt_st_find(f, name) : NULL;
}

int lt_ckpt_has_optim(const lt_ckpt *c) { return c->world ? c->index[1] != NULL : c->optim != NULL; }

lt_status lt_ckpt_read(const lt_ckpt *c, int kind, const char *name, size_t start, size_t len, float *dst,
                       lt_err *err) {
    const lt_st_tensor *t = lt_ckpt_find(c, kind, name);
    if (!t) return lt_fail(err, LT_ERR_FORMAT, "checkpoint %s: tensor '%s' is missing", c->dir, name);
    if (t->dtype != LT_F32)
        return lt_fail(err, LT_ERR_FORMAT, "checkpoint %s: tensor '%s' is %s (checkpoints hold F32)", c->dir, name,
                       lt_dtype_name(t->dtype));
    if (start > t->numel || len > t->numel - start)
        return lt_fail(err, LT_ERR_RANGE, "checkpoint %s: elements [%zu, %zu) of tensor '%s' (%zu elements)", c->dir,
                       start, start + len, name, t->numel);
    if (!c->world) {
        const char *p = (const char *)t->data + start * sizeof(float);
        memcpy(dst, p, len * sizeof(float));
        lt_st_drop_pages(p, len * sizeof(float));
        return LT_OK;
    }
    const ck_entry *e = index_find(c->index[kind], name);
    for (size_t k = 0; k < e->ns; k++) { /* sorted by start; overlaps hold the same values */
        const ck_slice *s = &e->s[k];
        size_t a = s->start > start ? s->start : start, b = s->end < start + len ? s->end : start + len;
        if (a >= b) continue;
        const char *p = (const char *)s->t->data + (a - s->start) * sizeof(float);
        memcpy(dst + (a - start), p, (b - a) * sizeof(float));
        lt_st_drop_pages(p, (b - a) * sizeof(float));
    }
    return LT_OK;
}

/* tensor `name` of the checkpoint, with the optimizer's shape for it */
static lt_status check_shape(const lt_ckpt *c, int kind, const char *name, const lt_optim_part *p, lt_err *err) {
    const lt_st_tensor *t = lt_ckpt_find(c, kind, name);
    if (!t) return lt_fail(err, LT_ERR_FORMAT, "checkpoint: tensor '%s' is missing", name);
    int same = t->ndim == p->ndim;
    for (int d = 0; same && d < p->ndim; d++) same = t->shape[d] == p->shape[d];
    if (!same) {
        char s1[64], s2[64];
        lt_st_shape_str(s1, sizeof s1, t->ndim, t->shape);
        lt_st_shape_str(s2, sizeof s2, p->ndim, p->shape);
        return lt_fail(err, LT_ERR_FORMAT, "checkpoint: tensor '%s' has shape %s but expected %s", name, s1, s2);
    }
    return LT_OK;
}

lt_status lt_ckpt_load_optim(const lt_ckpt *c, lt_optim *o, lt_err *err) {
    lt_backend *be = lt_optim_backend(o);
    char name[2][512];
    lt_status st = LT_OK;
    if (!lt_ckpt_has_optim(c)) return lt_fail(err, LT_ERR_FORMAT, "%s: has no optimizer state", c->dir);
    for (size_t i = 0; i < lt_optim_count(o) && !st; i++) {
        lt_optim_part p;
        lt_optim_part_of(o, i, &p);
        snprintf(name[0], sizeof name[0], "%s.exp_avg", p.name);
        snprintf(name[1], sizeof name[1], "%s.exp_avg_sq", p.name);
        if ((st = check_shape(c, LT_CKPT_WEIGHTS, p.name, &p, err)) ||
            (st = check_shape(c, LT_CKPT_OPTIM, name[0], &p, err)) ||
            (st = check_shape(c, LT_CKPT_OPTIM, name[1], &p, err)))
            break;
        size_t mx = p.param_len > p.len ? p.param_len : p.len;
        float *host = malloc((mx ? mx : 1) * sizeof *host);
        if (!host) return lt_fail(err, LT_ERR_NOMEM, "checkpoint: cannot stage '%s'", p.name);
        /* the parameter as held here, then the optimizer's part: master weights, m, v */
        st = lt_ckpt_read(c, LT_CKPT_WEIGHTS, p.name, p.param_off, p.param_len, host, err);
        if (!st && p.param_len) st = be->upload_f32(be, p.param, p.param_dtype, host, p.param_len, err);
        if (!st && p.master && p.len && !(st = be->sync(be, err)) &&
            !(st = lt_ckpt_read(c, LT_CKPT_WEIGHTS, p.name, p.off, p.len, host, err)))
            st = lt_optim_part_put(o, i, 0, p.off, p.off + p.len, host, err);
        for (int k = 0; k < 2 && !st && p.len; k++)
            if (!(st = be->sync(be, err)) && !(st = lt_ckpt_read(c, LT_CKPT_OPTIM, name[k], p.off, p.len, host, err)))
                st = lt_optim_part_put(o, i, k + 1, p.off, p.off + p.len, host, err);
        if (!st) st = be->sync(be, err); /* host is reused */
        free(host);
        if (st) lt_wrap(err, st, "checkpoint %s: tensor '%s'", c->dir, p.name);
    }
    return st;
}

/* ---- writing a sharded checkpoint ---- */

/* every rank's status to every rank (W doubles: 1 = failed): LT_OK when all
 * succeeded; else this rank's own error, or one naming the first failed rank */
lt_status lt_ckpt_agree(lt_comm *comm, lt_status mine, const char *what, lt_err *err) {
    double *v = calloc((size_t)comm->world, sizeof *v);
    lt_err e2 = {{0}};
    if (!v) return lt_fail(err, LT_ERR_NOMEM, "checkpoint: out of memory");
    v[comm->rank] = mine != LT_OK;
    lt_status s = comm->all_reduce_sum(comm, v, (size_t)comm->world, LT_F64, &e2);
    int bad = -1;
    for (int r = 0; r < comm->world && bad < 0; r++)
        if (v[r] != 0) bad = r;
    free(v);
    if (s) return mine ? mine : lt_fail(err, s, "checkpoint: agreement after %s: %s", what, e2.msg);
    if (mine) return mine;
    if (bad >= 0)
        return lt_fail(err, LT_ERR_IO, "checkpoint: rank %d of %d failed %s (its own message says why)", bad,
                       comm->world, what);
    return LT_OK;
}

static void shard_file_name(char *out, size_t cap, int kind, int rank, int world) {
    snprintf(out, cap, "%s-rank-%05d-of-%05d.safetensors", kind ? "optimizer" : "weights", rank, world);
}

/* this rank's slices of kind 0 (weights) or 1 (m and v) into l, their ranges into meta {name: [start, end]} */
static lt_status own_slices(lt_optim *o, lt_comm *comm, int kind, lt_tlist *l, cJSON *meta, lt_err *err) {
    lt_backend *be = lt_optim_backend(o);
    size_t s0 = 0, sl = 0;
    int zero = lt_optim_zero(o);
    if (!zero) lt_optim_flat_shard(o, comm->rank, comm->world, &s0, &sl);
    lt_status st = LT_OK;
    for (size_t i = 0; i < lt_optim_count(o) && !st; i++) {
        lt_optim_part p;
        lt_optim_part_of(o, i, &p);
        size_t a = p.off, b = p.off + p.len;
        if (!zero) { /* everything is held everywhere: this rank's flat range */
            size_t f = lt_optim_flat_offset(o, i);
            a = f + a > s0 ? a : s0 - f;
            b = f + b < s0 + sl ? b : (s0 + sl > f ? s0 + sl - f : 0);
        }
        if (b <= a) continue;
        int64_t len = (int64_t)(b - a);
        for (int k = kind; k < (kind ? 3 : 1) && !st; k++) { /* 0: weights, 1: exp_avg, 2: exp_avg_sq */
            char nm[512];
            snprintf(nm, sizeof nm, k == 0 ? "%s" : k == 1 ? "%s.exp_avg" : "%s.exp_avg_sq", p.name);
            float *dst = lt_tlist_new(l, nm, LT_F32, 1, &len, err);
            if (!dst) return LT_ERR_INVALID;
            if (k || p.master) st = lt_optim_part_get(o, i, k, a, b, dst, err);
            else if (a < p.param_off || b > p.param_off + p.param_len)
                st = lt_fail(err, LT_ERR_INVALID, "checkpoint: tensor '%s': elements [%zu, %zu) are not held here",
                             p.name, a, b);
            else
                st = be->download_f32(be, dst, (const char *)p.param + (a - p.param_off) * lt_dtype_size(p.param_dtype),
                                      p.param_dtype, (size_t)len, err);
            cJSON *r = cJSON_CreateArray();
            cJSON_AddItemToArray(r, cJSON_CreateNumber((double)a));
            cJSON_AddItemToArray(r, cJSON_CreateNumber((double)b));
            cJSON_AddItemToObject(meta, nm, r);
        }
        if (!st) st = be->sync(be, err);
    }
    return st;
}

static lt_status write_slices(const lt_tlist *l, cJSON *meta, const char *path, lt_err *err) {
    char *mj = cJSON_PrintUnformatted(meta);
    if (!mj) return lt_fail(err, LT_ERR_NOMEM, "checkpoint: out of memory");
    const char *keys[] = {SLICES_KEY}, *vals[] = {mj};
    lt_status s = lt_tlist_write(l, path, keys, vals, 1, err);
    free(mj);
    return s;
}

/* rank 0: index.json from the optimizer's tensor order and the slices each rank's files declare */
static lt_status write_index(const char *tmp, lt_optim *o, int world, lt_err *err) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "format", INDEX_FORMAT);
    cJSON_AddNumberToObject(root, "world", world);
    lt_status s = LT_OK;
    for (int kind = 0; kind < 2 && !s; kind++) {
        cJSON *arr = cJSON_AddArrayToObject(root, kind ? "optimizer" : "weights");
        cJSON **meta = calloc((size_t)world, sizeof *meta);
        char (*fn)[64] = calloc((size_t)world, sizeof *fn);
        if (!meta || !fn) s = lt_fail(err, LT_ERR_NOMEM, "checkpoint: out of memory");
        for (int r = 0; r < world && !s; r++) {
            char path[4096];
            lt_st_file *f = NULL;
            shard_file_name(fn[r], sizeof fn[r], kind, r, world);
            if (!lt_path_join(path, sizeof path, tmp, fn[r])) s = lt_fail(err, LT_ERR_INVALID, "%s: path too long", tmp);
            else if (!(s = lt_st_open(path, &f, err))) {
                const char *m = lt_st_metadata(f, SLICES_KEY);
                if (!m || !(meta[r] = cJSON_Parse(m)) || !cJSON_IsObject(meta[r]))
                    s = lt_fail(err, LT_ERR_FORMAT, "%s: no \"" SLICES_KEY "\" metadata", path);
            }
            lt_st_close(f);
        }
        for (size_t i = 0; i < lt_optim_count(o) && !s; i++) {
            lt_optim_part p;
            lt_optim_part_of(o, i, &p);
            for (int k = 0; k < (kind ? 2 : 1); k++) {
                char nm[512];
                snprintf(nm, sizeof nm, kind ? (k ? "%s.exp_avg_sq" : "%s.exp_avg") : "%s", p.name);
                cJSON *e = cJSON_CreateObject(), *sl;
                cJSON_AddItemToArray(arr, e);
                cJSON_AddStringToObject(e, "name", nm);
                cJSON *sh = cJSON_AddArrayToObject(e, "shape");
                for (int d = 0; d < p.ndim; d++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)p.shape[d]));
                sl = cJSON_AddArrayToObject(e, "slices");
                for (int r = 0; r < world; r++) {
                    const cJSON *q = cJSON_GetObjectItemCaseSensitive(meta[r], nm);
                    if (!q) continue;
                    cJSON *x = cJSON_CreateArray();
                    cJSON_AddItemToArray(x, cJSON_CreateString(fn[r]));
                    cJSON_AddItemToArray(x, cJSON_Duplicate(cJSON_GetArrayItem(q, 0), 1));
                    cJSON_AddItemToArray(x, cJSON_Duplicate(cJSON_GetArrayItem(q, 1), 1));
                    cJSON_AddItemToArray(sl, x);
                }
            }
        }
        for (int r = 0; meta && r < world; r++) cJSON_Delete(meta[r]);
        free(meta);
        free(fn);
    }
    char *text = s ? NULL : cJSON_Print(root);
    cJSON_Delete(root);
    if (!s && !text) s = lt_fail(err, LT_ERR_NOMEM, "checkpoint: out of memory");
    if (!s) s = write_text(tmp, INDEX_FILE, text, err);
    free(text);
    return s;
}

lt_status lt_ckpt_write_sharded(const char *run_dir, const lt_ckpt_state *st, lt_optim *o, lt_comm *comm,
                                int keep_last, char *out_dir, size_t cap, lt_err *err) {
    const int R = comm->rank, W = comm->world;
    char ckdir[4096], name[64], tname[256], tmp[4096], final[4096], path[4096];
    lt_status s = LT_OK;
    if (st->step < 0) return lt_fail(err, LT_ERR_INVALID, "checkpoint: negative step %lld", (long long)st->step);
    if (!lt_path_join(ckdir, sizeof ckdir, run_dir, "checkpoints"))
        return lt_fail(err, LT_ERR_INVALID, "%s: path too long", run_dir);
    snprintf(name, sizeof name, "step-%06lld", (long long)st->step);
    /* 1. rank 0 names and makes the temporary folder */
    memset(tname, 0, sizeof tname);
    if (R == 0) {
        char tag[128];
        lt_tmp_tag(tag, sizeof tag);
        snprintf(tname, sizeof tname, ".tmp-%s-%s", name, tag);
    }
    lt_err e2 = {{0}};
    if ((s = comm->broadcast(comm, tname, sizeof tname, 0, &e2)))
        return lt_fail(err, s, "checkpoint %s: agreeing on the folder: %s", name, e2.msg);
    if (!lt_path_join(tmp, sizeof tmp, ckdir, tname) || !lt_path_join(final, sizeof final, ckdir, name))
        s = lt_fail(err, LT_ERR_INVALID, "%s: path too long", ckdir);
    if (!s && R == 0 && !(s = lt_fs_mkdir_p(ckdir, err))) {
        lt_fs_rm_rf(tmp);
        if (mkdir(tmp, 0755) != 0) s = lt_fail(err, LT_ERR_IO, "%s: cannot create folder: %s", tmp, strerror(errno));
    }
    if ((s = lt_ckpt_agree(comm, s, "making the checkpoint folder", err))) return lt_wrap(err, s, "checkpoint %s", final);
    test_hook_rank(1, R);

    /* 2. every rank: its own slices of the weights, then of the optimizer state (staged in host memory:
     * its part, then twice its part) */
    for (int kind = 0; kind < 2 && !s; kind++) {
        lt_tlist l = {0};
        cJSON *meta = cJSON_CreateObject();
        char fn[64];
        shard_file_name(fn, sizeof fn, kind, R, W);
        s = meta ? own_slices(o, comm, kind, &l, meta, err) : lt_fail(err, LT_ERR_NOMEM, "checkpoint: out of memory");
        if (!s) s = lt_tlist_check_finite(&l, kind ? "checkpoint optimizer state" : "checkpoint weights", err);
        if (!s && !lt_path_join(path, sizeof path, tmp, fn)) s = lt_fail(err, LT_ERR_INVALID, "%s: path too long", tmp);
        if (!s) s = write_slices(&l, meta, path, err);
        lt_tlist_free(&l);
        cJSON_Delete(meta);
        if (!s) test_hook_rank(kind + 2, R);
    }
    s = lt_ckpt_agree(comm, s, "writing its shard", err);

    /* 3. rank 0: index, loader, state, COMPLETE; rename */
    if (!s && R == 0) {
        cJSON *man = cJSON_CreateObject(), *files = cJSON_AddObjectToObject(man, "files");
        cJSON_AddNumberToObject(man, "step", (double)st->step);
        char *sj = NULL, *mtext = NULL;
        s = write_index(tmp, o, W, err);
        if (!s && lt_path_join(path, sizeof path, tmp, FILES[2])) {
            s = lt_write_file_atomic(path, st->loader_len ? st->loader : "", st->loader_len, err);
            if (!s) test_hook_rank(4, R);
        }
        if (!s && !(sj = state_json(st, err))) s = LT_ERR_INVALID;
        if (!s && !(s = write_text(tmp, FILES[3], sj, err))) test_hook_rank(5, R);
        free(sj);
        for (int r = 0; r < W && !s; r++)
            for (int kind = 0; kind < 2; kind++) {
                char fn[64];
                shard_file_name(fn, sizeof fn, kind, r, W);
                lt_path_join(path, sizeof path, tmp, fn);
                cJSON_AddNumberToObject(files, fn, (double)lt_fs_file_size(path));
            }
        const char *own[] = {INDEX_FILE, FILES[2], FILES[3]};
        for (int k = 0; k < 3 && !s; k++) {
            lt_path_join(path, sizeof path, tmp, own[k]);
            cJSON_AddNumberToObject(files, own[k], (double)lt_fs_file_size(path));
        }
        if (!s && !(mtext = cJSON_Print(man))) s = lt_fail(err, LT_ERR_NOMEM, "checkpoint: cannot format the manifest");
        if (!s && !(s = write_text(tmp, "COMPLETE", mtext, err))) test_hook_rank(6, R);
        free(mtext);
        cJSON_Delete(man);
        if (!s) s = lt_fs_fsync_dir(tmp, err);
        if (!s && !(s = lt_fs_replace_dir(tmp, final, err))) test_hook_rank(7, R);
    }
    if (s && R == 0) lt_fs_rm_rf(tmp);
    s = lt_ckpt_agree(comm, s, "completing the checkpoint", err);
    if (s) return lt_wrap(err, s, "checkpoint %s", final);
    if (out_dir && cap) snprintf(out_dir, cap, "%s", final);
    if (R == 0 && keep_last > 0) return lt_ckpt_prune(run_dir, keep_last, err);
    return LT_OK;
}

/* ---- describing a checkpoint folder (lt_ckpt_info_read) ---- */

void lt_ckpt_info_free(lt_ckpt_info *in) {
    if (!in) return;
    free(in->files);
    memset(in, 0, sizeof *in);
}

/* the entry of file `name` (added at the end when new); -1: out of memory */
static long info_file(lt_ckpt_info *in, const char *name, int kind) {
    for (size_t i = 0; i < in->n_files; i++)
        if (!strcmp(in->files[i].name, name)) {
            if (kind >= 0) in->files[i].kind = kind;
            return (long)i;
        }
    lt_ckpt_file_info *nf = realloc(in->files, (in->n_files + 1) * sizeof *nf);
    if (!nf) return -1;
    in->files = nf;
    lt_ckpt_file_info *f = &in->files[in->n_files];
    memset(f, 0, sizeof *f);
    snprintf(f->name, sizeof f->name, "%s", name);
    f->rank = -1;
    f->kind = kind;
    f->size = f->listed = -1;
    int r = -1, w = -1;
    char k[16] = "", canon[96];
    if (sscanf(name, "%15[a-z]-rank-%d-of-%d", k, &r, &w) == 3 && r >= 0 && r < w) {
        int kd = !strcmp(k, "optimizer");
        shard_file_name(canon, sizeof canon, kd, r, w);
        if (!strcmp(canon, name)) f->rank = r, f->kind = kd;
    }
    return (long)in->n_files++;
}

/* index of rank file `name` of a W-rank checkpoint whose canonical files start at base[kind] (else a search) */
static long info_find(const lt_ckpt_info *in, const long base[2], const char *name) {
    int r = -1, w = -1;
    char k[16] = "";
    if (sscanf(name, "%15[a-z]-rank-%d-of-%d", k, &r, &w) == 3 && w == in->world && r >= 0 && r < w) {
        long i = base[strcmp(k, "weights") != 0] + r;
        if (base[strcmp(k, "weights") != 0] >= 0 && i < (long)in->n_files && !strcmp(in->files[i].name, name)) return i;
    }
    for (size_t i = 0; i < in->n_files; i++)
        if (!strcmp(in->files[i].name, name)) return (long)i;
    return -1;
}

/* append "; <fmt ...>" (or the first note) to buf */
static void info_note(char *buf, size_t cap, const char *fmt, ...) {
    size_t n = strlen(buf);
    if (n && n + 3 < cap) snprintf(buf + n, cap - n, "; ");
    n = strlen(buf);
    va_list ap;
    va_start(ap, fmt);
    if (n < cap) vsnprintf(buf + n, cap - n, fmt, ap);
    va_end(ap);
}

/* a slice [a, b) of a tensor of numel elements held by file f */
static void info_slice(lt_ckpt_file_info *f, const char *name, size_t a, size_t b, size_t numel) {
    f->tensors++;
    f->whole += a == 0 && b == numel;
    f->elements += b - a;
    snprintf(f->tensors == 1 ? f->first : f->last, sizeof f->first, "%s [%zu, %zu)", name, a, b);
    if (f->tensors == 1) f->last[0] = 0;
}

lt_status lt_ckpt_info_read(const char *dir, lt_ckpt_info *in, lt_err *err) {
    char path[4096], *text = NULL;
    memset(in, 0, sizeof *in);
    in->zero = -1;
    in->world = 1;
    if (!lt_is_dir(dir)) return lt_fail(err, LT_ERR_IO, "%s: no such checkpoint folder", dir);
    lt_err e2 = {{0}};
    cJSON *man = NULL, *idx = NULL;
    long base[2] = {-1, -1};
    lt_st_file **fh = NULL;
    lt_status st = LT_OK;
#define INFO_ADD(name, kind) \
    do { if (info_file(in, (name), (kind)) < 0) { st = lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", dir); goto done; } } while (0)
    in->step = -1;
    if (lt_path_join(path, sizeof path, dir, FILES[3]) && lt_file_exists(path)) { /* state.json: step, mode */
        lt_ckpt *c = calloc(1, sizeof *c);
        if (c && !parse_state(c, path, &e2)) {
            in->step = c->state.step;
            snprintf(in->mode, sizeof in->mode, "%s", c->state.mode);
            cJSON *x = c->state.extra_json ? cJSON_Parse(c->state.extra_json) : NULL; /* what `train` records */
            int64_t z = -1, g = 0;
            if (lt_json_int64(cJSON_GetObjectItemCaseSensitive(x, "zero"), &z) && z >= 0 && z <= 3) in->zero = (int)z;
            if (lt_json_int64(cJSON_GetObjectItemCaseSensitive(x, "shard_group"), &g) && g > 0 && g < INT32_MAX)
                in->shard_group = (int)g;
            cJSON_Delete(x);
        }
        lt_ckpt_close(c);
    }
    /* COMPLETE: every file with its size */
    if (lt_path_join(path, sizeof path, dir, "COMPLETE") && lt_file_exists(path)) {
        if (!lt_read_file(path, &text, NULL, &e2)) man = cJSON_Parse(text);
        free(text);
        text = NULL;
        const cJSON *files = cJSON_GetObjectItemCaseSensitive(man, "files"), *f;
        if (!cJSON_IsObject(files))
            info_note(in->problem, sizeof in->problem, "%s: not the manifest {\"step\": N, \"files\": {...}}",
                      path);
        else
            in->complete = 1;
        cJSON_ArrayForEach(f, files) {
            int64_t sz = -1;
            INFO_ADD(f->string, -1);
            if (lt_json_int64(f, &sz) && sz >= 0) in->files[info_find(in, base, f->string)].listed = sz;
        }
    } else {
        info_note(in->problem, sizeof in->problem,
                  "%s: no COMPLETE marker: incomplete (it is written last; the run stopped while writing this "
                  "checkpoint)", dir);
    }
    /* index.json: the rank files its world implies, then any other it names */
    in->sharded = lt_path_join(path, sizeof path, dir, INDEX_FILE) && lt_file_exists(path);
    const cJSON *lists[2] = {NULL, NULL};
    if (in->sharded) {
        int64_t w = 0;
        if (!lt_read_file(path, &text, NULL, &e2)) idx = cJSON_Parse(text);
        free(text);
        text = NULL;
        const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(idx, "format");
        lists[0] = cJSON_GetObjectItemCaseSensitive(idx, "weights");
        lists[1] = cJSON_GetObjectItemCaseSensitive(idx, "optimizer");
        if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, INDEX_FORMAT) || !cJSON_IsArray(lists[0]) ||
            !lt_json_int64(cJSON_GetObjectItemCaseSensitive(idx, "world"), &w) || w < 1 || w > 100000) {
            info_note(in->problem, sizeof in->problem, "%s: not a sharded checkpoint index (\"format\": \"" INDEX_FORMAT
                      "\", \"world\", \"weights\")", path);
            lists[0] = lists[1] = NULL;
            w = 0;
        }
        if (!cJSON_IsArray(lists[1])) lists[1] = NULL;
        in->world = (int)w;
        /* the canonical rank files go first, in rank order, so that slices find theirs at base[kind] + rank */
        lt_ckpt_file_info *keep = in->files;
        size_t nkeep = in->n_files;
        in->files = NULL;
        in->n_files = 0;
        for (int kind = 0; kind < 2; kind++) {
            if (!lists[kind]) continue;
            base[kind] = (long)in->n_files;
            for (int r = 0; r < in->world; r++) {
                char fn[96];
                shard_file_name(fn, sizeof fn, kind, r, in->world);
                INFO_ADD(fn, kind);
            }
        }
        for (size_t i = 0; i < nkeep; i++) { /* what COMPLETE listed */
            long k = info_file(in, keep[i].name, keep[i].kind);
            if (k < 0) {
                free(keep);
                st = lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", dir);
                goto done;
            }
            in->files[k].listed = keep[i].listed;
        }
        free(keep);
        for (int kind = 0; kind < 2; kind++) {
            const cJSON *e, *q;
            cJSON_ArrayForEach(e, lists[kind]) cJSON_ArrayForEach(q, cJSON_GetObjectItemCaseSensitive(e, "slices")) {
                const cJSON *fn = cJSON_GetArrayItem(q, 0);
                if (!cJSON_IsString(fn)) continue;
                long k = info_find(in, base, fn->valuestring);
                if (k < 0) INFO_ADD(fn->valuestring, kind);
                in->files[k < 0 ? (long)in->n_files - 1 : k].in_index = 1;
            }
        }
    } else {
        INFO_ADD(FILES[0], LT_CKPT_WEIGHTS);
        lt_path_join(path, sizeof path, dir, FILES[1]);
        if (lt_file_exists(path) || (man && cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(man, "files"), FILES[1])))
            INFO_ADD(FILES[1], LT_CKPT_OPTIM);
    }
    const char *common[] = {FILES[2], FILES[3], INDEX_FILE, "COMPLETE"};
    for (int k = 0; k < 4; k++)
        if (k != 2 || in->sharded) INFO_ADD(common[k], -1);
    /* every file: present, of the listed size, a readable safetensors header */
    if (!(fh = calloc(in->n_files + 1, sizeof *fh))) {
        st = lt_fail(err, LT_ERR_NOMEM, "%s: out of memory", dir);
        goto done;
    }
    for (size_t i = 0; i < in->n_files; i++) {
        lt_ckpt_file_info *f = &in->files[i];
        if (!lt_path_join(path, sizeof path, dir, f->name)) continue;
        f->size = lt_fs_file_size(path);
        if (f->size < 0) {
            if (f->listed >= 0)
                info_note(f->problem, sizeof f->problem, "%s: missing (COMPLETE lists it with %lld bytes)",
                          f->name, f->listed, 0);
            else if (f->rank >= 0)
                info_note(f->problem, sizeof f->problem, "%s: missing (rank %d of %d writes it)", f->name, f->rank,
                          in->world);
            else if (strcmp(f->name, "COMPLETE")) /* (a missing COMPLETE is the folder's problem) */
                info_note(f->problem, sizeof f->problem, "%s: missing", f->name);
            continue;
        }
        if (f->listed >= 0 && f->size != f->listed)
            info_note(f->problem, sizeof f->problem, "%s: %lld bytes, but COMPLETE lists %lld (truncated or damaged)",
                      f->name, (long long)f->size, (long long)f->listed);
        else if (f->kind >= 0 && (st = lt_st_open(path, &fh[i], &e2)))
            info_note(f->problem, sizeof f->problem, "%s", e2.msg);
        st = LT_OK;
    }
    /* what each holds */
    for (int kind = 0; kind < 2; kind++) {
        const cJSON *e, *q;
        if (!in->sharded) { /* the whole form: every tensor whole */
            long k = info_find(in, base, FILES[kind]);
            const lt_st_file *h = k >= 0 ? fh[k] : NULL;
            for (size_t i = 0; h && i < lt_st_count(h); i++) {
                const lt_st_tensor *t = lt_st_get(h, i);
                info_slice(&in->files[k], t->name, 0, t->numel, t->numel);
                in->tensors[kind]++;
                in->elements[kind] += t->numel;
            }
            continue;
        }
        cJSON_ArrayForEach(e, lists[kind]) {
            const cJSON *nm = cJSON_GetObjectItemCaseSensitive(e, "name"), *sh = cJSON_GetObjectItemCaseSensitive(e, "shape"),
                        *d;
            size_t numel = 1;
            int64_t v;
            cJSON_ArrayForEach(d, sh) numel *= lt_json_int64(d, &v) && v > 0 ? (size_t)v : 0;
            if (!cJSON_IsString(nm)) continue;
            in->tensors[kind]++;
            in->elements[kind] += numel;
            cJSON_ArrayForEach(q, cJSON_GetObjectItemCaseSensitive(e, "slices")) {
                const cJSON *fn = cJSON_GetArrayItem(q, 0);
                int64_t a = -1, b = -1;
                long k = cJSON_IsString(fn) ? info_find(in, base, fn->valuestring) : -1;
                if (k < 0 || !lt_json_int64(cJSON_GetArrayItem(q, 1), &a) || !lt_json_int64(cJSON_GetArrayItem(q, 2), &b) ||
                    a < 0 || b <= a || (size_t)b > numel)
                    continue; /* (lt_ckpt_open says what is wrong with the index) */
                lt_ckpt_file_info *f = &in->files[k];
                const lt_st_tensor *t;
                info_slice(f, nm->valuestring, (size_t)a, (size_t)b, numel);
                if (fh[k] && !f->problem[0] && slice_check(fh[k], dir, f->name, nm->valuestring, a, b, &t, &e2))
                    info_note(f->problem, sizeof f->problem, "%s", e2.msg);
            }
        }
    }
    for (size_t i = 0; i < in->n_files; i++) in->n_problems += in->files[i].problem[0] != 0;
    in->n_problems += in->problem[0] != 0;
#undef INFO_ADD
done:
    for (size_t i = 0; fh && i < in->n_files; i++) lt_st_close(fh[i]);
    free(fh);
    cJSON_Delete(man);
    cJSON_Delete(idx);
    if (st) lt_ckpt_info_free(in);
    return st;
}
