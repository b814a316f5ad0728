/*
 * test_train_qlora_fused.c -- QLoRA on a model with fused projections (the
 * phi3 fixture: qkv_proj and gate_up_proj quantized whole, as bitsandbytes'
 * Linear4bit does), CPU, through the trainer:
 *   - LoRA on q, v, down (= PEFT's qkv_proj and down_proj) over the NF4 base
 *     trains: the loss of a fixed batch falls well below where it started;
 *   - the exported adapter is a PEFT adapter under PEFT's names for the fused
 *     module (self_attn.qkv_proj.lora_A / lora_B);
 *   - loaded back with lt_eval_load_model(.., "nf4") (`eval --quantize nf4`)
 *     it gives BITWISE the trained model's loss; loaded on the unquantized
 *     base (merged) it loads, lowers the loss there too and differs from the
 *     NF4 number.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_eval_adapter.h"
#include "lt_lora.h"
#include "lt_model.h"
#include "lt_test.h"
#include "lt_trainer.h"

enum { B = 2, T = 24, STEPS = 25 };

static double loss_of(lt_model *m, const lt_batch *bt) {
    lt_err err = {{0}};
    lt_step_result res;
    if (lt_model_plan(m, B, T, &err) || lt_model_step(m, bt, 0, 1.0, &res, &err)) {
        LT_CHECK(0, "forward: %s", err.msg);
        return NAN;
    }
    return res.loss_sum / (double)res.n_targets;
}

/* the loss of `dir` (+ adapter, quantize) on bt */
static double load_loss(lt_backend *be, const char *dir, const char *adapter, const char *quantize,
                        const lt_batch *bt) {
    lt_err err = {{0}};
    lt_model *m = NULL;
    if (lt_eval_load_model(dir, adapter, quantize, be, &m, &err)) {
        LT_CHECK(0, "%s + %s (%s): %s", dir, adapter ? adapter : "-", quantize, err.msg);
        return NAN;
    }
    double l = loss_of(m, bt);
    lt_model_free(m);
    return l;
}

static int file_has(const char *path, const char *needle) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (!memcmp(buf + i, needle, k)) return 1;
    return 0;
}

int main(void) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/phi3", lt_src_path("tests/fixtures/models"));
    lt_err err = {{0}};
    lt_backend *be = NULL;
    lt_model *m = NULL;
    lt_trainer *tr = NULL;
    LT_CHECK_OK(lt_cpu_backend_create(1, &be, &err), &err);
    LT_CHECK_OK(lt_model_load(dir, be, &m, &err), &err);
    if (!m) return lt_test_finish("test_train_qlora_fused");
    const lt_config *cfg = lt_model_config(m);
    int32_t tok[B * T], tgt[B * T], pos[B * T], doc[B * T];
    lt_rng r;
    lt_rng_seed(&r, 5);
    lt_test_random_batch(&r, B, T, cfg->vocab_size, 12, T, 0, tok, tgt, pos, doc);
    lt_batch bt = {.B = B, .T = T, .tokens = tok, .targets = tgt, .pos = pos, .doc_start = doc};
    double base_loss = load_loss(be, dir, NULL, "none", &bt);

    lt_peft_config pc = {.r = 4, .alpha = 8, .dropout = 0,
                         .targets = (1u << LT_LORA_Q) | (1u << LT_LORA_V) | (1u << LT_LORA_DOWN)};
    snprintf(pc.base_model, sizeof pc.base_model, "%s", dir);
    lt_rng lr;
    lt_rng_seed(&lr, 11);
    LT_CHECK_OK(lt_trainer_add_lora(m, &pc, &lr, &err), &err);
    LT_CHECK_OK(lt_model_quantize_nf4(m, &err), &err);
    LT_CHECK_OK(lt_model_plan(m, B, T, &err), &err);
    lt_optim_cfg oc = {.sched = {.kind = LT_SCHED_CONSTANT, .lr = 2e-2, .total_steps = STEPS},
                       .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
    LT_CHECK_OK(lt_trainer_create(m, &oc, 0, 0, &tr, &err), &err);
    double first = NAN, last = NAN;
    for (int s = 0; tr && s < STEPS; s++) {
        lt_train_stats st = {0};
        if (lt_trainer_step(tr, &bt, 1, &st, &err)) {
            LT_CHECK(0, "step %d: %s", s + 1, err.msg);
            break;
        }
        if (s == 0) first = st.loss;
        last = st.loss;
    }
    LT_CHECK(isfinite(last) && last < 0.8 * first, "QLoRA on phi3: loss %.6g -> %.6g", first, last);
    LT_CHECK(fabs(first - base_loss) > 1e-7, "the NF4 base's loss %.9g equals the unquantized one's", first);
    double trained = loss_of(m, &bt);

    const char *out = lt_test_tmpdir("qlora_fused_adapter");
    LT_CHECK_OK(lt_trainer_export_adapter(m, &pc, out, NULL, NULL, &err), &err);
    char path[2048];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", out);
    LT_CHECK(file_has(path, "base_model.model.model.layers.0.self_attn.qkv_proj.lora_A.weight") &&
                 file_has(path, "base_model.model.model.layers.1.self_attn.qkv_proj.lora_B.weight") &&
                 file_has(path, "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight") &&
                 !file_has(path, "gate_up_proj.lora"),
             "%s: not PEFT's names for the fused modules", path);
    snprintf(path, sizeof path, "%s/adapter_config.json", out);
    LT_CHECK(file_has(path, "\"qkv_proj\"") && file_has(path, "\"down_proj\""), "%s: target_modules", path);

    double nf4 = load_loss(be, dir, out, "nf4", &bt), plain = load_loss(be, dir, out, "none", &bt);
    LT_CHECK(nf4 == trained, "the adapter on the NF4 base: loss %.17g, the trained model's %.17g", nf4, trained);
    LT_CHECK(isfinite(plain) && plain < base_loss - 0.1 && plain != nf4,
             "the adapter on the unquantized base: loss %.9g (base %.9g, NF4 %.9g)", plain, base_loss, nf4);
    printf("phi3 QLoRA: loss %.6g -> %.6g; adapter on NF4 %.9g, on the unquantized base %.9g (base %.9g)\n", first,
           last, nf4, plain, base_loss);
    lt_trainer_free(tr);
    lt_model_free(m);
    be->destroy(be);
    return lt_test_finish("test_train_qlora_fused");
}
