/*
 * test_ckpt.c -- checkpoints (train/lt_ckpt.c): round trip of every part
 * (weights, optimizer state, loader bytes, RNG, state fields, extra JSON),
 * newest-complete discovery, pruning, NaN/Inf refusal, replacing a step, a
 * damaged checkpoint skipped, and crashes: a child process writing a
 * checkpoint is SIGKILLed at every stage of the writer (LT_CKPT_TEST_KILL_AT)
 * and at random moments; the previous checkpoint must stay intact and the
 * half-written one must never be picked as newest.
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lt_ckpt.h"
#include "lt_test.h"

static char RUN[2048];

/* Deterministic content for a step: weights a (n x 64) F32, bias F32, e BF16;
 * optimizer state for a. */
static void make_lists(int64_t step, size_t n, lt_tlist *w, lt_tlist *o) {
    lt_err err;
    int64_t sa[2] = {(int64_t)n, 64}, sb[1] = {64}, se[2] = {8, 4};
    float *a = lt_tlist_new(w, "model.layers.0.mlp.up_proj.weight", LT_F32, 2, sa, &err);
    lt_fill_normal(a, n * 64, 1.0f, 1000 + (uint64_t)step);
    float *b = lt_tlist_new(w, "model.layers.0.mlp.up_proj.bias", LT_F32, 1, sb, &err);
    lt_fill_normal(b, 64, 0.5f, 2000 + (uint64_t)step);
    uint16_t *e = lt_tlist_new(w, "model.embed_tokens.weight", LT_BF16, 2, se, &err);
    float tmp[32];
    lt_fill_normal(tmp, 32, 1.0f, 3000 + (uint64_t)step);
    for (int i = 0; i < 32; i++) e[i] = lt_f32_to_bf16(tmp[i]);
    if (o) {
        float *m = lt_tlist_new(o, "model.layers.0.mlp.up_proj.weight.exp_avg", LT_F32, 2, sa, &err);
        lt_fill_normal(m, n * 64, 0.01f, 4000 + (uint64_t)step);
        float *v = lt_tlist_new(o, "model.layers.0.mlp.up_proj.weight.exp_avg_sq", LT_F32, 2, sa, &err);
        for (size_t i = 0; i < n * 64; i++) v[i] = m[i] * m[i];
    }
}

static lt_ckpt_state make_state(int64_t step, uint8_t *loader, size_t loader_len) {
    lt_ckpt_state st;
    memset(&st, 0, sizeof st);
    st.step = step;
    st.epoch = step / 7;
    st.total_steps = 1000;
    st.tokens_seen = step * 4096 + 17;
    st.lr = 1e-4 * (double)step / 1000.0;
    st.loss = 2.5 + 1.0 / (double)(step + 1);
    snprintf(st.mode, sizeof st.mode, "full");
    snprintf(st.options_hash, sizeof st.options_hash, "0123456789abcdef");
    lt_rng_seed(&st.rng, 99 + (uint64_t)step);
    for (int i = 0; i < 5; i++) lt_rng_u64(&st.rng);
    for (size_t i = 0; i < loader_len; i++) loader[i] = (uint8_t)(i * 31 + (size_t)step);
    st.loader = loader;
    st.loader_len = loader_len;
    st.extra_json = "{\"lora\": {\"r\": 8, \"alpha\": 16}, \"note\": \"x\"}";
    return st;
}

/* Open `dir` and compare everything with what make_* produce for `step`. */
static int verify(const char *dir, int64_t step, size_t n, int with_optim) {
    lt_err err;
    lt_ckpt *c = NULL;
    int fails0 = lt_test_failures;
    LT_CHECK_OK(lt_ckpt_open(dir, &c, &err), &err);
    if (!c) return 0;
    uint8_t loader[100];
    lt_ckpt_state want = make_state(step, loader, sizeof loader);
    const lt_ckpt_state *st = &c->state;
    LT_CHECK(st->step == step && st->epoch == want.epoch && st->total_steps == 1000 &&
                 st->tokens_seen == want.tokens_seen,
             "%s: integers", dir);
    LT_CHECK(st->lr == want.lr && st->loss == want.loss, "%s: lr %.17g loss %.17g", dir, st->lr, st->loss);
    LT_CHECK(!strcmp(st->mode, "full") && !strcmp(st->options_hash, "0123456789abcdef"), "%s: strings", dir);
    LT_CHECK(!memcmp(st->rng.s, want.rng.s, sizeof want.rng.s), "%s: rng state", dir);
    LT_CHECK(st->loader_len == sizeof loader && !memcmp(st->loader, loader, sizeof loader), "%s: loader bytes", dir);
    LT_CHECK(st->extra_json && strstr(st->extra_json, "\"alpha\":16") && strstr(st->extra_json, "\"note\":\"x\""),
             "%s: extra %s", dir, st->extra_json ? st->extra_json : "(null)");
    lt_tlist w = {0}, o = {0};
    make_lists(step, n, &w, with_optim ? &o : NULL);
    LT_CHECK(lt_st_count(c->weights) == w.n, "%s: %zu weight tensors", dir, lt_st_count(c->weights));
    for (size_t i = 0; i < w.n; i++) {
        const lt_st_tensor *t = lt_st_find(c->weights, w.items[i].name);
        LT_CHECK(t && t->dtype == w.items[i].dtype && t->numel == w.items[i].numel &&
                     !memcmp(t->data, w.items[i].data, t->nbytes),
                 "%s: tensor %s", dir, w.items[i].name);
    }
    LT_CHECK((c->optim != NULL) == with_optim, "%s: optimizer file presence", dir);
    for (size_t i = 0; c->optim && i < o.n; i++) {
        const lt_st_tensor *t = lt_st_find(c->optim, o.items[i].name);
        LT_CHECK(t && t->numel == o.items[i].numel && !memcmp(t->data, o.items[i].data, t->nbytes), "%s: state %s",
                 dir, o.items[i].name);
    }
    lt_tlist_free(&w);
    lt_tlist_free(&o);
    lt_ckpt_close(c);
    return lt_test_failures == fails0;
}

static lt_status write_step(int64_t step, size_t n, int keep, lt_err *err) {
    lt_tlist w = {0}, o = {0};
    uint8_t loader[100];
    make_lists(step, n, &w, &o);
    lt_ckpt_state st = make_state(step, loader, sizeof loader);
    lt_status s = lt_ckpt_write(RUN, &st, &w, &o, keep, NULL, 0, err);
    lt_tlist_free(&w);
    lt_tlist_free(&o);
    return s;
}

static int64_t latest(char *dir) {
    int64_t step;
    lt_err err;
    char buf[4096];
    LT_CHECK_OK(lt_ckpt_find_latest(RUN, dir ? dir : buf, 4096, &step, &err), &err);
    return step;
}

static int count_entries(const char *prefix) {
    char ck[4096];
    snprintf(ck, sizeof ck, "%s/checkpoints", RUN);
    DIR *d = opendir(ck);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (!strncmp(e->d_name, prefix, strlen(prefix))) n++;
    if (d) closedir(d);
    return n;
}

/* Fork a child that writes checkpoint `step`; kill_at > 0 sets the hook,
 * delay_us >= 0 makes the parent SIGKILL it after that long. Returns 1 if
 * the child died by SIGKILL. */
static int child_write(int64_t step, size_t n, int kill_at, long delay_us) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        if (kill_at > 0) {
            char v[16];
            snprintf(v, sizeof v, "%d", kill_at);
            setenv("LT_CKPT_TEST_KILL_AT", v, 1);
        }
        lt_err err;
        _exit(write_step(step, n, 0, &err) == LT_OK ? 0 : 3);
    }
    if (delay_us >= 0) {
        struct timespec ts = {delay_us / 1000000, (delay_us % 1000000) * 1000};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    if (WIFEXITED(status) && WEXITSTATUS(status) != 0) LT_CHECK(0, "child writer failed (%d)", WEXITSTATUS(status));
    return WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
}

int main(void) {
    lt_err err;
    snprintf(RUN, sizeof RUN, "%s/run", lt_test_tmpdir("test_ckpt"));
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", RUN);
    lt_test_system(cmd);
    const size_t N = 16;

    /* nothing yet */
    char dir[4096];
    LT_CHECK(latest(dir) == -1 && dir[0] == 0, "empty run has a checkpoint");

    /* round trip */
    LT_CHECK_OK(write_step(5, N, 0, &err), &err);
    LT_CHECK(latest(dir) == 5 && strstr(dir, "checkpoints/step-000005"), "latest %s", dir);
    verify(dir, 5, N, 1);
    /* no optimizer state */
    {
        lt_tlist w = {0};
        uint8_t loader[100];
        make_lists(7, N, &w, NULL);
        lt_ckpt_state st = make_state(7, loader, sizeof loader);
        char out[4096];
        LT_CHECK_OK(lt_ckpt_write(RUN, &st, &w, NULL, 0, out, sizeof out, &err), &err);
        verify(out, 7, N, 0);
        lt_tlist_free(&w);
    }
    LT_CHECK_OK(write_step(10, N, 0, &err), &err);
    LT_CHECK(latest(dir) == 10, "latest after step 10");
    verify(dir, 10, N, 1);

    /* NaN / Inf refusal: nothing written */
    {
        lt_tlist w = {0}, o = {0};
        uint8_t loader[100];
        make_lists(11, N, &w, &o);
        ((float *)w.items[1].data)[7] = NAN;
        lt_ckpt_state st = make_state(11, loader, sizeof loader);
        lt_status s = lt_ckpt_write(RUN, &st, &w, &o, 0, NULL, 0, &err);
        LT_CHECK(s == LT_ERR_NONFINITE && strstr(err.msg, "model.layers.0.mlp.up_proj.bias") &&
                     strstr(err.msg, "NaN") && strstr(err.msg, "element 7"),
                 "NaN weight: %s: %s", lt_status_name(s), err.msg);
        ((float *)w.items[1].data)[7] = 0.0f;
        ((uint16_t *)w.items[2].data)[3] = 0x7f80; /* bf16 +Inf */
        s = lt_ckpt_write(RUN, &st, &w, &o, 0, NULL, 0, &err);
        LT_CHECK(s == LT_ERR_NONFINITE && strstr(err.msg, "embed_tokens") && strstr(err.msg, "Inf"), "Inf bf16: %s",
                 err.msg);
        ((uint16_t *)w.items[2].data)[3] = 0;
        ((float *)o.items[1].data)[0] = -INFINITY;
        s = lt_ckpt_write(RUN, &st, &w, &o, 0, NULL, 0, &err);
        LT_CHECK(s == LT_ERR_NONFINITE && strstr(err.msg, "exp_avg_sq"), "Inf optimizer state: %s", err.msg);
        lt_tlist_free(&w);
        lt_tlist_free(&o);
        snprintf(dir, sizeof dir, "%s/checkpoints/step-000011", RUN);
        LT_CHECK(!lt_is_dir(dir) && count_entries(".tmp-") == 0, "a refused checkpoint left files");
        LT_CHECK(latest(NULL) == 10, "latest after refusals");
    }

    /* crash at every stage of the writer: step 20 never appears half-written */
    const size_t BIG = 32768; /* 8 MB weights + 16 MB optimizer state */
    for (int k = 1; k <= 7; k++) {
        int killed = child_write(20, BIG, k, -1);
        LT_CHECK(killed, "stage %d: child not killed", k);
        int64_t s = latest(dir);
        if (k < 7) {
            LT_CHECK(s == 10, "crash at stage %d: latest is %lld, expected 10", k, (long long)s);
            snprintf(dir, sizeof dir, "%s/checkpoints/step-000020", RUN);
            LT_CHECK(!lt_is_dir(dir), "crash at stage %d: step-000020 exists", k);
        } else {
            LT_CHECK(s == 20, "crash after the rename: latest is %lld, expected 20", (long long)s);
            verify(dir, 20, BIG, 1);
            snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
            lt_test_system(cmd);
        }
        snprintf(dir, sizeof dir, "%s/checkpoints/step-000010", RUN);
        LT_CHECK(verify(dir, 10, N, 1), "crash at stage %d damaged step 10", k);
    }
    LT_CHECK(count_entries(".tmp-") >= 5, "the killed writers' temp folders should still be there (%d)",
             count_entries(".tmp-"));
    LT_CHECK_OK(lt_ckpt_prune(RUN, 0, &err), &err);
    LT_CHECK(count_entries(".tmp-") == 0, "prune left %d temp folders of dead writers", count_entries(".tmp-"));

    /* SIGKILL at random moments while a big checkpoint is written: delays
     * spread over 1.5x the time one write takes here (measured first) */
    double t0 = lt_now_s();
    LT_CHECK_OK(write_step(29, BIG, 0, &err), &err);
    double t_write = lt_now_s() - t0;
    lt_rng rng;
    lt_rng_seed(&rng, 12345);
    int done = 0, interrupted = 0;
    int64_t prev = 29;
    for (int i = 0; i < 12; i++) {
        int64_t step = 30 + i;
        long delay = (long)(lt_rng_uniform(&rng) * 1.5 * t_write * 1e6);
        int killed = child_write(step, BIG, 0, delay);
        int64_t s = latest(dir);
        LT_CHECK(s == step || s == prev, "random kill %d (%ld us): latest %lld, expected %lld or %lld", i, delay,
                 (long long)s, (long long)step, (long long)prev);
        if (s == step) {
            done++;
            verify(dir, step, BIG, 1);
            prev = step;
        } else {
            interrupted++;
            LT_CHECK(verify(dir, prev, BIG, 1), "random kill %d damaged step %lld", i,
                     (long long)prev);
        }
        (void)killed;
    }
    printf("random kills (one write takes %.0f ms): %d checkpoints completed, %d interrupted\n", t_write * 1e3, done,
           interrupted);
    LT_CHECK(interrupted >= 1, "no random kill interrupted a write (all %d completed)", done);

    /* a damaged checkpoint (truncated file) is skipped */
    {
        int64_t s = latest(dir);
        char wpath[4200];
        snprintf(wpath, sizeof wpath, "%s/weights.safetensors", dir);
        LT_CHECK(truncate(wpath, 100) == 0, "truncate");
        LT_CHECK(!lt_ckpt_is_complete(dir), "truncated checkpoint still complete");
        lt_ckpt *c = NULL;
        LT_CHECK(lt_ckpt_open(dir, &c, &err) == LT_ERR_FORMAT && strstr(err.msg, "not a complete checkpoint"),
                 "open damaged: %s", err.msg);
        int64_t s2 = latest(NULL);
        LT_CHECK(s2 < s && s2 >= 5, "damaged newest %lld still chosen (%lld)", (long long)s, (long long)s2);
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        lt_test_system(cmd);
    }

    /* the same step written again replaces it */
    LT_CHECK_OK(write_step(10, N, 0, &err), &err);
    LT_CHECK_OK(write_step(10, N, 0, &err), &err);
    snprintf(dir, sizeof dir, "%s/checkpoints/step-000010", RUN);
    verify(dir, 10, N, 1);
    LT_CHECK(count_entries("step-000010.old") == 0, "old copy left behind");

    /* crafted numbers: sizes in COMPLETE and integers in state.json that are not
     * integers of int64 range are refused (never cast); the step must be the
     * folder's */
    {
        const char *size_subs[] = {"1e300", "1e999", "-1", "4.5", "9223372036854775807"};
        for (size_t i = 0; i < sizeof size_subs / sizeof size_subs[0]; i++) {
            LT_CHECK_OK(write_step(11, N, 0, &err), &err);
            snprintf(dir, sizeof dir, "%s/checkpoints/step-000011", RUN);
            LT_CHECK(lt_ckpt_is_complete(dir), "step 11 not complete before the edit");
            snprintf(cmd, sizeof cmd, "sed -i -E 's/(\"weights.safetensors\":[[:space:]]*)[0-9]+/\\1%s/' '%s/COMPLETE'",
                     size_subs[i], dir);
            lt_test_system(cmd);
            LT_CHECK(!lt_ckpt_is_complete(dir), "COMPLETE size %s accepted", size_subs[i]);
        }
        const char *int_subs[] = {"1e300", "-3", "2.5", "9007199254740993"};
        for (size_t i = 0; i < sizeof int_subs / sizeof int_subs[0]; i++) {
            LT_CHECK_OK(write_step(11, N, 0, &err), &err);
            /* state.json's tokens_seen replaced; its size in COMPLETE updated */
            char cmd2[8400];
            snprintf(cmd2, sizeof cmd2,
                     "cd '%s' && sed -i -E 's/(\"tokens_seen\":[[:space:]]*)[0-9]+/\\1%s/' state.json && "
                     "sed -i -E \"s/(\\\"state.json\\\":[[:space:]]*)[0-9]+/\\1$(stat -c %%s state.json)/\" COMPLETE",
                     dir, int_subs[i]);
            lt_test_system(cmd2);
            LT_CHECK(lt_ckpt_is_complete(dir), "state.json edit broke COMPLETE (%s)", int_subs[i]);
            lt_ckpt *c = NULL;
            lt_status st = lt_ckpt_open(dir, &c, &err);
            LT_CHECK(st == LT_ERR_FORMAT && strstr(err.msg, "must be integers"), "tokens_seen %s: %s", int_subs[i],
                     st ? err.msg : "accepted");
            lt_ckpt_close(c);
        }
        LT_CHECK_OK(write_step(11, N, 0, &err), &err);
        snprintf(cmd, sizeof cmd, "cp -r '%s/checkpoints/step-000011' '%s/checkpoints/step-000012'", RUN, RUN);
        lt_test_system(cmd);
        snprintf(dir, sizeof dir, "%s/checkpoints/step-000012", RUN);
        lt_ckpt *c = NULL;
        lt_status st = lt_ckpt_open(dir, &c, &err);
        LT_CHECK(st == LT_ERR_FORMAT && strstr(err.msg, "state.json says step 11, the folder's name step 12"),
                 "step-12 folder holding step 11: %s", st ? err.msg : "accepted");
        lt_ckpt_close(c);
        snprintf(cmd, sizeof cmd, "rm -rf '%s/checkpoints/step-000011' '%s/checkpoints/step-000012'", RUN, RUN);
        lt_test_system(cmd);
    }

    /* keep-last pruning */
    LT_CHECK_OK(write_step(100, N, 2, &err), &err);
    LT_CHECK(count_entries("step-") == 2, "keep 2: %d checkpoints", count_entries("step-"));
    LT_CHECK(latest(dir) == 100, "latest after prune");
    verify(dir, 100, N, 1);
    return lt_test_finish("test_ckpt");
}
