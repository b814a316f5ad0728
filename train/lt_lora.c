/* lt_lora.c -- LoRA targets, names, scaling and init (see lt_lora.h). */
#include "lt_lora.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int target_index(const char *s, size_t n) {
    for (int t = 0; t < LT_LORA_NTARGETS; t++) {
        const char *sn = lt_lora_target_short(t), *hn = lt_lora_target_hf(t);
        if (strlen(sn) == n && !strncmp(s, sn, n)) return t;
        if (strlen(hn) == n && !strncmp(s, hn, n)) return t;
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
            return lt_fail(err, LT_ERR_INVALID, "empty entry in '%s' (expected a comma-separated list of q, k, v, o, gate, up, down, qkv, gate_up)",
                           csv ? csv : "");
        int t = target_index(p, n);
        if (t < 0)
            return lt_fail(err, LT_ERR_INVALID,
                           "unknown module '%.*s' (LoRA targets are q, k, v, o, gate, up, down, qkv, gate_up or q_proj, ..., gate_up_proj)",
                           (int)n, p);
        if (m & (1u << t))
            return lt_fail(err, LT_ERR_INVALID, "module '%s' given twice", lt_lora_target_short(t));
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
        int w = snprintf(out + k, cap > k ? cap - k : 0, "%s%s", k ? "," : "", lt_lora_target_short(t));
        if (w < 0 || (size_t)w >= cap - k) break;
        k += (size_t)w;
    }
}

double lt_lora_scale(double alpha, int r, int rslora) { return rslora ? alpha / sqrt((double)r) : alpha / (double)r; }

void lt_lora_init_A(float *A, int r, int in, lt_rng *rng) {
    const double bound = 1.0 / sqrt((double)in); // kaiming_uniform_(a=sqrt(5)), fan_in = in
    for (size_t i = 0; i < (size_t)r * (size_t)in; i++)
        A[i] = (float)((2.0 * (double)lt_rng_uniform(rng) - 1.0) * bound);
}
