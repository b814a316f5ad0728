/*
 * test_train_run.c -- `luxtrain train` end to end on a fixture model
 * (tests/fixtures/models/llama) and a generated token shard:
 *   - full fine-tuning and LoRA (with dropout) runs: metrics.jsonl has one
 *     sane line per step, the loss falls, checkpoints and final/ exist;
 *   - --resume is bitwise (full, LoRA, and full with --neftune-alpha, whose
 *     losses differ from the run without it): a run killed after step 4
 *     (LT_TRAIN_TEST_KILL_AFTER), resumed and killed again while writing the step-6 checkpoint
 *     (LT_CKPT_TEST_KILL_AT), then resumed to the end, logs exactly the
 *     losses / grad norms of the uninterrupted run and exports the same bytes;
 *   - a diverging run (huge lr) stops with a message naming the step and
 *     leaves no checkpoint holding NaN;
 *   - bad options are refused (exit 2).
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "lt_model.h"
#include "lt_safetensors.h"
#include "lt_shard.h"
#include "lt_test.h"

static char tmp[2048], shard[2300], model[2048];

static int make_shard(void) {
    lt_err err;
    lt_shard_meta meta = {0};
    meta.vocab_size = 160;
    snprintf(meta.template_name, sizeof meta.template_name, "none");
    lt_shard_writer *w;
    if (lt_shard_writer_open(shard, &meta, &w, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 0;
    }
    lt_rng r;
    lt_rng_seed(&r, 7);
    for (int d = 0; d < 48; d++) { /* learnable: arithmetic progressions mod 150 */
        int len = 6 + (int)(lt_rng_u64(&r) % 20), s = (int)(lt_rng_u64(&r) % 150), st = 1 + (int)(lt_rng_u64(&r) % 3);
        int32_t tok[32];
        uint8_t mask[32];
        for (int j = 0; j < len; j++) {
            tok[j] = 3 + (s + j * st) % 150;
            mask[j] = j > 0 && (j > 2 || d % 2);
        }
        if (lt_shard_writer_add(w, tok, mask, (size_t)len, &err)) return 0;
    }
    return lt_shard_writer_finish(w, &err) == LT_OK;
}

static int run(const char *env, const char *out, const char *extra) {
    char cmd[8192];
    snprintf(cmd, sizeof cmd,
             "%s %s train --model %s --data %s --out %s --seq-len 32 --micro-batch 2 --grad-accum 2 --max-steps 6 "
             "--save-every 3 --lr 3e-3 --warmup-steps 2 --weight-decay 0.1 --device cpu --threads 2 --log-every 100 %s "
             "2>>%s/log.txt",
             env, LT_BIN, model, shard, out, extra, tmp);
    int rc = system(cmd);
    if (rc == -1) return -1;
    if (WIFSIGNALED(rc)) return 128 + WTERMSIG(rc);
    if (WIFEXITED(rc)) return WEXITSTATUS(rc);
    return rc;
}

/* the metrics lines of a run (training steps only), as strings */
static int read_metrics(const char *out, char lines[][512], int cap) {
    char path[2300];
    snprintf(path, sizeof path, "%s/metrics.jsonl", out);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char buf[1024];
    int n = 0;
    while (fgets(buf, sizeof buf, f))
        if (strstr(buf, "\"loss\"") && n < cap) {
            LT_FMT(lines[n], "%s", buf);
            n++;
        }
    fclose(f);
    return n;
}

static double field(const char *line, const char *key) {
    char k[64];
    snprintf(k, sizeof k, "\"%s\": ", key);
    const char *p = strstr(line, k);
    return p ? strtod(p + strlen(k), NULL) : NAN;
}

/* "loss" and "grad_norm" values as written (shortest round-trip decimals) */
static void loss_part(const char *line, char *out, size_t cap) {
    const char *a = strstr(line, "\"loss\""), *b = strstr(line, "\"lr\"");
    snprintf(out, cap, "%.*s", a && b ? (int)(b - a) : 0, a ? a : "");
}

static int same_file(const char *a, const char *b) {
    char *x = NULL, *y = NULL;
    size_t nx = 0, ny = 0;
    lt_err err;
    int same = lt_read_file(a, &x, &nx, &err) == LT_OK && lt_read_file(b, &y, &ny, &err) == LT_OK && nx == ny &&
               !memcmp(x, y, nx);
    free(x);
    free(y);
    return same;
}

static void check_mode(const char *name, const char *opts, const char *final_file) {
    char a[2300], b[2300], la[8][512], lb[8][512], fa[2400], fb[2400];
    snprintf(a, sizeof a, "%s/%s-a", tmp, name);
    snprintf(b, sizeof b, "%s/%s-b", tmp, name);
    char rm[4800];
    snprintf(rm, sizeof rm, "rm -rf %s %s", a, b);
    lt_test_system(rm);

    /* uninterrupted */
    LT_CHECK(run("", a, opts) == 0, "%s: uninterrupted run failed (see %s/log.txt)", name, tmp);
    int na = read_metrics(a, la, 8);
    LT_CHECK(na == 6, "%s: %d metric lines, expected 6", name, na);
    for (int i = 0; i < na; i++) {
        LT_CHECK(field(la[i], "step") == i + 1, "%s: line %d: %s", name, i, la[i]);
        LT_CHECK(isfinite(field(la[i], "loss")) && isfinite(field(la[i], "grad_norm")) &&
                     field(la[i], "target_tokens") > 0 && field(la[i], "tokens") > 0 &&
                     isfinite(field(la[i], "tokens_per_s")) && isfinite(field(la[i], "elapsed_s")),
                 "%s: line %d: %s", name, i, la[i]);
    }
    if (na == 6) {
        LT_CHECK(field(la[0], "lr") == 0 && field(la[1], "lr") > 0, "%s: warmup lr %s", name, la[1]);
        LT_CHECK(field(la[5], "loss") < field(la[0], "loss") - 0.05, "%s: loss did not fall: %g -> %g", name,
                 field(la[0], "loss"), field(la[5], "loss"));
    }
    snprintf(fa, sizeof fa, "%s/final/%s", a, final_file);
    LT_CHECK(lt_file_exists(fa), "%s: %s missing", name, fa);
    snprintf(fa, sizeof fa, "%s/checkpoints/step-000003/COMPLETE", a);
    LT_CHECK(lt_file_exists(fa), "%s: %s missing", name, fa);
    snprintf(fa, sizeof fa, "%s/checkpoints/step-000003/%s/%s", a, strstr(opts, "--lora-rank") ? "adapter" : "hf",
             final_file);
    LT_CHECK(lt_file_exists(fa), "%s: %s missing", name, fa);

    /* killed after step 4, resumed and killed while writing checkpoint 6, resumed again */
    int rc = run("LT_TRAIN_TEST_KILL_AFTER=4", b, opts);
    LT_CHECK(rc == 128 + 9, "%s: first part should be killed, rc %d", name, rc);
    char extra[512];
    snprintf(extra, sizeof extra, "%s --resume", opts);
    rc = run("LT_CKPT_TEST_KILL_AT=3", b, extra);
    LT_CHECK(rc == 128 + 9, "%s: second part should be killed in the checkpoint write, rc %d", name, rc);
    snprintf(fb, sizeof fb, "%s/checkpoints/step-000006", b);
    LT_CHECK(!lt_is_dir(fb), "%s: a checkpoint killed mid-write is in place", name);
    rc = run("", b, extra);
    LT_CHECK(rc == 0, "%s: resumed run failed, rc %d", name, rc);
    int nb = read_metrics(b, lb, 8);
    LT_CHECK(nb == 6, "%s: resumed run has %d metric lines", name, nb);
    for (int i = 0; i < na && i < nb; i++) {
        char x[512], y[512];
        loss_part(la[i], x, sizeof x);
        loss_part(lb[i], y, sizeof y);
        LT_CHECK(x[0] && !strcmp(x, y), "%s: step %d differs after resume:\n  %s\n  %s", name, i + 1, x, y);
    }
    snprintf(fa, sizeof fa, "%s/final/%s", a, final_file);
    snprintf(fb, sizeof fb, "%s/final/%s", b, final_file);
    LT_CHECK(same_file(fa, fb), "%s: final exports differ after resume", name);
}

/* The language model inside Gemma3ForConditionalGeneration
 * (tests/fixtures/models/gemma3_cg): full fine-tuning exports the whole
 * multimodal folder in the source's layout (config.json byte for byte, every
 * source tensor name, the vision tower and projector byte for byte, the
 * language model trained); LoRA exports PEFT's names for that model
 * (base_model.model.model.language_model.layers.N..., target_modules a
 * regular expression over the language model's layers), which eval --adapter
 * reads and merge folds into a whole multimodal folder again. */
static void check_multimodal(void) {
    static const char PEFT_CG[] = "base_model.model.model.language_model.layers.";
    char cg[2048], out[2500], cmd[8192], a[2600], b[2600];
    snprintf(cg, sizeof cg, "%s", lt_src_path("tests/fixtures/models/gemma3_cg"));
    for (int lora = 0; lora < 2; lora++) {
        snprintf(out, sizeof out, "%s/cg_%s", tmp, lora ? "lora" : "full");
        LT_FMT(cmd,
               "rm -rf %s && %s train --model %s --data %s --out %s --seq-len 32 --micro-batch 2 --max-steps 2 "
               "--save-every 2 --lr 3e-3 --device cpu --threads 2 %s > %s/cg.txt 2>&1",
               out, LT_BIN, cg, shard, out, lora ? "--lora-rank 4 --lora-alpha 8" : "", tmp);
        LT_CHECK(lt_test_system(cmd) == 0, "gemma3_cg %s training failed (%s/cg.txt)", lora ? "LoRA" : "full", tmp);
        /* `luxtrain export` of the last checkpoint writes what final/ holds */
        LT_FMT(cmd, "%s export %s/checkpoints/step-000002 --out %s/ckx > %s/cg_ckx.txt 2>&1", LT_BIN, out, out, tmp);
        LT_CHECK(lt_test_system(cmd) == 0, "gemma3_cg: export of the checkpoint failed (%s/cg_ckx.txt)", tmp);
        LT_FMT(a, "%s/ckx/%s", out, lora ? "adapter_model.safetensors" : "model.safetensors");
        LT_FMT(b, "%s/final/%s", out, lora ? "adapter_model.safetensors" : "model.safetensors");
        LT_CHECK(same_file(a, b), "gemma3_cg: the exported checkpoint differs from final/ (%s)", a);
        char *log = NULL;
        LT_FMT(a, "%s/cg.txt", tmp);
        lt_read_file(a, &log, NULL, NULL);
        LT_CHECK(log && strstr(log, "34 tensors of the other towers skipped (vision_tower.*, multi_modal_projector.*)"),
                 "gemma3_cg: no line about the skipped vision tower: %s", log ? log : "");
        free(log);
        if (lora) {
            char merged[2450];
            LT_FMT(merged, "%s/cg_merged", tmp);
            LT_FMT(a, "%s/final/adapter_config.json", out);
            char *cfg = NULL;
            lt_read_file(a, &cfg, NULL, NULL);
            LT_CHECK(cfg && strstr(cfg, "\"model\\\\.language_model\\\\.layers\\\\.\\\\d+\\\\.\\\\w+\\\\.(q_proj|k_proj|v_proj|o_proj|"
                                       "gate_proj|up_proj|down_proj)\""),
                     "gemma3_cg adapter: target_modules is not the language model's regex:\n%s", cfg ? cfg : "");
            free(cfg);
            lt_st_file *f = NULL;
            lt_err err = {{0}};
            LT_FMT(a, "%s/final/adapter_model.safetensors", out);
            LT_CHECK_OK(lt_st_open(a, &f, &err), &err);
            size_t good = 0;
            for (size_t i = 0; f && i < lt_st_count(f); i++)
                good += !strncmp(lt_st_get(f, i)->name, PEFT_CG, strlen(PEFT_CG));
            LT_CHECK(f && good == lt_st_count(f) && good == 2 * 2 * 7, "gemma3_cg adapter: %zu of %zu tensors named "
                     "base_model.model.model.language_model.layers.N...", good, f ? lt_st_count(f) : 0);
            if (f) lt_st_close(f);
            LT_FMT(cmd, "%s eval --model %s --adapter %s/final --data %s --seq-len 32 --device cpu > %s/cg_eval.txt 2>&1",
                   LT_BIN, cg, out, shard, tmp);
            LT_CHECK(lt_test_system(cmd) == 0, "gemma3_cg: eval --adapter failed (%s/cg_eval.txt)", tmp);
            LT_FMT(cmd, "rm -rf %s && %s merge --model %s --adapter %s/final --out %s > %s/cg_merge.txt 2>&1", merged,
                   LT_BIN, cg, out, merged, tmp);
            LT_CHECK(lt_test_system(cmd) == 0, "gemma3_cg: merge failed (%s/cg_merge.txt)", tmp);
            snprintf(out, sizeof out, "%s", merged);
        } else {
            snprintf(out + strlen(out), sizeof out - strlen(out), "/final");
        }
        if (lora) { /* trained embeddings: refused before training */
            LT_FMT(cmd, "%s train --model %s --data %s --out %s/cg_emb --seq-len 32 --max-steps 1 --lora-rank 4 "
                   "--train-embeddings all --device cpu > %s/cg_emb.txt 2>&1", LT_BIN, cg, shard, tmp, tmp);
            char *txt = NULL;
            LT_FMT(a, "%s/cg_emb.txt", tmp);
            int rc = lt_test_system(cmd);
            lt_read_file(a, &txt, NULL, NULL);
            LT_CHECK(rc != 0 && txt && strstr(txt, "inside Gemma3ForConditionalGeneration are not supported"),
                     "gemma3_cg --train-embeddings: rc %d, %s", rc, txt ? txt : "");
            free(txt);
        }
        /* a whole Gemma3ForConditionalGeneration folder in the source's layout */
        LT_FMT(a, "%s/config.json", cg);
        LT_FMT(b, "%s/config.json", out);
        LT_CHECK(same_file(a, b), "gemma3_cg %s: config.json not copied", lora ? "merge" : "full");
        lt_st_file *fs = NULL, *fo = NULL;
        lt_err err = {{0}};
        LT_FMT(a, "%s/model.safetensors", cg);
        LT_FMT(b, "%s/model.safetensors", out);
        LT_CHECK_OK(lt_st_open(a, &fs, &err), &err);
        LT_CHECK_OK(lt_st_open(b, &fo, &err), &err);
        size_t vision = 0, changed = 0;
        for (size_t i = 0; fs && fo && i < lt_st_count(fs); i++) {
            const lt_st_tensor *t = lt_st_get(fs, i), *o = lt_st_find(fo, t->name);
            LT_CHECK(o != NULL, "gemma3_cg %s: '%s' missing", lora ? "merge" : "full", t->name);
            if (!o) continue;
            int same = o->nbytes == t->nbytes && !memcmp(o->data, t->data, t->nbytes);
            if (strncmp(t->name, "language_model.", 15)) {
                vision++;
                LT_CHECK(same, "gemma3_cg: '%s' not copied byte for byte", t->name);
            } else {
                changed += !same;
            }
        }
        LT_CHECK(fs && fo && lt_st_count(fs) == lt_st_count(fo) && vision == 34 && changed > 0,
                 "gemma3_cg %s: %zu tensors (source %zu), %zu vision / projector, %zu language-model tensors changed",
                 lora ? "merge" : "full", fo ? lt_st_count(fo) : 0, fs ? lt_st_count(fs) : 0, vision, changed);
        if (fs) lt_st_close(fs);
        if (fo) lt_st_close(fo);
    }
}

int main(void) {
    snprintf(tmp, sizeof tmp, "%s", lt_test_tmpdir("test_train_run"));
    snprintf(shard, sizeof shard, "%s/train-0.h5", tmp);
    snprintf(model, sizeof model, "%s", lt_src_path("tests/fixtures/models/llama"));
    if (!make_shard()) {
        fprintf(stderr, "cannot write the shard\n");
        return 1;
    }
    check_multimodal();
    check_mode("full", "", "model.safetensors");
    check_mode("lora", "--lora-rank 4 --lora-alpha 16 --lora-dropout 0.1 --lora-targets q,v,o,down --lr 3e-2",
               "adapter_model.safetensors");
    /* NEFTune: resume stays bitwise (the noise of step s is keyed by seed and s),
     * and the noise does reach the training steps (other losses than "full") */
    check_mode("neftune", "--neftune-alpha 5", "model.safetensors");
    {
        char ln[8][512], lf[8][512], p1[2400], p2[2400], x[512], y[512];
        snprintf(p1, sizeof p1, "%s/full-a", tmp);
        snprintf(p2, sizeof p2, "%s/neftune-a", tmp);
        int n1 = read_metrics(p1, lf, 8), n2 = read_metrics(p2, ln, 8);
        LT_CHECK(n1 == 6 && n2 == 6, "neftune: %d and %d metric lines", n1, n2);
        if (n1 == 6 && n2 == 6) {
            loss_part(lf[0], x, sizeof x);
            loss_part(ln[0], y, sizeof y);
            LT_CHECK(strcmp(x, y) != 0, "neftune: step 1 loss equals the run without noise: %s", x);
        }
    }

    /* divergence: stops naming the step, no NaN checkpoint */
    char out[2300], cmd[8192];
    snprintf(out, sizeof out, "%s/diverge", tmp);
    snprintf(cmd, sizeof cmd, "rm -rf %s", out);
    lt_test_system(cmd);
    LT_FMT(cmd,
             "%s train --model %s --data %s --out %s --seq-len 32 --micro-batch 2 --max-steps 6 --save-every 1 "
             "--lr 1e6 --clip 0 --schedule constant --device cpu > %s/diverge.txt 2>&1",
             LT_BIN, model, shard, out, tmp);
    int rc = lt_test_system(cmd);
    LT_CHECK(rc != 0, "a diverging run succeeded");
    char *txt = NULL;
    size_t len = 0;
    lt_err err;
    snprintf(cmd, sizeof cmd, "%s/diverge.txt", tmp);
    if (lt_read_file(cmd, &txt, &len, &err) == LT_OK) {
        LT_CHECK(strstr(txt, "step ") && (strstr(txt, "not finite") || strstr(txt, "non-finite")),
                 "message: %s", txt);
        free(txt);
    }

    /* --skip-nonfinite: skipped steps are logged without a loss; a run that only diverges stops */
    snprintf(out, sizeof out, "%s/skip", tmp);
    LT_FMT(cmd,
             "rm -rf %s; %s train --model %s --data %s --out %s --seq-len 32 --micro-batch 2 --epochs 0 --max-steps 40 "
             "--save-every 1 --lr 1e6 --clip 0 --schedule constant --skip-nonfinite --device cpu > %s/skip.txt 2>&1",
             out, LT_BIN, model, shard, out, tmp);
    rc = lt_test_system(cmd);
    LT_CHECK(rc == 1, "a run that only diverges, with --skip-nonfinite: exit %d", rc);
    snprintf(cmd, sizeof cmd, "%s/metrics.jsonl", out);
    if (lt_read_file(cmd, &txt, &len, &err) == LT_OK) {
        LT_CHECK(strstr(txt, "\"skipped\": true") != NULL, "no skipped line in %s", cmd);
        LT_CHECK(!strstr(txt, "null") && !strstr(txt, "nan"), "non-finite number written: %s", txt);
        free(txt);
    } else {
        LT_CHECK(0, "%s missing", cmd);
    }

    /* bad options */
    const char *bad[] = {"--lora-rank -1", "--lr abc", "--schedule wavy", "--lora-targets q,x", "--bogus 1",
                         "--epochs 0 --max-steps 0"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(cmd, sizeof cmd, "%s train --model %s --data %s --out %s/bad %s 2>/dev/null", LT_BIN, model, shard,
                 tmp, bad[i]);
        rc = lt_test_system(cmd);
        LT_CHECK(rc == 2, "'%s' gave exit %d, expected 2", bad[i], rc);
    }
    return lt_test_finish("test_train_run");
}
