/* lt_config.c -- config.json (Hugging Face) -> lt_config, checked. See lt_config.h.
 *
 * What differs between families (defaults for absent keys, the keys each
 * reads, how attention_bias maps to biases, sliding-window rules, q/k norm)
 * is in the family descriptors, core/lt_family_<name>.c; this file applies
 * them. The size keys (vocab_size, hidden_size, intermediate_size,
 * num_hidden_layers, num_attention_heads) are required instead of defaulted,
 * since a model folder without them is broken. num_key_value_heads null ->
 * num_attention_heads; head_dim null -> hidden_size / num_attention_heads.
 * Qwen sliding windows: recorded when use_sliding_window is true and some
 * layer index >= max_window_layers (default 28) exists, or when layer_types
 * has a sliding layer (the runtime refuses longer sequences).
 */
#include "lt_config.h"
#include "lt_family.h"
#include "lt_json.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* An integer field. Absent (or null when null_is_absent) -> def, or an error
 * when required. Sets *present. */
static lt_status get_int(const cJSON *o, const char *key, int required, int def, int *out, int *present,
                         const char *origin, lt_err *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (present) *present = 0;
    if (!v || cJSON_IsNull(v)) {
        if (required) return lt_fail(err, LT_ERR_INVALID, "%s: %s is required but %s", origin, key, lt_json_kind(v));
        *out = def;
        return LT_OK;
    }
    if (!cJSON_IsNumber(v))
        return lt_fail(err, LT_ERR_INVALID, "%s: %s must be an integer, found %s", origin, key, lt_json_kind(v));
    if (floor(v->valuedouble) != v->valuedouble || fabs(v->valuedouble) > 2147483647.0)
        return lt_fail(err, LT_ERR_INVALID, "%s: %s = %g, expected an integer", origin, key, v->valuedouble);
    *out = (int)v->valuedouble;
    if (present) *present = 1;
    return LT_OK;
}

static lt_status get_double(const cJSON *o, const char *key, int required, double def, double *out,
                            const char *origin, lt_err *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) {
        if (required) return lt_fail(err, LT_ERR_INVALID, "%s: %s is required but %s", origin, key, lt_json_kind(v));
        *out = def;
        return LT_OK;
    }
    if (!cJSON_IsNumber(v))
        return lt_fail(err, LT_ERR_INVALID, "%s: %s must be a number, found %s", origin, key, lt_json_kind(v));
    *out = v->valuedouble;
    return LT_OK;
}

static lt_status get_bool(const cJSON *o, const char *key, int def, int *out, const char *origin, lt_err *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) {
        *out = def;
        return LT_OK;
    }
    if (!cJSON_IsBool(v))
        return lt_fail(err, LT_ERR_INVALID, "%s: %s must be true or false, found %s", origin, key, lt_json_kind(v));
    *out = cJSON_IsTrue(v) ? 1 : 0;
    return LT_OK;
}

/* bos/eos: an integer, null, or a list of integers (the first is taken). */
static lt_status get_token_id(const cJSON *o, const char *key, int *out, const char *origin, lt_err *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    *out = -1;
    if (!v || cJSON_IsNull(v)) return LT_OK;
    if (cJSON_IsArray(v)) {
        if (cJSON_GetArraySize(v) == 0) return LT_OK;
        v = cJSON_GetArrayItem(v, 0);
    }
    if (!cJSON_IsNumber(v))
        return lt_fail(err, LT_ERR_INVALID, "%s: %s must be a non-negative integer or a list of them, found %s",
                       origin, key, lt_json_kind(v));
    if (floor(v->valuedouble) != v->valuedouble || v->valuedouble < 0 || v->valuedouble > 2147483647.0)
        return lt_fail(err, LT_ERR_INVALID, "%s: %s = %g, expected a non-negative integer token id", origin, key,
                       v->valuedouble);
    *out = (int)v->valuedouble;
    return LT_OK;
}

#define TRY(x)                                                                                                         \
    do {                                                                                                               \
        if ((st = (x)) != LT_OK) goto done;                                                                            \
    } while (0)
#define REFUSE(code, ...)                                                                                              \
    do {                                                                                                               \
        st = lt_fail(err, code, __VA_ARGS__);                                                                          \
        goto done;                                                                                                     \
    } while (0)

/* One RoPE description, from either form: v4 (top-level rope_theta plus
 * rope_scaling) or v5 (rope_parameters, flat or one dict per layer type). */
typedef struct {
    int have_theta;
    double theta;
    int type; /* lt_rope_type: 0 default, 1 llama3, 2 linear (factor), 3 longrope */
    double factor, low, high;
    int omp;
    /* longrope (phi3): the factor lists, optional factor / attention_factor */
    const cJSON *short_f, *long_f;
    int has_factor, has_attn;
    double attn;
    /* partial_rotary_factor inside the dict (phi3, v5) */
    int has_prf;
    double prf;
} rope_desc;

/* A number key of a rope dict: absent or null -> *has = 0. */
static lt_status rope_number(const cJSON *o, const char *name, const char *k, int *has, double *out, const char *origin,
                             lt_err *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    *has = 0;
    if (!v || cJSON_IsNull(v)) return LT_OK;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || !(v->valuedouble > 0))
        return lt_fail(err, LT_ERR_INVALID, "%s: %s.%s must be a positive number, found %s", origin, name, k,
                       lt_json_kind(v));
    *has = 1;
    *out = v->valuedouble;
    return LT_OK;
}

/* longrope's short_factor / long_factor: lists of positive numbers (their
 * length is checked against the rotary dims later) */
static lt_status rope_factor_list(const cJSON *o, const char *name, const char *k, const cJSON **out,
                                  const char *origin, lt_err *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k), *e;
    int i = 0;
    if (!cJSON_IsArray(v))
        return lt_fail(err, LT_ERR_INVALID, "%s: %s.%s must be a list of numbers for rope type longrope, found %s",
                       origin, name, k, lt_json_kind(v));
    cJSON_ArrayForEach(e, v) {
        if (!cJSON_IsNumber(e) || !isfinite(e->valuedouble) || !(e->valuedouble > 0))
            return lt_fail(err, LT_ERR_INVALID, "%s: %s.%s[%d] must be a positive number, found %s", origin, name, k,
                           i, lt_json_kind(e));
        i++;
    }
    *out = v;
    return LT_OK;
}

/* Parse one rope dict `o` named `name` in messages (rope_scaling,
 * rope_parameters, rope_parameters.full_attention). Only keys the rope type
 * reads are accepted; any other key is refused by name. `theta_key`: whether
 * rope_theta may appear inside (v5). */
static lt_status parse_rope_dict(const cJSON *o, const char *name, int theta_key, const lt_family *fam, rope_desc *r,
                                 const char *origin, lt_err *err) {
    const int linear = fam->rope_per_type; /* gemma3's global table */
    lt_status st = LT_OK;
    memset(r, 0, sizeof *r);
    r->factor = r->low = r->high = 1.0;
    if (!cJSON_IsObject(o))
        return lt_fail(err, LT_ERR_INVALID, "%s: %s must be null or an object, found %s", origin, name,
                       lt_json_kind(o));
    /* transformers: a legacy "type" key overrides "rope_type" */
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(o, "type");
    const char *key = "type";
    if (!ty) {
        ty = cJSON_GetObjectItemCaseSensitive(o, "rope_type");
        key = "rope_type";
    }
    if (!cJSON_IsString(ty))
        return lt_fail(err, LT_ERR_INVALID, "%s: %s needs a string \"rope_type\" (or \"type\"), found %s", origin,
                       name, lt_json_kind(ty));
    if (strcmp(ty->valuestring, "default") == 0)
        r->type = 0;
    else if (strcmp(ty->valuestring, "llama3") == 0)
        r->type = 1;
    else if (fam->reads_rope_extras && (!strcmp(ty->valuestring, "longrope") || !strcmp(ty->valuestring, "su")))
        r->type = LT_ROPE_LONGROPE; /* Phi3Config renames the legacy "su" to longrope */
    else if (linear && strcmp(ty->valuestring, "linear") == 0)
        r->type = LT_ROPE_LINEAR;
    else
        return lt_fail(err, LT_ERR_UNSUPPORTED,
                       "%s: %s.%s = \"%s\" is not supported (only \"default\"%s)", origin, name, key,
                       ty->valuestring,
                       fam->reads_rope_extras ? ", \"llama3\" or \"longrope\""
                       : linear               ? ", \"llama3\" or \"linear\""
                                              : " or \"llama3\"");
    const cJSON *it;
    cJSON_ArrayForEach(it, o) {
        const char *k = it->string;
        int ok = !strcmp(k, "type") || !strcmp(k, "rope_type") || (theta_key && !strcmp(k, "rope_theta"));
        if (r->type == LT_ROPE_LLAMA3)
            ok = ok || !strcmp(k, "factor") || !strcmp(k, "low_freq_factor") || !strcmp(k, "high_freq_factor") ||
                 !strcmp(k, "original_max_position_embeddings");
        if (r->type == LT_ROPE_LONGROPE)
            ok = ok || !strcmp(k, "short_factor") || !strcmp(k, "long_factor") || !strcmp(k, "factor") ||
                 !strcmp(k, "attention_factor") || !strcmp(k, "original_max_position_embeddings");
        if (r->type == LT_ROPE_LINEAR) ok = ok || !strcmp(k, "factor");
        if (fam->reads_rope_extras) ok = ok || !strcmp(k, "partial_rotary_factor");
        if (!ok)
            return lt_fail(err, LT_ERR_UNSUPPORTED,
                           "%s: %s.%s is not understood for rope_type \"%s\" (it would change the rotary "
                           "embedding; refused)",
                           origin, name, k, ty->valuestring);
    }
    if (theta_key) {
        const cJSON *th = cJSON_GetObjectItemCaseSensitive(o, "rope_theta");
        if (th && !cJSON_IsNull(th)) {
            if (!cJSON_IsNumber(th))
                return lt_fail(err, LT_ERR_INVALID, "%s: %s.rope_theta must be a number, found %s", origin, name,
                               lt_json_kind(th));
            r->have_theta = 1;
            r->theta = th->valuedouble;
        }
    }
    if (fam->reads_rope_extras) {
        const cJSON *pf = cJSON_GetObjectItemCaseSensitive(o, "partial_rotary_factor");
        if (pf && !cJSON_IsNull(pf)) {
            if (!cJSON_IsNumber(pf))
                return lt_fail(err, LT_ERR_INVALID, "%s: %s.partial_rotary_factor must be a number, found %s", origin,
                               name, lt_json_kind(pf));
            r->has_prf = 1;
            r->prf = pf->valuedouble;
        }
    }
    if (r->type == 0) return LT_OK;
    if (r->type == LT_ROPE_LONGROPE) {
        const cJSON *om = cJSON_GetObjectItemCaseSensitive(o, "original_max_position_embeddings");
        if (om && !cJSON_IsNull(om)) {
            if (!cJSON_IsNumber(om) || floor(om->valuedouble) != om->valuedouble || !(om->valuedouble > 0) ||
                om->valuedouble > 2147483647.0)
                return lt_fail(err, LT_ERR_INVALID, "%s: %s.original_max_position_embeddings must be a positive integer",
                               origin, name);
            r->omp = (int)om->valuedouble;
        }
        lt_status s2;
        if ((s2 = rope_factor_list(o, name, "short_factor", &r->short_f, origin, err)) ||
            (s2 = rope_factor_list(o, name, "long_factor", &r->long_f, origin, err)) ||
            (s2 = rope_number(o, name, "factor", &r->has_factor, &r->factor, origin, err)) ||
            (s2 = rope_number(o, name, "attention_factor", &r->has_attn, &r->attn, origin, err)))
            return s2;
        return LT_OK;
    }
    if (r->type == LT_ROPE_LINEAR) { /* inv_freq / factor (transformers' _compute_linear_scaling_rope_parameters) */
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, "factor");
        if (!cJSON_IsNumber(f) || !(f->valuedouble >= 1.0))
            return lt_fail(err, LT_ERR_INVALID, "%s: %s.factor must be a number >= 1 for linear scaling, found %s",
                           origin, name, cJSON_IsNumber(f) ? "a smaller one" : lt_json_kind(f));
        r->factor = f->valuedouble;
        return LT_OK;
    }
    static const char *const keys[3] = {"factor", "low_freq_factor", "high_freq_factor"};
    double *dst[3] = {&r->factor, &r->low, &r->high};
    for (int i = 0; i < 3; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, keys[i]);
        if (!cJSON_IsNumber(v))
            return lt_fail(err, LT_ERR_INVALID, "%s: %s.%s must be a number for llama3 scaling, found %s", origin,
                           name, keys[i], lt_json_kind(v));
        *dst[i] = v->valuedouble;
    }
    const cJSON *om = cJSON_GetObjectItemCaseSensitive(o, "original_max_position_embeddings");
    if (!cJSON_IsNumber(om) || floor(om->valuedouble) != om->valuedouble || fabs(om->valuedouble) > 2147483647.0)
        REFUSE(LT_ERR_INVALID, "%s: %s.original_max_position_embeddings must be an integer for llama3 scaling, found %s",
               origin, name, lt_json_kind(om));
    r->omp = (int)om->valuedouble;
    if (!(r->factor >= 1.0)) REFUSE(LT_ERR_INVALID, "%s: %s.factor = %g, expected >= 1", origin, name, r->factor);
    if (!(r->low > 0.0)) REFUSE(LT_ERR_INVALID, "%s: %s.low_freq_factor = %g, expected > 0", origin, name, r->low);
    if (!(r->high > r->low))
        REFUSE(LT_ERR_INVALID, "%s: %s.high_freq_factor = %g must exceed low_freq_factor = %g", origin, name, r->high,
               r->low);
    if (r->omp <= 0)
        REFUSE(LT_ERR_INVALID, "%s: %s.original_max_position_embeddings = %d, expected > 0", origin, name, r->omp);
done:
    return st;
}

/* the scaling settings agree (theta and partial_rotary_factor aside) */
static int rope_scaling_same(const rope_desc *a, const rope_desc *b) {
    return a->type == b->type && a->factor == b->factor && a->low == b->low && a->high == b->high &&
           a->omp == b->omp && a->has_factor == b->has_factor && a->has_attn == b->has_attn && a->attn == b->attn &&
           (a->short_f == b->short_f || cJSON_Compare(a->short_f, b->short_f, 1)) &&
           (a->long_f == b->long_f || cJSON_Compare(a->long_f, b->long_f, 1));
}

static int rope_same(const rope_desc *a, const rope_desc *b) {
    return a->have_theta == b->have_theta && (!a->have_theta || a->theta == b->theta) && rope_scaling_same(a, b) &&
           a->has_prf == b->has_prf && a->prf == b->prf;
}

/* The layer types transformers 5 knows for these families. */
static int is_layer_type(const char *s) { return !strcmp(s, "full_attention") || !strcmp(s, "sliding_attention"); }

/* rope_parameters (v5): a flat dict, or {layer_type: dict}; the per-type
 * dicts must agree (one rotary table), unless `local` is given (gemma3: two
 * tables): then full_attention -> *r, sliding_attention -> *local
 * (*have_local set). */
static lt_status parse_rope_parameters(const cJSON *rp, const lt_family *fam, rope_desc *r, rope_desc *local,
                                       int *have_local, const char *origin, lt_err *err) {
    if (!cJSON_IsObject(rp))
        return lt_fail(err, LT_ERR_INVALID, "%s: rope_parameters must be null or an object, found %s", origin,
                       lt_json_kind(rp));
    const cJSON *first = rp->child;
    int per_type = first && cJSON_IsObject(first);
    if (!per_type) return parse_rope_dict(rp, "rope_parameters", 1, fam, r, origin, err);
    const cJSON *it;
    char name0[96] = "";
    int n = 0;
    cJSON_ArrayForEach(it, rp) {
        char name[96];
        snprintf(name, sizeof name, "rope_parameters.%s", it->string);
        if (!is_layer_type(it->string))
            return lt_fail(err, LT_ERR_UNSUPPORTED, "%s: %s: unknown layer type \"%s\" (expected full_attention or "
                           "sliding_attention)", origin, name, it->string);
        rope_desc d;
        lt_status st = parse_rope_dict(it, name, 1, fam, &d, origin, err);
        if (st != LT_OK) return st;
        if (local) { /* two tables */
            if (!strcmp(it->string, "sliding_attention")) {
                *local = d;
                *have_local = 1;
            } else {
                *r = d;
            }
            n++;
            continue;
        }
        if (n == 0) {
            *r = d;
            snprintf(name0, sizeof name0, "%s", name);
        } else if (!rope_same(r, &d)) {
            return lt_fail(err, LT_ERR_UNSUPPORTED,
                           "%s: %s and %s differ; per-layer-type rotary settings are not supported", origin, name0,
                           name);
        }
        n++;
    }
    return LT_OK;
}

/* RoPE from the v4 keys (rope_theta, rope_scaling) and/or the v5 key
 * (rope_parameters). Where both forms are given they must agree. */
static lt_status parse_rope(const cJSON *root, const lt_family *fam, lt_config *c, rope_desc *out, const char *origin,
                            lt_err *err) {
    lt_status st;
    rope_desc v4 = {0}, v5 = {0}, loc5 = {0};
    v4.factor = v4.low = v4.high = 1.0;
    int has4 = 0, has5 = 0, has_loc5 = 0;
    const cJSON *th = cJSON_GetObjectItemCaseSensitive(root, "rope_theta");
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(root, "rope_parameters");
    if (rs && !cJSON_IsNull(rs)) {
        if ((st = parse_rope_dict(rs, "rope_scaling", 0, fam, &v4, origin, err)) != LT_OK) return st;
        has4 = 1;
    }
    if (th && !cJSON_IsNull(th)) {
        if ((st = get_double(root, "rope_theta", 0, 0.0, &v4.theta, origin, err)) != LT_OK) return st;
        v4.have_theta = has4 = 1;
    }
    if (rp && !cJSON_IsNull(rp)) {
        if ((st = parse_rope_parameters(rp, fam, &v5, fam->rope_per_type ? &loc5 : NULL, &has_loc5, origin, err)) !=
            LT_OK)
            return st;
        has5 = 1;
    }
    if (has4 && has5) {
        if (v4.have_theta && v5.have_theta && v4.theta != v5.theta)
            return lt_fail(err, LT_ERR_INVALID, "%s: rope_theta = %g conflicts with rope_parameters.rope_theta = %g",
                           origin, v4.theta, v5.theta);
        if (rs && !cJSON_IsNull(rs) && !rope_scaling_same(&v4, &v5))
            return lt_fail(err, LT_ERR_INVALID, "%s: rope_scaling conflicts with rope_parameters", origin);
        if (v4.has_prf && v5.has_prf && v4.prf != v5.prf)
            return lt_fail(err, LT_ERR_INVALID, "%s: rope_scaling.partial_rotary_factor conflicts with rope_parameters",
                           origin);
        if (!v5.have_theta) {
            v5.have_theta = v4.have_theta;
            v5.theta = v4.theta;
        }
    }
    const rope_desc *r = has5 ? &v5 : &v4;
    c->rope_theta = r->have_theta ? r->theta : fam->rope_theta_default > 0 ? fam->rope_theta_default : 10000.0;
    if (fam->rope_per_type) { /* the sliding layers' table: v5 sliding_attention or v4 rope_local_base_freq */
        double lb;
        const cJSON *lk = cJSON_GetObjectItemCaseSensitive(root, "rope_local_base_freq");
        double ldef = fam->rope_local_theta_default > 0 ? fam->rope_local_theta_default : 10000.0;
        if ((st = get_double(root, "rope_local_base_freq", 0, ldef, &lb, origin, err)) != LT_OK) return st;
        c->rope_tables = 2;
        c->rope_local_theta = has_loc5 && loc5.have_theta ? loc5.theta : lb;
        c->rope_local_factor = has_loc5 && loc5.type == LT_ROPE_LINEAR ? loc5.factor : 1.0;
        if (has_loc5 && loc5.type == LT_ROPE_LLAMA3)
            return lt_fail(err, LT_ERR_UNSUPPORTED,
                           "%s: rope_parameters.sliding_attention: llama3 scaling on the local table is not supported",
                           origin);
        if (has_loc5 && loc5.have_theta && lk && !cJSON_IsNull(lk) && lb != loc5.theta)
            return lt_fail(err, LT_ERR_INVALID,
                           "%s: rope_local_base_freq = %g conflicts with rope_parameters.sliding_attention.rope_theta = %g",
                           origin, lb, loc5.theta);
        if (!(c->rope_local_theta > 0.0) || !isfinite(c->rope_local_theta))
            return lt_fail(err, LT_ERR_INVALID, "%s: the local rope theta = %g, expected > 0", origin,
                           c->rope_local_theta);
    }
    *out = *r;
    c->rope_scaling_type = r->type;
    c->rope_factor = r->factor;
    c->rope_low_freq_factor = r->low;
    c->rope_high_freq_factor = r->high;
    c->rope_original_max_pos = r->omp;
    /* LongRoPE's lists, length and attention factor: parse_rotary_extras */
    if (!(c->rope_theta > 0.0) || !isfinite(c->rope_theta))
        return lt_fail(err, LT_ERR_INVALID, "%s: %s = %g, expected > 0", origin,
                       has5 && v5.have_theta ? "rope_parameters.rope_theta" : "rope_theta", c->rope_theta);
    return LT_OK;
}

/* The MLP activation: the family's key (hidden_act, or gemma2's
 * hidden_activation), silu -> SwiGLU, gelu_pytorch_tanh -> GeGLU; anything
 * else is refused. A family that reads another key still refuses a
 * hidden_act that disagrees with it (transformers would ignore it). */
static lt_status parse_act(const cJSON *root, const lt_family *fam, lt_config *c, const char *origin, lt_err *err) {
    const char *key = fam->act_key ? fam->act_key : "hidden_act";
    const char *val = fam->act_default ? fam->act_default : "silu";
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, key);
    if (act && !cJSON_IsNull(act)) {
        if (!cJSON_IsString(act))
            return lt_fail(err, LT_ERR_INVALID, "%s: %s must be a string, found %s", origin, key, lt_json_kind(act));
        val = act->valuestring;
    }
    if (!strcmp(val, "silu"))
        c->mlp_act = LT_ACT_SILU;
    else if (!strcmp(val, "gelu_pytorch_tanh") && fam->act_key)
        c->mlp_act = LT_ACT_GELU_TANH;
    else
        return lt_fail(err, LT_ERR_UNSUPPORTED, "%s: %s = \"%s\" is not supported (only \"%s\")", origin, key, val,
                       fam->act_key ? "silu\" or \"gelu_pytorch_tanh" : "silu");
    const cJSON *ha = cJSON_GetObjectItemCaseSensitive(root, "hidden_act");
    if (fam->act_key && ha && !cJSON_IsNull(ha) && (!cJSON_IsString(ha) || strcmp(ha->valuestring, val) != 0))
        return lt_fail(err, LT_ERR_UNSUPPORTED,
                       "%s: hidden_act = %s%s%s disagrees with %s = \"%s\" (model_type \"%s\" uses %s; refused rather "
                       "than guessed)",
                       origin, cJSON_IsString(ha) ? "\"" : "", cJSON_IsString(ha) ? ha->valuestring : lt_json_kind(ha),
                       cJSON_IsString(ha) ? "\"" : "", key, val, fam->model_type, key);
    return LT_OK;
}

/* layer_types (v5): one "full_attention" / "sliding_attention" per layer;
 * sliding[l] = 1 for the sliding ones. *first: the first sliding layer, -1 if none. */
static lt_status parse_layer_types(const cJSON *lt, int L, unsigned char *sliding, int *first, const char *origin,
                                   lt_err *err) {
    if (!cJSON_IsArray(lt) || cJSON_GetArraySize(lt) != L)
        return lt_fail(err, LT_ERR_INVALID, "%s: layer_types must be a list of %d strings (one per layer), found %s",
                       origin, L, lt_json_kind(lt));
    int i = 0;
    const cJSON *e;
    *first = -1;
    cJSON_ArrayForEach(e, lt) {
        if (!cJSON_IsString(e) || !is_layer_type(e->valuestring))
            return lt_fail(err, LT_ERR_UNSUPPORTED,
                           "%s: layer_types[%d] = %s is not supported (expected \"full_attention\" or "
                           "\"sliding_attention\")",
                           origin, i, cJSON_IsString(e) ? e->valuestring : lt_json_kind(e));
        int sl = !strcmp(e->valuestring, "sliding_attention");
        if (sliding && i < LT_MAX_LAYERS) sliding[i] = (unsigned char)sl;
        if (sl && *first < 0) *first = i;
        i++;
    }
    return LT_OK;
}

/* Gemma 2: soft-caps and the attention scale. A cap of null means none; an
 * absent one takes the family default. */
static lt_status parse_softcaps(const cJSON *root, const lt_family *fam, lt_config *c, const char *origin,
                                lt_err *err) {
    static const char *const keys[3] = {"query_pre_attn_scalar", "attn_logit_softcapping", "final_logit_softcapping"};
    double def[3] = {fam->attn_scalar_default, fam->attn_softcap_default, fam->final_softcap_default}, v[3];
    for (int i = 0; i < 3; i++) {
        const cJSON *o = cJSON_GetObjectItemCaseSensitive(root, keys[i]);
        if (o && cJSON_IsNull(o) && i == 0)
            return lt_fail(err, LT_ERR_INVALID, "%s: query_pre_attn_scalar must be a number, found null", origin);
        lt_status st = get_double(root, keys[i], 0, o ? 0.0 : def[i], &v[i], origin, err);
        if (st) return st;
        if (!(v[i] >= 0.0) || !isfinite(v[i]) || (i == 0 && v[i] == 0.0))
            return lt_fail(err, LT_ERR_INVALID, "%s: %s = %g, expected %s", origin, keys[i], v[i],
                           i == 0 ? "> 0" : "null or > 0");
    }
    c->attn_scale = (float)pow(v[0], -0.5); /* transformers: query_pre_attn_scalar**-0.5 in Python floats */
    c->attn_softcap = (float)v[1];
    c->final_softcap = (float)v[2];
    int bidir;
    lt_status st = get_bool(root, "use_bidirectional_attention", 0, &bidir, origin, err);
    if (st) return st;
    if (bidir)
        return lt_fail(err, LT_ERR_UNSUPPORTED,
                       "%s: use_bidirectional_attention = true is not supported (causal attention only)", origin);
    return LT_OK;
}

/* Keys every supported family reads (or that cannot change the math:
 * bookkeeping transformers writes). Anything not listed here or in the
 * family's list (lt_family.keys) is refused by name: a setting we do not understand may change
 * the model. */
static const char *const COMMON_KEYS[] = {
    "architectures", "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "head_dim", "hidden_act", "rms_norm_eps", "rope_theta",
    "rope_scaling", "rope_parameters", "partial_rotary_factor", "max_position_embeddings", "tie_word_embeddings",
    "attention_dropout", "bos_token_id", "eos_token_id", "pad_token_id", "torch_dtype", "dtype",
    "transformers_version", "use_cache", "initializer_range", "_name_or_path", "output_attentions",
    "output_hidden_states", "return_dict", "tokenizer_class", NULL};
static int in_list(const char *const *l, const char *k) {
    for (; *l; l++)
        if (!strcmp(*l, k)) return 1;
    return 0;
}

/* Bookkeeping written by tools around transformers, never read by a model's
 * forward: private keys ("_attn_implementation_autoset"), version stamps
 * ("unsloth_version") and token ids ("sep_token_id", "forced_bos_token_id"). */
static int is_bookkeeping(const char *k) {
    return k[0] == '_' || lt_str_ends_with(k, "_version") || lt_str_ends_with(k, "_token_id") ||
           lt_str_ends_with(k, "_token_ids");
}

static lt_status check_keys(const cJSON *root, const lt_family *fam, const char *model_type, const char *origin,
                            lt_err *err) {
    const cJSON *it;
    cJSON_ArrayForEach(it, root) {
        const char *const(*f)[2] = fam->fixed;
        for (; f && (*f)[0] && strcmp((*f)[0], it->string); f++) {
        }
        if (f && (*f)[0]) { /* accepted at one value only */
            cJSON *want = cJSON_Parse((*f)[1]);
            int ok = cJSON_IsNull(it) || (want && cJSON_Compare(it, want, 1));
            cJSON_Delete(want);
            if (ok) continue;
            char *got = cJSON_PrintUnformatted(it);
            lt_status st = lt_fail(err, LT_ERR_UNSUPPORTED,
                                   "%s: %s = %.40s is not supported for model_type \"%s\" (only %s; refused rather "
                                   "than ignored)",
                                   origin, it->string, got ? got : "?", model_type, (*f)[1]);
            free(got);
            return st;
        }
        if (in_list(COMMON_KEYS, it->string) || in_list(fam->keys, it->string) || is_bookkeeping(it->string))
            continue;
        return lt_fail(err, LT_ERR_UNSUPPORTED,
                       "%s: key \"%s\" is not understood for model_type \"%s\" (a setting that may change the "
                       "model's math; refused rather than ignored)",
                       origin, it->string, model_type);
    }
    return LT_OK;
}

/* partial rotary and LongRoPE (phi3; other families refuse both): the rotary
 * dims int(head_dim * partial_rotary_factor) (transformers: the rope dict's
 * value, set from the top-level one), LongRoPE's factor lists (rotary dims / 2
 * each), its original length (the top-level original_max_position_embeddings
 * or the family default, which transformers' standardize_rope_params puts
 * over the dict's) and attention factor (given, or sqrt(1 + ln(factor) /
 * ln(original)) for factor = max_position_embeddings / original > 1, as
 * _compute_longrope_parameters does). Needs head_dim and
 * max_position_embeddings. */
static lt_status parse_rotary_extras(const cJSON *root, const lt_family *fam, const rope_desc *rd, lt_config *c,
                                     const char *origin, lt_err *err) {
    double prf;
    lt_status st = get_double(root, "partial_rotary_factor", 0, 1.0, &prf, origin, err);
    if (st) return st;
    const cJSON *pf = cJSON_GetObjectItemCaseSensitive(root, "partial_rotary_factor");
    if (rd->has_prf) {
        if (pf && !cJSON_IsNull(pf) && prf != rd->prf)
            return lt_fail(err, LT_ERR_INVALID,
                           "%s: partial_rotary_factor = %g conflicts with the rope dict's partial_rotary_factor = %g",
                           origin, prf, rd->prf);
        prf = rd->prf;
    }
    if (prf != 1.0 && !fam->reads_rope_extras)
        return lt_fail(err, LT_ERR_UNSUPPORTED, "%s: partial_rotary_factor = %g is not supported (only 1.0)", origin,
                       prf);
    if (!(prf > 0.0 && prf <= 1.0))
        return lt_fail(err, LT_ERR_INVALID, "%s: partial_rotary_factor = %g, expected in (0, 1]", origin, prf);
    c->rotary_dim = (int)((double)c->head_dim * prf);
    if (c->rotary_dim < 2 || c->rotary_dim % 2)
        return lt_fail(err, LT_ERR_UNSUPPORTED,
                       "%s: rotary dims int(head_dim %d * partial_rotary_factor %g) = %d must be even and >= 2", origin,
                       c->head_dim, prf, c->rotary_dim);
    c->rope_attention_factor = 1.0;
    if (fam->reads_rope_extras && rd->type == LT_ROPE_LLAMA3) /* Phi3Config.validate_rope */
        return lt_fail(err, LT_ERR_UNSUPPORTED, "%s: rope type \"llama3\" is not supported for model_type \"%s\" "
                       "(only \"default\" or \"longrope\")", origin, fam->model_type);
    if (rd->type != LT_ROPE_LONGROPE) return LT_OK;
    int omp, top;
    if ((st = get_int(root, "original_max_position_embeddings", 0, fam->omp_default, &omp, &top, origin, err)))
        return st;
    if (omp <= 0)
        return lt_fail(err, LT_ERR_INVALID, "%s: original_max_position_embeddings = %d, expected > 0", origin, omp);
    if (rd->omp && rd->omp != omp)
        return lt_fail(err, LT_ERR_INVALID,
                       "%s: the rope dict's original_max_position_embeddings = %d differs from %s "
                       "original_max_position_embeddings = %d, which transformers uses for LongRoPE",
                       origin, rd->omp, top ? "the top-level" : "the default", omp);
    int pairs = c->rotary_dim / 2;
    const cJSON *lists[2] = {rd->short_f, rd->long_f};
    float *dst[2] = {c->rope_short_factor, c->rope_long_factor};
    static const char *const names[2] = {"short_factor", "long_factor"};
    for (int k = 0; k < 2; k++) {
        int n = cJSON_GetArraySize(lists[k]);
        if (n != pairs)
            return lt_fail(err, LT_ERR_INVALID,
                           "%s: longrope %s has %d entries, expected %d (rotary dims %d / 2)", origin, names[k], n,
                           pairs, c->rotary_dim);
        if (pairs > LT_ROPE_MAX_PAIRS)
            return lt_fail(err, LT_ERR_UNSUPPORTED, "%s: longrope %s: %d entries (at most %d)", origin, names[k], n,
                           LT_ROPE_MAX_PAIRS);
        int i = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, lists[k]) dst[k][i++] = (float)e->valuedouble;
    }
    double factor = rd->has_factor ? rd->factor : (double)c->max_position_embeddings / (double)omp;
    c->rope_n_factors = pairs;
    c->rope_original_max_pos = omp;
    c->rope_factor = factor;
    c->rope_attention_factor =
        rd->has_attn ? rd->attn : factor <= 1.0 ? 1.0 : sqrt(1.0 + log(factor) / log((double)omp));
    return LT_OK;
}

/* One model's config object (a causal LM's config.json, or the language
 * model's part of a wrapper's, see parse_wrapped). */
static lt_status parse_object(const cJSON *root, const char *origin, lt_config *cfg, lt_err *err) {
    lt_config c;
    memset(&c, 0, sizeof c);
    lt_status st = LT_OK;

    /* ---- architecture ---- */
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (!cJSON_IsString(mt)) REFUSE(LT_ERR_INVALID, "%s: model_type must be a string, found %s", origin, lt_json_kind(mt));
    const lt_family *fam = lt_family_find(mt->valuestring);
    if (!fam)
        REFUSE(LT_ERR_UNSUPPORTED, "%s: model_type = \"%s\" is not supported (supported: %s)", origin,
               mt->valuestring, lt_family_list());
    c.arch = fam->arch;
    snprintf(c.model_type, sizeof c.model_type, "%s", mt->valuestring);
    const char *want_class = fam->class_name;
    const cJSON *ar = cJSON_GetObjectItemCaseSensitive(root, "architectures");
    if (ar && !cJSON_IsNull(ar)) {
        const cJSON *a0 = cJSON_IsArray(ar) ? cJSON_GetArrayItem(ar, 0) : NULL;
        if (!cJSON_IsString(a0))
            REFUSE(LT_ERR_INVALID, "%s: architectures must be a list of class names, found %s", origin,
                   cJSON_IsArray(ar) ? "an empty or non-string list" : lt_json_kind(ar));
        if (strcmp(a0->valuestring, want_class) != 0)
            REFUSE(LT_ERR_UNSUPPORTED, "%s: architectures[0] = \"%s\" but model_type \"%s\" expects \"%s\"", origin,
                   a0->valuestring, c.model_type, want_class);
    }
    snprintf(c.architecture, sizeof c.architecture, "%s", want_class);

    /* ---- sizes ---- */
    TRY(get_int(root, "vocab_size", 1, 0, &c.vocab_size, NULL, origin, err));
    TRY(get_int(root, "hidden_size", 1, 0, &c.hidden_size, NULL, origin, err));
    TRY(get_int(root, "intermediate_size", 1, 0, &c.intermediate_size, NULL, origin, err));
    TRY(get_int(root, "num_hidden_layers", 1, 0, &c.num_layers, NULL, origin, err));
    TRY(get_int(root, "num_attention_heads", 1, 0, &c.num_heads, NULL, origin, err));
    {
        const struct {
            const char *k;
            int v;
        } pos[] = {{"vocab_size", c.vocab_size},
                   {"hidden_size", c.hidden_size},
                   {"intermediate_size", c.intermediate_size},
                   {"num_hidden_layers", c.num_layers},
                   {"num_attention_heads", c.num_heads}};
        for (size_t i = 0; i < sizeof pos / sizeof pos[0]; i++)
            if (pos[i].v <= 0) REFUSE(LT_ERR_INVALID, "%s: %s = %d, expected > 0", origin, pos[i].k, pos[i].v);
    }
    {
        const cJSON *kv = cJSON_GetObjectItemCaseSensitive(root, "num_key_value_heads");
        int def = fam->kv_heads_default ? fam->kv_heads_default : c.num_heads;
        if (cJSON_IsNull(kv)) def = c.num_heads;
        TRY(get_int(root, "num_key_value_heads", 0, def, &c.num_kv_heads, NULL, origin, err));
        if (c.num_kv_heads <= 0)
            REFUSE(LT_ERR_INVALID, "%s: num_key_value_heads = %d, expected > 0", origin, c.num_kv_heads);
        if (c.num_heads % c.num_kv_heads != 0)
            REFUSE(LT_ERR_INVALID, "%s: num_key_value_heads = %d does not divide num_attention_heads = %d", origin,
                   c.num_kv_heads, c.num_heads);
    }
    {
        const cJSON *hd = cJSON_GetObjectItemCaseSensitive(root, "head_dim");
        int present = 0;
        TRY(get_int(root, "head_dim", 0, 0, &c.head_dim, &present, origin, err));
        if (!hd && fam->head_dim_default) {
            c.head_dim = fam->head_dim_default;
        } else if (!present || (fam->head_dim_zero_derive && c.head_dim == 0)) {
            if (c.hidden_size % c.num_heads != 0)
                REFUSE(LT_ERR_INVALID,
                       "%s: hidden_size = %d is not divisible by num_attention_heads = %d (and head_dim is not given)",
                       origin, c.hidden_size, c.num_heads);
            c.head_dim = c.hidden_size / c.num_heads;
        }
        if (c.head_dim <= 0) REFUSE(LT_ERR_INVALID, "%s: head_dim = %d, expected > 0", origin, c.head_dim);
        if (c.head_dim % 2 != 0)
            REFUSE(LT_ERR_INVALID, "%s: head_dim = %d must be even (rotary embedding pairs)", origin, c.head_dim);
        /* projection widths are ints downstream (LoRA, kernels) */
        if ((int64_t)c.num_heads * c.head_dim > INT32_MAX)
            REFUSE(LT_ERR_INVALID, "%s: num_attention_heads * head_dim = %d * %d is too large", origin, c.num_heads,
                   c.head_dim);
    }
    {
        int def = fam->max_pos_default;
        TRY(get_int(root, "max_position_embeddings", 0, def, &c.max_position_embeddings, NULL, origin, err));
        if (c.max_position_embeddings <= 0)
            REFUSE(LT_ERR_INVALID, "%s: max_position_embeddings = %d, expected > 0", origin,
                   c.max_position_embeddings);
    }

    /* ---- activation, norms, rope ---- */
    TRY(parse_act(root, fam, &c, origin, err));
    double eps;
    TRY(get_double(root, "rms_norm_eps", 0, fam->rms_eps_default > 0 ? fam->rms_eps_default : 1e-6, &eps, origin,
                   err));
    if (!(eps > 0.0) || !isfinite(eps)) REFUSE(LT_ERR_INVALID, "%s: rms_norm_eps = %g, expected > 0", origin, eps);
    c.rms_norm_eps = (float)eps;
    rope_desc rd = {0};
    TRY(parse_rope(root, fam, &c, &rd, origin, err));
    TRY(parse_rotary_extras(root, fam, &rd, &c, origin, err));

    /* ---- biases, norms, windows ---- */
    TRY(get_bool(root, "tie_word_embeddings", fam->tie_default, &c.tie_word_embeddings, origin, err));
    c.norm_offset = fam->norm_offset;
    c.sandwich_norm = fam->sandwich_norm;
    c.embed_scale = fam->embed_scale;
    if (fam->softcaps) TRY(parse_softcaps(root, fam, &c, origin, err));
    {
        int attn_bias, mlp_bias;
        TRY(get_bool(root, "attention_bias", 0, &attn_bias, origin, err));
        TRY(get_bool(root, "mlp_bias", 0, &mlp_bias, origin, err));
        switch (fam->attn_bias) {
        case LT_ATTN_BIAS_IGNORED: break;
        case LT_ATTN_BIAS_QKVO: c.qkv_bias = c.o_bias = attn_bias; break;
        case LT_ATTN_BIAS_QKV_ALWAYS: c.qkv_bias = 1; break;
        }
        c.mlp_bias = fam->reads_mlp_bias ? mlp_bias : 0;
        c.qk_norm = fam->qk_norm;
        c.post_norm = fam->post_norm;
        c.fused_proj = fam->fused_proj;
    }
    if (fam->window == LT_WINDOW_LAYERS) {
        /* v5 layer_types, else transformers 4's rule: layers 0, 2, 4, ... slide */
        const cJSON *sw = cJSON_GetObjectItemCaseSensitive(root, "sliding_window");
        const cJSON *lt = cJSON_GetObjectItemCaseSensitive(root, "layer_types");
        int win, any = 0, first = -1;
        TRY(get_int(root, "sliding_window", 0, sw ? 0 : fam->window_default, &win, NULL, origin, err));
        if (c.num_layers > LT_MAX_LAYERS)
            REFUSE(LT_ERR_UNSUPPORTED, "%s: num_hidden_layers = %d: at most %d layers with sliding windows", origin,
                   c.num_layers, LT_MAX_LAYERS);
        if (lt && !cJSON_IsNull(lt)) {
            TRY(parse_layer_types(lt, c.num_layers, c.layer_sliding, &first, origin, err));
            any = first >= 0;
        } else {
            int pat = fam->window_pattern > 0 ? fam->window_pattern : 2, present = 0;
            if (fam->window_pattern > 0) /* gemma3 v4: sliding_window_pattern (default 6) */
                TRY(get_int(root, "sliding_window_pattern", 0, fam->window_pattern, &pat, &present, origin, err));
            if (pat <= 0) REFUSE(LT_ERR_INVALID, "%s: sliding_window_pattern = %d, expected > 0", origin, pat);
            for (int l = 0; l < c.num_layers; l++) {
                c.layer_sliding[l] = (unsigned char)((l + 1) % pat != 0);
                any |= c.layer_sliding[l];
            }
        }
        if (any && win <= 0)
            REFUSE(LT_ERR_INVALID, "%s: sliding_window = %s, but layers use sliding attention (expected > 0)", origin,
                   sw && cJSON_IsNull(sw) ? "null" : "<= 0");
        c.sliding_window = any ? win : 0;
        c.window_layers = 1;
    } else if (fam->window == LT_WINDOW_ALL) {
        const cJSON *sw = cJSON_GetObjectItemCaseSensitive(root, "sliding_window");
        TRY(get_int(root, "sliding_window", 0, sw ? 0 : fam->window_default, &c.sliding_window, NULL, origin, err));
        if (sw && !cJSON_IsNull(sw) && c.sliding_window <= 0)
            REFUSE(LT_ERR_INVALID, "%s: sliding_window = %d, expected null or > 0", origin, c.sliding_window);
    } else if (fam->window == LT_WINDOW_QWEN) {
        int use, win, mwl, win_present;
        TRY(get_bool(root, "use_sliding_window", 0, &use, origin, err));
        TRY(get_int(root, "sliding_window", 0, 4096, &win, &win_present, origin, err));
        TRY(get_int(root, "max_window_layers", 0, 28, &mwl, NULL, origin, err));
        const cJSON *sw = cJSON_GetObjectItemCaseSensitive(root, "sliding_window");
        if (use && !cJSON_IsNull(sw) && mwl < c.num_layers) {
            if (win <= 0)
                REFUSE(LT_ERR_INVALID, "%s: sliding_window = %d with use_sliding_window true, expected > 0", origin,
                       win);
            c.sliding_window = win;
        }
        /* transformers 5 lists each layer's attention kind; a sliding layer
         * records the window (the runtime refuses longer sequences) */
        const cJSON *lt = cJSON_GetObjectItemCaseSensitive(root, "layer_types");
        if (lt && !cJSON_IsNull(lt)) {
            int first = -1;
            TRY(parse_layer_types(lt, c.num_layers, NULL, &first, origin, err));
            if (first >= 0) {
                if (!sw || cJSON_IsNull(sw) || win <= 0)
                    REFUSE(LT_ERR_INVALID, "%s: layer_types[%d] = \"sliding_attention\" but sliding_window is %s",
                           origin, first, sw && !cJSON_IsNull(sw) ? "not > 0" : "null");
                c.sliding_window = win;
            }
        }
    }

    /* ---- tokens, dtype ---- */
    TRY(get_token_id(root, "bos_token_id", &c.bos_token_id, origin, err));
    TRY(get_token_id(root, "eos_token_id", &c.eos_token_id, origin, err));
    {
        /* v4 writes torch_dtype, v5 dtype; both must agree when both are given */
        static const char *const keys[2] = {"torch_dtype", "dtype"};
        const char *seen = NULL, *seen_key = NULL;
        c.torch_dtype = LT_F32;
        for (int i = 0; i < 2; i++) {
            const cJSON *td = cJSON_GetObjectItemCaseSensitive(root, keys[i]);
            if (!td || cJSON_IsNull(td)) continue;
            if (!cJSON_IsString(td))
                REFUSE(LT_ERR_INVALID, "%s: %s must be a string, found %s", origin, keys[i], lt_json_kind(td));
            if (seen && strcmp(seen, td->valuestring) != 0)
                REFUSE(LT_ERR_INVALID, "%s: %s = \"%s\" conflicts with %s = \"%s\"", origin, seen_key, seen, keys[i],
                       td->valuestring);
            seen = td->valuestring;
            seen_key = keys[i];
            if (strcmp(td->valuestring, "float32") == 0)
                c.torch_dtype = LT_F32;
            else if (strcmp(td->valuestring, "bfloat16") == 0)
                c.torch_dtype = LT_BF16;
            else if (strcmp(td->valuestring, "float16") == 0)
                c.torch_dtype = LT_F16;
            else
                REFUSE(LT_ERR_UNSUPPORTED,
                       "%s: %s = \"%s\" is not supported (expected float32, bfloat16 or float16)", origin, keys[i],
                       td->valuestring);
        }
    }
    {
        double drop;
        TRY(get_double(root, "attention_dropout", 0, 0.0, &drop, origin, err));
        if (drop != 0.0)
            REFUSE(LT_ERR_UNSUPPORTED, "%s: attention_dropout = %g is not supported (only 0)", origin, drop);
    }
    TRY(check_keys(root, fam, c.model_type, origin, err));
    *cfg = c;
done:
    return st;
}

/* Keys of a wrapper's top level that every wrapper may carry: bookkeeping,
 * the dtype, tying and token ids (they apply to the language model, see
 * parse_wrapped). */
static const char *const WRAP_COMMON_KEYS[] = {"architectures", "model_type", "torch_dtype", "dtype",
                                               "tie_word_embeddings", "bos_token_id", "eos_token_id",
                                               "pad_token_id", "transformers_version", "initializer_range",
                                               "use_cache", "_name_or_path", "output_attentions",
                                               "output_hidden_states", "return_dict", NULL};

/* A multimodal config.json holding family `fam`'s language model
 * (lt_family_wrapper): the top level is checked (class, keys: anything not
 * listed is refused by name), then the language model's settings under
 * text_key are parsed as that family's config, with the sizes the text
 * config class defaults (text_defaults) filled in where absent, and the top
 * level's dtype, token ids and tie_word_embeddings (transformers 5 ties the
 * head by the top-level value, 4.x by text_config's: both given must agree). */
static lt_status parse_wrapped(const cJSON *root, const lt_family *fam, const char *origin, lt_config *cfg,
                               lt_err *err) {
    const lt_family_wrapper *w = fam->wrapper;
    lt_status st = LT_OK;
    cJSON *text = NULL, *defs = NULL;
    char sub[4200];
    const cJSON *ar = cJSON_GetObjectItemCaseSensitive(root, "architectures"), *it;
    if (ar && !cJSON_IsNull(ar)) {
        const cJSON *a0 = cJSON_IsArray(ar) ? cJSON_GetArrayItem(ar, 0) : NULL;
        if (!cJSON_IsString(a0) || strcmp(a0->valuestring, w->class_name) != 0)
            REFUSE(LT_ERR_UNSUPPORTED, "%s: architectures[0] = %s but model_type \"%s\" expects \"%s\"", origin,
                   cJSON_IsString(a0) ? a0->valuestring : lt_json_kind(ar), w->model_type, w->class_name);
    }
    cJSON_ArrayForEach(it, root) {
        if (!strcmp(it->string, w->text_key) || in_list(WRAP_COMMON_KEYS, it->string) || in_list(w->keys, it->string) ||
            is_bookkeeping(it->string))
            continue;
        REFUSE(LT_ERR_UNSUPPORTED,
               "%s: key \"%s\" is not understood for model_type \"%s\" (a setting that may change the model's math; "
               "refused rather than ignored)",
               origin, it->string, w->model_type);
    }
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(root, w->text_key);
    if (!cJSON_IsObject(tc))
        REFUSE(LT_ERR_INVALID, "%s: %s must be an object with the language model's settings, found %s", origin,
               w->text_key, lt_json_kind(tc));
    const cJSON *tmt = cJSON_GetObjectItemCaseSensitive(tc, "model_type");
    if (tmt && !(cJSON_IsString(tmt) && !strcmp(tmt->valuestring, fam->model_type)))
        REFUSE(LT_ERR_UNSUPPORTED, "%s: %s.model_type = %s, but model_type \"%s\" holds a \"%s\" language model",
               origin, w->text_key, cJSON_IsString(tmt) ? tmt->valuestring : lt_json_kind(tmt), w->model_type,
               fam->model_type);
    if (cJSON_GetObjectItemCaseSensitive(tc, "architectures"))
        REFUSE(LT_ERR_UNSUPPORTED, "%s: %s.architectures is not expected inside a %s config", origin, w->text_key,
               w->class_name);
    text = cJSON_Duplicate(tc, 1);
    defs = cJSON_Parse(w->text_defaults);
    if (!text || !defs) REFUSE(LT_ERR_NOMEM, "%s: out of memory", origin);
    cJSON_ArrayForEach(it, defs) if (!cJSON_GetObjectItemCaseSensitive(text, it->string))
        cJSON_AddItemToObject(text, it->string, cJSON_Duplicate(it, 1));
    {
        /* top level over text_config: dtype, token ids; tie_word_embeddings must agree */
        static const char *const over[] = {"torch_dtype", "dtype", "bos_token_id", "eos_token_id", "pad_token_id"};
        const cJSON *td = cJSON_GetObjectItemCaseSensitive(root, "torch_dtype"), *dt = cJSON_GetObjectItemCaseSensitive(root, "dtype");
        if ((td && !cJSON_IsNull(td)) || (dt && !cJSON_IsNull(dt))) { /* the top level's dtype, in either spelling */
            cJSON_DeleteItemFromObjectCaseSensitive(text, "torch_dtype");
            cJSON_DeleteItemFromObjectCaseSensitive(text, "dtype");
        }
        for (size_t k = 0; k < sizeof over / sizeof over[0]; k++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, over[k]);
            if (!v || cJSON_IsNull(v)) continue;
            cJSON_DeleteItemFromObjectCaseSensitive(text, over[k]);
            cJSON_AddItemToObject(text, over[k], cJSON_Duplicate(v, 1));
        }
        const cJSON *t0 = cJSON_GetObjectItemCaseSensitive(root, "tie_word_embeddings");
        const cJSON *t1 = cJSON_GetObjectItemCaseSensitive(tc, "tie_word_embeddings");
        if (t0 && !cJSON_IsNull(t0) && t1 && !cJSON_IsNull(t1) && !cJSON_Compare(t0, t1, 1))
            REFUSE(LT_ERR_INVALID,
                   "%s: tie_word_embeddings = %s conflicts with %s.tie_word_embeddings = %s (transformers 5 ties the "
                   "head by the first, 4.x by the second; refused rather than guessed)",
                   origin, cJSON_IsTrue(t0) ? "true" : "false", w->text_key, cJSON_IsTrue(t1) ? "true" : "false");
        if (t0 && !cJSON_IsNull(t0)) {
            cJSON_DeleteItemFromObjectCaseSensitive(text, "tie_word_embeddings");
            cJSON_AddItemToObject(text, "tie_word_embeddings", cJSON_Duplicate(t0, 1));
        }
    }
    cJSON_DeleteItemFromObjectCaseSensitive(text, "model_type");
    cJSON_AddStringToObject(text, "model_type", fam->model_type);
    snprintf(sub, sizeof sub, "%s: %s", origin, w->text_key);
    TRY(parse_object(text, sub, cfg, err));
    cfg->wrap = w;
    snprintf(cfg->architecture, sizeof cfg->architecture, "%s", w->class_name);
done:
    cJSON_Delete(text);
    cJSON_Delete(defs);
    return st;
}

lt_status lt_config_parse(const char *json, const char *origin, lt_config *cfg, lt_err *err) {
    if (!origin) origin = "config.json";
    char why[160];
    cJSON *root = lt_json_parse_exact(json, strlen(json), why, sizeof why);
    if (!root) return lt_fail(err, LT_ERR_FORMAT, "%s: %s", origin, why);
    lt_status st;
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    const lt_family *wf = cJSON_IsString(mt) ? lt_family_find_wrapper(mt->valuestring) : NULL;
    if (!cJSON_IsObject(root))
        st = lt_fail(err, LT_ERR_FORMAT, "%s: expected a JSON object", origin);
    else if (wf)
        st = parse_wrapped(root, wf, origin, cfg, err);
    else
        st = parse_object(root, origin, cfg, err);
    cJSON_Delete(root);
    return st;
}

int lt_config_layer_window(const lt_config *cfg, int l) {
    if (!cfg->window_layers || cfg->sliding_window <= 0 || l < 0 || l >= cfg->num_layers || l >= LT_MAX_LAYERS)
        return 0;
    return cfg->layer_sliding[l] ? cfg->sliding_window : 0;
}

lt_status lt_config_load(const char *path, lt_config *cfg, lt_err *err) {
    char file[4096];
    if (lt_is_dir(path)) {
        if (!lt_path_join(file, sizeof file, path, "config.json"))
            return lt_fail(err, LT_ERR_INVALID, "%s: path too long", path);
    } else {
        snprintf(file, sizeof file, "%s", path);
    }
    char *text = NULL;
    lt_status st = lt_read_file(file, &text, NULL, err);
    if (st != LT_OK) return st;
    st = lt_config_parse(text, file, cfg, err);
    free(text);
    return st;
}

/* LongRoPE (_compute_longrope_parameters, in float32 as there):
 * inv_freq[i] = 1 / (factor[i] * theta^(float(2i) / R)), R the rotary dims. */
static void longrope_inv_freq(const lt_config *cfg, const float *factor, float *inv_freq) {
    const int R = lt_config_rotary_dim(cfg);
    const float theta = (float)cfg->rope_theta;
    for (int i = 0; i < R / 2; i++) {
        float e = (float)(2 * i) / (float)R;
        inv_freq[i] = 1.0f / (factor[i] * powf(theta, e));
    }
}

/* inv_freq[i] = theta^(-2i/D), then llama3 scaling (transformers'
 * _compute_llama3_parameters): wavelengths above original_max/low_freq_factor
 * are divided by factor, below original_max/high_freq_factor kept, and in
 * between blended by smooth = (original_max / wavelen - low) / (high - low):
 *   (1 - smooth) * inv / factor + smooth * inv.
 * Computed in double and rounded to float once; transformers computes in
 * float32, so the two differ by a few float32 ulps (see tests/test_config.c). */
void lt_config_rope_inv_freq(const lt_config *cfg, float *inv_freq) {
    const int D = lt_config_rotary_dim(cfg);
    const double pi = 3.14159265358979323846;
    if (cfg->rope_scaling_type == LT_ROPE_LONGROPE) {
        longrope_inv_freq(cfg, cfg->rope_short_factor, inv_freq);
        return;
    }
    for (int i = 0; i < D / 2; i++) {
        double inv = 1.0 / pow(cfg->rope_theta, (double)(2 * i) / (double)D);
        if (cfg->rope_scaling_type == LT_ROPE_LLAMA3) {
            double omp = (double)cfg->rope_original_max_pos, f = cfg->rope_factor;
            double lo = cfg->rope_low_freq_factor, hi = cfg->rope_high_freq_factor;
            double low_wavelen = omp / lo, high_wavelen = omp / hi;
            double wavelen = 2.0 * pi / inv;
            if (wavelen > low_wavelen) {
                inv = inv / f;
            } else if (!(wavelen < high_wavelen)) {
                double smooth = (omp / wavelen - lo) / (hi - lo);
                inv = (1.0 - smooth) * inv / f + smooth * inv;
            }
        }
        if (cfg->rope_scaling_type == LT_ROPE_LINEAR) inv = inv / cfg->rope_factor;
        inv_freq[i] = (float)inv;
    }
}

void lt_config_rope_inv_freq_long(const lt_config *cfg, float *inv_freq) {
    if (cfg->rope_scaling_type == LT_ROPE_LONGROPE)
        longrope_inv_freq(cfg, cfg->rope_long_factor, inv_freq);
    else
        lt_config_rope_inv_freq(cfg, inv_freq);
}

int lt_config_rotary_dim(const lt_config *cfg) {
    return cfg->rotary_dim > 0 && cfg->rotary_dim <= cfg->head_dim ? cfg->rotary_dim : cfg->head_dim;
}

float lt_config_rope_scale(const lt_config *cfg) {
    return cfg->rope_attention_factor > 0 ? (float)cfg->rope_attention_factor : 1.0f;
}

/* The sliding layers' table (rope_tables = 2): theta rope_local_theta,
 * divided by rope_local_factor (linear). */
void lt_config_rope_inv_freq_local(const lt_config *cfg, float *inv_freq) {
    if (cfg->rope_tables != 2) {
        lt_config_rope_inv_freq(cfg, inv_freq);
        return;
    }
    const int D = lt_config_rotary_dim(cfg);
    for (int i = 0; i < D / 2; i++)
        inv_freq[i] = (float)(1.0 / pow(cfg->rope_local_theta, (double)(2 * i) / (double)D) / cfg->rope_local_factor);
}
