/*
 * lt_cmd_inspect_run.c -- `luxtrain inspect PATH`: its options, and
 * `luxtrain inspect RUN_DIR` and `luxtrain inspect RUN_DIR/checkpoints/step-N`
 * (a model folder goes on to lt_inspect_model, tools/lt_cmd_model.c; a shard
 * to lt_inspect_shard, tools/lt_cmd_tokenize.c): the step, loss and learning
 * rate, the run's training options (RUN_DIR/config.json), the mix achieved
 * when the run mixes shard sets, and what the folder holds, with the inspect
 * line for each usable model or adapter folder inside it.
 */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_ckpt.h"
#include "lt_cli.h"
#include "lt_fs.h"

/* the options of config.json shown, in this order (the rest: less telling) */
static const char *const SHOWN[] = {"model",       "adapter",   "data",       "eval_data",   "lora_rank",
                                    "lora_alpha",  "lora_targets", "seq_len", "micro_batch", "grad_accum",
                                    "epochs",      "max_steps", "lr",         "schedule",    "warmup_steps",
                                    "weight_decay", "seed",     "device",     NULL};

static void print_options(const char *run_dir) {
    char path[4096], *text = NULL;
    size_t len = 0;
    lt_err err = {{0}};
    if (!lt_path_join(path, sizeof path, run_dir, "config.json") || lt_read_file(path, &text, &len, &err)) {
        printf("options:        none (no %s/config.json)\n", run_dir);
        return;
    }
    cJSON *o = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsObject(o)) {
        printf("options:        %s is not a JSON object\n", path);
        cJSON_Delete(o);
        return;
    }
    printf("options:        (%s)\n", path);
    const cJSON *lr = cJSON_GetObjectItemCaseSensitive(o, "lora_rank");
    int lora = cJSON_IsNumber(lr) && lr->valuedouble > 0;
    for (int i = 0; SHOWN[i]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, SHOWN[i]);
        if (!v || cJSON_IsNull(v) || (!lora && !strncmp(SHOWN[i], "lora_", 5) && strcmp(SHOWN[i], "lora_rank")))
            continue;
        if (cJSON_IsArray(v) && !cJSON_GetArraySize(v)) continue;
        char *s = cJSON_IsString(v) ? NULL : cJSON_PrintUnformatted(v);
        printf("  %-14s %s\n", SHOWN[i], s ? s : v->valuestring);
        cJSON_free(s);
    }
    cJSON_Delete(o);
}

/* a mix of shard sets (state.json extra.mix, lt_cmd_train.c): per set the
 * target share of the tokens and what the batches so far took */
static void print_mix(const char *extra_json) {
    cJSON *x = extra_json ? cJSON_Parse(extra_json) : NULL;
    const cJSON *mix = x ? cJSON_GetObjectItemCaseSensitive(x, "mix") : NULL, *e;
    if (!cJSON_IsArray(mix) || !cJSON_GetArraySize(mix)) {
        cJSON_Delete(x);
        return;
    }
    double total = 0;
    cJSON_ArrayForEach(e, mix) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(e, "tokens");
        if (cJSON_IsNumber(t)) total += t->valuedouble;
    }
    printf("mix:            %d shard sets; document tokens taken so far against each set's target share\n",
           cJSON_GetArraySize(mix));
    printf("  %-32s %8s %8s %12s %10s %14s\n", "set", "target", "achieved", "tokens", "documents", "target tokens");
    cJSON_ArrayForEach(e, mix) {
        const cJSON *set = cJSON_GetObjectItemCaseSensitive(e, "set");
        const cJSON *share = cJSON_GetObjectItemCaseSensitive(e, "target_share");
        const cJSON *tok = cJSON_GetObjectItemCaseSensitive(e, "tokens");
        const cJSON *docs = cJSON_GetObjectItemCaseSensitive(e, "docs");
        const cJSON *tgt = cJSON_GetObjectItemCaseSensitive(e, "target_tokens");
        if (!cJSON_IsString(set) || !cJSON_IsNumber(share) || !cJSON_IsNumber(tok) || !cJSON_IsNumber(docs) ||
            !cJSON_IsNumber(tgt)) {
            printf("  (a set entry of state.json extra.mix is malformed)\n");
            continue;
        }
        printf("  %-32s %8.4f %8.4f %12.0f %10.0f %14.0f\n", set->valuestring, share->valuedouble,
               total > 0 ? tok->valuedouble / total : 0.0, tok->valuedouble, docs->valuedouble, tgt->valuedouble);
    }
    cJSON_Delete(x);
}

static int is_adapter(const char *dir) {
    char cfg[4096];
    return lt_path_join(cfg, sizeof cfg, dir, "adapter_config.json") && lt_fs_file_size(cfg) >= 0;
}

/* a model folder (luxtrain inspect reads it) or a PEFT adapter (used with --adapter) */
static void print_sub(const char *dir, const char *name, const char *what) {
    char p[4096];
    if (!lt_path_join(p, sizeof p, dir, name) || !lt_is_dir(p)) return;
    printf("  %-22s %s (%s %s)\n", name, what, is_adapter(p) ? "use with --adapter" : "luxtrain inspect", p);
}

static void print_file(const char *dir, const char *name, const char *what) {
    char p[4096];
    int64_t n = lt_path_join(p, sizeof p, dir, name) ? lt_fs_file_size(p) : -1;
    if (n >= 0) printf("  %-22s %s (%lld bytes)\n", name, what, (long long)n);
}

static int inspect_ckpt(const char *dir) {
    lt_err err = {{0}};
    lt_ckpt *c = NULL;
    printf("checkpoint:     %s\n", dir);
    if (lt_ckpt_open(dir, &c, &err)) {
        printf("state:          NOT usable: %s\n", err.msg);
        printf("holds:\n");
    } else {
        const lt_ckpt_state *s = &c->state;
        printf("step:           %lld of %lld (epoch %lld), %s fine-tuning\n", (long long)s->step,
               (long long)s->total_steps, (long long)s->epoch, strcmp(s->mode, "lora") ? "full" : "LoRA");
        if (isnan(s->loss))
            printf("loss:           none recorded\n");
        else
            printf("loss:           %.6g (the last step's training loss)\n", s->loss);
        printf("learning rate:  %.6g\n", s->lr);
        printf("tokens seen:    %lld\n", (long long)s->tokens_seen);
        printf("options hash:   %s\n", s->options_hash);
        print_mix(s->extra_json);
        lt_ckpt_close(c);
        printf("holds:\n");
    }
    print_file(dir, "weights.safetensors", "trainable weights (f32)");
    print_file(dir, "optimizer.safetensors", "AdamW state");
    print_file(dir, "loader.bin", "the data loader's position");
    print_file(dir, "state.json", "step, schedule, RNG");
    print_file(dir, "COMPLETE", "manifest (written last)");
    print_sub(dir, "hf", "Hugging Face model folder");
    print_sub(dir, "adapter", "PEFT adapter folder");
    char ck[4096], run[4096];
    lt_fs_dirname(dir, ck, sizeof ck);
    lt_fs_dirname(ck, run, sizeof run);
    printf("run:            %s (luxtrain inspect %s; --resume continues from its newest complete checkpoint)\n",
           run, run);
    print_options(run);
    return 0;
}

static int inspect_run(const char *dir) {
    char ck[4096], latest[4096] = "", path[4096];
    int64_t step = -1;
    lt_err err = {{0}};
    printf("run:            %s\n", dir);
    if (lt_ckpt_find_latest(dir, latest, sizeof latest, &step, &err)) {
        fprintf(stderr, "inspect: %s\n", err.msg);
        return 1;
    }
    int n = 0;
    DIR *d = lt_path_join(ck, sizeof ck, dir, "checkpoints") ? opendir(ck) : NULL;
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)))
            if (!strncmp(e->d_name, "step-", 5) && lt_path_join(path, sizeof path, ck, e->d_name) &&
                lt_ckpt_is_complete(path))
                n++;
        closedir(d);
    }
    if (step < 0) {
        printf("checkpoints:    none complete\n");
    } else {
        lt_ckpt *c = NULL;
        printf("checkpoints:    %d complete; newest: %s\n", n, latest);
        if (lt_ckpt_open(latest, &c, &err) == LT_OK) {
            printf("step:           %lld of %lld (epoch %lld), %s fine-tuning\n", (long long)c->state.step,
                   (long long)c->state.total_steps, (long long)c->state.epoch,
                   strcmp(c->state.mode, "lora") ? "full" : "LoRA");
            if (!isnan(c->state.loss)) printf("loss:           %.6g (at step %lld)\n", c->state.loss, (long long)step);
            print_mix(c->state.extra_json);
            lt_ckpt_close(c);
        }
    }
    print_options(dir);
    printf("holds:\n");
    print_file(dir, "config.json", "the resolved options");
    print_file(dir, "metrics.jsonl", "one JSON line per logged step");
    print_file(dir, "loss.svg", "the loss plot");
    if (lt_path_join(path, sizeof path, dir, "final") && lt_is_dir(path)) {
        print_sub(dir, "final",
                  is_adapter(path) ? "the finished run's PEFT adapter" : "the finished run's Hugging Face model");
    } else {
        printf("  %-22s none: the run has not finished\n", "final/");
    }
    if (step >= 0) printf("to continue:    luxtrain train ... --out %s --resume\n", dir);
    return 0;
}

typedef struct {
    char **path;
    int n_path, json, help;
    long show;
    char *tokenizer;
} inspect_opts;

#define F(x) offsetof(inspect_opts, x)
static const lt_optdef OPTS[] = {
    {.name = "json", .k = LT_OPT_FLAG, .off = F(json), .help = "a model folder: print it as one JSON object"},
    {.name = "show", .k = LT_OPT_LONG, .off = F(show), .def = "0", .meta = "N", .lo = 0, .hi = 1L << 30,
     .help = "a shard: also print the first N documents decoded, the tokens trained on (targets) between "
             "\xe2\x9f\xa6 and \xe2\x9f\xa7"},
    {.name = "tokenizer", .k = LT_OPT_STR, .off = F(tokenizer), .meta = "PATH",
     .help = "a shard: the tokenizer (model folder or tokenizer.json) that decodes --show's documents"},
};
static const lt_optset SET = {
    .cmd = "inspect",
    .usage = "usage: luxtrain inspect MODEL_DIR [--json]\n"
             "       luxtrain inspect RUN_DIR | RUN_DIR/checkpoints/step-N\n"
             "       luxtrain inspect SHARD.h5 [--show N --tokenizer PATH]\n"
             "A Hugging Face model folder: architecture, sizes, parameter count, stored dtypes,\n"
             "tied embeddings, rope scaling; every tensor is checked against config.json.\n"
             "A training run (RUN_DIR) or checkpoint (RUN_DIR/checkpoints/step-N): step, loss,\n"
             "learning rate, the run's options and what the folder holds.\n"
             "A token shard (.h5): its attributes, document and token counts.\n",
    .defs = OPTS,
    .n = sizeof OPTS / sizeof OPTS[0],
    .off_help = F(help),
    .off_pos = F(path),
    .off_npos = F(n_path),
    .pos_min = 1,
    .pos_max = 1,
    .pos_meta = "a model folder, run folder, checkpoint or shard (.h5)",
};
#undef F

static int inspect_path(void *arg) {
    const inspect_opts *o = arg;
    const char *path = o->path[0];
    if (lt_str_ends_with(path, ".h5")) {
        if (o->json) {
            fprintf(stderr, "inspect: --json describes a model folder; %s is a token shard\n", path);
            return 2;
        }
        return lt_inspect_shard(path, o->show, o->tokenizer);
    }
    if (o->show || o->tokenizer) {
        fprintf(stderr, "inspect: --show and --tokenizer describe a token shard (.h5); %s is not one\n", path);
        return 2;
    }
    /* a checkpoint (RUN_DIR/checkpoints/step-N) or a run (RUN_DIR) */
    static const char *const CKPT[] = {"COMPLETE", "state.json", NULL};
    static const char *const RUN[] = {"checkpoints", "metrics.jsonl", NULL};
    char p[4096];
    for (int k = 0; k < 2; k++)
        for (int i = 0; lt_is_dir(path) && (k ? RUN : CKPT)[i]; i++) {
            if (!lt_path_join(p, sizeof p, path, (k ? RUN : CKPT)[i]) || (!lt_file_exists(p) && !lt_is_dir(p))) continue;
            if (o->json) {
                fprintf(stderr, "inspect: --json describes a model folder; %s is a training %s\n", path,
                        k ? "run" : "checkpoint");
                return 2;
            }
            return k ? inspect_run(path) : inspect_ckpt(path);
        }
    return lt_inspect_model(path, o->json);
}

int lt_cmd_inspect(int argc, char **argv) {
    inspect_opts o = {0};
    return lt_opts_main(&SET, argc, argv, &o, inspect_path);
}
