/*
 * lt_cmd_inspect_run.c -- `luxtrain inspect PATH`: its options, and
 * `luxtrain inspect RUN_DIR` and `luxtrain inspect RUN_DIR/checkpoints/step-N`
 * (a model folder goes on to lt_inspect_model, tools/lt_cmd_model.c; a shard
 * to lt_inspect_shard, tools/lt_cmd_tokenize.c): the step, loss and learning
 * rate, the run's training options (RUN_DIR/config.json), the mix achieved
 * when the run mixes shard sets, and what the folder holds, with the inspect
 * line for each usable model or adapter folder inside it. A checkpoint also:
 * its form (whole, or sharded: world size, ZeRO stage, hybrid group), every
 * tensor file with its rank, size and the slices it holds (index.json), and
 * the check (lt_ckpt_info_read): COMPLETE present, every file it lists and
 * every rank file index.json names there with its size, each holding its
 * slices -- a problem is named by file and the exit status is 1; --json
 * prints the same as one object.
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

/* what a checkpoint's non-tensor file is for */
static const char *file_role(const char *name) {
    static const char *const R[][2] = {{"loader.bin", "the data loader's position"},
                                       {"state.json", "step, schedule, RNG"},
                                       {"index.json", "which slices of which tensor each rank file holds"},
                                       {"COMPLETE", "manifest: every file with its size (written last)"}};
    for (size_t i = 0; i < sizeof R / sizeof R[0]; i++)
        if (!strcmp(name, R[i][0])) return R[i][1];
    return "listed in COMPLETE";
}

/* "sharded, written by 3 ranks with ZeRO-1" / "whole (one process)" */
static void form_text(const lt_ckpt_info *in, char *buf, size_t cap) {
    char z[64] = "", g[64] = "";
    if (!in->sharded) {
        snprintf(buf, cap, "whole (written by one process: weights.safetensors%s)",
                 in->tensors[LT_CKPT_OPTIM] ? ", optimizer.safetensors" : "");
        return;
    }
    if (in->zero >= 0) snprintf(z, sizeof z, in->zero ? " with ZeRO-%d" : " without ZeRO (stage 0)", in->zero);
    else snprintf(z, sizeof z, " (ZeRO stage not recorded)");
    if (in->shard_group) snprintf(g, sizeof g, ", hybrid sharding in groups of %d ranks", in->shard_group);
    snprintf(buf, cap, "sharded, written by %d ranks%s%s (index.json)", in->world, z, g);
}

static cJSON *json_num_or_null(double x, int have) { return have ? cJSON_CreateNumber(x) : cJSON_CreateNull(); }

/* the checkpoint as one JSON object (the style of `inspect MODEL --json`) */
static void print_ckpt_json(const char *dir, const lt_ckpt_info *in, const lt_ckpt *c, const char *unusable) {
    cJSON *o = cJSON_CreateObject(), *fs = cJSON_CreateArray(), *pr = cJSON_CreateArray();
    cJSON_AddStringToObject(o, "path", dir);
    cJSON_AddStringToObject(o, "form", in->sharded ? "sharded" : "whole");
    cJSON_AddNumberToObject(o, "world", in->world);
    cJSON_AddItemToObject(o, "zero", json_num_or_null(in->zero, in->zero >= 0));
    cJSON_AddItemToObject(o, "shard_group", json_num_or_null(in->shard_group, in->shard_group > 0));
    const lt_ckpt_state *s = c ? &c->state : NULL;
    if (in->mode[0]) cJSON_AddStringToObject(o, "mode", in->mode); /* state.json, even when not usable */
    else cJSON_AddNullToObject(o, "mode");
    cJSON_AddItemToObject(o, "step", json_num_or_null((double)in->step, in->step >= 0));
    cJSON_AddItemToObject(o, "total_steps", json_num_or_null(s ? (double)s->total_steps : 0, !!s));
    cJSON_AddItemToObject(o, "epoch", json_num_or_null(s ? (double)s->epoch : 0, !!s));
    cJSON_AddItemToObject(o, "loss", json_num_or_null(s ? s->loss : 0, s && !isnan(s->loss)));
    cJSON_AddItemToObject(o, "lr", json_num_or_null(s ? s->lr : 0, s && !isnan(s->lr)));
    cJSON_AddItemToObject(o, "tokens_seen", json_num_or_null(s ? (double)s->tokens_seen : 0, !!s));
    if (s) cJSON_AddStringToObject(o, "options_hash", s->options_hash);
    else cJSON_AddNullToObject(o, "options_hash");
    for (int k = 0; k < 2; k++) {
        cJSON *t = cJSON_AddObjectToObject(o, k ? "optimizer" : "weights");
        cJSON_AddNumberToObject(t, "tensors", (double)in->tensors[k]);
        cJSON_AddNumberToObject(t, "elements", (double)in->elements[k]);
    }
    cJSON_AddBoolToObject(o, "complete", in->complete);
    cJSON_AddBoolToObject(o, "usable", !unusable && !in->n_problems);
    for (size_t i = 0; i < in->n_files; i++) {
        const lt_ckpt_file_info *f = &in->files[i];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddItemToArray(fs, e);
        cJSON_AddStringToObject(e, "name", f->name);
        cJSON_AddItemToObject(e, "rank", json_num_or_null(f->rank, f->rank >= 0));
        cJSON_AddStringToObject(e, "holds", f->kind == LT_CKPT_WEIGHTS ? "weights" : f->kind == LT_CKPT_OPTIM ? "optimizer"
                                                                                                        : file_role(f->name));
        cJSON_AddItemToObject(e, "bytes", json_num_or_null((double)f->size, f->size >= 0));
        cJSON_AddItemToObject(e, "listed_bytes", json_num_or_null((double)f->listed, f->listed >= 0));
        if (f->kind >= 0) {
            cJSON_AddBoolToObject(e, "in_index", f->in_index);
            cJSON_AddNumberToObject(e, "tensors", (double)f->tensors);
            cJSON_AddNumberToObject(e, "whole_tensors", (double)f->whole);
            cJSON_AddNumberToObject(e, "elements", (double)f->elements);
            if (f->first[0]) cJSON_AddStringToObject(e, "first", f->first);
            else cJSON_AddNullToObject(e, "first");
            if (f->last[0] || f->first[0]) cJSON_AddStringToObject(e, "last", f->last[0] ? f->last : f->first);
            else cJSON_AddNullToObject(e, "last");
        }
        if (f->problem[0]) cJSON_AddStringToObject(e, "problem", f->problem);
        else cJSON_AddNullToObject(e, "problem");
        if (f->problem[0]) cJSON_AddItemToArray(pr, cJSON_CreateString(f->problem));
    }
    if (in->problem[0]) cJSON_AddItemToArray(pr, cJSON_CreateString(in->problem));
    if (unusable && !cJSON_GetArraySize(pr)) cJSON_AddItemToArray(pr, cJSON_CreateString(unusable));
    cJSON_AddItemToObject(o, "files", fs);
    cJSON_AddItemToObject(o, "problems", pr);
    char *t = cJSON_PrintUnformatted(o);
    printf("%s\n", t ? t : "{}");
    cJSON_free(t);
    cJSON_Delete(o);
}

/* the tensor files: per file its rank, size and the slices it holds */
static void print_tensor_files(const lt_ckpt_info *in) {
    printf("%s\n", in->sharded ? "rank files:     (index.json's slices per file, in the optimizer's tensor order)"
                               : "tensor files:");
    printf("  %-5s %-44s %12s %8s %6s %12s  %s\n", "rank", "file", "bytes", "tensors", "whole", "elements",
           "first slice .. last slice");
    for (size_t i = 0; i < in->n_files; i++) {
        const lt_ckpt_file_info *f = &in->files[i];
        if (f->kind < 0) continue;
        char r[16] = "-", b[32] = "MISSING";
        if (f->rank >= 0) snprintf(r, sizeof r, "%d", f->rank);
        if (f->size >= 0) snprintf(b, sizeof b, "%lld", (long long)f->size);
        printf("  %-5s %-44s %12s %8zu %6zu %12zu  %s%s%s%s\n", r, f->name, b, f->tensors, f->whole, f->elements,
               f->kind ? "optimizer: " : "weights: ", f->first[0] ? f->first : "(nothing)", f->last[0] ? " .. " : "",
               f->last);
    }
}

static int inspect_ckpt(const char *dir, int json) {
    lt_err err = {{0}};
    lt_ckpt *c = NULL;
    lt_ckpt_info in;
    if (lt_ckpt_info_read(dir, &in, &err)) {
        fprintf(stderr, "inspect: %s\n", err.msg);
        return 1;
    }
    const char *unusable = lt_ckpt_open(dir, &c, &err) ? err.msg : NULL;
    int bad = unusable || in.n_problems;
    if (json) {
        print_ckpt_json(dir, &in, c, unusable);
        lt_ckpt_close(c);
        lt_ckpt_info_free(&in);
        return bad;
    }
    char form[256];
    form_text(&in, form, sizeof form);
    printf("checkpoint:     %s\n", dir);
    printf("form:           %s\n", form);
    if (unusable) {
        if (in.step >= 0)
            printf("step:           %lld, %s fine-tuning (state.json)\n", (long long)in.step,
                   strcmp(in.mode, "lora") ? "full" : "LoRA");
        printf("state:          NOT usable: %s\n", unusable);
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
    }
    size_t nt = 0;
    for (size_t i = 0; i < in.n_files; i++) nt += in.files[i].kind >= 0 && in.files[i].in_index;
    if (in.sharded)
        printf("index.json:     %zu weight tensors (%zu elements), %zu optimizer tensors (%zu elements), in %zu rank "
               "files\n", in.tensors[0], in.elements[0], in.tensors[1], in.elements[1], nt);
    print_tensor_files(&in);
    if (!bad) {
        printf("check:          complete: COMPLETE lists every file with its size and each is there with it%s\n",
               in.sharded ? "; every rank file index.json names holds the slices it gives that file" : "");
    } else {
        printf("check:          NOT usable (%d problem%s):\n", in.n_problems ? in.n_problems : 1,
               in.n_problems == 1 ? "" : "s");
        if (in.problem[0]) printf("  %s\n", in.problem);
        for (size_t i = 0; i < in.n_files; i++)
            if (in.files[i].problem[0]) printf("  %s\n", in.files[i].problem);
        if (!in.n_problems) printf("  %s\n", unusable);
    }
    printf("holds:\n");
    for (size_t i = 0; i < in.n_files; i++) {
        const lt_ckpt_file_info *f = &in.files[i];
        if (f->kind >= 0 && in.sharded) continue;
        if (f->size < 0) continue;
        printf("  %-22s %s (%lld bytes)\n", f->name,
               f->kind == LT_CKPT_WEIGHTS ? "trainable weights (f32)" : f->kind == LT_CKPT_OPTIM ? "AdamW state"
                                                                                                   : file_role(f->name),
               (long long)f->size);
    }
    if (in.sharded) printf("  %-22s the rank files above\n", "*-rank-*.safetensors");
    print_sub(dir, "hf", "Hugging Face model folder");
    print_sub(dir, "adapter", "PEFT adapter folder");
    char ck[4096], run[4096];
    lt_fs_dirname(dir, ck, sizeof ck);
    lt_fs_dirname(ck, run, sizeof run);
    printf("run:            %s (luxtrain inspect %s; --resume continues from its newest complete checkpoint)\n",
           run, run);
    print_options(run);
    if (bad) fprintf(stderr, "inspect: %s: %s\n", dir, in.n_problems ? "damaged or incomplete checkpoint (above)" : "not usable (above)");
    lt_ckpt_info_free(&in);
    return bad;
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
    {.name = "json", .k = LT_OPT_FLAG, .off = F(json),
     .help = "a model folder or a checkpoint: print it as one JSON object"},
    {.name = "show", .k = LT_OPT_LONG, .off = F(show), .def = "0", .meta = "N", .lo = 0, .hi = 1L << 30,
     .help = "a shard: also print the first N documents decoded, the tokens trained on (targets) between "
             "\xe2\x9f\xa6 and \xe2\x9f\xa7"},
    {.name = "tokenizer", .k = LT_OPT_STR, .off = F(tokenizer), .meta = "PATH",
     .help = "a shard: the tokenizer (model folder or tokenizer.json) that decodes --show's documents"},
};
static const lt_optset SET = {
    .cmd = "inspect",
    .usage = "usage: luxtrain inspect MODEL_DIR [--json]\n"
             "       luxtrain inspect RUN_DIR | RUN_DIR/checkpoints/step-N [--json]\n"
             "       luxtrain inspect SHARD.h5 [--show N --tokenizer PATH]\n"
             "A Hugging Face model folder: architecture, sizes, parameter count, stored dtypes,\n"
             "tied embeddings, rope scaling; every tensor is checked against config.json.\n"
             "A training run (RUN_DIR) or checkpoint (RUN_DIR/checkpoints/step-N): step, loss,\n"
             "learning rate, the run's options and what the folder holds; a checkpoint also its form\n"
             "(whole or sharded: ranks, ZeRO stage), each rank file with its size and slices, and\n"
             "whether every file is there with its size (exit status 1 when not).\n"
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
            if (o->json && k) {
                fprintf(stderr, "inspect: --json describes a model folder or a checkpoint; %s is a training run "
                        "(give RUN/checkpoints/step-N)\n", path);
                return 2;
            }
            return k ? inspect_run(path) : inspect_ckpt(path, o->json);
        }
    return lt_inspect_model(path, o->json);
}

int lt_cmd_inspect(int argc, char **argv) {
    inspect_opts o = {0};
    return lt_opts_main(&SET, argc, argv, &o, inspect_path);
}
