/* lt_lora.c -- LoRA targets, names, scaling and init (see lt_lora.h). */
#include "lt_lora.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const short_names[LT_LORA_NTARGETS] = {"q", "k", "v", "o", "gate", "up", "down"};
static const char *const hf_names[LT_LORA_NTARGETS] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                       "gate_proj", "up_proj", "down_proj"};

const char *lt_lora_target_short(int t) { return (unsigned)t < LT_LORA_NTARGETS ? short_names[t] : "?"; }
const char *lt_lora_target_hf(int t) { return (unsigned)t < LT_LORA_NTARGETS ? hf_names[t] : "?"; }
const char *lt_lora_target_block(int t) { return t <= LT_LORA_O ? "self_attn" : "mlp"; }

static int target_index(const char *s, size_t n) {
    for (int t = 0; t < LT_LORA_NTARGETS; t++) {
        if (strlen(short_names[t]) == n && !strncmp(s, short_names[t], n)) return t;
        if (strlen(hf_names[t]) == n && !strncmp(s, hf_names[t], n)) return t;
    }
    return -1;
}

lt_status lt_lora_parse_targets(const char *csv, unsigned *mask, lt_err *err) {
    unsigned m = 0;
    const char *p = csv ? csv : "";
    for (;;) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        while (n && *p == ' ') p++, n--;
        while (n && p[n - 1] == ' ') n--;
        if (n == 0)
            return lt_fail(err, LT_ERR_INVALID, "empty entry in '%s' (expected a comma-separated list of q, k, v, o, gate, up, down)",
                           csv ? csv : "");
        int t = target_index(p, n);
        if (t < 0)
            return lt_fail(err, LT_ERR_INVALID,
                           "unknown module '%.*s' (LoRA targets are q, k, v, o, gate, up, down or q_proj, ..., down_proj)",
                           (int)n, p);
        if (m & (1u << t))
            return lt_fail(err, LT_ERR_INVALID, "module '%s' given twice", short_names[t]);
        m |= 1u << t;
        if (!e) break;
        p = e + 1;
    }
    *mask = m;
    return LT_OK;
}

void lt_lora_targets_str(unsigned mask, char *out, size_t cap) {
    size_t k = 0;
    if (cap) out[0] = 0;
    for (int t = 0; t < LT_LORA_NTARGETS; t++) {
        if (!(mask & (1u << t))) continue;
        int w = snprintf(out + k, cap > k ? cap - k : 0, "%s%s", k ? "," : "", short_names[t]);
        if (w < 0 || (size_t)w >= cap - k) break;
        k += (size_t)w;
    }
}

void lt_lora_target_dims(const lt_config *c, int t, int *in, int *out) {
    const int q = c->num_heads * c->head_dim, kv = c->num_kv_heads * c->head_dim;
    switch (t) {
    case LT_LORA_Q: *in = c->hidden_size, *out = q; break;
    case LT_LORA_K:
    case LT_LORA_V: *in = c->hidden_size, *out = kv; break;
    case LT_LORA_O: *in = q, *out = c->hidden_size; break;
    case LT_LORA_GATE:
    case LT_LORA_UP: *in = c->hidden_size, *out = c->intermediate_size; break;
    default: *in = c->intermediate_size, *out = c->hidden_size; break;
    }
}

double lt_lora_scale(double alpha, int r, int rslora) { return rslora ? alpha / sqrt((double)r) : alpha / (double)r; }

void lt_lora_init_A(float *A, int r, int in, lt_rng *rng) {
    const double bound = 1.0 / sqrt((double)in); // kaiming_uniform_(a=sqrt(5)), fan_in = in
    for (size_t i = 0; i < (size_t)r * (size_t)in; i++)
        A[i] = (float)((2.0 * (double)lt_rng_uniform(rng) - 1.0) * bound);
}

void lt_lora_peft_name(char *out, size_t cap, int layer, int t, int is_B) {
    snprintf(out, cap, "base_model.model.model.layers.%d.%s.%s.lora_%c.weight", layer, lt_lora_target_block(t),
             lt_lora_target_hf(t), is_B ? 'B' : 'A');
}

lt_status lt_lora_parse_peft_name(const char *name, int *layer, int *t, int *is_B, lt_err *err) {
    static const char prefix[] = "base_model.model.model.layers.";
    const char *p = name;
    if (strncmp(p, prefix, sizeof prefix - 1) != 0) goto bad;
    p += sizeof prefix - 1;
    char *end;
    long L = strtol(p, &end, 10);
    if (end == p || *end != '.' || L < 0 || L > 100000) goto bad;
    p = end + 1;
    for (int k = 0; k < LT_LORA_NTARGETS; k++) {
        char tail[96];
        for (int b = 0; b < 2; b++) {
            snprintf(tail, sizeof tail, "%s.%s.lora_%c.weight", lt_lora_target_block(k), hf_names[k], b ? 'B' : 'A');
            if (!strcmp(p, tail)) {
                *layer = (int)L;
                *t = k;
                *is_B = b;
                return LT_OK;
            }
        }
    }
bad:
    return lt_fail(err, LT_ERR_FORMAT,
                   "tensor '%s' is not a LoRA weight of the form "
                   "base_model.model.model.layers.N.{self_attn|mlp}.<module>.lora_{A|B}.weight",
                   name);
}
