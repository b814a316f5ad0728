/* lt_eval_adapter.c -- merge a PEFT LoRA adapter into loaded weights for
 * evaluation (see lt_eval_adapter.h). */
#define _POSIX_C_SOURCE 200809L
#include "lt_eval_adapter.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_lora.h"
#include "lt_safetensors.h"

/* a config field that must be absent, null, false, or an empty object/list */
static int field_unset(cJSON *root, const char *key) {
    cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v) || cJSON_IsFalse(v)) return 1;
    if ((cJSON_IsObject(v) || cJSON_IsArray(v)) && cJSON_GetArraySize(v) == 0) return 1;
    return 0;
}

lt_status lt_eval_merge_adapter(lt_model *m, const char *dir, lt_err *err) {
    char path[4096];
    char *data = NULL;
    size_t len = 0;
    if (!lt_path_join(path, sizeof path, dir, "adapter_config.json"))
        return lt_fail(err, LT_ERR_INVALID, "%s: path too long", dir);
    lt_status st = lt_read_file(path, &data, &len, err);
    if (st != LT_OK) return st;
    cJSON *root = cJSON_ParseWithLength(data, len);
    free(data);
    if (!root) return lt_fail(err, LT_ERR_FORMAT, "%s: not valid JSON", path);
    cJSON *pt = cJSON_GetObjectItemCaseSensitive(root, "peft_type");
    cJSON *r = cJSON_GetObjectItemCaseSensitive(root, "r");
    cJSON *alpha = cJSON_GetObjectItemCaseSensitive(root, "lora_alpha");
    cJSON *bias = cJSON_GetObjectItemCaseSensitive(root, "bias");
    const char *bad = NULL;
    if (pt && (!cJSON_IsString(pt) || strcmp(pt->valuestring, "LORA")))
        bad = "peft_type (only LORA)";
    else if (!field_unset(root, "use_dora"))
        bad = "use_dora";
    else if (bias && !cJSON_IsNull(bias) && (!cJSON_IsString(bias) || strcmp(bias->valuestring, "none")))
        bad = "bias (only \"none\")";
    else if (!field_unset(root, "modules_to_save"))
        bad = "modules_to_save";
    else if (!field_unset(root, "rank_pattern"))
        bad = "rank_pattern";
    else if (!field_unset(root, "alpha_pattern"))
        bad = "alpha_pattern";
    else if (!field_unset(root, "fan_in_fan_out"))
        bad = "fan_in_fan_out";
    if (bad) {
        cJSON_Delete(root);
        return lt_fail(err, LT_ERR_UNSUPPORTED, "%s: %s is not supported", path, bad);
    }
    if (!cJSON_IsNumber(r) || r->valuedouble < 1 || r->valuedouble != floor(r->valuedouble) ||
        !cJSON_IsNumber(alpha)) {
        cJSON_Delete(root);
        return lt_fail(err, LT_ERR_FORMAT, "%s: expected a positive integer \"r\" and a number \"lora_alpha\"", path);
    }
    int rank = (int)r->valuedouble;
    double scale = lt_lora_scale(alpha->valuedouble, rank, !field_unset(root, "use_rslora"));
    cJSON_Delete(root);

    if (!lt_path_join(path, sizeof path, dir, "adapter_model.safetensors"))
        return lt_fail(err, LT_ERR_INVALID, "%s: path too long", dir);
    lt_st_file *f = NULL;
    st = lt_st_open(path, &f, err);
    if (st != LT_OK) return st;
    lt_backend *be = lt_model_backend(m);
    const lt_config *cfg = lt_model_config(m);
    float *A = NULL, *Bm = NULL, *W = NULL;
    size_t n = lt_st_count(f), merged = 0;
    for (size_t i = 0; i < n && st == LT_OK; i++) {
        const lt_st_tensor *ta = lt_st_get(f, i);
        int layer, t, is_B;
        st = lt_lora_parse_peft_name(ta->name, &layer, &t, &is_B, err);
        if (st != LT_OK) {
            st = lt_wrap(err, st, "%s", path);
            break;
        }
        if (is_B) continue; /* handled with its A */
        char nb[256], base[256];
        lt_lora_peft_name(nb, sizeof nb, layer, t, 1);
        const lt_st_tensor *tb = lt_st_find(f, nb);
        if (!tb) {
            st = lt_fail(err, LT_ERR_FORMAT, "%s: '%s' has no matching '%s'", path, ta->name, nb);
            break;
        }
        if (layer >= cfg->num_layers) {
            st = lt_fail(err, LT_ERR_RANGE, "%s: '%s': layer %d but the model has %d", path, ta->name, layer,
                         cfg->num_layers);
            break;
        }
        int in, out;
        lt_lora_target_dims(cfg, t, &in, &out);
        if (ta->ndim != 2 || ta->shape[0] != rank || ta->shape[1] != in || tb->ndim != 2 || tb->shape[0] != out ||
            tb->shape[1] != rank) {
            st = lt_fail(err, LT_ERR_FORMAT, "%s: '%s' / '%s': shapes must be [%d, %d] / [%d, %d]", path, ta->name,
                         nb, rank, in, out, rank);
            break;
        }
        snprintf(base, sizeof base, "model.layers.%d.%s.%s.weight", layer, lt_lora_target_block(t),
                 lt_lora_target_hf(t));
        lt_param *p = lt_model_find_param(m, base);
        if (!p || p->numel != (size_t)in * (size_t)out) {
            st = lt_fail(err, LT_ERR_FORMAT, "%s: '%s': the model has no weight '%s' of %d x %d", path, ta->name, base,
                         out, in);
            break;
        }
        float *na = realloc(A, (size_t)rank * (size_t)in * sizeof *A);
        if (na) A = na;
        float *nbm = realloc(Bm, (size_t)out * (size_t)rank * sizeof *Bm);
        if (nbm) Bm = nbm;
        float *nw = realloc(W, p->numel * sizeof *W);
        if (nw) W = nw;
        if (!na || !nbm || !nw) {
            st = lt_fail(err, LT_ERR_NOMEM, "adapter: out of memory");
            break;
        }
        if ((st = lt_st_to_f32(ta, A, ta->numel, err)) != LT_OK) break;
        if ((st = lt_st_to_f32(tb, Bm, tb->numel, err)) != LT_OK) break;
        if ((st = be->download_f32(be, W, p->data, be->param_dtype, p->numel, err)) != LT_OK) break;
        // W (out, in) += scale * B (out, r) @ A (r, in)
        for (int o = 0; o < out; o++) {
            float *wr = W + (size_t)o * (size_t)in;
            for (int k = 0; k < rank; k++) {
                float b = (float)(scale * Bm[(size_t)o * (size_t)rank + (size_t)k]);
                const float *ar = A + (size_t)k * (size_t)in;
                for (int j = 0; j < in; j++) wr[j] += b * ar[j];
            }
        }
        if ((st = be->upload_f32(be, p->data, be->param_dtype, W, p->numel, err)) != LT_OK) break;
        merged++;
    }
    if (st == LT_OK && merged == 0) st = lt_fail(err, LT_ERR_FORMAT, "%s: no LoRA tensors", path);
    if (st == LT_OK) st = be->sync(be, err);
    free(A);
    free(Bm);
    free(W);
    lt_st_close(f);
    return st;
}
