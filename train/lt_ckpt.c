/* lt_ckpt.c -- atomic training checkpoints (see lt_ckpt.h). */
#define _POSIX_C_SOURCE 200809L
#include "lt_ckpt.h"
#include "lt_fs.h"
#include "lt_json.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CKPT_FORMAT "luxtrain-checkpoint-1"
static const char *const FILES[] = {"weights.safetensors", "optimizer.safetensors", "loader.bin", "state.json"};
enum { NFILES = 4 };

/* ---- helpers ---- */

static void test_hook(int stage) {
    const char *s = getenv("LT_CKPT_TEST_KILL_AT");
    if (s && atoi(s) == stage) raise(SIGKILL);
}


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
    for (int f = 0; f < NFILES; f++) {
        if (f == 1) continue; /* optimizer state is optional */
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
    for (int k = 0; k < NFILES; k++) /* weights.safetensors and state.json */
        if ((k == 0 || k == 3) && !cJSON_GetObjectItemCaseSensitive(files, FILES[k])) {
            cJSON_Delete(m);
            return lt_fail(err, LT_ERR_FORMAT, "%s: the COMPLETE manifest does not list %s", path, FILES[k]);
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

void lt_ckpt_close(lt_ckpt *c) {
    if (!c) return;
    lt_st_close(c->weights);
    lt_st_close(c->optim);
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
    lt_path_join(path, sizeof path, dir, "weights.safetensors");
    if ((s = lt_st_open(path, &c->weights, err)) != LT_OK) goto fail;
    lt_path_join(path, sizeof path, dir, "optimizer.safetensors");
    if (lt_file_exists(path) && (s = lt_st_open(path, &c->optim, err)) != LT_OK) goto fail;
    *out = c;
    return LT_OK;
fail:
    lt_ckpt_close(c);
    return s;
}
