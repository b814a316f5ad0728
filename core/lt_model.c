/*
 * lt_model.c -- the decoder-only transformer (llama, mistral, qwen2, qwen3):
 * loading a Hugging Face folder onto a backend, activation planning, and the
 * forward / loss / backward written once against the op table (lt_backend.h).
 *
 * Notation: N = B*T rows, C = hidden_size, Hq / Hkv query / kv heads, D =
 * head_dim, I = intermediate_size, V = vocab_size, L = num_layers.
 *
 * One layer (x = residual stream, (N, C)):
 *   h  = rmsnorm(x) * ln1                       input_layernorm
 *   q  = h @ Wq^T (+bq)   (N, Hq, D)            k, v likewise (N, Hkv, D)
 *   q  = rmsnorm_D(q) * qn ; k likewise         qwen3 only (per head)
 *   q, k = rope(q, pos), rope(k, pos)
 *   a  = attention(q, k, v)  (N, Hq, D)         causal inside each document
 *   x' = x + a @ Wo^T
 *   h2 = rmsnorm(x') * ln2                      post_attention_layernorm
 *   x'' = x' + (silu(h2 Wg^T) * (h2 Wu^T)) Wd^T
 * The post-norm layer (olmo2) has no ln1 and norms the sublayer outputs:
 *   q  = rmsnorm_{Hq*D}(x @ Wq^T) * qn ; k likewise (the whole projection)
 *   x' = x + rmsnorm(a @ Wo^T) * ln2            post_attention_layernorm
 *   x'' = x' + rmsnorm(mlp(x')) * ln3           post_feedforward_layernorm
 * The sandwich layer (gemma2) has all four norms, each xhat * (1 + w):
 *   h  = rmsnorm(x) * ln1 ; a = attention(h)
 *   x' = x + rmsnorm(a @ Wo^T) * ln2            post_attention_layernorm
 *   x'' = x' + rmsnorm(mlp(rmsnorm(x') * lnp)) * ln3   pre_ / post_feedforward_layernorm
 * with the embeddings scaled by sqrt(C), GeGLU, soft-capped attention scores
 * over sliding windows on alternate layers, and soft-capped final logits.
 * then logits = rmsnorm(x_L) * lnf @ Whead^T (Whead = embedding when tied)
 * and the cross-entropy against the targets, in chunks of rows (the head's
 * backward fused into the same loop, so the (N, V) logits never exist).
 *
 * The host never reads or writes activation memory except through the
 * backend's upload/download, so the same code runs on every backend; buffer
 * sizes come from be->act_dtype.
 */
#include "lt_model.h"
#include "lt_family.h"
#include "lt_lora_target.h"
#include "lt_nf4.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "lt_model_spec.h"
#include "lt_safetensors.h"

/* ---------------------------------------------------------------------- */
/* parameter specs                                                         */

static void spec_set(lt_param_spec *s, const char *name, int ndim, int64_t d0, int64_t d1) {
    snprintf(s->name, sizeof s->name, "%s", name);
    s->ndim = ndim;
    s->shape[0] = d0;
    s->shape[1] = ndim > 1 ? d1 : 0;
}

lt_status lt_model_param_specs(const lt_config *cfg, lt_param_spec **out, size_t *n, lt_err *err) {
    *out = NULL;
    *n = 0;
    int64_t C = cfg->hidden_size, V = cfg->vocab_size, I = cfg->intermediate_size, D = cfg->head_dim;
    int64_t HqD = (int64_t)cfg->num_heads * D, HkvD = (int64_t)cfg->num_kv_heads * D;
    if (C <= 0 || V <= 0 || I <= 0 || D <= 0 || cfg->num_layers <= 0 || cfg->num_heads <= 0 ||
        cfg->num_kv_heads <= 0 || cfg->num_heads % cfg->num_kv_heads != 0 || D % 2 != 0)
        return lt_fail(err, LT_ERR_INVALID,
                       "config: inconsistent sizes (hidden_size %d, vocab_size %d, intermediate_size %d, "
                       "num_hidden_layers %d, num_attention_heads %d, num_key_value_heads %d, head_dim %d)",
                       cfg->hidden_size, cfg->vocab_size, cfg->intermediate_size, cfg->num_layers, cfg->num_heads,
                       cfg->num_kv_heads, cfg->head_dim);
    int64_t qn_w = cfg->qk_norm == LT_QK_NORM_WHOLE ? HqD : D, kn_w = cfg->qk_norm == LT_QK_NORM_WHOLE ? HkvD : D;
    size_t per_layer = 20, cap = 3 + (size_t)cfg->num_layers * per_layer;
    lt_param_spec *s = calloc(cap, sizeof *s);
    if (!s) return lt_fail(err, LT_ERR_NOMEM, "out of memory for %zu parameter specs", cap);
    size_t k = 0;
    char nm[96];
    spec_set(&s[k++], "model.embed_tokens.weight", 2, V, C);
    for (int l = 0; l < cfg->num_layers; l++) {
#define LAYER(suffix, nd, d0, d1)                                           \
    do {                                                                    \
        snprintf(nm, sizeof nm, "model.layers.%d.%s", l, suffix);           \
        spec_set(&s[k++], nm, nd, d0, d1);                                  \
    } while (0)
        if (!cfg->post_norm) LAYER("input_layernorm.weight", 1, C, 0);
        if (cfg->fused_proj) { /* phi3: q, k, v rows in one weight, no biases */
            LAYER("self_attn.qkv_proj.weight", 2, HqD + 2 * HkvD, C);
        } else {
            LAYER("self_attn.q_proj.weight", 2, HqD, C);
            if (cfg->qkv_bias) LAYER("self_attn.q_proj.bias", 1, HqD, 0);
            LAYER("self_attn.k_proj.weight", 2, HkvD, C);
            if (cfg->qkv_bias) LAYER("self_attn.k_proj.bias", 1, HkvD, 0);
            LAYER("self_attn.v_proj.weight", 2, HkvD, C);
            if (cfg->qkv_bias) LAYER("self_attn.v_proj.bias", 1, HkvD, 0);
        }
        LAYER("self_attn.o_proj.weight", 2, C, HqD);
        if (cfg->o_bias) LAYER("self_attn.o_proj.bias", 1, C, 0);
        if (cfg->qk_norm) {
            LAYER("self_attn.q_norm.weight", 1, qn_w, 0);
            LAYER("self_attn.k_norm.weight", 1, kn_w, 0);
        }
        LAYER("post_attention_layernorm.weight", 1, C, 0);
        if (cfg->sandwich_norm) LAYER("pre_feedforward_layernorm.weight", 1, C, 0);
        if (cfg->fused_proj) { /* phi3: gate rows, then up rows */
            LAYER("mlp.gate_up_proj.weight", 2, 2 * I, C);
        } else {
            LAYER("mlp.gate_proj.weight", 2, I, C);
            if (cfg->mlp_bias) LAYER("mlp.gate_proj.bias", 1, I, 0);
            LAYER("mlp.up_proj.weight", 2, I, C);
            if (cfg->mlp_bias) LAYER("mlp.up_proj.bias", 1, I, 0);
        }
        LAYER("mlp.down_proj.weight", 2, C, I);
        if (cfg->mlp_bias) LAYER("mlp.down_proj.bias", 1, C, 0);
        if (cfg->post_norm || cfg->sandwich_norm) LAYER("post_feedforward_layernorm.weight", 1, C, 0);
#undef LAYER
    }
    spec_set(&s[k++], "model.norm.weight", 1, C, 0);
    if (!cfg->tie_word_embeddings) spec_set(&s[k++], "lm_head.weight", 2, V, C);
    *out = s;
    *n = k;
    return LT_OK;
}

lt_status lt_model_open_weights(const char *dir, const lt_config *cfg, lt_st_model **out, int *layout,
                                lt_err *err) {
    lt_st_model *m = NULL;
    const lt_family_wrapper *w = cfg->wrap;
    if (layout) *layout = -1;
    lt_status st = lt_st_open_model(dir, &m, err);
    if (st || !w) {
        *out = m;
        return st;
    }
    size_t count[LT_WRAP_LAYOUTS] = {0};
    int lay = -1;
    for (int k = 0; k < LT_WRAP_LAYOUTS; k++) {
        const char *canon[2], *file[2];
        lt_wrap_rules(w, k, canon, file);
        for (size_t i = 0; i < lt_st_model_count(m); i++) {
            const char *nm = lt_st_model_get(m, i)->name;
            count[k] += !strncmp(nm, file[0], strlen(file[0])); /* the body: a head may be tied, and
                                                                 * "lm_head." is a causal LM's name too */
        }
        if (count[k] && lay >= 0) {
            lt_st_close_model(m);
            return lt_fail(err, LT_ERR_FORMAT, "%s: %s checkpoint with tensors under both '%s' and '%s'", dir,
                           w->class_name, w->layouts[lay].body, w->layouts[k].body);
        }
        if (count[k]) lay = k;
    }
    if (lay < 0) {
        lt_st_close_model(m);
        return lt_fail(err, LT_ERR_FORMAT,
                       "%s: config.json is a %s, but no tensor is under '%s' or '%s' (the language model's prefixes)",
                       dir, w->class_name, w->layouts[0].body, w->layouts[1].body);
    }
    const char *canon[2], *file[2];
    lt_wrap_rules(w, lay, canon, file);
    lt_st_rename ren[2] = {{file[0], canon[0]}, {file[1], canon[1]}};
    if ((st = lt_st_model_rename(m, ren, 2, w->layouts[lay].others, err))) {
        lt_st_close_model(m);
        return st;
    }
    char pre[256];
    size_t o = 0;
    pre[0] = 0;
    for (const char *const *p = w->layouts[lay].others; *p && o < sizeof pre; p++)
        o += (size_t)snprintf(pre + o, sizeof pre - o, "%s%s*", o ? ", " : "", *p);
    fprintf(stderr, "%s: %s: the language model's tensors read from %s*; %zu tensors of the other towers skipped (%s)\n",
            dir, w->class_name, file[0], lt_st_model_aside_count(m), pre);
    if (layout) *layout = lay;
    *out = m;
    return LT_OK;
}

lt_status lt_model_check_tensors(const lt_st_model *stm, const lt_param_spec *specs, size_t n, int tied,
                                 lt_err *err) {
    for (size_t i = 0; i < n; i++) {
        const lt_param_spec *sp = &specs[i];
        const lt_st_tensor *t = lt_st_model_find(stm, sp->name);
        if (!t) {
            char want[128];
            lt_st_shape_str(want, sizeof want, sp->ndim, sp->shape);
            return lt_fail(err, LT_ERR_FORMAT, "checkpoint: tensor '%s' is missing (config.json implies shape %s)",
                           sp->name, want);
        }
        int same = t->ndim == sp->ndim;
        for (int d = 0; same && d < sp->ndim; d++) same = t->shape[d] == sp->shape[d];
        if (!same) {
            char got[128], want[128];
            lt_st_shape_str(got, sizeof got, t->ndim, t->shape);
            lt_st_shape_str(want, sizeof want, sp->ndim, sp->shape);
            return lt_fail(err, LT_ERR_FORMAT,
                           "%s: tensor '%s': shape %s but config.json implies %s", t->file ? t->file : "checkpoint",
                           sp->name, got, want);
        }
        if (t->dtype != LT_F32 && t->dtype != LT_BF16 && t->dtype != LT_F16)
            return lt_fail(err, LT_ERR_UNSUPPORTED, "%s: tensor '%s': dtype %s (expected F32, BF16 or F16)",
                           t->file ? t->file : "checkpoint", sp->name, lt_dtype_name(t->dtype));
    }
    /* tensors the runtime would not use */
    char list[512];
    size_t o = 0, extra = 0;
    list[0] = 0;
    for (size_t i = 0; i < lt_st_model_count(stm); i++) {
        const lt_st_tensor *t = lt_st_model_get(stm, i);
        int known = 0;
        for (size_t j = 0; j < n && !known; j++) known = !strcmp(specs[j].name, t->name);
        if (known || lt_str_ends_with(t->name, ".rotary_emb.inv_freq") || (tied && !strcmp(t->name, "lm_head.weight")))
            continue;
        if (extra < 4 && o < sizeof list)
            o += (size_t)snprintf(list + o, sizeof list - o, "%s'%s'", extra ? ", " : "", t->name);
        extra++;
    }
    if (extra)
        return lt_fail(err, LT_ERR_FORMAT,
                       "checkpoint: %zu tensor(s) this architecture does not use: %s%s (a different architecture "
                       "or a config.json that does not match the weights?)",
                       extra, list, extra > 4 ? ", ..." : "");
    return LT_OK;
}

/* ---------------------------------------------------------------------- */
/* the model                                                               */

/* LoRA targets: core/lt_lora_target.h (order, names, shapes) */
#define NT LT_LORA_NTARGETS
static size_t proj_in(const lt_config *c, int t) {
    int in, out;
    lt_lora_target_dims(c, t, &in, &out);
    return (size_t)in;
}
static size_t proj_out(const lt_config *c, int t) {
    int in, out;
    lt_lora_target_dims(c, t, &in, &out);
    return (size_t)out;
}

typedef struct layer {
    lt_param *ln1, *wq, *bq, *wk, *bk, *wv, *bv, *wo, *bo, *qn, *kn, *ln2, *wg, *bg, *wu, *bu, *wd, *bd;
    lt_param *ln3; /* post-norm: post_feedforward_layernorm */
    lt_param *la[NT], *lb[NT]; /* LoRA A (r, in), B (out, r); NULL where not adapted */
    lt_param *wqkv, *wgu; /* fused (phi3): qkv_proj (q, k, v rows), gate_up_proj (gate, up rows) */
    lt_param *lnp; /* sandwich: pre_feedforward_layernorm */
} layer;

/* Activations saved by the forward, per layer (backend memory). */
typedef struct layer_acts {
    void *x;      /* (N, C) residual stream entering the layer */
    void *h1;     /* (N, C) input_layernorm output */
    float *rstd1; /* (N) */
    void *qpre, *kpre; /* (N, Hq*D), (N, Hkv*D) projections before qk-norm (qwen3) */
    float *qrstd, *krstd; /* (N*Hq), (N*Hkv) */
    void *q, *k, *v; /* after norm and rope */
    void *att;       /* (N, Hq*D) */
    float *lse;      /* (B, Hq, T) */
    void *xmid;      /* (N, C) x + attention */
    void *h2;        /* (N, C); post-norm: the o_proj output before post_attention_layernorm */
    float *rstd2;    /* (N) */
    void *mo;        /* post-norm: (N, C) the MLP output before post_feedforward_layernorm */
    float *rstd3;    /* post-norm: (N) */
    void *gate, *up, *swi; /* (N, I) */
    float *xa[NT];         /* LoRA: (N, r) x_lora @ A^T */
    void *xdrop[NT];       /* LoRA dropout: (N, in) the adapter's input after dropout */
    void *hp;              /* sandwich: (N, C) pre_feedforward_layernorm output (the MLP input) */
    float *rstdp;          /* sandwich: (N) */
} layer_acts;

/* the KV cache and decode scratch (one sequence) */
typedef struct kv_cache {
    int max_len, len, chunk;
    void *arena;
    void **k, **v;                  /* per layer (max_len, Hkv*D) */
    void *q, *att;                  /* (max_len, Hq*D) */
    float *lse;                     /* (Hq, max_len) */
    void *x, *h, *qpre, *kpre, *tmp, *xmid, *gate, *up, *swi; /* chunk rows */
    float *rstd, *qrstd, *krstd, *xa;
    void *logits;                   /* (chunk, V) */
    int32_t *d_tokens, *d_pos, *d_doc;
    int32_t *h_doc, *h_pos;         /* host (max_len) */
    int32_t *h_tok;                 /* host (max_len): the cached tokens (LongRoPE recomputes them) */
    int rope_long;                  /* LongRoPE: the cached k rows were rotated with the long table */
    int32_t *d_docw, *h_docw;       /* sliding layers: the window's lower bounds (device, host) */
} kv_cache;

struct lt_model {
    lt_config cfg;
    lt_backend *be;
    lt_param *params;
    size_t n_params;
    lt_param *embed, *lnf, *head; /* head = embed when tied */
    layer *layers;
    float *inv_freq; /* (R/2) f32, backend; LongRoPE: the short table, then the long one (R/2 more) */
    float *inv_freq_local; /* gemma3: the sliding layers' table (NULL: inv_freq) */
    int rope_long;   /* LongRoPE: the running step / decode call uses the long table */
    int grads_allocated;
    float *grad_flat;  /* one buffer for every trainable gradient, in parameter order */
    size_t grad_numel; /* its length */
    lt_grad_hook hook; /* called when a group's gradients are final (NULL: none) */
    void *hook_ctx;
    int grads_pooled;  /* lt_model_pool_grads: gradients come from `provider` group by group */
    lt_grad_provider provider;
    void *provider_ctx;
    lt_status pool_st; /* the provider failed during the step */
    lt_st_model *src;  /* lt_model_load_deferred: the checkpoint, mapped, until every parameter is loaded or sharded */
    unsigned char *wshard;     /* lt_model_shard_weights: (n_params) 1 = data belongs to the provider */
    lt_weight_provider wprov;
    void *wprov_ctx;
    int recompute;     /* keep only each layer's input; recompute the rest in the backward */
    int replay;        /* proj_fwd redraws dropout masks from the saved snapshots */

    /* plan */
    int B, T;
    void *arena;
    size_t arena_bytes; /* what the plan reserved */
    layer_acts *acts;
    layer_acts scratch; /* --recompute: the one layer's activations (x unused) */
    void *x_final;   /* (N, C) residual after the last layer */
    void *hf;        /* (N, C) final norm output */
    float *rstdf;    /* (N) */
    void *logits;    /* (chunk_rows, V): one chunk of logits; holds its dlogits in a backward step */
    int chunk_rows;  /* rows of the logits chunk in this plan (<= N) */
    int chunk_set;   /* lt_model_set_logits_chunk: 0 = default (env / byte budget) */
    float *losses;   /* (N) */
    void *tmp;       /* (N, C) projection output before the residual add */
    void *dx, *dh;   /* (N, C) residual gradient, norm-output gradient */
    void *dq, *dk, *dv, *datt; /* (N, Hq*D), (N, Hkv*D), (N, Hkv*D), (N, Hq*D) */
    void *dq2, *dk2;           /* qk-norm input gradients */
    void *dgate, *dup, *dswi;  /* (N, I) */
    float *sink;               /* f32 scratch for gradients of frozen norm weights */
    int32_t *d_tokens, *d_targets, *d_pos, *d_doc;
    float *host_losses; /* (N) host */
    int logits_state;   /* 0 none, 1 logits valid, 2 overwritten by dlogits */

    /* LoRA */
    int lora;
    lt_lora_spec lspec;
    lt_rng *rng;      /* dropout masks (borrowed) */
    float neft_alpha; /* NEFTune alpha (0: off) and the noise stream of the next backward step */
    uint64_t neft_key;
    lt_rng *snap;     /* (L * NT) rng state before each projection's mask */
    int drop_active;  /* the last forward applied dropout */
    void *dxl;        /* (N, max in) act: the adapter-input gradient under dropout */
    lt_status drop_st; /* first failure of the dropout's host round trip (reported by the step) */
    lt_err drop_err;
    float *host_drop; /* (N, max in) host staging for dropout */
    kv_cache *kv;
    int32_t *d_docw;  /* (N) sliding layers: max(doc_start, t - W + 1) */
    int32_t *h_docw;  /* (N) host */
    int32_t *train_rows; /* lt_model_train_embeddings: the embedding rows that train (sorted), NULL: all */
    size_t n_train_rows;

    /* QLoRA (lt_model_quantize_nf4): the frozen projections in NF4 */
    void **nf4;  /* (L * NT) NF4 buffers (backend memory), NULL: not quantized */
    void *wdq;   /* one projection's dequantized weight (param dtype): the adapted and fused ones read it */
    int wdq_of;  /* the projection (l * NT + t) wdq holds, -1: none */
};

const lt_config *lt_model_config(const lt_model *m) { return &m->cfg; }
lt_backend *lt_model_backend(const lt_model *m) { return m->be; }
size_t lt_model_num_params(const lt_model *m) { return m->n_params; }
lt_param *lt_model_param(lt_model *m, size_t i) { return i < m->n_params ? &m->params[i] : NULL; }

lt_param *lt_model_find_param(lt_model *m, const char *name) {
    for (size_t i = 0; i < m->n_params; i++)
        if (!strcmp(m->params[i].name, name)) return &m->params[i];
    return NULL;
}

size_t lt_model_num_elements(const lt_model *m) {
    size_t s = 0;
    for (size_t i = 0; i < m->n_params; i++) s += m->params[i].numel;
    return s;
}

static void free_kv(lt_model *m) {
    if (!m->kv) return;
    if (m->kv->arena) m->be->free(m->be, m->kv->arena);
    free(m->kv->k);
    free(m->kv->v);
    free(m->kv->h_doc);
    free(m->kv->h_pos);
    free(m->kv->h_tok);
    free(m->kv->h_docw);
    free(m->kv);
    m->kv = NULL;
}

static void free_plan(lt_model *m) {
    if (m->arena) m->be->free(m->be, m->arena);
    m->arena = NULL;
    free(m->acts);
    m->acts = NULL;
    memset(&m->scratch, 0, sizeof m->scratch);
    free(m->host_losses);
    m->host_losses = NULL;
    free(m->h_docw);
    m->h_docw = NULL;
    free(m->host_drop);
    m->host_drop = NULL;
    free(m->snap);
    m->snap = NULL;
    m->B = m->T = 0;
    m->chunk_rows = 0;
    m->logits_state = 0;
}

static lt_param *proj_w(const layer *y, int t);

void lt_model_free(lt_model *m) {
    if (!m) return;
    free(m->train_rows);
    free_plan(m);
    free_kv(m);
    for (size_t i = 0; i < m->n_params; i++)
        if (m->params[i].data && !(m->wshard && m->wshard[i])) m->be->free(m->be, m->params[i].data);
    lt_st_close_model(m->src);
    if (m->grad_flat) m->be->free(m->be, m->grad_flat);
    for (int i = 0; m->nf4 && i < m->cfg.num_layers * NT; i++) /* (ZeRO-3: a sharded one is the provider's) */
        if (m->nf4[i] && !(m->wshard && m->wshard[proj_w(&m->layers[i / NT], i % NT) - m->params]))
            m->be->free(m->be, m->nf4[i]);
    free(m->wshard);
    free(m->nf4);
    if (m->wdq) m->be->free(m->be, m->wdq);
    if (m->inv_freq) m->be->free(m->be, m->inv_freq);
    if (m->inv_freq_local) m->be->free(m->be, m->inv_freq_local);
    free(m->params);
    free(m->layers);
    free(m);
}

static lt_param *P(lt_model *m, const char *fmt, int l) {
    char nm[96];
    snprintf(nm, sizeof nm, fmt, l);
    return lt_model_find_param(m, nm);
}

static void bind_layers(lt_model *m) {
    m->embed = lt_model_find_param(m, "model.embed_tokens.weight");
    m->lnf = lt_model_find_param(m, "model.norm.weight");
    m->head = m->cfg.tie_word_embeddings ? m->embed : lt_model_find_param(m, "lm_head.weight");
    for (int l = 0; l < m->cfg.num_layers; l++) {
        layer *y = &m->layers[l];
        y->ln1 = P(m, "model.layers.%d.input_layernorm.weight", l);
        y->wq = P(m, "model.layers.%d.self_attn.q_proj.weight", l);
        y->bq = P(m, "model.layers.%d.self_attn.q_proj.bias", l);
        y->wk = P(m, "model.layers.%d.self_attn.k_proj.weight", l);
        y->bk = P(m, "model.layers.%d.self_attn.k_proj.bias", l);
        y->wv = P(m, "model.layers.%d.self_attn.v_proj.weight", l);
        y->bv = P(m, "model.layers.%d.self_attn.v_proj.bias", l);
        y->wo = P(m, "model.layers.%d.self_attn.o_proj.weight", l);
        y->bo = P(m, "model.layers.%d.self_attn.o_proj.bias", l);
        y->qn = P(m, "model.layers.%d.self_attn.q_norm.weight", l);
        y->kn = P(m, "model.layers.%d.self_attn.k_norm.weight", l);
        y->ln2 = P(m, "model.layers.%d.post_attention_layernorm.weight", l);
        y->ln3 = P(m, "model.layers.%d.post_feedforward_layernorm.weight", l);
        y->lnp = P(m, "model.layers.%d.pre_feedforward_layernorm.weight", l);
        y->wg = P(m, "model.layers.%d.mlp.gate_proj.weight", l);
        y->bg = P(m, "model.layers.%d.mlp.gate_proj.bias", l);
        y->wu = P(m, "model.layers.%d.mlp.up_proj.weight", l);
        y->bu = P(m, "model.layers.%d.mlp.up_proj.bias", l);
        y->wd = P(m, "model.layers.%d.mlp.down_proj.weight", l);
        y->bd = P(m, "model.layers.%d.mlp.down_proj.bias", l);
        y->wqkv = P(m, "model.layers.%d.self_attn.qkv_proj.weight", l);
        y->wgu = P(m, "model.layers.%d.mlp.gate_up_proj.weight", l);
        for (int t = 0; t < NT; t++) {
            char nm[160];
            lt_lora_peft_name(nm, sizeof nm, l, t, 0);
            y->la[t] = lt_model_find_param(m, nm);
            lt_lora_peft_name(nm, sizeof nm, l, t, 1);
            y->lb[t] = lt_model_find_param(m, nm);
        }
    }
}

/* The rotary tables onto the backend: inv_freq (R/2), and for LongRoPE the
 * long-factor table after it. host: scratch of at least R floats. */
static lt_status upload_rope(lt_model *m, float *host, lt_err *err) {
    lt_backend *be = m->be;
    size_t half = (size_t)lt_config_rotary_dim(&m->cfg) / 2, n = m->cfg.rope_scaling_type == LT_ROPE_LONGROPE ? 2 * half : half;
    lt_config_rope_inv_freq(&m->cfg, host);
    if (n > half) lt_config_rope_inv_freq_long(&m->cfg, host + half);
    lt_status st = be->alloc(be, n * sizeof(float), (void **)&m->inv_freq, err);
    if (!st) st = be->upload(be, m->inv_freq, host, n * sizeof(float), err);
    return st;
}

/* The next parameter of m, described by spec (data not yet allocated). */
static lt_param *add_param(lt_model *m, const lt_param_spec *spec, lt_dtype dtype) {
    lt_param *p = &m->params[m->n_params++];
    snprintf(p->name, sizeof p->name, "%s", spec->name);
    p->ndim = spec->ndim;
    p->shape[0] = spec->shape[0];
    p->shape[1] = spec->shape[1];
    p->numel = (size_t)p->shape[0] * (size_t)(p->ndim > 1 ? p->shape[1] : 1);
    p->trainable = 1;
    p->dtype = dtype;
    return p;
}

/* gemma3: the sliding layers' rotary table (host: D/2 floats of scratch) */
static lt_status upload_local_rope(lt_model *m, float *host, lt_err *err) {
    if (m->cfg.rope_tables != 2) return LT_OK;
    size_t bytes = (size_t)(lt_config_rotary_dim(&m->cfg) / 2) * sizeof(float);
    lt_config_rope_inv_freq_local(&m->cfg, host);
    lt_status st = m->be->alloc(m->be, bytes, (void **)&m->inv_freq_local, err);
    return st ? st : m->be->upload(m->be, m->inv_freq_local, host, bytes, err);
}


/* The host staging of lt_model_load_range: at most this many floats at a time. */
#define LT_LOAD_CHUNK ((size_t)1 << 22)

/* lt_model_load (deferred = 0) and lt_model_load_deferred (1: every parameter
 * registered, data NULL, the checkpoint kept in m->src) */
static lt_status load_model(const char *dir, lt_backend *be, int deferred, lt_model **out, lt_err *err) {
    *out = NULL;
    lt_model *m = calloc(1, sizeof *m);
    if (!m) return lt_fail(err, LT_ERR_NOMEM, "out of memory");
    m->be = be;
    lt_status st = lt_config_load(dir, &m->cfg, err);
    if (st) {
        free(m);
        return st;
    }
    lt_param_spec *specs = NULL;
    size_t n = 0;
    lt_st_model *stm = NULL;
    float *host = NULL;
    if ((st = lt_model_param_specs(&m->cfg, &specs, &n, err))) goto fail;
    if ((st = lt_model_open_weights(dir, &m->cfg, &stm, NULL, err))) goto fail;
    if ((st = lt_model_check_tensors(stm, specs, n, m->cfg.tie_word_embeddings, err))) goto fail;
    m->params = calloc(n, sizeof *m->params);
    m->layers = calloc((size_t)m->cfg.num_layers, sizeof *m->layers);
    if (!m->params || !m->layers) {
        st = lt_fail(err, LT_ERR_NOMEM, "out of memory");
        goto fail;
    }
    size_t max_numel = 0;
    for (size_t i = 0; i < n; i++) {
        size_t numel = (size_t)specs[i].shape[0] * (size_t)(specs[i].ndim > 1 ? specs[i].shape[1] : 1);
        if (numel > max_numel) max_numel = numel;
    }
    if (deferred) max_numel = 0; /* the rotary tables' scratch only */
    if (max_numel < (size_t)m->cfg.head_dim) max_numel = (size_t)m->cfg.head_dim;
    host = malloc(max_numel * sizeof *host);
    if (!host) {
        st = lt_fail(err, LT_ERR_NOMEM, "out of memory for a %zu-element staging buffer", max_numel);
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        lt_param *p = add_param(m, &specs[i], be->param_dtype);
        if (deferred) continue;
        if ((st = lt_st_model_load_f32(stm, p->name, p->ndim, p->shape, host, err))) goto fail;
        if ((st = be->alloc(be, p->numel * lt_dtype_size(be->param_dtype), &p->data, err)) ||
            (st = be->upload_f32(be, p->data, be->param_dtype, host, p->numel, err))) {
            lt_wrap(err, st, "uploading '%s'", p->name);
            goto fail;
        }
    }
    bind_layers(m);
    /* rotary frequencies, llama3 / linear / LongRoPE scaling folded in; gemma3's local table */
    if ((st = upload_rope(m, host, err)) || (st = upload_local_rope(m, host, err))) goto fail;
    if ((st = be->sync(be, err))) goto fail;
    free(host);
    free(specs);
    if (deferred)
        m->src = stm;
    else
        lt_st_close_model(stm);
    *out = m;
    return LT_OK;
fail:
    free(host);
    free(specs);
    if (stm) lt_st_close_model(stm);
    lt_model_free(m);
    return lt_wrap(err, st, "loading model '%s'", dir);
}

lt_status lt_model_load(const char *dir, lt_backend *be, lt_model **out, lt_err *err) {
    return load_model(dir, be, 0, out, err);
}

lt_status lt_model_load_deferred(const char *dir, lt_backend *be, lt_model **out, lt_err *err) {
    return load_model(dir, be, 1, out, err);
}

int lt_model_weights_deferred(const lt_model *m) { return m->src != NULL; }

/* the checkpoint tensor of parameter i of a deferred model, or NULL */
static const lt_st_tensor *src_tensor(const lt_model *m, size_t i) {
    if (!m->src || i >= m->n_params) return NULL;
    return lt_st_model_find(m->src, m->params[i].name);
}

lt_status lt_model_load_range(lt_model *m, size_t i, size_t off, size_t len, void *dst, lt_err *err) {
    const lt_st_tensor *t = src_tensor(m, i);
    if (!t)
        return lt_fail(err, LT_ERR_INVALID, "model: parameter %zu (%s) is not read from a deferred load's files", i,
                       i < m->n_params ? m->params[i].name : "out of range");
    lt_param *p = &m->params[i];
    if (off > p->numel || len > p->numel - off)
        return lt_fail(err, LT_ERR_RANGE, "model: '%s': elements [%zu, %zu) asked for, it has %zu", p->name, off,
                       off + len, p->numel);
    lt_backend *be = m->be;
    size_t chunk = len < LT_LOAD_CHUNK ? len : LT_LOAD_CHUNK, es = lt_dtype_size(p->dtype);
    float *host = malloc((chunk ? chunk : 1) * sizeof *host);
    if (!host) return lt_fail(err, LT_ERR_NOMEM, "model: '%s': out of memory for a %zu-element staging buffer",
                              p->name, chunk);
    lt_status st = LT_OK;
    for (size_t c = 0; c < len && !st; c += chunk) { /* the file's values, rounded to the param dtype as a load does */
        size_t k = len - c < chunk ? len - c : chunk;
        if (!(st = lt_st_read_f32(t, off + c, k, host, err)) &&
            !(st = be->upload_f32(be, (char *)dst + c * es, p->dtype, host, k, err)))
            st = be->sync(be, err); /* host is reused */
    }
    free(host);
    /* the whole tensor's mapped pages too: reading a part maps pages around it (fault-around), and
     * other ranks reading the neighbouring parts make those resident here */
    if (!st) lt_st_drop_pages(t->data, t->numel * lt_dtype_size(t->dtype));
    return st ? lt_wrap(err, st, "model: reading elements [%zu, %zu) of '%s'", off, off + len, p->name) : LT_OK;
}

lt_status lt_model_param_load(lt_model *m, lt_param *p, lt_err *err) {
    if (p->data) return LT_OK;
    size_t i = (size_t)(p - m->params);
    if (i >= m->n_params || (m->wshard && m->wshard[i]) || !src_tensor(m, i))
        return lt_fail(err, LT_ERR_INVALID, "model: parameter '%s' has no weights to load", p->name);
    lt_status st = m->be->alloc(m->be, p->numel * lt_dtype_size(p->dtype), &p->data, err);
    if (!st) st = lt_model_load_range(m, i, 0, p->numel, p->data, err);
    if (st && p->data) {
        m->be->free(m->be, p->data);
        p->data = NULL;
    }
    return st;
}

/* a parameter whose weights are neither here nor the provider's (deferred load), or NULL */
static const lt_param *unloaded(const lt_model *m) {
    for (size_t i = 0; m->src && i < m->n_params; i++)
        if (!m->params[i].data && !(m->wshard && m->wshard[i])) return &m->params[i];
    return NULL;
}

static lt_status check_loaded(const lt_model *m, const char *what, lt_err *err) {
    const lt_param *p = unloaded(m);
    if (!p) return LT_OK;
    return lt_fail(err, LT_ERR_INVALID,
                   "model: %s: parameter '%s' is not loaded (a deferred load: lt_model_param_load or "
                   "lt_model_shard_weights first)", what, p->name);
}

/* ---------------------------------------------------------------------- */
/* random weights (benchmarks)                                             */

/* N(0, 1) from a counter: splitmix64 of (seed, tensor, index) -> two
 * uniforms -> Box-Muller. Any element can be drawn independently (the fill
 * runs in parallel and gives the same values for any thread count). */
static uint64_t mix64(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static float counter_normal(uint64_t key, uint64_t i) {
    uint64_t h = mix64(key ^ mix64(i));
    double u1 = ((double)(h >> 11) + 1.0) * (1.0 / 9007199254740992.0); /* (0, 1] */
    double u2 = (double)(mix64(h) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

lt_status lt_model_create(const lt_config *cfg, lt_backend *be, uint64_t seed, lt_model **out, lt_err *err) {
    *out = NULL;
    lt_model *m = calloc(1, sizeof *m);
    if (!m) return lt_fail(err, LT_ERR_NOMEM, "out of memory");
    m->be = be;
    m->cfg = *cfg;
    lt_param_spec *specs = NULL;
    size_t n = 0;
    float *host = NULL;
    const size_t CH = (size_t)1 << 24; /* staging chunk: 16 Mi floats */
    lt_status st;
    if ((st = lt_model_param_specs(&m->cfg, &specs, &n, err))) goto fail;
    m->params = calloc(n, sizeof *m->params);
    m->layers = calloc((size_t)m->cfg.num_layers, sizeof *m->layers);
    host = malloc(CH * sizeof *host);
    if (!m->params || !m->layers || !host) {
        st = lt_fail(err, LT_ERR_NOMEM, "out of memory");
        goto fail;
    }
    size_t es = lt_dtype_size(be->param_dtype);
    for (size_t i = 0; i < n; i++) {
        lt_param *p = add_param(m, &specs[i], be->param_dtype);
        if ((st = be->alloc(be, p->numel * es, &p->data, err))) {
            lt_wrap(err, st, "random model: '%s' (%zu elements)", p->name, p->numel);
            goto fail;
        }
        // norm weights (1-D "...norm.weight") = 1; matrices and biases ~ N(0, 0.02^2)
        int norm = p->ndim == 1 && lt_str_ends_with(p->name, "norm.weight");
        uint64_t key = mix64(seed ^ mix64(0x1000 + i));
        for (size_t off = 0; off < p->numel && !st; off += CH) {
            size_t k = p->numel - off < CH ? p->numel - off : CH;
#pragma omp parallel for schedule(static)
            for (long long j = 0; j < (long long)k; j++)
                host[j] = norm ? 1.0f : 0.02f * counter_normal(key, off + (size_t)j);
            st = be->upload_f32(be, (char *)p->data + off * es, be->param_dtype, host, k, err);
        }
        if (st) {
            lt_wrap(err, st, "random model: uploading '%s'", p->name);
            goto fail;
        }
    }
    bind_layers(m);
    if ((st = upload_rope(m, host, err)) || (st = upload_local_rope(m, host, err)) || (st = be->sync(be, err)))
        goto fail;
    free(host);
    free(specs);
    *out = m;
    return LT_OK;
fail:
    free(host);
    free(specs);
    lt_model_free(m);
    return lt_wrap(err, st, "creating a random %s model", lt_arch_name(cfg->arch));
}

/* One buffer holds every trainable gradient (parameter order): the trainer
 * reduces contiguous ranges of it and shards it for ZeRO-1. */
lt_status lt_model_alloc_grads(lt_model *m, lt_err *err) {
    if (m->grad_flat || m->grads_pooled) return LT_OK;
    size_t n = 0;
    for (size_t i = 0; i < m->n_params; i++)
        if (m->params[i].trainable) n += m->params[i].numel;
    if (n) {
        lt_status st = m->be->alloc(m->be, n * sizeof(float), (void **)&m->grad_flat, err);
        if (st) return lt_wrap(err, st, "gradients (%zu floats)", n);
        m->be->zero(m->be, m->grad_flat, n * sizeof(float));
    }
    size_t off = 0;
    for (size_t i = 0; i < m->n_params; i++) {
        lt_param *p = &m->params[i];
        p->grad = p->trainable ? m->grad_flat + off : NULL;
        if (p->trainable) off += p->numel;
    }
    m->grad_numel = n;
    m->grads_allocated = 1;
    return LT_OK;
}

float *lt_model_grads_flat(lt_model *m, size_t *n) {
    if (n) *n = m->grad_numel;
    return m->grad_flat;
}

void lt_model_zero_grads(lt_model *m) {
    if (m->grad_flat && !m->grads_pooled) m->be->zero(m->be, m->grad_flat, m->grad_numel * sizeof(float));
}

lt_status lt_model_pool_grads(lt_model *m, lt_err *err) {
    (void)err;
    if (m->grad_flat) m->be->free(m->be, m->grad_flat);
    m->grad_flat = NULL;
    m->grad_numel = 0;
    for (size_t i = 0; i < m->n_params; i++) m->params[i].grad = NULL;
    m->grads_pooled = 1;
    m->grads_allocated = 1;
    return LT_OK;
}

void lt_model_set_grad_provider(lt_model *m, lt_grad_provider fn, void *ctx) {
    m->provider = fn;
    m->provider_ctx = ctx;
}

int lt_model_grads_pooled(const lt_model *m) { return m->grads_pooled; }

size_t lt_model_group_grad_numel(const lt_model *m, int group) {
    size_t n = 0;
    for (size_t i = 0; i < m->n_params; i++)
        if (m->params[i].trainable && lt_model_grad_group(m, i) == group) n += m->params[i].numel;
    return n;
}

/* pooled gradients: point the group's p->grad into a buffer from the provider */
static void grads_acquire(lt_model *m, int group) {
    if (!m->grads_pooled || m->pool_st) return;
    size_t n = lt_model_group_grad_numel(m, group);
    if (!n) return;
    float *buf = m->provider ? m->provider(m->provider_ctx, group, n) : NULL;
    if (!buf) {
        m->pool_st = LT_ERR_NOMEM;
        return;
    }
    for (size_t i = 0; i < m->n_params; i++) {
        lt_param *p = &m->params[i];
        if (!p->trainable || lt_model_grad_group(m, i) != group) continue;
        p->grad = buf;
        buf += p->numel;
    }
}

lt_status lt_model_shard_weights(lt_model *m, const unsigned char *sharded, lt_weight_provider fn, void *ctx,
                                 lt_err *err) {
    if (m->wshard) return lt_fail(err, LT_ERR_INVALID, "model: the weights are sharded already");
    if (!fn) return lt_fail(err, LT_ERR_INVALID, "model: sharded weights need a provider");
    m->wshard = calloc(m->n_params ? m->n_params : 1, 1);
    if (!m->wshard) return lt_fail(err, LT_ERR_NOMEM, "model: out of memory");
    free_kv(m);
    for (size_t i = 0; i < m->n_params; i++) {
        if (sharded && !sharded[i]) continue;
        m->wshard[i] = 1;
        if (m->params[i].data) m->be->free(m->be, m->params[i].data);
        m->params[i].data = NULL;
        void **q = lt_model_nf4_slot(m, i); /* QLoRA: the NF4 buffer is the provider's too */
        if (q && *q) m->be->free(m->be, *q);
        if (q) *q = NULL, m->wdq_of = -1;
    }
    m->wprov = fn;
    m->wprov_ctx = ctx;
    if (!unloaded(m)) { /* every parameter here or the provider's: the files are no longer needed */
        lt_st_close_model(m->src);
        m->src = NULL;
    }
    return LT_OK;
}

int lt_model_weights_sharded(const lt_model *m) { return m->wshard != NULL; }

/* ZeRO-3: the provider makes a group's weights whole (acquire) or may take them back */
static void weights_use(lt_model *m, int group, int acquire) {
    if (!m->wprov || m->pool_st) return;
    lt_status st = m->wprov(m->wprov_ctx, group, acquire);
    if (st) m->pool_st = st;
}

static void grads_release(lt_model *m, int group) {
    if (!m->grads_pooled) return;
    for (size_t i = 0; i < m->n_params; i++)
        if (lt_model_grad_group(m, i) == group) m->params[i].grad = NULL;
}

void lt_model_set_grad_hook(lt_model *m, lt_grad_hook fn, void *ctx) {
    m->hook = fn;
    m->hook_ctx = ctx;
}

int lt_model_grad_group(const lt_model *m, size_t i) {
    if (i >= m->n_params) return LT_GRAD_GROUP_EMBED;
    const lt_param *p = &m->params[i];
    if (p == m->embed) return LT_GRAD_GROUP_EMBED;
    if (p == m->lnf || p == m->head) return LT_GRAD_GROUP_HEAD;
    int l = -1;
    const char *s = strstr(p->name, "layers.");
    if (s) l = atoi(s + 7);
    return l >= 0 && l < m->cfg.num_layers ? l : LT_GRAD_GROUP_HEAD;
}

int lt_model_num_grad_groups(const lt_model *m) { return m->cfg.num_layers + 2; }

int lt_model_grad_group_at(const lt_model *m, int k) {
    int L = m->cfg.num_layers;
    return k <= 0 ? LT_GRAD_GROUP_HEAD : k > L ? LT_GRAD_GROUP_EMBED : L - k;
}

static void mask_frozen_rows(lt_model *m, int group);

static void grads_final(lt_model *m, int group) {
    if (m->train_rows) mask_frozen_rows(m, group);
    if (m->hook) m->hook(m->hook_ctx, group);
    grads_release(m, group);
}

void lt_model_set_recompute(lt_model *m, int on) {
    if (m->recompute != !!on) free_plan(m); /* the activation layout changes: plan again */
    m->recompute = !!on;
}

/* ---------------------------------------------------------------------- */
/* planning                                                                */

typedef struct planner {
    size_t off;
    int overflow;
    int size_only; /* lt_model_plan_bytes: count, record no slot */
    /* (slot, offset) pairs, resolved once the arena exists */
    void ***dyn;
    size_t *dyn_off;
    size_t n_dyn, cap_dyn;
} planner;

/* Reserve `count` elements of `esize` bytes for *slot (256-byte aligned). */
static void reserve(planner *pl, void **slot, size_t count, size_t esize) {
    size_t bytes, end;
    if (!lt_mul_ok(count, esize, &bytes) || !lt_add_ok(pl->off, bytes, &end) || end > SIZE_MAX - 256) {
        pl->overflow = 1;
        return;
    }
    if (pl->size_only) {
        pl->off = (end + 255) & ~(size_t)255;
        return;
    }
    if (pl->n_dyn == pl->cap_dyn) {
        size_t cap = pl->cap_dyn ? 2 * pl->cap_dyn : 64;
        void ***d = realloc(pl->dyn, cap * sizeof *d);
        size_t *o = realloc(pl->dyn_off, cap * sizeof *o);
        if (d) pl->dyn = d;
        if (o) pl->dyn_off = o;
        if (!d || !o) {
            pl->overflow = 1;
            return;
        }
        pl->cap_dyn = cap;
    }
    pl->dyn[pl->n_dyn] = slot;
    pl->dyn_off[pl->n_dyn++] = pl->off;
    pl->off = (end + 255) & ~(size_t)255;
}

/* the widest LoRA adapter input (the dropout scratch rows) */
static size_t lora_max_in(const lt_config *c) {
    size_t m = 0;
    for (int t = 0; t < NT; t++)
        if (proj_in(c, t) > m) m = proj_in(c, t);
    return m;
}

/* The activation layout: every reservation of lt_model_plan, in order, for
 * N = B*T rows of activation size A. The one description of it: the plan
 * and the size-only pass of lt_model_plan_bytes (--dry-run) both run it.
 * Needs m->cfg, m->acts (L entries), m->recompute, m->lora, m->lspec,
 * m->chunk_set; returns the logits chunk rows. */
static int plan_layout(planner *pl, lt_model *m, size_t N, size_t A) {
    const lt_config *c = &m->cfg;
    size_t C = (size_t)c->hidden_size, I = (size_t)c->intermediate_size, V = (size_t)c->vocab_size;
    size_t Hq = (size_t)c->num_heads, Hkv = (size_t)c->num_kv_heads, D = (size_t)c->head_dim;
    size_t F = sizeof(float), I4 = sizeof(int32_t);
    int L = c->num_layers;
    /* --recompute: every layer keeps its input x; the other activations live
     * in one layer's worth of scratch (m->scratch), shared by all layers */
    for (int l = 0; l < L; l++) reserve(pl, &m->acts[l].x, N * C, A);
    for (int l = 0; l < (m->recompute ? 1 : L); l++) {
        layer_acts *a = m->recompute ? &m->scratch : &m->acts[l];
        if (!c->post_norm) { /* post-norm: the projections read x */
            reserve(pl, &a->h1, N * C, A);
            reserve(pl, (void **)&a->rstd1, N, F);
        }
        if (c->qk_norm) {
            int whole = c->qk_norm == LT_QK_NORM_WHOLE; /* one rstd per row, else per row and head */
            reserve(pl, &a->qpre, N * Hq * D, A);
            reserve(pl, &a->kpre, N * Hkv * D, A);
            reserve(pl, (void **)&a->qrstd, whole ? N : N * Hq, F);
            reserve(pl, (void **)&a->krstd, whole ? N : N * Hkv, F);
        }
        reserve(pl, &a->q, N * Hq * D, A);
        reserve(pl, &a->k, N * Hkv * D, A);
        reserve(pl, &a->v, N * Hkv * D, A);
        reserve(pl, &a->att, N * Hq * D, A);
        reserve(pl, (void **)&a->lse, N * Hq, F);
        reserve(pl, &a->xmid, N * C, A);
        reserve(pl, &a->h2, N * C, A);
        reserve(pl, (void **)&a->rstd2, N, F);
        if (c->post_norm || c->sandwich_norm) {
            reserve(pl, &a->mo, N * C, A);
            reserve(pl, (void **)&a->rstd3, N, F);
        }
        if (c->sandwich_norm) {
            reserve(pl, &a->hp, N * C, A);
            reserve(pl, (void **)&a->rstdp, N, F);
        }
        reserve(pl, &a->gate, N * I, A);
        reserve(pl, &a->up, N * I, A);
        reserve(pl, &a->swi, N * I, A);
        for (int t = 0; m->lora && t < NT; t++) {
            if (!((m->lspec.targets >> t) & 1)) continue; /* lt_model_add_lora adapts every layer */
            reserve(pl, (void **)&a->xa[t], N * (size_t)m->lspec.r, F);
            if (m->lspec.dropout > 0) reserve(pl, &a->xdrop[t], N * proj_in(c, t), A);
        }
    }
    if (m->lora && m->lspec.dropout > 0) reserve(pl, &m->dxl, N * lora_max_in(c), A);
    reserve(pl, &m->x_final, N * C, A);
    reserve(pl, &m->hf, N * C, A);
    reserve(pl, (void **)&m->rstdf, N, F);
    const int R = lt_model_logits_chunk_for(c->vocab_size, A, N, m->chunk_set);
    reserve(pl, &m->logits, (size_t)R * V, A);
    reserve(pl, (void **)&m->losses, N, F);
    reserve(pl, &m->tmp, N * C, A);
    reserve(pl, &m->dx, N * C, A);
    reserve(pl, &m->dh, N * C, A);
    reserve(pl, &m->dq, N * Hq * D, A);
    reserve(pl, &m->dk, N * Hkv * D, A);
    reserve(pl, &m->dv, N * Hkv * D, A);
    reserve(pl, &m->datt, N * Hq * D, A);
    if (c->qk_norm) {
        reserve(pl, &m->dq2, N * Hq * D, A);
        reserve(pl, &m->dk2, N * Hkv * D, A);
    }
    reserve(pl, &m->dgate, N * I, A);
    reserve(pl, &m->dup, N * I, A);
    reserve(pl, &m->dswi, N * I, A);
    size_t sink = C > D ? C : D; /* the widest norm weight */
    if (c->qk_norm == LT_QK_NORM_WHOLE && Hq * D > sink) sink = Hq * D;
    reserve(pl, (void **)&m->sink, sink, F);
    reserve(pl, (void **)&m->d_tokens, N, I4);
    reserve(pl, (void **)&m->d_targets, N, I4);
    reserve(pl, (void **)&m->d_pos, N, I4);
    reserve(pl, (void **)&m->d_doc, N, I4);
    if (c->window_layers) reserve(pl, (void **)&m->d_docw, N, I4);
    return R;
}

/* The batch sizes a layout can be computed for; N = B * T. */
static lt_status plan_size_check(const lt_config *c, int B, int T, size_t *N, lt_err *err) {
    if (B <= 0 || T <= 0) return lt_fail(err, LT_ERR_INVALID, "plan: batch %d x %d must be positive", B, T);
    if (!lt_mul_ok((size_t)B, (size_t)T, N) || *N > INT32_MAX)
        return lt_fail(err, LT_ERR_NOMEM, "plan: batch %d x %d is too large", B, T);
    if ((size_t)c->vocab_size * *N > (size_t)INT64_MAX / 8)
        return lt_fail(err, LT_ERR_NOMEM, "plan: batch %d x %d is too large", B, T);
    return LT_OK;
}

/* The batch shapes a plan accepts: the sizes, and the model's limits. */
static lt_status plan_check(const lt_config *c, int B, int T, size_t *N, lt_err *err) {
    lt_status st = plan_size_check(c, B, T, N, err);
    if (st) return st;
    if (T > c->max_position_embeddings)
        return lt_fail(err, LT_ERR_RANGE, "plan: sequence length %d exceeds max_position_embeddings %d of the model",
                       T, c->max_position_embeddings);
    if (c->sliding_window > 0 && !c->window_layers && T > c->sliding_window)
        return lt_fail(err, LT_ERR_UNSUPPORTED,
                       "plan: sequence length %d exceeds the model's sliding_window %d (sliding-window attention "
                       "is not implemented; use sequences of at most %d tokens)",
                       T, c->sliding_window, c->sliding_window);
    return LT_OK;
}

lt_status lt_model_plan_bytes(const lt_config *cfg, lt_dtype act_dtype, int B, int T, int recompute,
                              const lt_lora_spec *lora, int chunk_rows, size_t *bytes, lt_err *err) {
    size_t N = 0;
    lt_status st = plan_check(cfg, B, T, &N, err); /* what the run itself would refuse */
    if (st) return st;
    lt_model *f = calloc(1, sizeof *f); /* a model shell: what plan_layout reads */
    if (!f) return lt_fail(err, LT_ERR_NOMEM, "plan: out of host memory");
    f->cfg = *cfg;
    f->recompute = !!recompute;
    f->chunk_set = chunk_rows;
    if (lora && lora->r > 0) {
        f->lora = 1;
        f->lspec = *lora;
        f->lspec.targets = lt_lora_targets_for(cfg, lora->targets);
    }
    f->acts = calloc((size_t)cfg->num_layers, sizeof *f->acts);
    planner pl = {.size_only = 1};
    if (f->acts) plan_layout(&pl, f, N, lt_dtype_size(act_dtype));
    if (!f->acts) st = lt_fail(err, LT_ERR_NOMEM, "plan: out of host memory");
    else if (pl.overflow) st = lt_fail(err, LT_ERR_NOMEM, "plan: activation memory for %d x %d overflows", B, T);
    else *bytes = pl.off;
    free(f->acts);
    free(f);
    return st;
}

size_t lt_model_planned_bytes(const lt_model *m) { return m->arena ? m->arena_bytes : 0; }

lt_status lt_model_plan(lt_model *m, int B, int T, lt_err *err) {
    free_plan(m);
    const lt_config *c = &m->cfg;
    size_t N = 0;
    lt_status st0 = plan_check(c, B, T, &N, err);
    if (st0) return st0;
    size_t A = lt_dtype_size(m->be->act_dtype);
    int L = c->num_layers;
    m->acts = calloc((size_t)L, sizeof *m->acts);
    m->host_losses = malloc(N * sizeof(float));
    m->h_docw = malloc(N * sizeof(int32_t));
    if (!m->acts || !m->host_losses || !m->h_docw) {
        free_plan(m);
        return lt_fail(err, LT_ERR_NOMEM, "plan: out of host memory");
    }
    planner pl = {0};
    const int R = plan_layout(&pl, m, N, A);
    if (m->lora && m->lspec.dropout > 0) {
        size_t max_in = lora_max_in(c);
        m->host_drop = malloc(N * max_in * sizeof(float));
        m->snap = calloc((size_t)L * NT, sizeof *m->snap);
        if (!m->host_drop || !m->snap) {
            free(pl.dyn);
            free(pl.dyn_off);
            free_plan(m);
            return lt_fail(err, LT_ERR_NOMEM, "plan: out of host memory for LoRA dropout");
        }
    }
    lt_status st = LT_OK;
    if (pl.overflow) {
        st = lt_fail(err, LT_ERR_NOMEM, "plan: activation memory for %d x %d overflows", B, T);
    } else if ((st = m->be->alloc(m->be, pl.off, &m->arena, err))) {
        lt_wrap(err, st, "plan: activations for batch %d x %d (%.1f MiB)", B, T, pl.off / 1048576.0);
    } else {
        for (size_t i = 0; i < pl.n_dyn; i++) *pl.dyn[i] = (char *)m->arena + pl.dyn_off[i];
        for (int l = 0; m->recompute && l < L; l++) { /* every layer points at the scratch */
            void *x = m->acts[l].x;
            m->acts[l] = m->scratch;
            m->acts[l].x = x;
        }
        m->B = B;
        m->T = T;
        m->chunk_rows = R;
        m->arena_bytes = pl.off;
    }
    free(pl.dyn);
    free(pl.dyn_off);
    if (st) free_plan(m);
    return st;
}

/* ---------------------------------------------------------------------- */
/* batches                                                                 */

lt_status lt_batch_fill_sequence(int T, const int32_t *tokens, const uint8_t *mask, const int *doc_lens,
                                 int n_docs, int32_t *targets, int32_t *pos, int32_t *doc_start, lt_err *err) {
    if (T <= 0 || n_docs < 0) return lt_fail(err, LT_ERR_INVALID, "batch: T %d / %d documents", T, n_docs);
    int s = 0;
    for (int d = 0; d < n_docs; d++) {
        int len = doc_lens[d];
        if (len <= 0) return lt_fail(err, LT_ERR_INVALID, "batch: document %d has length %d (must be >= 1)", d, len);
        if (len > T - s)
            return lt_fail(err, LT_ERR_RANGE, "batch: documents of lengths summing past %d do not fit in T = %d",
                           s + len, T);
        for (int j = 0; j < len; j++) {
            int t = s + j;
            pos[t] = j;
            doc_start[t] = s;
            targets[t] = (j + 1 < len && (!mask || mask[t + 1])) ? tokens[t + 1] : -1;
        }
        s += len;
    }
    for (int t = s; t < T; t++) { /* padding: one-token documents, never targets */
        pos[t] = 0;
        doc_start[t] = t;
        targets[t] = -1;
    }
    return LT_OK;
}

static lt_status validate_batch(const lt_model *m, const lt_batch *b, int64_t *n_targets, lt_err *err) {
    if (!m->arena) return lt_fail(err, LT_ERR_INVALID, "step: no plan (call lt_model_plan first)");
    if (b->B != m->B || b->T != m->T)
        return lt_fail(err, LT_ERR_INVALID, "step: batch is %d x %d but the plan is for %d x %d", b->B, b->T, m->B,
                       m->T);
    int V = m->cfg.vocab_size, T = b->T;
    int64_t nt = 0;
    for (int s = 0; s < b->B; s++) {
        for (int t = 0; t < T; t++) {
            size_t n = (size_t)s * T + t;
            int32_t tok = b->tokens[n], tg = b->targets[n], d0 = b->doc_start[n], p = b->pos[n];
            if (tok < 0 || tok >= V)
                return lt_fail(err, LT_ERR_RANGE, "batch: token id %d at sequence %d position %d is outside [0, %d)",
                               tok, s, t, V);
            if (tg < -1 || tg >= V)
                return lt_fail(err, LT_ERR_RANGE, "batch: target %d at sequence %d position %d is outside [-1, %d)",
                               tg, s, t, V);
            int new_doc = d0 == t;
            if (d0 < 0 || d0 > t || (!new_doc && (t == 0 || b->doc_start[n - 1] != d0)))
                return lt_fail(err, LT_ERR_INVALID,
                               "batch: doc_start %d at sequence %d position %d (must be %d for a new document or "
                               "equal the previous token's %d)",
                               d0, s, t, t, t > 0 ? b->doc_start[n - 1] : 0);
            if (p != t - d0)
                return lt_fail(err, LT_ERR_INVALID,
                               "batch: pos %d at sequence %d position %d, but its document starts at %d (expected "
                               "pos %d)",
                               p, s, t, d0, t - d0);
            nt += tg >= 0;
        }
    }
    *n_targets = nt;
    return LT_OK;
}

/* ---------------------------------------------------------------------- */
/* forward and backward                                                    */

static const void *pd(const lt_param *p) { return p ? p->data : NULL; }

/* ---------------------------------------------------------------------- */
/* the family's variants of the norm, activation, attention and loss ops   */

/* RMSNorm with the config's weight offset (gemma2: xhat * (1 + w)) */
static void norm_fwd(lt_model *m, void *out, float *rstd, const void *x, const void *w, int R, int C) {
    const lt_config *c = &m->cfg;
    if (c->norm_offset != 0.0f) m->be->rmsnorm_off_fwd(m->be, out, rstd, x, w, c->norm_offset, R, C, c->rms_norm_eps);
    else m->be->rmsnorm_fwd(m->be, out, rstd, x, w, R, C, c->rms_norm_eps);
}
static void add_norm_fwd(lt_model *m, void *h, void *out, float *rstd, const void *x, const void *r, const void *w,
                         int R, int C) {
    const lt_config *c = &m->cfg;
    if (c->norm_offset != 0.0f)
        m->be->add_rmsnorm_off_fwd(m->be, h, out, rstd, x, r, w, c->norm_offset, R, C, c->rms_norm_eps);
    else m->be->add_rmsnorm_fwd(m->be, h, out, rstd, x, r, w, R, C, c->rms_norm_eps);
}
static void norm_bwd(lt_model *m, void *dx, int acc, float *dw, const void *dout, const void *x, const void *w,
                     const float *rstd, int R, int C) {
    const lt_config *c = &m->cfg;
    if (c->norm_offset != 0.0f) m->be->rmsnorm_off_bwd(m->be, dx, acc, dw, dout, x, w, c->norm_offset, rstd, R, C);
    else m->be->rmsnorm_bwd(m->be, dx, acc, dw, dout, x, w, rstd, R, C);
}
/* the gated MLP's activation: SwiGLU or GeGLU (gelu tanh) */
static void act_fwd(lt_model *m, void *out, const void *g, const void *u, size_t n) {
    if (m->cfg.mlp_act == LT_ACT_GELU_TANH) m->be->geglu_fwd(m->be, out, g, u, n);
    else m->be->swiglu_fwd(m->be, out, g, u, n);
}
static void act_bwd(lt_model *m, void *dg, void *du, const void *dout, const void *g, const void *u, size_t n) {
    if (m->cfg.mlp_act == LT_ACT_GELU_TANH) m->be->geglu_bwd(m->be, dg, du, dout, g, u, n);
    else m->be->swiglu_bwd(m->be, dg, du, dout, g, u, n);
}
/* query_pre_attn_scalar^-0.5 (gemma2) or head_dim^-0.5 */
static float attn_scale(const lt_config *c) {
    return c->attn_scale > 0 ? c->attn_scale : 1.0f / sqrtf((float)c->head_dim);
}
/* attention with the config's score soft-cap (gemma2) */
static void attn_fwd(lt_model *m, void *out, float *lse, const void *q, const void *k, const void *v,
                     const int32_t *doc, int B, int T) {
    const lt_config *c = &m->cfg;
    int Hq = c->num_heads, Hkv = c->num_kv_heads, D = c->head_dim;
    if (c->attn_softcap > 0)
        m->be->attention_cap_fwd(m->be, out, lse, q, k, v, doc, B, T, Hq, Hkv, D, attn_scale(c), c->attn_softcap);
    else m->be->attention_fwd(m->be, out, lse, q, k, v, doc, B, T, Hq, Hkv, D, attn_scale(c));
}
static void attn_bwd(lt_model *m, void *dq, void *dk, void *dv, const void *dout, const void *q, const void *k,
                     const void *v, const void *out, const float *lse, const int32_t *doc, int B, int T) {
    const lt_config *c = &m->cfg;
    int Hq = c->num_heads, Hkv = c->num_kv_heads, D = c->head_dim;
    if (c->attn_softcap > 0)
        m->be->attention_cap_bwd(m->be, dq, dk, dv, dout, q, k, v, out, lse, doc, B, T, Hq, Hkv, D, attn_scale(c),
                                 c->attn_softcap);
    else m->be->attention_bwd(m->be, dq, dk, dv, dout, q, k, v, out, lse, doc, B, T, Hq, Hkv, D, attn_scale(c));
}
/* Sliding windows: the first key each of n rows sees, max(doc[i], t - W + 1)
 * with t = i % T (the attention contract's lower bound). */
static void window_bounds(int32_t *out, const int32_t *doc, size_t n, int T, int W) {
    for (size_t i = 0; i < n; i++) {
        int32_t lo = (int32_t)(i % (size_t)T) - W + 1;
        out[i] = doc[i] > lo ? doc[i] : lo;
    }
}
/* gemma2's embedding normalizer: sqrt(hidden_size) in fp32, rounded to the
 * activation dtype (transformers multiplies by it in the weights' dtype) */
static float embed_scale(const lt_model *m) {
    float s = (float)sqrt((double)m->cfg.hidden_size);
    lt_dtype dt = m->be->act_dtype;
    if (dt == LT_BF16) return lt_bf16_to_f32(lt_f32_to_bf16(s));
    if (dt == LT_F16) return lt_f16_to_f32(lt_f32_to_f16(s));
    return s;
}
/* final_logit_softcapping on host logits (score, generate, eval) */
static void cap_logits(const lt_config *c, float *x, size_t n) {
    if (!(c->final_softcap > 0)) return;
    for (size_t i = 0; i < n; i++) x[i] = lt_softcap(x[i], c->final_softcap);
}
static float *pg(const lt_param *p) { return p ? p->grad : NULL; }

/* ---------------------------------------------------------------------- */
/* projections (plain or with a LoRA adapter)                              */

static int is_fused(int t) { return t == LT_LORA_QKV || t == LT_LORA_GATE_UP; }
static lt_param *proj_w(const layer *y, int t) {
    lt_param *w[NT] = {y->wq, y->wk, y->wv, y->wo, y->wg, y->wu, y->wd, y->wqkv, y->wgu};
    return w[t];
}
static lt_param *proj_b(const layer *y, int t) {
    lt_param *b[NT] = {y->bq, y->bk, y->bv, y->bo, y->bg, y->bu, y->bd, NULL, NULL};
    return b[t];
}

/* The frozen weight of projection t of layer l as the linear reads it: the
 * parameter itself, or (QLoRA) its NF4 buffer dequantized into m->wdq. The
 * dequantized weight stays there until another projection needs the buffer
 * (the parts of a fused weight read it once dequantized). */
static const void *nf4_weight(lt_model *m, int l, int t) {
    const void *q = m->nf4 ? m->nf4[l * NT + t] : NULL;
    if (!q) return proj_w(&m->layers[l], t)->data;
    if (m->wdq_of != l * NT + t) {
        m->be->nf4_dequant(m->be, m->wdq, q, proj_in(&m->cfg, t) * proj_out(&m->cfg, t));
        m->wdq_of = l * NT + t;
    }
    return m->wdq;
}

/* Projection t's weight rows [row0, ...) (a part of a fused weight; 0: all
 * of it), from the parameter or its dequantized NF4 copy */
static const void *w_rows(lt_model *m, int l, int t, int row0, int K) {
    lt_dtype dt = m->nf4 && m->nf4[l * NT + t] ? m->be->param_dtype : proj_w(&m->layers[l], t)->dtype;
    return (const char *)nf4_weight(m, l, t) + (size_t)row0 * K * lt_dtype_size(dt);
}
static float *g_rows(const lt_param *w, int row0, int K) { return w->grad ? w->grad + (size_t)row0 * K : NULL; }

/* x (M, K) -> out (M, Nout): rows [row0, row0 + Nout) of projection t of
 * layer l (row0 > 0: a later part of a fused weight, q/k/v of qkv_proj or
 * gate/up of gate_up_proj); xa (M, r) for LoRA; xdrop != NULL: apply dropout
 * from m->rng into xdrop first (the first part draws the mask, later parts
 * read xdrop as drawn) */
static void proj_fwd_part(lt_model *m, int l, int t, int row0, void *out, const void *x, float *xa, void *xdrop,
                          int M, int K, int Nout) {
    lt_backend *be = m->be;
    const layer *y = &m->layers[l];
    lt_param *b = proj_b(y, t), *A = y->la[t], *Bm = y->lb[t];
    const void *q = m->nf4 ? m->nf4[l * NT + t] : NULL;
    if (!A && q && !is_fused(t)) { /* a whole NF4 weight: dequantized inside the op */
        be->nf4_matmul_fwd(be, out, x, q, pd(b), M, K, Nout);
        return;
    }
    /* the weight's rows: the parameter, or (NF4) the dequantized weight (a fused one once for its parts) */
    const void *wd = w_rows(m, l, t, row0, K);
    if (!A) {
        be->matmul_fwd(be, out, x, wd, pd(b), M, K, Nout);
        return;
    }
    const void *xl = x;
    if (xdrop && row0 > 0) xl = xdrop;
    if (xdrop && row0 == 0) { // drop(x): keep with probability 1-p, scaled by 1/(1-p); mask drawn on the host
        float p = m->lspec.dropout, keep = 1.0f / (1.0f - p);
        size_t n = (size_t)M * K;
        lt_rng replay, *rng = m->rng;
        if (m->replay) { // recomputing: draw the forward's mask again
            replay = m->snap[l * NT + t];
            rng = &replay;
        } else {
            m->snap[l * NT + t] = *m->rng;
        }
        lt_err e;
        lt_status st = be->download_f32(be, m->host_drop, x, be->act_dtype, n, &e);
        if (!st) st = be->sync(be, &e);
        if (!st) {
            for (size_t i = 0; i < n; i++) m->host_drop[i] = lt_rng_uniform(rng) >= p ? m->host_drop[i] * keep : 0.0f;
            st = be->upload_f32(be, xdrop, be->act_dtype, m->host_drop, n, &e);
        }
        if (st && !m->drop_st) {
            m->drop_st = st;
            m->drop_err = e;
        }
        xl = xdrop;
    }
    be->lora_fwd(be, out, xa, x, xl, wd, pd(b), A->data, (const float *)Bm->data + (size_t)row0 * m->lspec.r, M, K,
                 Nout, m->lspec.r, m->lspec.scale);
}

static void proj_fwd(lt_model *m, int l, int t, void *out, const void *x, float *xa, void *xdrop, int M, int K,
                     int Nout) {
    proj_fwd_part(m, l, t, 0, out, x, xa, xdrop, M, K, Nout);
}

/* the backward of proj_fwd_part: dx (= or += acc) (M, K) from dout (M, Nout),
 * the gradients of the part's weight rows (dA: += over the parts; the
 * dropout mask, linear, applies to each part's dx_lora) */
static void proj_bwd_part(lt_model *m, int l, int t, int row0, void *dx, int acc, const void *dout, const void *x,
                          int M, int K, int Nout) {
    lt_backend *be = m->be;
    const layer *y = &m->layers[l];
    const layer_acts *a = &m->acts[l];
    lt_param *w = proj_w(y, t), *b = proj_b(y, t), *A = y->la[t], *Bm = y->lb[t];
    const void *q = m->nf4 ? m->nf4[l * NT + t] : NULL;
    if (!A && q && !is_fused(t)) { /* frozen NF4 weight: dx only (and a trainable bias's gradient) */
        be->nf4_matmul_bwd(be, dx, acc, dout, q, M, K, Nout);
        if (b && b->grad) be->matmul_bwd(be, NULL, 0, NULL, b->grad, dout, x, m->wdq, M, K, Nout);
        return;
    }
    const void *wd = w_rows(m, l, t, row0, K);
    if (!A) {
        be->matmul_bwd(be, dx, acc, g_rows(w, row0, K), pg(b), dout, x, wd, M, K, Nout);
        return;
    }
    int rk = m->lspec.r;
    const float *Bd = (const float *)Bm->data + (size_t)row0 * rk;
    float *dB = Bm->grad ? Bm->grad + (size_t)row0 * rk : NULL;
    if (!m->drop_active) {
        be->lora_bwd(be, dx, acc, NULL, A->grad, dB, dout, x, wd, A->data, Bd, a->xa[t], M, K, Nout, rk,
                     m->lspec.scale);
        if (b && b->grad) be->matmul_bwd(be, NULL, 0, NULL, b->grad, dout, x, wd, M, K, Nout);
        return;
    }
    // dropout: dx gets dout @ W; dx_lora (w.r.t. drop(x)) goes back through the same mask
    be->lora_bwd(be, dx, acc, m->dxl, A->grad, dB, dout, a->xdrop[t], wd, A->data, Bd, a->xa[t], M, K, Nout, rk,
                 m->lspec.scale);
    float p = m->lspec.dropout, keep = 1.0f / (1.0f - p);
    size_t n = (size_t)M * K;
    lt_rng r = m->snap[l * NT + t];
    lt_err e;
    lt_status st = be->download_f32(be, m->host_drop, m->dxl, be->act_dtype, n, &e);
    if (!st) st = be->sync(be, &e);
    if (!st) {
        for (size_t i = 0; i < n; i++) m->host_drop[i] = lt_rng_uniform(&r) >= p ? m->host_drop[i] * keep : 0.0f;
        st = be->upload_f32(be, m->dxl, be->act_dtype, m->host_drop, n, &e);
    }
    if (st && !m->drop_st) {
        m->drop_st = st;
        m->drop_err = e;
    }
    be->add(be, dx, dx, m->dxl, n);
}

static void proj_bwd(lt_model *m, int l, int t, void *dx, int acc, const void *dout, const void *x, int M, int K,
                     int Nout) {
    proj_bwd_part(m, l, t, 0, dx, acc, dout, x, M, K, Nout);
}

/* One layer's buffers for the layer recipe. The training forward points them
 * at the layer's saved activations; the KV-cache decode at the cache (its new
 * q/k/v rows inside the cache, attention over the whole cached sequence) and
 * its chunk scratch. */
typedef struct layer_io {
    int n;                          /* rows computed by this call */
    int att_B, att_T;               /* attention over att_B sequences of att_T rows */
    const int32_t *pos, *doc;       /* (n) positions; (att_B * att_T) document starts */
    void *x, *h1;                   /* input (n, C) and h1 = rmsnorm(x) * ln1 */
    float *rstd1;
    void *qpre, *kpre;              /* qk-norm: projections before the norm */
    float *qrstd, *krstd;
    void *q, *k, *v;                /* this call's rows of q, k, v (after norm and rope) */
    void *q_all, *k_all, *v_all;    /* the attention operands (att_B * att_T rows) */
    void *att_all, *att;            /* attention output: all rows, and this call's rows */
    float *lse;
    void *xmid, *h2;                /* x + attention, and its norm (post-norm: h2 = o_proj output) */
    float *rstd2;
    void *mo;                       /* post-norm: the MLP output before its norm */
    float *rstd3;
    void *gate, *up, *swi, *tmp;    /* MLP; tmp (n, C) holds o_proj / down_proj outputs */
    float *xa[NT];                  /* LoRA x @ A^T per target */
    void *xdrop[NT];                /* LoRA dropout inputs (NULL: no dropout) */
    void *x_out, *h_out;            /* x_out = xmid + mlp, h_out = rmsnorm(x_out) * w_out */
    float *rstd_out;
    const void *w_out;              /* the next layer's ln1 or the final norm (post-norm: NULL between layers) */
    const int32_t *docw;            /* sliding layers: the window's lower bounds (att_B * att_T) */
    void *hp;                       /* sandwich: pre_feedforward_layernorm output (the MLP input) */
    float *rstdp;
} layer_io;

/* q, k, v = hin @ W^T: three projections, or the q, k, v row blocks of the
 * fused qkv_proj (one LoRA adapter over all three) */
static void qkv_fwd(lt_model *m, int l, const layer_io *io, const void *hin, void *q, void *k, int n) {
    const lt_config *c = &m->cfg;
    int C = c->hidden_size, HqD = c->num_heads * c->head_dim, HkvD = c->num_kv_heads * c->head_dim;
    if (c->fused_proj) {
        const int t = LT_LORA_QKV;
        proj_fwd_part(m, l, t, 0, q, hin, io->xa[t], io->xdrop[t], n, C, HqD);
        proj_fwd_part(m, l, t, HqD, k, hin, io->xa[t], io->xdrop[t], n, C, HkvD);
        proj_fwd_part(m, l, t, HqD + HkvD, io->v, hin, io->xa[t], io->xdrop[t], n, C, HkvD);
        return;
    }
    proj_fwd(m, l, LT_LORA_Q, q, hin, io->xa[LT_LORA_Q], io->xdrop[LT_LORA_Q], n, C, HqD); // (n, Hq*D)
    proj_fwd(m, l, LT_LORA_K, k, hin, io->xa[LT_LORA_K], io->xdrop[LT_LORA_K], n, C, HkvD);
    proj_fwd(m, l, LT_LORA_V, io->v, hin, io->xa[LT_LORA_V], io->xdrop[LT_LORA_V], n, C, HkvD);
}

/* gate, up = hmid @ W^T: two projections, or the gate, up row blocks of the
 * fused gate_up_proj */
static void gate_up_fwd(lt_model *m, int l, const layer_io *io, const void *hmid, int n) {
    const lt_config *c = &m->cfg;
    int C = c->hidden_size, I = c->intermediate_size;
    if (c->fused_proj) {
        const int t = LT_LORA_GATE_UP;
        proj_fwd_part(m, l, t, 0, io->gate, hmid, io->xa[t], io->xdrop[t], n, C, I);
        proj_fwd_part(m, l, t, I, io->up, hmid, io->xa[t], io->xdrop[t], n, C, I);
        return;
    }
    proj_fwd(m, l, LT_LORA_GATE, io->gate, hmid, io->xa[LT_LORA_GATE], io->xdrop[LT_LORA_GATE], n, C, I); // (n, I)
    proj_fwd(m, l, LT_LORA_UP, io->up, hmid, io->xa[LT_LORA_UP], io->xdrop[LT_LORA_UP], n, C, I);
}

/* the backward of qkv_fwd: dx (= or += acc) from dq, dk, dv */
static void qkv_bwd(lt_model *m, int l, void *dx, int acc, const void *dq, const void *dk, const void *dv,
                    const void *x, int N) {
    const lt_config *c = &m->cfg;
    int C = c->hidden_size, HqD = c->num_heads * c->head_dim, HkvD = c->num_kv_heads * c->head_dim;
    if (c->fused_proj) {
        proj_bwd_part(m, l, LT_LORA_QKV, 0, dx, acc, dq, x, N, C, HqD);
        proj_bwd_part(m, l, LT_LORA_QKV, HqD, dx, 1, dk, x, N, C, HkvD);
        proj_bwd_part(m, l, LT_LORA_QKV, HqD + HkvD, dx, 1, dv, x, N, C, HkvD);
        return;
    }
    proj_bwd(m, l, LT_LORA_Q, dx, acc, dq, x, N, C, HqD);
    proj_bwd(m, l, LT_LORA_K, dx, 1, dk, x, N, C, HkvD);
    proj_bwd(m, l, LT_LORA_V, dx, 1, dv, x, N, C, HkvD);
}

/* the backward of gate_up_fwd: dx (= or += acc) from m->dgate, m->dup */
static void gate_up_bwd(lt_model *m, int l, void *dx, int acc, const void *x, int N) {
    const lt_config *c = &m->cfg;
    int C = c->hidden_size, I = c->intermediate_size;
    if (c->fused_proj) {
        proj_bwd_part(m, l, LT_LORA_GATE_UP, 0, dx, acc, m->dgate, x, N, C, I);
        proj_bwd_part(m, l, LT_LORA_GATE_UP, I, dx, 1, m->dup, x, N, C, I);
        return;
    }
    proj_bwd(m, l, LT_LORA_GATE, dx, acc, m->dgate, x, N, C, I);
    proj_bwd(m, l, LT_LORA_UP, dx, 1, m->dup, x, N, C, I);
}

/* the rotary table of layer l in the running step: gemma3's sliding layers
 * use the local table; LongRoPE the short or long factors */
static const float *rope_table(const lt_model *m, int l) {
    if (m->inv_freq_local && m->cfg.layer_sliding[l]) return m->inv_freq_local;
    return m->rope_long ? m->inv_freq + lt_config_rotary_dim(&m->cfg) / 2 : m->inv_freq;
}

/* The layer recipe, the one description of a decoder layer's forward, used by
 * training (layer_fwd) and by the KV-cache decode (decode_chunk). norm_in:
 * compute h1 here (else the previous layer's fused add + norm did); add_out:
 * finish with the residual add fused with the next norm. */
static void layer_recipe(lt_model *m, int l, const layer_io *io, int norm_in, int add_out) {
    lt_backend *be = m->be;
    const lt_config *c = &m->cfg;
    int n = io->n, C = c->hidden_size, I = c->intermediate_size;
    int Hq = c->num_heads, Hkv = c->num_kv_heads, D = c->head_dim;
    layer *y = &m->layers[l];
    // attention block; post-norm: the projections read x itself
    if (norm_in && !c->post_norm) norm_fwd(m, io->h1, io->rstd1, io->x, y->ln1->data, n, C);
    const void *hin = c->post_norm ? io->x : io->h1;
    void *q = c->qk_norm ? io->qpre : io->q, *k = c->qk_norm ? io->kpre : io->k;
    qkv_fwd(m, l, io, hin, q, k, n);
    if (c->qk_norm) { // per head: rows of D; whole: rows of H*D
        int whole = c->qk_norm == LT_QK_NORM_WHOLE;
        norm_fwd(m, io->q, io->qrstd, io->qpre, y->qn->data, whole ? n : n * Hq, whole ? Hq * D : D);
        norm_fwd(m, io->k, io->krstd, io->kpre, y->kn->data, whole ? n : n * Hkv, whole ? Hkv * D : D);
    }
    const int R = lt_config_rotary_dim(c);
    const float rs = lt_config_rope_scale(c);
    be->rope_fwd(be, io->q, io->pos, rope_table(m, l), n, Hq, D, R, rs);
    be->rope_fwd(be, io->k, io->pos, rope_table(m, l), n, Hkv, D, R, rs);
    attn_fwd(m, io->att_all, io->lse, io->q_all, io->k_all, io->v_all,
             lt_config_layer_window(c, l) ? io->docw : io->doc, io->att_B, io->att_T);
    if (c->sandwich_norm) { // h2 = o_proj output; xmid = x + rmsnorm(h2) * ln2; hp = rmsnorm(xmid) * lnp
        proj_fwd(m, l, LT_LORA_O, io->h2, io->att, io->xa[LT_LORA_O], io->xdrop[LT_LORA_O], n, Hq * D, C);
        norm_fwd(m, io->tmp, io->rstd2, io->h2, y->ln2->data, n, C);
        add_norm_fwd(m, io->xmid, io->hp, io->rstdp, io->x, io->tmp, y->lnp->data, n, C);
    } else if (c->post_norm) { // h2 = o_proj output; xmid = x + rmsnorm(h2) * ln2
        proj_fwd(m, l, LT_LORA_O, io->h2, io->att, io->xa[LT_LORA_O], io->xdrop[LT_LORA_O], n, Hq * D, C);
        norm_fwd(m, io->tmp, io->rstd2, io->h2, y->ln2->data, n, C);
        be->add(be, io->xmid, io->x, io->tmp, (size_t)n * C);
    } else { // xmid = x + attn; h2 = rmsnorm(xmid) * ln2
        proj_fwd(m, l, LT_LORA_O, io->tmp, io->att, io->xa[LT_LORA_O], io->xdrop[LT_LORA_O], n, Hq * D, C); // (n, C)
        add_norm_fwd(m, io->xmid, io->h2, io->rstd2, io->x, io->tmp, y->ln2->data, n, C);
    }
    // MLP block
    const void *hmid = c->sandwich_norm ? io->hp : c->post_norm ? io->xmid : io->h2;
    gate_up_fwd(m, l, io, hmid, n);
    act_fwd(m, io->swi, io->gate, io->up, (size_t)n * I);
    if (c->post_norm) { // x_out = xmid + rmsnorm(mo) * ln3, then the final norm after the last layer
        proj_fwd(m, l, LT_LORA_DOWN, io->mo, io->swi, io->xa[LT_LORA_DOWN], io->xdrop[LT_LORA_DOWN], n, I, C);
        norm_fwd(m, io->tmp, io->rstd3, io->mo, y->ln3->data, n, C);
        if (add_out) {
            be->add(be, io->x_out, io->xmid, io->tmp, (size_t)n * C);
            if (io->w_out) norm_fwd(m, io->h_out, io->rstd_out, io->x_out, io->w_out, n, C);
        }
        return;
    }
    if (c->sandwich_norm) { // x_out = xmid + rmsnorm(mo) * ln3, fused with the next norm
        proj_fwd(m, l, LT_LORA_DOWN, io->mo, io->swi, io->xa[LT_LORA_DOWN], io->xdrop[LT_LORA_DOWN], n, I, C);
        norm_fwd(m, io->tmp, io->rstd3, io->mo, y->ln3->data, n, C);
        if (add_out) add_norm_fwd(m, io->x_out, io->h_out, io->rstd_out, io->xmid, io->tmp, io->w_out, n, C);
        return;
    }
    proj_fwd(m, l, LT_LORA_DOWN, io->tmp, io->swi, io->xa[LT_LORA_DOWN], io->xdrop[LT_LORA_DOWN], n, I, C); // (n, C)
    // x_out = xmid + mlp, fused with the norm that reads it
    if (add_out) add_norm_fwd(m, io->x_out, io->h_out, io->rstd_out, io->xmid, io->tmp, io->w_out, n, C);
}

/* One layer's forward from its input acts[l].x (training; see layer_recipe). */
static void layer_fwd(lt_model *m, int l, int norm_in, int add_out) {
    const int L = m->cfg.num_layers;
    layer *y = &m->layers[l];
    layer_acts *a = &m->acts[l];
    layer_io io = {.n = m->B * m->T, .att_B = m->B, .att_T = m->T, .pos = m->d_pos, .doc = m->d_doc,
                   .x = a->x, .h1 = a->h1, .rstd1 = a->rstd1, .qpre = a->qpre, .kpre = a->kpre,
                   .qrstd = a->qrstd, .krstd = a->krstd, .q = a->q, .k = a->k, .v = a->v,
                   .q_all = a->q, .k_all = a->k, .v_all = a->v, .att_all = a->att, .att = a->att, .lse = a->lse,
                   .xmid = a->xmid, .h2 = a->h2, .rstd2 = a->rstd2, .mo = a->mo, .rstd3 = a->rstd3,
                   .gate = a->gate, .up = a->up, .swi = a->swi, .tmp = m->tmp, .docw = m->d_docw,
                   .hp = a->hp, .rstdp = a->rstdp};
    for (int t = 0; t < NT; t++) {
        io.xa[t] = a->xa[t];
        io.xdrop[t] = m->drop_active && y->la[t] ? a->xdrop[t] : NULL;
    }
    if (l + 1 < L) {
        layer_acts *nx = &m->acts[l + 1];
        io.x_out = nx->x, io.h_out = nx->h1, io.rstd_out = nx->rstd1;
        io.w_out = m->cfg.post_norm ? NULL : m->layers[l + 1].ln1->data;
    } else {
        io.x_out = m->x_final, io.h_out = m->hf, io.rstd_out = m->rstdf, io.w_out = m->lnf->data;
    }
    layer_recipe(m, l, &io, norm_in, add_out);
}

static void forward(lt_model *m, int want_dlogits, float grad_scale) {
    lt_backend *be = m->be;
    const lt_config *c = &m->cfg;
    int N = m->B * m->T, C = c->hidden_size, V = c->vocab_size, L = c->num_layers;

    m->drop_active = want_dlogits && m->lora && m->lspec.dropout > 0 && m->rng;
    m->replay = 0;
    if (want_dlogits) { /* pooled gradients: the head's chunks write its gradient below */
        grads_acquire(m, LT_GRAD_GROUP_HEAD);
        if (m->head == m->embed) grads_acquire(m, LT_GRAD_GROUP_EMBED);
    }
    const int tied = m->head == m->embed;
    weights_use(m, LT_GRAD_GROUP_EMBED, 1); /* ZeRO-3 (see lt_model_shard_weights for the order) */
    if (m->pool_st) return;
    be->embedding_fwd(be, m->acts[0].x, m->embed->data, m->d_tokens, N, C); // (N, C)
    if (!tied) weights_use(m, LT_GRAD_GROUP_EMBED, 0);
    if (c->embed_scale) be->scale(be, m->acts[0].x, (size_t)N * C, embed_scale(m));
    if (want_dlogits && m->neft_alpha > 0) // NEFTune: training steps only; L = T (see lt_model.h)
        be->embed_noise(be, m->acts[0].x, N, C, m->neft_alpha / sqrtf((float)((int64_t)m->T * C)), m->neft_key);
    weights_use(m, 0, 1);
    for (int l = 0; l < L; l++) {
        weights_use(m, l + 1 < L ? l + 1 : LT_GRAD_GROUP_HEAD, 1); /* the fused norm reads the next ln1 / the final norm */
        if (l + 2 < L) weights_use(m, l + 2, 2);                  /* prefetch hint */
        if (m->pool_st) return;
        layer_fwd(m, l, l == 0, 1);
        weights_use(m, l, 0);
    }
    if (m->pool_st) return;
    // lm_head and loss, R rows at a time: the full (N, V) logits never exist.
    // With the gradient, each chunk's dlogits (in place of its logits) goes
    // straight back through the head: dh rows = dlogits @ Whead, and
    // Whead.grad += dlogits^T @ hf rows (accumulated chunk after chunk).
    int R = m->chunk_rows;
    size_t A = lt_dtype_size(be->act_dtype);
    for (int r0 = 0; r0 < N; r0 += R) {
        int n = N - r0 < R ? N - r0 : R;
        const void *hf = (const char *)m->hf + (size_t)r0 * C * A; // (n, C)
        be->matmul_fwd(be, m->logits, hf, m->head->data, NULL, n, C, V); // (n, V)
        if (c->final_softcap > 0) // gemma2: the loss of the soft-capped logits, dlogits w.r.t. the raw ones
            be->cross_entropy_cap(be, m->losses + r0, want_dlogits ? m->logits : NULL, m->logits, m->d_targets + r0, n,
                                  V, grad_scale, c->final_softcap);
        else
            be->cross_entropy(be, m->losses + r0, want_dlogits ? m->logits : NULL, m->logits, m->d_targets + r0, n,
                              V, grad_scale);
        if (want_dlogits) // head (tied: the embedding table receives this dw as well as the lookup's)
            be->matmul_bwd(be, (char *)m->dh + (size_t)r0 * C * A, 0, m->head->grad, NULL, m->logits, hf,
                           m->head->data, n, C, V);
    }
    if (!want_dlogits) {
        weights_use(m, LT_GRAD_GROUP_HEAD, 0);
        if (tied) weights_use(m, LT_GRAD_GROUP_EMBED, 0);
    }
}

/* dw of a norm weight: its gradient, or the sink when it is frozen */
static float *ng(lt_model *m, const lt_param *p) { return p->grad ? p->grad : m->sink; }

static void backward(lt_model *m) {
    lt_backend *be = m->be;
    const lt_config *c = &m->cfg;
    int B = m->B, T = m->T, N = B * T, C = c->hidden_size, I = c->intermediate_size;
    int Hq = c->num_heads, Hkv = c->num_kv_heads, D = c->head_dim, L = c->num_layers;

    // the head's backward ran chunk by chunk in the forward: dh = dL/dhf (N, C)
    if (m->pool_st) return;
    norm_bwd(m, m->dx, 0, ng(m, m->lnf), m->dh, m->x_final, m->lnf->data, m->rstdf, N, C);
    weights_use(m, LT_GRAD_GROUP_HEAD, 0);
    if (m->head == m->embed) weights_use(m, LT_GRAD_GROUP_EMBED, 0);
    grads_final(m, LT_GRAD_GROUP_HEAD);
    for (int l = L - 1; l >= 0; l--) {
        layer *y = &m->layers[l];
        layer_acts *a = &m->acts[l];
        grads_acquire(m, l);
        weights_use(m, l, 1);
        if (l > 0) weights_use(m, l - 1, 2); /* prefetch hint */
        if (m->pool_st) return;
        if (m->recompute && l < L - 1) { // the scratch still holds the last layer's activations
            m->replay = 1;               // the same dropout masks as the forward
            layer_fwd(m, l, 1, 0);
            m->replay = 0;
        }
        // MLP block; dx = dL/d(x_out)
        if (c->sandwich_norm) { // x_out = xmid + rmsnorm(mo) * ln3: dh = dL/d(mo)
            norm_bwd(m, m->dh, 0, ng(m, y->ln3), m->dx, a->mo, y->ln3->data, a->rstd3, N, C);
            proj_bwd(m, l, LT_LORA_DOWN, m->dswi, 0, m->dh, a->swi, N, I, C);
            act_bwd(m, m->dgate, m->dup, m->dswi, a->gate, a->up, (size_t)N * I);
            gate_up_bwd(m, l, m->dh, 0, a->hp, N);
            // hp = rmsnorm(xmid) * lnp: dx becomes dL/d(xmid)
            norm_bwd(m, m->dx, 1, ng(m, y->lnp), m->dh, a->xmid, y->lnp->data, a->rstdp, N, C);
            // xmid = x + rmsnorm(h2) * ln2: dh = dL/d(h2), the o_proj output
            norm_bwd(m, m->dh, 0, ng(m, y->ln2), m->dx, a->h2, y->ln2->data, a->rstd2, N, C);
        } else if (c->post_norm) { // x_out = xmid + rmsnorm(mo) * ln3: dh = dL/d(mo); dx carries on as dL/d(xmid)
            norm_bwd(m, m->dh, 0, ng(m, y->ln3), m->dx, a->mo, y->ln3->data, a->rstd3, N, C);
            proj_bwd(m, l, LT_LORA_DOWN, m->dswi, 0, m->dh, a->swi, N, I, C);
            act_bwd(m, m->dgate, m->dup, m->dswi, a->gate, a->up, (size_t)N * I);
            gate_up_bwd(m, l, m->dx, 1, a->xmid, N);
            // xmid = x + rmsnorm(h2) * ln2: dh = dL/d(h2), the o_proj output
            norm_bwd(m, m->dh, 0, ng(m, y->ln2), m->dx, a->h2, y->ln2->data, a->rstd2, N, C);
        } else {
            proj_bwd(m, l, LT_LORA_DOWN, m->dswi, 0, m->dx, a->swi, N, I, C);
            act_bwd(m, m->dgate, m->dup, m->dswi, a->gate, a->up, (size_t)N * I);
            gate_up_bwd(m, l, m->dh, 0, a->h2, N);
            norm_bwd(m, m->dx, 1, ng(m, y->ln2), m->dh, a->xmid, y->ln2->data, a->rstd2, N, C);
        }
        // attention block; dx = dL/d(xmid) (post-norm: dh = dL/d(o_proj output))
        proj_bwd(m, l, LT_LORA_O, m->datt, 0, c->post_norm || c->sandwich_norm ? m->dh : m->dx, a->att, N, Hq * D, C);
        attn_bwd(m, m->dq, m->dk, m->dv, m->datt, a->q, a->k, a->v, a->att, a->lse,
                 lt_config_layer_window(c, l) ? m->d_docw : m->d_doc, B, T);
        const int R = lt_config_rotary_dim(c);
        const float rs = lt_config_rope_scale(c);
        be->rope_bwd(be, m->dq, m->d_pos, rope_table(m, l), N, Hq, D, R, rs);
        be->rope_bwd(be, m->dk, m->d_pos, rope_table(m, l), N, Hkv, D, R, rs);
        void *dq = m->dq, *dk = m->dk;
        if (c->qk_norm) {
            int whole = c->qk_norm == LT_QK_NORM_WHOLE;
            norm_bwd(m, m->dq2, 0, ng(m, y->qn), m->dq, a->qpre, y->qn->data, a->qrstd, whole ? N : N * Hq,
                            whole ? Hq * D : D);
            norm_bwd(m, m->dk2, 0, ng(m, y->kn), m->dk, a->kpre, y->kn->data, a->krstd, whole ? N : N * Hkv,
                            whole ? Hkv * D : D);
            dq = m->dq2;
            dk = m->dk2;
        }
        if (c->post_norm) { // the projections read x: their input gradient adds to dx = dL/d(xmid)
            qkv_bwd(m, l, m->dx, 1, dq, dk, m->dv, a->x, N);
            weights_use(m, l, 0);
            grads_final(m, l);
            continue;
        }
        qkv_bwd(m, l, m->dh, 0, dq, dk, m->dv, a->h1, N);
        norm_bwd(m, m->dx, 1, ng(m, y->ln1), m->dh, a->x, y->ln1->data, a->rstd1, N, C);
        weights_use(m, l, 0);
        grads_final(m, l);
    }
    if (m->head != m->embed) grads_acquire(m, LT_GRAD_GROUP_EMBED);
    if (m->embed->grad) {
        if (c->embed_scale) be->scale(be, m->dx, (size_t)N * C, embed_scale(m)); // d(table row) = dx * normalizer
        be->embedding_bwd(be, m->embed->grad, m->dx, m->d_tokens, N, C);
    }
    grads_final(m, LT_GRAD_GROUP_EMBED);
}

/* LongRoPE's choice, as transformers' longrope_frequency_update makes it:
 * the long factors when the largest position of the call + 1 exceeds
 * original_max_position_embeddings (one table for the whole batch) */
static int rope_long_for_len(const lt_model *m, int64_t len) {
    return m->cfg.rope_scaling_type == LT_ROPE_LONGROPE && len > m->cfg.rope_original_max_pos;
}
static int rope_long_for(const lt_model *m, const int32_t *pos, size_t n) {
    int32_t mx = 0;
    for (size_t i = 0; i < n; i++)
        if (pos[i] > mx) mx = pos[i];
    return rope_long_for_len(m, (int64_t)mx + 1);
}

lt_status lt_model_step(lt_model *m, const lt_batch *b, int backward_pass, double loss_norm, lt_step_result *res,
                        lt_err *err) {
    int64_t nt = 0;
    lt_status st = check_loaded(m, "step", err);
    if (!st) st = validate_batch(m, b, &nt, err);
    if (st) return st;
    if (backward_pass) {
        if (!m->grads_allocated)
            return lt_fail(err, LT_ERR_INVALID, "step: backward without gradients (call lt_model_alloc_grads)");
        if (!(loss_norm > 0) || !isfinite(loss_norm))
            return lt_fail(err, LT_ERR_INVALID, "step: loss_norm %g must be a positive number of target tokens",
                           loss_norm);
    }
    lt_backend *be = m->be;
    size_t N = (size_t)b->B * b->T, bytes = N * sizeof(int32_t);
    if ((st = be->upload(be, m->d_tokens, b->tokens, bytes, err)) ||
        (st = be->upload(be, m->d_targets, b->targets, bytes, err)) ||
        (st = be->upload(be, m->d_pos, b->pos, bytes, err)) || (st = be->upload(be, m->d_doc, b->doc_start, bytes, err)))
        return lt_wrap(err, st, "step: uploading the batch");
    if (m->cfg.window_layers) {
        window_bounds(m->h_docw, b->doc_start, N, b->T, m->cfg.sliding_window > 0 ? m->cfg.sliding_window : b->T);
        if ((st = be->upload(be, m->d_docw, m->h_docw, bytes, err))) return lt_wrap(err, st, "step: uploading the batch");
    }
    m->drop_st = LT_OK;
    m->pool_st = LT_OK;
    if (backward_pass && m->grads_pooled && !m->provider)
        return lt_fail(err, LT_ERR_INVALID, "step: pooled gradients without a provider (lt_model_set_grad_provider)");
    m->rope_long = rope_long_for(m, b->pos, N);
    forward(m, backward_pass, backward_pass ? (float)(1.0 / loss_norm) : 0.0f);
    if (backward_pass && !m->pool_st) backward(m);
    if (m->drop_st) {
        if (err) *err = m->drop_err;
        return lt_wrap(err, m->drop_st, "step: LoRA dropout");
    }
    if (m->pool_st)
        return lt_fail(err, m->pool_st, "step: the %s provider failed", m->wprov ? "weight or gradient" : "gradient");
    m->logits_state = backward_pass ? 2 : 1;
    if ((st = be->download_f32(be, m->host_losses, m->losses, LT_F32, N, err))) return lt_wrap(err, st, "step");
    if ((st = be->sync(be, err))) return lt_wrap(err, st, "step");
    double sum = 0;
    for (size_t n = 0; n < N; n++) sum += m->host_losses[n];
    if (!isfinite(sum)) return lt_fail(err, LT_ERR_NONFINITE, "step: the loss is not finite (%g)", sum);
    if (res) {
        res->loss_sum = sum;
        res->n_targets = nt;
    }
    return LT_OK;
}

lt_status lt_model_get_logits(lt_model *m, float *host, lt_err *err) {
    if (m->wshard) return lt_fail(err, LT_ERR_UNSUPPORTED, "logits: the weights are sharded (ZeRO-3)");
    if (m->logits_state != 1)
        return lt_fail(err, LT_ERR_INVALID,
                       m->logits_state == 2 ? "logits: the last step ran the backward, which overwrote the logits "
                                              "with their gradient (run a forward-only step to read logits)"
                                            : "logits: no step has run since the last plan");
    lt_backend *be = m->be;
    int N = m->B * m->T, C = m->cfg.hidden_size, V = m->cfg.vocab_size, R = m->chunk_rows;
    size_t A = lt_dtype_size(be->act_dtype);
    lt_status st = LT_OK;
    if (R >= N) { // one chunk: the buffer still holds the forward's logits
        st = be->download_f32(be, host, m->logits, be->act_dtype, (size_t)N * V, err);
    } else { // the same head products again, chunk by chunk (hf is intact after a forward-only step)
        for (int r0 = 0; r0 < N && !st; r0 += R) {
            int n = N - r0 < R ? N - r0 : R;
            be->matmul_fwd(be, m->logits, (const char *)m->hf + (size_t)r0 * C * A, m->head->data, NULL, n, C, V);
            st = be->download_f32(be, host + (size_t)r0 * V, m->logits, be->act_dtype, (size_t)n * V, err);
        }
    }
    if (!st) st = be->sync(be, err);
    if (!st) cap_logits(&m->cfg, host, (size_t)N * V);
    return st;
}

int lt_model_logits_chunk_for(int vocab_size, size_t act_size, size_t N, int rows) {
    if (rows <= 0) {
        const char *e = getenv("LT_LOGITS_CHUNK_ROWS");
        long v = e && *e ? strtol(e, NULL, 10) : 0;
        if (v > 0 && v <= INT32_MAX) rows = (int)v;
    }
    if (rows <= 0) {
        size_t row_bytes = (size_t)(vocab_size > 0 ? vocab_size : 1) * (act_size ? act_size : 1);
        size_t r = LT_LOGITS_CHUNK_BYTES / row_bytes;
        rows = r < 1 ? 1 : r > INT32_MAX ? INT32_MAX : (int)r;
    }
    return (size_t)rows < N ? rows : (int)(N ? N : 1);
}

void lt_model_set_logits_chunk(lt_model *m, int rows) {
    if (rows < 0) rows = 0;
    if (m->chunk_set != rows) free_plan(m); /* the logits buffer changes size: plan again */
    m->chunk_set = rows;
}

int lt_model_logits_chunk(const lt_model *m) { return m->chunk_rows; }

lt_status lt_model_get_token_losses(lt_model *m, float *host, lt_err *err) {
    if (!m->logits_state) return lt_fail(err, LT_ERR_INVALID, "losses: no step has run since the last plan");
    memcpy(host, m->host_losses, (size_t)m->B * m->T * sizeof(float));
    return LT_OK;
}

/* ---------------------------------------------------------------------- */
/* LoRA                                                                    */

lt_status lt_model_add_lora(lt_model *m, const lt_lora_spec *spec, lt_err *err) {
    const lt_config *c = &m->cfg;
    if (m->lora) return lt_fail(err, LT_ERR_INVALID, "LoRA: the model already has adapters");
    if (spec->r <= 0 || !(spec->dropout >= 0 && spec->dropout < 1) || !isfinite(spec->scale) || !spec->targets ||
        (spec->targets >> NT))
        return lt_fail(err, LT_ERR_INVALID, "LoRA: bad spec (r %d, dropout %g, scale %g, targets 0x%x)", spec->r,
                       spec->dropout, spec->scale, spec->targets);
    free_plan(m);
    free_kv(m); /* its scratch is sized for the projections without adapters */
    for (size_t i = 0; i < m->n_params; i++) { /* freeze the base */
        lt_param *p = &m->params[i];
        p->trainable = 0;
        p->grad = NULL;
    }
    if (m->grad_flat) m->be->free(m->be, m->grad_flat);
    m->grad_flat = NULL;
    m->grad_numel = 0;
    m->grads_allocated = 0;
    const unsigned targets = lt_lora_targets_for(c, spec->targets); /* fused modules (phi3) */
    int nt = 0;
    for (int t = 0; t < NT; t++) nt += (targets >> t) & 1;
    size_t add = (size_t)c->num_layers * nt * 2;
    lt_param *np = realloc(m->params, (m->n_params + add) * sizeof *np);
    if (!np) return lt_fail(err, LT_ERR_NOMEM, "LoRA: out of memory");
    m->params = np;
    memset(np + m->n_params, 0, add * sizeof *np);
    lt_status st = LT_OK;
    for (int l = 0; l < c->num_layers && !st; l++) {
        for (int t = 0; t < NT && !st; t++) {
            if (!((targets >> t) & 1)) continue;
            for (int isB = 0; isB < 2 && !st; isB++) {
                lt_param *p = &m->params[m->n_params];
                lt_lora_peft_name(p->name, sizeof p->name, l, t, isB);
                p->ndim = 2;
                p->shape[0] = isB ? (int64_t)proj_out(c, t) : spec->r;
                p->shape[1] = isB ? spec->r : (int64_t)proj_in(c, t);
                p->numel = (size_t)p->shape[0] * (size_t)p->shape[1];
                p->trainable = 1;
                p->dtype = LT_F32;
                st = m->be->alloc(m->be, p->numel * sizeof(float), &p->data, err);
                if (st) break;
                m->be->zero(m->be, p->data, p->numel * sizeof(float));
                m->n_params++;
            }
        }
    }
    bind_layers(m); /* the params array moved */
    if (st) return lt_wrap(err, st, "LoRA parameters");
    m->lora = 1;
    m->lspec = *spec;
    m->lspec.targets = targets;
    return m->be->sync(m->be, err);
}

void lt_model_set_rng(lt_model *m, lt_rng *rng) { m->rng = rng; }

void lt_model_set_neftune(lt_model *m, float alpha, uint64_t key) {
    m->neft_alpha = alpha > 0 ? alpha : 0.0f;
    m->neft_key = key;
}

/* ---------------------------------------------------------------------- */
/* inference with a KV cache                                               */

lt_status lt_model_kv_init(lt_model *m, int max_len, lt_err *err) {
    const lt_config *c = &m->cfg;
    free_kv(m);
    if (max_len <= 0 || max_len > c->max_position_embeddings)
        return lt_fail(err, LT_ERR_RANGE, "kv cache: length %d must be in 1..max_position_embeddings (%d)", max_len,
                       c->max_position_embeddings);
    if (c->sliding_window > 0 && !c->window_layers && max_len > c->sliding_window)
        return lt_fail(err, LT_ERR_UNSUPPORTED,
                       "kv cache: length %d exceeds the model's sliding_window %d (sliding-window attention is not "
                       "implemented)",
                       max_len, c->sliding_window);
    kv_cache *kv = calloc(1, sizeof *kv);
    if (!kv) return lt_fail(err, LT_ERR_NOMEM, "kv cache: out of memory");
    m->kv = kv;
    int L = c->num_layers;
    size_t S = (size_t)max_len, R = (size_t)(max_len < 64 ? max_len : 64);
    size_t C = (size_t)c->hidden_size, I = (size_t)c->intermediate_size, V = (size_t)c->vocab_size;
    size_t HqD = (size_t)c->num_heads * c->head_dim, HkvD = (size_t)c->num_kv_heads * c->head_dim;
    size_t A = lt_dtype_size(m->be->act_dtype), F = sizeof(float), I4 = sizeof(int32_t);
    kv->max_len = max_len;
    kv->chunk = (int)R;
    kv->k = calloc((size_t)L, sizeof *kv->k);
    kv->v = calloc((size_t)L, sizeof *kv->v);
    kv->h_doc = malloc(S * sizeof *kv->h_doc);
    kv->h_pos = malloc(S * sizeof *kv->h_pos);
    kv->h_tok = malloc(S * sizeof *kv->h_tok);
    kv->h_docw = malloc(S * sizeof *kv->h_docw);
    if (!kv->k || !kv->v || !kv->h_doc || !kv->h_pos || !kv->h_tok || !kv->h_docw) {
        free_kv(m);
        return lt_fail(err, LT_ERR_NOMEM, "kv cache: out of memory");
    }
    planner pl = {0};
    for (int l = 0; l < L; l++) {
        reserve(&pl, &kv->k[l], S * HkvD, A);
        reserve(&pl, &kv->v[l], S * HkvD, A);
    }
    reserve(&pl, &kv->q, S * HqD, A);
    reserve(&pl, &kv->att, S * HqD, A);
    reserve(&pl, (void **)&kv->lse, S * (size_t)c->num_heads, F);
    reserve(&pl, &kv->x, R * C, A);
    reserve(&pl, &kv->h, R * C, A);
    reserve(&pl, &kv->qpre, R * HqD, A);
    reserve(&pl, &kv->kpre, R * HkvD, A);
    reserve(&pl, &kv->tmp, R * C, A);
    reserve(&pl, &kv->xmid, R * C, A);
    reserve(&pl, &kv->gate, R * I, A);
    reserve(&pl, &kv->up, R * I, A);
    reserve(&pl, &kv->swi, R * I, A);
    reserve(&pl, (void **)&kv->rstd, R, F);
    reserve(&pl, (void **)&kv->qrstd, R * (size_t)c->num_heads, F);
    reserve(&pl, (void **)&kv->krstd, R * (size_t)c->num_kv_heads, F);
    reserve(&pl, (void **)&kv->xa, R * (size_t)(m->lora ? m->lspec.r : 1), F);
    reserve(&pl, &kv->logits, R * V, A);
    reserve(&pl, (void **)&kv->d_tokens, R, I4);
    reserve(&pl, (void **)&kv->d_pos, R, I4);
    reserve(&pl, (void **)&kv->d_doc, S, I4);
    reserve(&pl, (void **)&kv->d_docw, S, I4);
    lt_status st = LT_OK;
    if (pl.overflow) st = lt_fail(err, LT_ERR_NOMEM, "kv cache: size overflows");
    else if ((st = m->be->alloc(m->be, pl.off, &kv->arena, err)))
        lt_wrap(err, st, "kv cache for %d positions (%.1f MiB)", max_len, pl.off / 1048576.0);
    else {
        for (size_t i = 0; i < pl.n_dyn; i++) *pl.dyn[i] = (char *)kv->arena + pl.dyn_off[i];
        m->be->zero(m->be, kv->arena, pl.off); /* no stale NaN in rows the attention op reads */
    }
    free(pl.dyn);
    free(pl.dyn_off);
    if (st) free_kv(m);
    return st;
}

void lt_model_kv_reset(lt_model *m) {
    if (m->kv) m->kv->len = m->kv->rope_long = 0;
}

int lt_model_kv_len(const lt_model *m) { return m->kv ? m->kv->len : 0; }

/* n <= chunk new tokens at positions p0 .. p0+n-1 */
static lt_status decode_chunk(lt_model *m, const int32_t *tokens, int n, float *logits, int all_logits, lt_err *err) {
    lt_backend *be = m->be;
    kv_cache *kv = m->kv;
    const lt_config *c = &m->cfg;
    int C = c->hidden_size, V = c->vocab_size, Hq = c->num_heads, Hkv = c->num_kv_heads;
    int D = c->head_dim, L = c->num_layers, p0 = kv->len, T = p0 + n;
    size_t A = lt_dtype_size(be->act_dtype);
    size_t qoff = (size_t)p0 * Hq * D * A, koff = (size_t)p0 * Hkv * D * A;
    for (int t = 0; t < n; t++) kv->h_pos[t] = p0 + t;
    memcpy(kv->h_tok + p0, tokens, (size_t)n * sizeof *tokens);
    for (int t = 0; t < T; t++) kv->h_doc[t] = t < p0 ? t : 0; // cached rows: themselves only
    lt_status st;
    if ((st = be->upload(be, kv->d_tokens, tokens, (size_t)n * 4, err)) ||
        (st = be->upload(be, kv->d_pos, kv->h_pos, (size_t)n * 4, err)) ||
        (st = be->upload(be, kv->d_doc, kv->h_doc, (size_t)T * 4, err)))
        return lt_wrap(err, st, "decode");
    if (c->window_layers) { // sliding layers: the new rows see the last W positions
        window_bounds(kv->h_docw, kv->h_doc, (size_t)T, T, c->sliding_window > 0 ? c->sliding_window : T);
        if ((st = be->upload(be, kv->d_docw, kv->h_docw, (size_t)T * 4, err))) return lt_wrap(err, st, "decode");
    }
    be->embedding_fwd(be, kv->x, m->embed->data, kv->d_tokens, n, C); // (n, C)
    if (c->embed_scale) be->scale(be, kv->x, (size_t)n * C, embed_scale(m));
    if (!c->post_norm) norm_fwd(m, kv->h, kv->rstd, kv->x, m->layers[0].ln1->data, n, C);
    for (int l = 0; l < L; l++) {
        // kv->h = rmsnorm(x) * ln1: above for layer 0, else fused with the previous layer's residual add;
        // the new q/k/v rows go into the cache, attention runs over the (1, T) cached sequence
        layer_io io = {.n = n, .att_B = 1, .att_T = T, .pos = kv->d_pos, .doc = kv->d_doc, .x = kv->x,
                       .h1 = kv->h, .rstd1 = kv->rstd, .qpre = kv->qpre, .kpre = kv->kpre, .qrstd = kv->qrstd,
                       .krstd = kv->krstd, .q = (char *)kv->q + qoff, .k = (char *)kv->k[l] + koff,
                       .v = (char *)kv->v[l] + koff, .q_all = kv->q, .k_all = kv->k[l], .v_all = kv->v[l],
                       .att_all = kv->att, .att = (char *)kv->att + qoff, .lse = kv->lse, .xmid = kv->xmid,
                       .h2 = kv->h, .rstd2 = kv->rstd, .mo = kv->h, .rstd3 = kv->rstd, .gate = kv->gate,
                       .up = kv->up, .swi = kv->swi, .tmp = kv->tmp, .x_out = kv->x, .h_out = kv->h,
                       .rstd_out = kv->rstd, .docw = kv->d_docw, .hp = kv->h, .rstdp = kv->rstd,
                       .w_out = l + 1 == L ? m->lnf->data : c->post_norm ? NULL : m->layers[l + 1].ln1->data};
        for (int t = 0; t < NT; t++) io.xa[t] = kv->xa; /* xdrop: NULL, no dropout */
        layer_recipe(m, l, &io, 0, 1);
    }
    int rows = all_logits ? n : 1;
    const void *hin = all_logits ? kv->h : (char *)kv->h + (size_t)(n - 1) * C * A;
    if (logits) {
        be->matmul_fwd(be, kv->logits, hin, m->head->data, NULL, rows, C, V); // (rows, V)
        if ((st = be->download_f32(be, logits, kv->logits, be->act_dtype, (size_t)rows * V, err)))
            return lt_wrap(err, st, "decode");
    }
    if ((st = be->sync(be, err))) return lt_wrap(err, st, "decode");
    if (logits) cap_logits(c, logits, (size_t)rows * V);
    kv->len = T;
    return LT_OK;
}

lt_status lt_model_decode(lt_model *m, const int32_t *tokens, int n, float *logits, int all_logits, lt_err *err) {
    if (m->wshard) return lt_fail(err, LT_ERR_UNSUPPORTED, "decode: the weights are sharded (ZeRO-3)");
    lt_status lst = check_loaded(m, "decode", err);
    if (lst) return lst;
    kv_cache *kv = m->kv;
    if (!kv) return lt_fail(err, LT_ERR_INVALID, "decode: no KV cache (call lt_model_kv_init)");
    if (n <= 0) return lt_fail(err, LT_ERR_INVALID, "decode: %d tokens", n);
    if (kv->len + n > kv->max_len)
        return lt_fail(err, LT_ERR_RANGE, "decode: %d cached + %d new tokens exceed the cache's %d positions", kv->len,
                       n, kv->max_len);
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= m->cfg.vocab_size)
            return lt_fail(err, LT_ERR_RANGE, "decode: token id %d is outside [0, %d)", tokens[i], m->cfg.vocab_size);
    size_t V = (size_t)m->cfg.vocab_size;
    /* LongRoPE: the table follows the call's last position, as transformers'
     * longrope_frequency_update does; when the sequence first grows past
     * original_max_position_embeddings, the cached rows are computed again
     * with the long table (Phi3ForCausalLM.prepare_inputs_for_generation drops
     * its cache there), so decode equals the full forward */
    m->rope_long = rope_long_for_len(m, kv->len + n);
    if (m->rope_long && !kv->rope_long && kv->len > 0) {
        int old = kv->len;
        kv->len = 0;
        for (int i = 0; i < old; i += kv->chunk) {
            lt_status st = decode_chunk(m, kv->h_tok + i, old - i < kv->chunk ? old - i : kv->chunk, NULL, 0, err);
            if (st) return st;
        }
    }
    kv->rope_long = m->rope_long;
    for (int i = 0; i < n; i += kv->chunk) {
        int k = n - i < kv->chunk ? n - i : kv->chunk, last = i + k == n;
        float *out = !logits ? NULL : all_logits ? logits + (size_t)i * V : last ? logits : NULL;
        lt_status st = decode_chunk(m, tokens + i, k, out, all_logits, err);
        if (st) return st;
    }
    return LT_OK;
}

/* ---- vocabulary resize (luxtrain vocab add) ---- */

void lt_embed_resize_rows(const float *old, int64_t old_rows, int64_t cols, float *out, int64_t new_rows) {
    int64_t keep = old_rows < new_rows ? old_rows : new_rows;
    memcpy(out, old, (size_t)keep * (size_t)cols * sizeof *out);
    if (new_rows <= old_rows || old_rows <= 0) return;
    for (int64_t c = 0; c < cols; c++) {
        double s = 0;
        for (int64_t r = 0; r < old_rows; r++) s += old[r * cols + c];
        out[keep * cols + c] = (float)(s / (double)old_rows);
    }
    for (int64_t r = keep + 1; r < new_rows; r++) memcpy(out + r * cols, out + keep * cols, (size_t)cols * sizeof *out);
}

int64_t lt_vocab_resized_rows(int64_t new_len, int pad_to_multiple_of) {
    if (pad_to_multiple_of <= 0) return new_len;
    return (new_len + pad_to_multiple_of - 1) / pad_to_multiple_of * pad_to_multiple_of;
}

/* ---- trainable embeddings next to LoRA ---- */

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* zero the gradient rows that do not train (the group's table is final) */
static void mask_frozen_rows(lt_model *m, int group) {
    lt_param *p = group == LT_GRAD_GROUP_EMBED ? m->embed : group == LT_GRAD_GROUP_HEAD && m->head != m->embed ? m->head : NULL;
    if (!p || !p->grad) return;
    size_t C = (size_t)p->shape[1], next = 0;
    for (size_t k = 0; k <= m->n_train_rows; k++) {
        size_t r = k < m->n_train_rows ? (size_t)m->train_rows[k] : (size_t)p->shape[0];
        if (r > next) m->be->zero(m->be, p->grad + next * C, (r - next) * C * sizeof(float));
        next = r + 1;
    }
}

lt_status lt_model_train_embeddings(lt_model *m, const int32_t *rows, size_t n, lt_err *err) {
    if (!m->lora) return lt_fail(err, LT_ERR_INVALID, "train embeddings: the model has no LoRA adapters");
    int32_t *r = NULL;
    if (rows) {
        if (!n) return lt_fail(err, LT_ERR_INVALID, "train embeddings: no rows given");
        if (!(r = malloc(n * sizeof *r))) return lt_fail(err, LT_ERR_NOMEM, "train embeddings: out of memory");
        memcpy(r, rows, n * sizeof *r);
        qsort(r, n, sizeof *r, cmp_i32);
        for (size_t i = 0; i < n; i++)
            if (r[i] < 0 || r[i] >= m->cfg.vocab_size || (i && r[i] == r[i - 1])) {
                int32_t bad = r[i];
                free(r);
                return lt_fail(err, LT_ERR_RANGE, "train embeddings: row %d is %s (vocabulary of %d)", (int)bad,
                               bad < 0 || bad >= m->cfg.vocab_size ? "out of range" : "given twice", m->cfg.vocab_size);
            }
    }
    if (m->grad_flat) m->be->free(m->be, m->grad_flat); /* re-allocated with the tables in it */
    m->grad_flat = NULL;
    m->grad_numel = 0;
    m->grads_allocated = 0;
    for (size_t i = 0; i < m->n_params; i++) m->params[i].grad = NULL;
    m->embed->trainable = 1;
    m->head->trainable = 1;
    free(m->train_rows);
    m->train_rows = r;
    m->n_train_rows = rows ? n : 0;
    return LT_OK;
}

size_t lt_model_trained_rows(const lt_model *m, const int32_t **rows) {
    *rows = m->train_rows;
    return m->n_train_rows;
}
/* ---------------------------------------------------------------------- */
/* QLoRA: NF4 base weights                                                 */

/* The projections QLoRA quantizes: every linear layer of the transformer the
 * model has (q, k, v, o, gate, up, down; with fused projections qkv_proj,
 * o, gate_up_proj, down), each weight as one tensor as bitsandbytes'
 * Linear4bit quantizes it (blocks of 64 over the flattened (out, in)). */
int lt_model_nf4_quantizes(const lt_config *c, int t) {
    return t >= 0 && t < NT && ((lt_lora_targets_for(c, LT_LORA_ALL_TARGETS) >> t) & 1u);
}
/* the largest of them (elements) */
static size_t nf4_max_numel(const lt_config *c) {
    size_t mx = 0;
    for (int t = 0; t < NT; t++)
        if (lt_model_nf4_quantizes(c, t) && proj_in(c, t) * proj_out(c, t) > mx) mx = proj_in(c, t) * proj_out(c, t);
    return mx;
}

lt_status lt_model_quantize_nf4(lt_model *m, lt_err *err) {
    lt_backend *be = m->be;
    const lt_config *c = &m->cfg;
    if (m->nf4) return lt_fail(err, LT_ERR_INVALID, "nf4: the model is already quantized");
    lt_status lst = m->src ? LT_OK : check_loaded(m, "nf4", err); /* deferred: see lt_model_nf4_slot */
    if (lst) return lst;
    if (m->grads_allocated)
        return lt_fail(err, LT_ERR_INVALID, "nf4: quantize before the gradients are allocated (they are laid out "
                                            "over the trainable weights)");
    size_t mx = nf4_max_numel(c), L = (size_t)c->num_layers;
    float *host = NULL;
    void *hq = NULL;
    m->nf4 = calloc(L * NT, sizeof *m->nf4);
    m->wdq_of = -1;
    lt_status st = LT_OK;
    if (!m->nf4) st = lt_fail(err, LT_ERR_NOMEM, "nf4: out of host memory");
    for (size_t l = 0; !st && l < L; l++)
        for (int t = 0; !st && t < NT; t++) {
            if (!lt_model_nf4_quantizes(c, t)) continue;
            lt_param *p = proj_w(&m->layers[l], t);
            size_t bytes = lt_nf4_layout_of(p->numel).bytes;
            if (!p->data) { /* a deferred load's weight never loaded: ZeRO-3 quantizes it by parts */
                p->trainable = 0;
                continue;
            }
            if (!host && (!(host = malloc(mx * sizeof(float))) || !(hq = malloc(lt_nf4_layout_of(mx).bytes)))) {
                st = lt_fail(err, LT_ERR_NOMEM, "nf4: out of host memory for %zu elements", mx);
                break;
            }
            if ((st = be->download_f32(be, host, p->data, be->param_dtype, p->numel, err)) ||
                (st = be->sync(be, err)) || (st = lt_nf4_quantize(host, p->numel, hq, err)) ||
                (st = be->alloc(be, bytes, &m->nf4[l * NT + t], err)) ||
                (st = be->upload(be, m->nf4[l * NT + t], hq, bytes, err))) {
                lt_wrap(err, st, "nf4: quantizing '%s'", p->name);
                break;
            }
            be->free(be, p->data); /* the NF4 copy replaces it */
            p->data = NULL;
            p->trainable = 0;
        }
    /* without adapters the model is for inference (eval, generate, score): nothing trains */
    for (size_t i = 0; !st && !m->lora && i < m->n_params; i++) m->params[i].trainable = 0;
    if (!st) st = be->alloc(be, mx * lt_dtype_size(be->param_dtype), &m->wdq, err);
    if (!st) st = be->sync(be, err);
    free(host);
    free(hq);
    /* on failure the model is unusable (some weights are gone): the caller frees it */
    return st;
}

int lt_model_is_quantized(const lt_model *m) { return m->nf4 != NULL; }

void **lt_model_nf4_slot(lt_model *m, size_t i) {
    int l = lt_model_grad_group(m, i);
    if (!m->nf4 || i >= m->n_params || l < 0 || l >= m->cfg.num_layers) return NULL;
    for (int t = 0; t < NT; t++)
        if (lt_model_nf4_quantizes(&m->cfg, t) && proj_w(&m->layers[l], t) == &m->params[i]) return &m->nf4[l * NT + t];
    return NULL;
}

lt_status lt_model_nf4_bytes(const lt_config *cfg, size_t param_size, lt_nf4_bytes *out, lt_err *err) {
    lt_param_spec *specs = NULL;
    size_t n = 0;
    lt_status st = lt_model_param_specs(cfg, &specs, &n, err);
    if (st) return st;
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < n; i++)
        out->other_params += (double)specs[i].shape[0] * (specs[i].ndim > 1 ? (double)specs[i].shape[1] : 1);
    free(specs);
    for (int t = 0; t < NT; t++) {
        if (!lt_model_nf4_quantizes(cfg, t)) continue;
        size_t e = proj_in(cfg, t) * proj_out(cfg, t);
        out->nf4_params += (double)cfg->num_layers * e;
        out->nf4_bytes += (double)cfg->num_layers * lt_nf4_layout_of(e).bytes;
    }
    out->other_params -= out->nf4_params;
    out->other_bytes = out->other_params * param_size;
    out->scratch_bytes = (double)nf4_max_numel(cfg) * param_size;
    return LT_OK;
}
