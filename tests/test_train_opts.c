/*
 * test_train_opts.c -- options of `luxtrain train` (train/lt_train_opts.c):
 * defaults, config file + flag override, the resolved config round trip,
 * every rejection the spec names (with the message checked), --help listing
 * every option with its default, and docs/training.md holding the generated
 * options table verbatim.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_lora.h"
#include "lt_test.h"
#include "lt_train_opts.h"

#define ARGV(...) (char *[]){"train", __VA_ARGS__, NULL}
#define ARGC(...) ((int)(sizeof((char *[]){"train", __VA_ARGS__}) / sizeof(char *)))
#define PARSE(o, e, ...) lt_train_opts_parse(ARGC(__VA_ARGS__), ARGV(__VA_ARGS__), (o), (e))

/* expect a rejection whose message contains `needle` */
#define REJECT(needle, ...)                                                                                   \
    do {                                                                                                      \
        lt_train_opts o_;                                                                                     \
        lt_err e_ = {{0}};                                                                                    \
        lt_status s_ = PARSE(&o_, &e_, __VA_ARGS__);                                                          \
        LT_CHECK(s_ != LT_OK && strstr(e_.msg, needle), "expected rejection mentioning '%s', got %s: '%s'", \
                 needle, lt_status_name(s_), e_.msg);                                                         \
        if (getenv("LT_TEST_VERBOSE")) printf("  rejected: %s\n", e_.msg);                                   \
        lt_train_opts_free(&o_);                                                                              \
    } while (0)

#define REQ "--model", "m", "--data", "a.h5", "--out", "run"

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static void test_defaults(void) {
    lt_train_opts o;
    lt_err e;
    LT_CHECK_OK(PARSE(&o, &e, REQ), &e);
    LT_CHECK(!strcmp(o.model, "m") && o.n_data == 1 && !strcmp(o.data[0], "a.h5") && !strcmp(o.out, "run"), "req");
    LT_CHECK(o.lora_rank == 0 && !lt_train_opts_lora(&o), "full fine-tuning by default");
    LT_CHECK(o.lora_alpha == 16 && o.lora_dropout == 0 && o.lora_targets == LT_LORA_ALL_TARGETS && !o.rslora,
             "lora defaults");
    LT_CHECK(o.seq_len == 1024 && o.micro_batch == 4 && o.grad_accum == 1 && o.epochs == 1 && o.max_steps == 0,
             "batch defaults");
    LT_CHECK(o.lr == 1e-4 && o.warmup_steps == 0 && o.schedule == LT_SCHED_COSINE && o.min_lr_ratio == 0.1,
             "lr defaults");
    LT_CHECK(o.beta1 == 0.9 && o.beta2 == 0.999 && o.eps == 1e-8 && o.weight_decay == 0.01 && !o.decay_embeddings &&
                 o.clip == 1.0,
             "adamw defaults");
    LT_CHECK(o.seed == 42 && o.eval_every == 100 && o.save_every == 500 && o.keep_checkpoints == 0 &&
                 o.log_every == 10 && !o.resume && !strcmp(o.device, "auto") && o.threads == 0 && !o.skip_nonfinite,
             "run defaults");
    LT_CHECK(!o.adapter && !o.config && o.n_eval_data == 0, "unset");
    lt_train_opts_free(&o);
}

static void test_flags(void) {
    lt_train_opts o;
    lt_err e;
    LT_CHECK_OK(PARSE(&o, &e, "--model", "m", "--data", "a.h5", "b.h5", "c.h5", "--out", "run", "--lora-rank", "8",
                      "--lora-alpha=32", "--lora-targets", "q_proj,v,down", "--rslora", "--lr", "3e-4", "--schedule",
                      "linear", "--eval-data", "e.h5", "--resume", "--device", "cpu", "--skip-nonfinite",
                      "--max-steps", "100", "--epochs", "0", "--lora-dropout", "0.1"),
                &e);
    LT_CHECK(o.n_data == 3 && !strcmp(o.data[2], "c.h5"), "multi-value --data: %d", o.n_data);
    LT_CHECK(o.lora_rank == 8 && o.lora_alpha == 32 && o.rslora && o.lora_dropout == 0.1, "lora flags");
    LT_CHECK(o.lora_targets == ((1u << LT_LORA_Q) | (1u << LT_LORA_V) | (1u << LT_LORA_DOWN)), "targets %x",
             o.lora_targets);
    LT_CHECK(o.lr == 3e-4 && o.schedule == LT_SCHED_LINEAR && o.resume && o.skip_nonfinite, "misc");
    LT_CHECK(o.n_eval_data == 1 && !strcmp(o.device, "cpu") && o.max_steps == 100 && o.epochs == 0, "misc 2");
    lt_train_opts_free(&o);
    /* an adapter implies LoRA */
    LT_CHECK_OK(PARSE(&o, &e, REQ, "--adapter", "ad", "--lora-alpha", "4"), &e);
    LT_CHECK(lt_train_opts_lora(&o) && !strcmp(o.adapter, "ad"), "adapter");
    lt_train_opts_free(&o);
    /* --help anywhere, nothing validated */
    LT_CHECK_OK(PARSE(&o, &e, "--lr", "abc", "--help"), &e);
    LT_CHECK(o.help, "--help");
    lt_train_opts_free(&o);
}

static void test_config(const char *dir) {
    char cfg[4096], cfg2[4096];
    snprintf(cfg, sizeof cfg, "%s/run.json", dir);
    write_text(cfg, "{\"model\": \"base\", \"data\": [\"x.h5\", \"y.h5\"], \"out\": \"r\",\n"
                    " \"lora-rank\": 16, \"lora_alpha\": 8, \"lora_targets\": [\"q\", \"k\"],\n"
                    " \"lr\": 0.002, \"schedule\": \"constant\", \"seed\": 7, \"rslora\": true,\n"
                    " \"warmup_steps\": 3, \"clip\": 0}\n");
    lt_train_opts o;
    lt_err e;
    LT_CHECK_OK(PARSE(&o, &e, "--config", cfg, "--lr", "5e-4", "--seed", "9"), &e);
    LT_CHECK(!strcmp(o.model, "base") && o.n_data == 2 && !strcmp(o.data[1], "y.h5"), "from config");
    LT_CHECK(o.lora_rank == 16 && o.lora_alpha == 8 && o.rslora && o.warmup_steps == 3 && o.clip == 0, "config values");
    LT_CHECK(o.lora_targets == ((1u << LT_LORA_Q) | (1u << LT_LORA_K)), "targets from a JSON list");
    LT_CHECK(o.schedule == LT_SCHED_CONSTANT, "schedule from config");
    LT_CHECK(o.lr == 5e-4 && o.seed == 9, "flags override the config: lr %g seed %ld", o.lr, o.seed);
    LT_CHECK(o.config && !strcmp(o.config, cfg), "config path kept");
    /* flags before --config still win */
    lt_train_opts p;
    LT_CHECK_OK(PARSE(&p, &e, "--lr", "7e-4", "--config", cfg), &e);
    LT_CHECK(p.lr == 7e-4, "flag before --config overrides it: %g", p.lr);
    lt_train_opts_free(&p);

    /* resolved configuration: written, re-read as a config, identical */
    snprintf(cfg2, sizeof cfg2, "%s/resolved.json", dir);
    LT_CHECK_OK(lt_train_opts_write(&o, cfg2, &e), &e);
    LT_CHECK_OK(PARSE(&p, &e, "--config", cfg2), &e);
    char *a = lt_train_opts_to_json(&o), *b = lt_train_opts_to_json(&p);
    LT_CHECK(a && b && !strcmp(a, b), "resolved config round trip:\n%s\nvs\n%s", a, b);
    LT_CHECK(strstr(a, "\"lora_targets\":\t\"q,k\"") && strstr(a, "\"lr\":\t0.0005") &&
                 strstr(a, "\"schedule\":\t\"constant\"") && strstr(a, "\"min_lr_ratio\":\t0.1") && !strstr(a, "\"config\""),
             "resolved json content:\n%s", a);
    char h1[17], h2[17], h3[17];
    lt_train_opts_hash(&o, h1);
    lt_train_opts_hash(&p, h2);
    LT_CHECK(!strcmp(h1, h2) && strlen(h1) == 16, "hash of equal options %s %s", h1, h2);
    p.threads = 5, p.save_every = 3, p.resume = 1, p.max_steps = 99; /* allowed to change on resume */
    lt_train_opts_hash(&p, h3);
    LT_CHECK(!strcmp(h1, h3), "hash changed by a run-control option");
    p.lr = 1e-3;
    lt_train_opts_hash(&p, h3);
    LT_CHECK(strcmp(h1, h3) != 0, "hash ignores lr");
    p.lr = o.lr;
    /* --neftune-alpha: in the hash when set (and only then, so runs from
     * before the option keep their hash); from JSON; negative refused */
    p.neftune_alpha = 5;
    lt_train_opts_hash(&p, h3);
    LT_CHECK(strcmp(h1, h3) != 0, "hash ignores neftune-alpha");
    p.neftune_alpha = 0;
    lt_train_opts_hash(&p, h3);
    LT_CHECK(!strcmp(h1, h3), "neftune-alpha 0 changed the hash");
    LT_CHECK_OK(lt_train_opts_apply_json(&p, "{\"neftune_alpha\": 5}", "inline", &e), &e);
    LT_CHECK(p.neftune_alpha == 5, "neftune_alpha from JSON: %g", p.neftune_alpha);
    {
        lt_train_opts q;
        LT_CHECK(PARSE(&q, &e, "--neftune-alpha", "-1") != LT_OK && strstr(e.msg, "neftune-alpha"),
                 "negative --neftune-alpha accepted or not named: %s", e.msg);
        lt_train_opts_free(&q);
    }
    free(a);
    free(b);
    lt_train_opts_free(&o);
    lt_train_opts_free(&p);

    /* bad config files */
    write_text(cfg, "{\"model\": \"m\", \"data\": \"a.h5\", \"out\": \"r\", \"learning_rate\": 1}");
    REJECT("unknown option \"learning_rate\"", "--config", cfg);
    write_text(cfg, "{\"model\": \"m\", \"data\": \"a.h5\", \"out\": \"r\", \"lr\": \"fast\"}");
    REJECT("\"lr\" expects a number", "--config", cfg);
    write_text(cfg, "{\"model\": \"m\", \"data\": \"a.h5\", \"out\": \"r\", \"lora_rank\": 2.5}");
    REJECT("expects an integer", "--config", cfg);
    write_text(cfg, "{\"model\": \"m\", \"data\": \"a.h5\", \"out\": \"r\", \"rslora\": 1}");
    REJECT("expects true or false", "--config", cfg);
    write_text(cfg, "{\"model\": \"m\", ");
    REJECT("not valid JSON", "--config", cfg);
    write_text(cfg, "[1, 2]");
    REJECT("expected a JSON object", "--config", cfg);
    REJECT("cannot open", "--config", "/nonexistent/run.json");
}

static void test_rejections(void) {
    REJECT("--lora-rank expects an integer in [0, 65536], got '-4'", REQ, "--lora-rank", "-4");
    REJECT("unknown module 'qq'", REQ, "--lora-rank", "4", "--lora-targets", "q,qq");
    REJECT("unknown module 'lm_head'", REQ, "--lora-rank", "4", "--lora-targets", "lm_head");
    REJECT("given twice", REQ, "--lora-rank", "4", "--lora-targets", "q,q_proj");
    REJECT("empty entry", REQ, "--lora-rank", "4", "--lora-targets", "q,,v");
    REJECT("--lr expects a number > 0, got 'abc'", REQ, "--lr", "abc");
    REJECT("--lr expects a number > 0, got '0'", REQ, "--lr", "0");
    REJECT("--lr expects a number > 0, got 'nan'", REQ, "--lr", "nan");
    REJECT("--lr expects a number > 0, got '1e-3x'", REQ, "--lr", "1e-3x");
    REJECT("unknown option '--learning-rate'", REQ, "--learning-rate", "1");
    REJECT("unknown option '--lora_rank'", REQ, "--lora_rank", "1");
    REJECT("unexpected argument 'stray'", REQ, "stray");
    REJECT("--lr needs a value", REQ, "--lr");
    REJECT("--lr needs a value", "--lr", "--model", "m", "--data", "a.h5", "--out", "run");
    REJECT("--data needs a value", "--model", "m", "--data", "--out", "run");
    REJECT("--config needs a value", REQ, "--config");
    REJECT("unknown schedule 'bogus'", REQ, "--schedule", "bogus");
    REJECT("--epochs 0 and --max-steps 0", REQ, "--epochs", "0");
    REJECT("--epochs expects an integer in [0, 1000000], got '-1'", REQ, "--epochs", "-1");
    REJECT("--max-steps expects an integer >= 0", REQ, "--max-steps", "1.5");
    REJECT("--warmup-steps 50 exceeds --max-steps 10", REQ, "--max-steps", "10", "--warmup-steps", "50");
    REJECT("--model DIR is required", "--data", "a.h5", "--out", "run");
    REJECT("--data SHARD... is required", "--model", "m", "--out", "run");
    REJECT("--out RUN_DIR is required", "--model", "m", "--data", "a.h5");
    REJECT("--device expects one of cpu, cuda, auto, got 'tpu'", REQ, "--device", "tpu");
    REJECT("--beta2 expects a number in [0, 1), got '1'", REQ, "--beta2", "1");
    REJECT("--lora-dropout expects a number in [0, 1), got '1.5'", REQ, "--lora-rank", "2", "--lora-dropout", "1.5");
    REJECT("--min-lr-ratio expects a number in [0, 1]", REQ, "--min-lr-ratio", "2");
    REJECT("--clip expects a number >= 0, got '-1'", REQ, "--clip", "-1");
    REJECT("--seq-len expects an integer in [2, 1048576], got '1'", REQ, "--seq-len", "1");
    REJECT("--micro-batch expects an integer in [1, 65536], got '0'", REQ, "--micro-batch", "0");
    REJECT("--rslora expects true or false", REQ, "--rslora=maybe");
    REJECT("--lora-alpha is a LoRA option", REQ, "--lora-alpha", "8");
    REJECT("--lora-targets is a LoRA option", REQ, "--lora-targets", "q");
}

static void test_help_and_docs(const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/help.txt", dir);
    FILE *f = fopen(path, "w");
    lt_train_opts_help(f);
    fclose(f);
    char *help = NULL, *docs = NULL;
    lt_err e;
    LT_CHECK_OK(lt_read_file(path, &help, NULL, &e), &e);
    static const char *const must[] = {
        "--model DIR", "--data SHARD...", "--out RUN_DIR", "--config FILE", "--adapter DIR", "--eval-data SHARD...",
        "--lora-rank R", "[default: 0]", "--lora-alpha A", "[default: 16]", "--lora-dropout P", "--lora-targets LIST",
        "[default: q,k,v,o,gate,up,down]", "--rslora", "--seq-len T", "[default: 1024]", "--micro-batch B",
        "--grad-accum K", "--epochs N", "--max-steps N", "--lr X", "[default: 0.0001]", "--warmup-steps N",
        "--schedule S", "[default: cosine]", "--min-lr-ratio R", "--beta1 B1", "[default: 0.9]", "--beta2 B2",
        "[default: 0.999]", "--eps E", "[default: 1e-08]", "--weight-decay W", "[default: 0.01]",
        "--decay-embeddings", "--clip C", "--seed S", "[default: 42]", "--eval-every N", "--save-every N",
        "--keep-checkpoints N", "--log-every N", "--resume", "--device D", "[default: auto]", "--threads N",
        "--skip-nonfinite", "--recompute", "--zero S", "--grad-reduce-dtype D", "--dry-run"};
    for (size_t i = 0; i < sizeof must / sizeof must[0]; i++)
        LT_CHECK(help && strstr(help, must[i]), "--help lacks '%s'", must[i]);
    /* every option line carries its default (except the required / optional paths) */
    int lines = 0, with_default = 0;
    for (char *p = help; p && (p = strstr(p, "\n  --")); p++) {
        lines++;
        char *eol = strchr(p + 1, '\n');
        char *d = strstr(p, "[default: ");
        if (d && (!eol || d < eol)) with_default++;
    }
    LT_CHECK(lines == 46 && with_default == 39, "help: %d option lines, %d with a default", lines, with_default);
    /* docs/training.md holds the generated table */
    snprintf(path, sizeof path, "%s/table.md", dir);
    f = fopen(path, "w");
    lt_train_opts_markdown(f);
    fclose(f);
    char *table = NULL;
    LT_CHECK_OK(lt_read_file(path, &table, NULL, &e), &e);
    LT_CHECK_OK(lt_read_file(lt_src_path("docs/training.md"), &docs, NULL, &e), &e);
    LT_CHECK(docs && table && strstr(docs, table),
             "docs/training.md does not contain the options table as generated; regenerate it:\n%s", table ? table : "");
    free(help);
    free(docs);
    free(table);
}

int main(void) {
    const char *dir = lt_test_tmpdir("test_train_opts");
    test_defaults();
    test_flags();
    test_config(dir);
    test_rejections();
    test_help_and_docs(dir);
    return lt_test_finish("test_train_opts");
}
