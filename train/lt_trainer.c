/* lt_trainer.c -- one optimizer step over a global batch, and the LoRA setup
 * helpers (see lt_trainer.h). */
#include "lt_trainer.h"

#include <math.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>

#include "lt_eval_adapter.h"
#include "lt_lora.h"
#include "lt_json.h"
#include "lt_nf4.h"

struct lt_trainer {
    lt_model *m;
    lt_optim *opt;
    int skip_nonfinite;
    lt_comm *comm; /* NULL: no communicator (legacy accumulation, see lt_trainer.h) */
    int zero;      /* sharded optimizer state (ZeRO-1 and above) */
    int shard_group;   /* --shard-group N (0: the world) */
    lt_comm *sc;       /* the ranks the state is sharded over: comm, or the group (intra) */
    lt_comm *cross;    /* hybrid: the ranks with the same place in the other groups (NULL: none) */
    int stage;     /* the ZeRO stage asked for: 0, 1, 2 */
    int pooled;    /* ZeRO-2: no flat gradient; groups come from the pool below */
    float **gcur;  /* (nslots) pooled: the buffer handed out for each group this micro-batch */
    size_t *goff;  /* (ranges) pooled: offset of each range inside its group's buffer */
    float *pool_edge[2];  /* pooled: the head group's and the embedding group's buffers */
    float *pool_layer[2]; /* pooled: two layer buffers, alternating (produced / being reduced) */
    size_t pool_n[4];     /* their lengths in floats: head, embed, layer, layer */
    int pool_next;
    /* ZeRO-1/2/3 with the overlap on: reductions started in the hook, completed in order */
    void **rq;            /* (rq_cap) requests, FIFO from rq_head to rq_tail */
    int *rq_buf;          /* the buffer each one reads: pool 0-3, XBUF (-1: none any more) */
    size_t *rq_a;         /* hybrid chains: the flat start of each one's range */
    size_t rq_cap, rq_head, rq_tail;
    int cur_buf;          /* the buffer of the group being reduced: pool 0-3, XBUF (-1: blocking) */
    int64_t n_async;      /* reductions started non-blocking */
    int overlap;          /* 1: non-blocking reductions and prefetched gathers; 0: blocking (LT_OVERLAP=0); -1: unset */
    /* ZeRO-3: this rank's part of every sharded parameter and the gathered groups */
    int z3;
    unsigned char *wsh;   /* (params) 1 = sharded (every parameter but LoRA A/B) */
    size_t *w_off, *w_len, *w_boff; /* (params) this rank's part; offset in its group's buffer */
    size_t **w_counts;    /* (params) every rank's part, for all_gather */
    void **w_part;        /* (params) the part (backend memory) */
    void *wbuf[5];        /* embedding group, head group, three layer groups (l % 3) */
    size_t wbuf_bytes[5];
    int wheld[5], wvalid[5];
    void **wreq[5];        /* (params) prefetch requests in flight per slot (NULL entries: none) */
    int wpending[5];
    int64_t n_prefetch, n_gather; /* groups gathered ahead (prefetch) / at the acquire */
    unsigned char *wstage; /* host staging of a part (setup: shard_weights) */
    size_t **q4c;          /* (params) ZeRO-3 + NF4: 3 x world byte counts of a quantized weight's parts (q4_part) */
    void **q4req[5];       /* (3 x params) per slot: prefetch requests of those three gathers */
    size_t wstage_bytes;
    lt_err w_err;
    int bf16;      /* reduce in bf16 once per step */
    float *x;      /* the model's flat gradient (n floats) */
    size_t n;
    float *acc;         /* step accumulator: n floats, or this rank's shard (ZeRO-1); may be x */
    int own_acc;        /* acc was allocated here */
    size_t s0, sl;      /* this rank's flat range (ZeRO-1), else 0, n */
    size_t *counts;     /* (world) scratch */
    size_t (*ranges)[2]; /* flat ranges per group slot (group + 2), merged when adjacent */
    int *nranges, *range0; /* per slot: count and first index into ranges */
    int nslots;
    int reduce_now;     /* bf16 mode: the hook reduces (last micro-batch of the step) */
    lt_status hook_st;  /* first failure inside the hook */
    lt_err hook_err;
    lt_rng *drop_rng;   /* base RNG for per-micro-batch LoRA dropout streams (NULL: the model's own) */
    float neft_alpha;   /* NEFTune (0: off) and its seed */
    uint64_t neft_seed;
    float *hbuf;        /* bf16 mode: host staging (n floats) */
    uint16_t *hb16;     /* (n) */
};

/* the buffer id (rq_buf, cur_buf) of ZeRO-1's flat gradient t->x (pool buffers: 0-3) */
enum { XBUF = 4 };

int lt_trainer_is_lora_param(const char *name) {
    size_t n = strlen(name);
    return n > 14 && (!strcmp(name + n - 14, ".lora_A.weight") || !strcmp(name + n - 14, ".lora_B.weight"));
}

lt_dtype lt_trainer_param_dtype(const lt_model *m, const lt_param *p) {
    return lt_trainer_is_lora_param(p->name) ? LT_F32 : lt_model_backend(m)->param_dtype;
}

lt_status lt_trainer_create(lt_model *m, const lt_optim_cfg *cfg, int decay_embeddings, int skip_nonfinite,
                            lt_trainer **out, lt_err *err) {
    *out = NULL;
    lt_trainer *t = calloc(1, sizeof *t);
    if (!t) return lt_fail(err, LT_ERR_NOMEM, "trainer: out of memory");
    t->m = m;
    t->skip_nonfinite = skip_nonfinite;
    t->overlap = -1;
    lt_status st = lt_model_alloc_grads(m, err); /* nothing when pooled (ZeRO-2: lt_model_pool_grads first) */
    if (!st) st = lt_optim_create(lt_model_backend(m), cfg, &t->opt, err);
    for (size_t i = 0; !st && i < lt_model_num_params(m); i++) {
        lt_param *p = lt_model_param(m, i);
        if (!p->trainable) continue;
        if (!p->grad && !lt_model_grads_pooled(m)) {
            st = lt_fail(err, LT_ERR_INVALID, "trainer: trainable parameter '%s' has no gradient buffer", p->name);
            break;
        }
        const int32_t *rows;
        size_t nr = lt_model_trained_rows(m, &rows);
        int decay = lt_optim_decay_default(p->name, p->ndim, decay_embeddings);
        if (nr && !lt_trainer_is_lora_param(p->name)) /* --train-embeddings new: state for those rows only, */
            st = lt_optim_add_rows(t->opt, p->name, p->shape, p->data, lt_trainer_param_dtype(m, p), p->grad, rows,
                                   nr, err);          /* no decay (it would shrink the frozen rows too) */
        else
            st = lt_optim_add(t->opt, p->name, p->ndim, p->shape, p->data, lt_trainer_param_dtype(m, p), p->grad,
                              decay, err);
    }
    if (!st && lt_optim_count(t->opt) == 0) st = lt_fail(err, LT_ERR_INVALID, "trainer: no trainable parameters");
    if (st) {
        lt_trainer_free(t);
        return st;
    }
    t->x = lt_model_grads_flat(m, NULL);
    t->n = lt_optim_numel(t->opt);
    *out = t;
    return LT_OK;
}

void lt_trainer_free(lt_trainer *t) {
    if (!t) return;
    lt_model_set_grad_hook(t->m, NULL, NULL);
    lt_backend *be = lt_model_backend(t->m);
    if (t->own_acc && t->acc) be->free(be, t->acc);
    for (int k = 0; k < 2; k++) {
        if (t->pool_edge[k]) be->free(be, t->pool_edge[k]);
        if (t->pool_layer[k]) be->free(be, t->pool_layer[k]);
    }
    if (t->pooled) lt_model_set_grad_provider(t->m, NULL, NULL);
    free(t->gcur);
    free(t->goff);
    free(t->rq);
    free(t->rq_buf);
    free(t->rq_a);
    size_t np = lt_model_num_params(t->m);
    for (size_t i = 0; t->w_part && i < np; i++) {
        if (t->w_part[i]) be->free(be, t->w_part[i]);
        if (t->w_counts) free(t->w_counts[i]);
    }
    for (int k = 0; k < 5; k++) {
        if (t->wbuf[k]) be->free(be, t->wbuf[k]);
        free(t->wreq[k]);
        free(t->q4req[k]);
    }
    for (size_t i = 0; t->q4c && i < np; i++) free(t->q4c[i]);
    free(t->q4c);
    free(t->wsh);
    free(t->w_off);
    free(t->w_len);
    free(t->w_boff);
    free(t->w_counts);
    free(t->w_part);
    free(t->wstage);
    lt_optim_free(t->opt);
    if (t->cross) t->cross->destroy(t->cross);
    if (t->sc && t->sc != t->comm) t->sc->destroy(t->sc);
    free(t->counts);
    free(t->ranges);
    free(t->nranges);
    free(t->range0);
    free(t->hbuf);
    free(t->hb16);
    free(t);
}

lt_optim *lt_trainer_optim(lt_trainer *t) { return t->opt; }

void lt_trainer_set_dropout_rng(lt_trainer *t, lt_rng *base) { t->drop_rng = base; }

void lt_trainer_set_shard_group(lt_trainer *t, int n) { t->shard_group = n > 0 ? n : 0; }

void lt_trainer_set_overlap(lt_trainer *t, int on) { t->overlap = on ? 1 : 0; }

int lt_trainer_overlap(const lt_trainer *t) { return t->overlap != 0; }

/* ---- gradient reductions, launched per group by the model's hook ---- */

/* counts[r] = elements of flat [a, b) in rank r's ZeRO-1 range */
static void range_counts(lt_trainer *t, size_t a, size_t b) {
    for (int r = 0; r < t->sc->world; r++) {
        size_t r0, rl;
        lt_optim_flat_shard(t->opt, r, t->sc->world, &r0, &rl);
        size_t x = a > r0 ? a : r0, y = b < r0 + rl ? b : r0 + rl;
        t->counts[r] = y > x ? y - x : 0;
    }
}

/* this rank's part of [a, b) in the accumulator (ZeRO-1) */
static float *acc_part(lt_trainer *t, size_t a) { return t->acc + (a > t->s0 ? a - t->s0 : 0); }

/* ---- hybrid chains in flight (ZeRO-1/2/3 with --shard-group, see
 * reduce_scatter_sum_ordered_chain_start in lt_comm.h): they move only
 * when polled, so every wait here polls all of them first. A chain's
 * result comes only from wait_req (test_req may never report LT_REQ_DONE
 * before it: NCCL delivers results at fixed program points), and every
 * wait_req is called in start order at a point that depends only on the
 * counts and ranges of the reductions, never on timing, so every rank
 * calls it at the same place. MPI: wait_req polls that chain only, which
 * is safe oldest first (a chain's progress depends only on older ones). */

/* poll every chain once (test_req; nothing is completed here). *state:
 * the state of entry `target` (an index from rq_head; completed:
 * LT_REQ_INPUT_FREE | LT_REQ_DONE). */
static lt_status chains_poll(lt_trainer *t, size_t target, int *state, lt_err *err) {
    lt_comm *sc = t->sc;
    *state = LT_REQ_INPUT_FREE | LT_REQ_DONE;
    for (size_t q = t->rq_head; q < t->rq_tail; q++) {
        int s = 0;
        lt_status st = sc->test_req(sc, t->rq[q % t->rq_cap], &s, err);
        if (st) return lt_wrap(err, st, "gradient reduction (hybrid)");
        if (s & LT_REQ_INPUT_FREE) t->rq_buf[q % t->rq_cap] = -1;
        if (q == target) *state = s;
    }
    return LT_OK;
}

/* want LT_REQ_DONE: complete entries rq_head .. target with wait_req, in
 * start order (their results written into the accumulator), after one poll
 * of all; want LT_REQ_INPUT_FREE: poll until entry `target` reports it */
static lt_status chains_until(lt_trainer *t, size_t target, int want, lt_err *err) {
    int s;
    lt_status st = chains_poll(t, target, &s, err);
    if (want & LT_REQ_DONE) {
        while (!st && t->rq_head <= target && t->rq_head < t->rq_tail) {
            size_t q = t->rq_head++ % t->rq_cap;
            st = t->sc->wait_req(t->sc, t->rq[q], err);
            t->rq[q] = NULL;
            t->rq_buf[q] = -1;
            if (st) st = lt_wrap(err, st, "gradient reduction (hybrid)");
        }
        return st;
    }
    double t0 = lt_now_s();
    unsigned iter = 0;
    while (!st && target >= t->rq_head && target < t->rq_tail && (s & want) != want) {
        if (lt_now_s() - t0 > t->sc->timeout_s)
            lt_comm_timeout_abort(t->sc, "gradient reduction (hybrid chain: a rank of another group)", -1);
        lt_comm_backoff(&iter);
        st = chains_poll(t, target, &s, err);
    }
    return st;
}

/* x: the gradient of flat [a, b) (in the flat buffer, or the group's pooled buffer) */
static lt_status reduce_ordered(lt_trainer *t, size_t a, size_t b, const float *x, lt_err *err) {
    lt_comm *c = t->comm;
    if (!t->zero) return c->all_reduce_sum_ordered(c, t->acc + a, x, b - a, LT_F32, err);
    range_counts(t, a, b);
    if (t->rq && t->cur_buf >= 0) { /* non-blocking: completed before the buffer is reused */
        lt_status st = LT_OK;
        for (size_t q = t->rq_head; t->cross && q < t->rq_tail && !st; q++) /* a chain on the same range: */
            if (t->rq_a[q % t->rq_cap] == a) st = chains_until(t, q, LT_REQ_DONE, err); /* its result first */
        /* each chain holds its range's pieces (b - a floats) until done: at
         * most groups + 2 in flight, enough for the pipeline's depth */
        while (t->cross && !st && t->rq_tail - t->rq_head >= (size_t)t->cross->world + 2)
            st = chains_until(t, t->rq_head, LT_REQ_DONE, err);
        if (st) return st;
        if (t->rq_tail - t->rq_head >= t->rq_cap) return lt_fail(err, LT_ERR_RANGE, "trainer: too many reductions in flight");
        size_t q = t->rq_tail % t->rq_cap;
        if (t->cross)
            st = t->sc->reduce_scatter_sum_ordered_chain_start(t->sc, t->cross, acc_part(t, a), x, b - a, t->counts,
                                                               LT_F32, &t->rq[q], err);
        else
            st = c->reduce_scatter_sum_ordered_start(c, acc_part(t, a), x, b - a, t->counts, LT_F32, &t->rq[q], err);
        if (st) return st;
        t->rq_buf[q] = t->cur_buf;
        if (t->cross) t->rq_a[q] = a;
        t->rq_tail++;
        t->n_async++;
        return LT_OK;
    }
    if (!t->cross) return c->reduce_scatter_sum_ordered(c, acc_part(t, a), x, b - a, t->counts, LT_F32, err);
    /* hybrid: the groups take turns. Group g folds its ranks' values into the
     * running shard (a reduce-scatter inside the group, starting from the
     * value after groups 0 .. g-1) and broadcasts the result to the same shard
     * in every other group, where group g+1 goes on from it. The groups are
     * consecutive ranks, so the last broadcast carries
     * fold(acc, x_0, x_1, ..., x_{W-1}) in world rank order: the same bits as
     * one flat reduce-scatter, hence as one rank. */
    float *ap = acc_part(t, a);
    size_t mine = t->counts[t->sc->rank];
    for (int g = 0; g < t->cross->world; g++) {
        lt_status st = LT_OK;
        if (g == t->cross->rank) st = t->sc->reduce_scatter_sum_ordered(t->sc, ap, x, b - a, t->counts, LT_F32, err);
        if (!st && mine) st = t->cross->broadcast(t->cross, ap, mine * sizeof(float), g, err);
        if (st) return st;
    }
    return LT_OK;
}

/* bf16: x[a, b) rounded to bf16, summed over the ranks in bf16, back to f32
 * (into x, or this rank's part of the accumulator under ZeRO-1) */
static lt_status reduce_bf16(lt_trainer *t, size_t a, size_t b, lt_err *err) {
    lt_backend *be = lt_model_backend(t->m);
    lt_comm *c = t->comm;
    size_t n = b - a;
    lt_status st = be->download_f32(be, t->hbuf, t->x + a, LT_F32, n, err);
    if (!st) st = be->sync(be, err);
    if (st) return st;
    for (size_t i = 0; i < n; i++) t->hb16[i] = lt_f32_to_bf16(t->hbuf[i]);
    if (!t->zero) {
        if ((st = c->all_reduce_sum(c, t->hb16, n, LT_BF16, err))) return st;
        for (size_t i = 0; i < n; i++) t->hbuf[i] = lt_bf16_to_f32(t->hb16[i]);
        return be->upload_f32(be, t->x + a, LT_F32, t->hbuf, n, err);
    }
    range_counts(t, a, b);
    size_t off = 0;
    for (int r = 0; r < c->rank; r++) off += t->counts[r];
    size_t mine = t->counts[c->rank]; /* (bf16 is refused with --shard-group: sc is c here) */
    if ((st = c->reduce_scatter_sum(c, t->hb16 + off, t->hb16, n, t->counts, LT_BF16, err))) return st;
    for (size_t i = 0; i < mine; i++) t->hbuf[i] = lt_bf16_to_f32(t->hb16[off + i]);
    return mine ? be->upload_f32(be, acc_part(t, a), LT_F32, t->hbuf, mine, err) : LT_OK;
}

static void reduce_group(lt_trainer *t, int group) {
    int slot = group + 2;
    if (t->hook_st || slot < 0 || slot >= t->nslots) return;
    if (t->bf16 && !t->reduce_now) return; /* bf16: once per step, in the last micro-batch's backward */
    if (t->pooled && t->nranges[slot] && !t->gcur[slot]) {
        t->hook_st = lt_fail(&t->hook_err, LT_ERR_INVALID, "gradient reduction: group %d has no buffer", group);
        return;
    }
    t->cur_buf = t->rq && !t->pooled ? XBUF : -1; /* ZeRO-1 non-blocking: the flat gradient */
    for (int k = 0; t->pooled && k < 4; k++)
        if (t->gcur[slot] && t->gcur[slot] == (k < 2 ? t->pool_edge[k] : t->pool_layer[k - 2])) t->cur_buf = k;
    for (int k = 0; k < t->nranges[slot] && !t->hook_st; k++) {
        int ri = t->range0[slot] + k;
        size_t a = t->ranges[ri][0], b = t->ranges[ri][1];
        const float *x = t->pooled ? t->gcur[slot] + t->goff[ri] : t->x + a;
        lt_status st = t->bf16 ? reduce_bf16(t, a, b, &t->hook_err) : reduce_ordered(t, a, b, x, &t->hook_err);
        if (st) t->hook_st = lt_wrap(&t->hook_err, st, "gradient reduction (parameter group %d)", group);
    }
}

static void hook(void *ctx, int group) {
    lt_trainer *t = ctx;
    int s;
    if (t->cross && t->rq && !t->hook_st && (t->hook_st = chains_poll(t, t->rq_head, &s, &t->hook_err)))
        return; /* (the chains move) */
    reduce_group(t, group);
    int slot = group + 2;
    if (t->pooled && slot >= 0 && slot < t->nslots) t->gcur[slot] = NULL; /* the buffer is free again */
}

/* complete the reductions in flight, oldest first: all of them (buf < 0) or
 * up to the last one reading buffer buf (pool 0-3, XBUF; hybrid chains:
 * until those have sent their pieces) */
static lt_status reductions_finish(lt_trainer *t, int buf, lt_err *err) {
    if (t->cross) { /* chains: the buffer is free once its pieces left; all: every result in */
        if (buf < 0) return t->rq_tail > t->rq_head ? chains_until(t, t->rq_tail - 1, LT_REQ_DONE, err) : LT_OK;
        int s;
        lt_status st = chains_poll(t, t->rq_head, &s, err); /* (the hand-out moves them too) */
        for (size_t q = t->rq_head; q < t->rq_tail && !st; q++)
            if (t->rq_buf[q % t->rq_cap] == buf) st = chains_until(t, q, LT_REQ_INPUT_FREE, err);
        return st;
    }
    size_t last = t->rq_head;
    int any = 0;
    for (size_t q = t->rq_head; q < t->rq_tail; q++)
        if (buf < 0 || t->rq_buf[q % t->rq_cap] == buf) last = q, any = 1;
    lt_status st = LT_OK;
    while (any && t->rq_head <= last) {
        size_t q = t->rq_head++ % t->rq_cap;
        lt_status s2 = t->comm->wait_req(t->comm, t->rq[q], err);
        t->rq[q] = NULL;
        if (s2 && !st) st = lt_wrap(err, s2, "gradient reduction");
    }
    return st;
}

/* ZeRO-2: the model's gradient buffer for a group, from the pool (zeroed).
 * The head and embedding groups have their own buffers (the tied head's
 * gradient is written from the forward to the end of the backward); the
 * layers alternate between two buffers: the one being produced and the
 * one whose reduction may still be in flight. */
static float *provide(void *ctx, int group, size_t n) {
    lt_trainer *t = ctx;
    int slot = group + 2;
    if (slot < 0 || slot >= t->nslots) return NULL;
    int k = group == LT_GRAD_GROUP_HEAD ? 0 : group == LT_GRAD_GROUP_EMBED ? 1 : 2 + (t->pool_next++ & 1);
    if (t->rq && reductions_finish(t, k, &t->hook_err)) { /* its reduction still reads it */
        if (!t->hook_st) t->hook_st = LT_ERR_BACKEND;
        return NULL;
    }
    float *buf = k < 2 ? t->pool_edge[k] : t->pool_layer[k - 2];
    if (!buf || n > t->pool_n[k]) return NULL;
    lt_backend *be = lt_model_backend(t->m);
    be->zero(be, buf, n * sizeof(float));
    t->gcur[slot] = buf;
    return buf;
}

/* ---- ZeRO-3: sharded weights ---- */

static int wslot(int group) { return group == LT_GRAD_GROUP_EMBED ? 0 : group == LT_GRAD_GROUP_HEAD ? 1 : 2 + group % 3; }

/* the model's weight provider (lt_model_shard_weights): acquire = all-gather
 * the group's parts into its slot, unless the slot still holds that group
 * since the last optimizer step; release keeps it (the slot is reused by
 * another group: layers l, l+1, l+2 never share one) */
/* finish the prefetch gathers in flight into slot k */
static lt_status q4_finish(lt_trainer *t, int k);
static lt_status q4_provide(lt_trainer *t, size_t i, int k, char *region, int hint, int fresh);
static lt_status q4_shard(lt_trainer *t, size_t i, size_t *gbytes, lt_err *err);

static lt_status wfinish(lt_trainer *t, int k) {
    lt_status st = t->wpending[k] ? q4_finish(t, k) : LT_OK;
    size_t np = lt_model_num_params(t->m);
    for (size_t i = 0; t->wpending[k] && i < np; i++)
        if (t->wreq[k][i]) {
            lt_status s2 = t->sc->wait_req(t->sc, t->wreq[k][i], &t->w_err);
            t->wreq[k][i] = NULL;
            if (s2 && !st) st = lt_wrap(&t->w_err, s2, "ZeRO-3: prefetch of group %d", t->wheld[k]);
        }
    if (t->wpending[k] && !st) t->wvalid[k] = 1;
    t->wpending[k] = 0;
    return st;
}

static lt_status wprovide(void *ctx, int group, int acquire) {
    lt_trainer *t = ctx;
    if (!acquire) return LT_OK;
    lt_model *m = t->m;
    lt_backend *be = lt_model_backend(m);
    int k = wslot(group), hint = acquire == 2;
    if (hint && (!t->sc->all_gather_start || !t->overlap)) return LT_OK; /* no prefetch: at acquire time */
    lt_status st = LT_OK;
    if (t->wpending[k]) { /* a prefetch into this slot: the one wanted, or one to finish before reuse */
        int same = t->wheld[k] == group;
        if ((st = wfinish(t, k))) return st;
        if (!same) t->wvalid[k] = 0;
    }
    int fresh = t->wheld[k] == group && t->wvalid[k];
    if (hint && fresh) return LT_OK;
    if (hint && !t->wreq[k] && !(t->wreq[k] = calloc(lt_model_num_params(m) + 1, sizeof(void *))))
        return lt_fail(&t->w_err, LT_ERR_NOMEM, "ZeRO-3: out of memory");
    for (size_t i = 0; i < lt_model_num_params(m) && !st; i++) {
        if (!t->wsh[i] || lt_model_grad_group(m, i) != group) continue;
        lt_param *p = lt_model_param(m, i);
        size_t es = lt_dtype_size(p->dtype);
        char *region = (char *)t->wbuf[k] + t->w_boff[i];
        if (t->q4c && t->q4c[i]) { /* QLoRA: an NF4 weight's bytes */
            st = q4_provide(t, i, k, region, hint, fresh);
            continue;
        }
        if (!hint) p->data = region;
        if (fresh) continue;
        /* this rank's part into its place (on the device, in order with the
         * ops: the gather queued behind it reads it), then every rank's */
        be->copy(be, region + t->w_off[i] * es, t->w_part[i], t->w_len[i] * es);
        if (!st && hint) st = t->sc->all_gather_start(t->sc, region, p->numel, t->w_counts[i], p->dtype,
                                                     &t->wreq[k][i], &t->w_err);
        else if (!st) st = t->sc->all_gather(t->sc, region, p->numel, t->w_counts[i], p->dtype, &t->w_err);
        if (st) lt_wrap(&t->w_err, st, "ZeRO-3: gathering '%s'", p->name);
    }
    t->wheld[k] = st ? INT32_MIN : group;
    if (!st && !fresh) *(hint ? &t->n_prefetch : &t->n_gather) += 1;
    t->wvalid[k] = !st && !hint;
    t->wpending[k] = !st && hint;
    return st;
}

/* ---- ZeRO-3 with NF4 (QLoRA): a quantized weight in parts of whole blocks ----
 * Rank r owns the blocks lt_comm_shard(nblocks, r, world) of each NF4 weight
 * and their bytes: three ranges of the buffer (lt_nf4_part_of: packed codes,
 * absmax codes, the nested absmax2 that start in them; the last rank the
 * padding and the offset too), gathered by three all-gathers of bytes into
 * the group's buffer, which then holds the unsharded quantization's bytes. */

/* rank r's three byte ranges of an NF4 weight of n elements */
static lt_nf4_part q4_part(size_t n, int r, int world) {
    size_t b0, bl;
    lt_comm_shard(lt_nf4_layout_of(n).nblocks, r, world, &b0, &bl);
    return lt_nf4_part_of(n, b0, b0 + bl, r == world - 1);
}

/* this rank's blocks of weight i (elements [b0 * 64, b1 * 64) clipped to n),
 * quantized into h (lt_nf4_part bytes): the values read from the file range
 * (a deferred load: lt_model_load_range, rounded to the param dtype as a
 * whole load is), every block's absmax gathered from every rank (the offset
 * and the nested absmax2 of the double quantization need them all), then
 * lt_nf4_quantize_part -- the bytes one process's lt_nf4_quantize writes */
static lt_status q4_quantize_part(lt_trainer *t, size_t i, unsigned char *h, lt_err *err) {
    lt_model *m = t->m;
    lt_backend *be = lt_model_backend(m);
    lt_comm *sc = t->sc;
    lt_param *p = lt_model_param(m, i);
    size_t n = p->numel, nb = lt_nf4_layout_of(n).nblocks, b0, bl;
    lt_comm_shard(nb, sc->rank, sc->world, &b0, &bl);
    size_t e0 = b0 * LT_NF4_BLOCK, e1 = (b0 + bl) * LT_NF4_BLOCK < n ? (b0 + bl) * LT_NF4_BLOCK : n;
    size_t len = e1 > e0 ? e1 - e0 : 0;
    float *w = malloc((len ? len : 1) * sizeof *w), *absmax = malloc(nb * sizeof *absmax);
    size_t *cnt = calloc((size_t)sc->world, sizeof *cnt);
    void *dev = NULL;
    lt_status st = !w || !absmax || !cnt ? lt_fail(err, LT_ERR_NOMEM, "out of memory for %zu elements", len) : LT_OK;
    if (!st && len && !(st = be->alloc(be, len * lt_dtype_size(p->dtype), &dev, err)) &&
        !(st = lt_model_load_range(m, i, e0, len, dev, err)) &&
        !(st = be->download_f32(be, w, dev, p->dtype, len, err)))
        st = be->sync(be, err);
    if (dev) be->free(be, dev);
    if (!st) {
        lt_nf4_block_absmax(w, n, b0, b0 + bl, absmax + b0);
        for (int r = 0; r < sc->world; r++) {
            size_t o;
            lt_comm_shard(nb, r, sc->world, &o, &cnt[r]);
        }
        st = sc->all_gather(sc, absmax, nb, cnt, LT_F32, err);
    }
    if (!st) st = lt_nf4_quantize_part(w, n, b0, b0 + bl, sc->rank == sc->world - 1, absmax, h, err);
    free(w);
    free(absmax);
    free(cnt);
    return st;
}

/* shard_weights for NF4 weight i: its place in the group's buffer (*gbytes:
 * the group's size so far), every rank's counts, this rank's part in backend
 * memory -- cut from the quantized buffer the model holds, or quantized here
 * (a deferred load: the whole weight never on this rank) */
static lt_status q4_shard(lt_trainer *t, size_t i, size_t *gbytes, lt_err *err) {
    lt_model *m = t->m;
    lt_backend *be = lt_model_backend(m);
    lt_comm *sc = t->sc;
    lt_param *p = lt_model_param(m, i);
    size_t np = lt_model_num_params(m), W = (size_t)sc->world;
    void *whole = *lt_model_nf4_slot(m, i);
    if (!t->q4c && !(t->q4c = calloc(np, sizeof *t->q4c))) return lt_fail(err, LT_ERR_NOMEM, "trainer: out of memory");
    if (!(t->q4c[i] = calloc(3 * W, sizeof(size_t)))) return lt_fail(err, LT_ERR_NOMEM, "trainer: out of memory");
    for (int r = 0; r < sc->world; r++) {
        lt_nf4_part Q = q4_part(p->numel, r, sc->world);
        for (int j = 0; j < 3; j++) t->q4c[i][(size_t)j * W + (size_t)r] = Q.len[j];
    }
    lt_nf4_part P = q4_part(p->numel, sc->rank, sc->world);
    t->w_boff[i] = *gbytes;
    *gbytes += (lt_nf4_layout_of(p->numel).bytes + 255) / 256 * 256;
    t->w_len[i] = P.bytes;
    if (P.bytes > t->wstage_bytes) {
        unsigned char *h = realloc(t->wstage, P.bytes);
        if (!h) return lt_fail(err, LT_ERR_NOMEM, "trainer: out of memory");
        t->wstage = h;
        t->wstage_bytes = P.bytes;
    }
    lt_status st = LT_OK;
    if (whole) { /* quantized whole already (the model was loaded whole): this rank's three ranges */
        for (size_t j = 0, at = 0; j < 3 && !st; at += P.len[j], j++)
            if (P.len[j]) st = be->download(be, t->wstage + at, (char *)whole + P.off[j], P.len[j], err);
        if (!st) st = be->sync(be, err);
    } else {
        st = q4_quantize_part(t, i, t->wstage, err);
    }
    if (!st) st = be->alloc(be, P.bytes ? P.bytes : 1, &t->w_part[i], err);
    if (!st && P.bytes) st = be->upload(be, t->w_part[i], t->wstage, P.bytes, err);
    return st ? lt_wrap(err, st, "ZeRO-3: the NF4 part of '%s'", p->name) : LT_OK;
}

/* wprovide for NF4 weight i into slot k: the model reads it from region
 * (lt_model_nf4_slot); this rank's ranges into place (be->copy), then the three gathers
 * (started non-blocking for a prefetch hint, completed by q4_finish) */
static lt_status q4_provide(lt_trainer *t, size_t i, int k, char *region, int hint, int fresh) {
    lt_model *m = t->m;
    lt_backend *be = lt_model_backend(m);
    lt_comm *sc = t->sc;
    lt_param *p = lt_model_param(m, i);
    size_t W = (size_t)sc->world;
    if (!hint) *lt_model_nf4_slot(m, i) = region;
    if (fresh) return LT_OK;
    lt_nf4_layout L = lt_nf4_layout_of(p->numel);
    lt_nf4_part P = q4_part(p->numel, sc->rank, sc->world);
    size_t base[4] = {0, L.off_absq, L.off_absmax2, L.bytes};
    lt_status st = LT_OK;
    if (hint && !t->q4req[k] && !(t->q4req[k] = calloc(3 * lt_model_num_params(m), sizeof(void *))))
        return lt_fail(&t->w_err, LT_ERR_NOMEM, "ZeRO-3: out of memory");
    for (size_t j = 0, at = 0; j < 3; at += P.len[j], j++) /* on the device, in order with the gathers */
        be->copy(be, region + P.off[j], (char *)t->w_part[i] + at, P.len[j]);
    for (int j = 0; j < 3 && !st; j++) {
        char *buf = region + base[j];
        size_t nbytes = base[j + 1] - base[j], *cnt = t->q4c[i] + (size_t)j * W;
        st = hint ? sc->all_gather_start(sc, buf, nbytes, cnt, LT_U8, &t->q4req[k][3 * i + (size_t)j], &t->w_err)
                  : sc->all_gather(sc, buf, nbytes, cnt, LT_U8, &t->w_err);
    }
    return st ? lt_wrap(&t->w_err, st, "ZeRO-3: gathering the NF4 bytes of '%s'", p->name) : LT_OK;
}

/* complete slot k's NF4 prefetch gathers */
static lt_status q4_finish(lt_trainer *t, int k) {
    lt_status st = LT_OK;
    size_t nr = t->q4req[k] ? 3 * lt_model_num_params(t->m) : 0;
    for (size_t j = 0; j < nr; j++)
        if (t->q4req[k][j]) {
            lt_status s2 = t->sc->wait_req(t->sc, t->q4req[k][j], &t->w_err);
            t->q4req[k][j] = NULL;
            if (s2 && !st)
                st = lt_wrap(&t->w_err, s2, "ZeRO-3: prefetch of the NF4 bytes of '%s'",
                             lt_model_param(t->m, j / 3)->name);
        }
    return st;
}

lt_status lt_trainer_gather_tables(lt_trainer *t, lt_err *err) {
    if (!t->z3) return LT_OK;
    static const int groups[2] = {LT_GRAD_GROUP_EMBED, LT_GRAD_GROUP_HEAD};
    for (int k = 0; k < 2; k++) { /* the groups of trainable sharded tensors (the same on every rank) */
        int any = 0;
        for (size_t i = 0; i < lt_model_num_params(t->m) && !any; i++)
            any = t->wsh[i] && lt_model_param(t->m, i)->trainable && lt_model_grad_group(t->m, i) == groups[k];
        lt_status st = any ? wprovide(t, groups[k], 1) : LT_OK;
        if (st) {
            if (err) *err = t->w_err;
            return st;
        }
    }
    return LT_OK;
}

/* ZeRO-3: keep this rank's part of every parameter but the LoRA matrices
 * (trainable ones: the optimizer's part; frozen ones: the canonical split),
 * the group buffers, and hand the weights to the model */
static lt_status shard_weights(lt_trainer *t, lt_err *err) {
    lt_model *m = t->m;
    lt_backend *be = lt_model_backend(m);
    size_t np = lt_model_num_params(m);
    lt_comm *sc = t->sc;
    t->wsh = calloc(np ? np : 1, 1);
    t->w_off = calloc(np + 1, sizeof *t->w_off);
    t->w_len = calloc(np + 1, sizeof *t->w_len);
    t->w_boff = calloc(np + 1, sizeof *t->w_boff);
    t->w_counts = calloc(np + 1, sizeof *t->w_counts);
    t->w_part = calloc(np + 1, sizeof *t->w_part);
    if (!t->wsh || !t->w_off || !t->w_len || !t->w_boff || !t->w_counts || !t->w_part)
        return lt_fail(err, LT_ERR_NOMEM, "trainer: out of memory");
    int L = lt_model_config(m)->num_layers;
    size_t *gbytes = calloc((size_t)L + 2, sizeof *gbytes), k_opt = 0;
    if (!gbytes) return lt_fail(err, LT_ERR_NOMEM, "trainer: out of memory");
    lt_status st = LT_OK;
    for (size_t i = 0; i < np && !st; i++) {
        lt_param *p = lt_model_param(m, i);
        size_t es = lt_dtype_size(p->dtype);
        int opt_i = p->trainable ? (int)k_opt++ : -1;
        if (lt_trainer_is_lora_param(p->name)) continue; /* small: whole on every rank (ZeRO-1 for them) */
        t->wsh[i] = 1;
        int g = lt_model_grad_group(m, i) + 2;
        if (lt_model_nf4_slot(m, i)) { /* QLoRA: an NF4 weight, in parts of whole blocks */
            st = q4_shard(t, i, &gbytes[g], err);
            continue;
        }
        t->w_boff[i] = gbytes[g];
        gbytes[g] += (p->numel * es + 255) / 256 * 256;
        if (!(t->w_counts[i] = calloc((size_t)sc->world, sizeof(size_t)))) {
            st = lt_fail(err, LT_ERR_NOMEM, "trainer: out of memory");
            break;
        }
        size_t flat = opt_i >= 0 ? lt_optim_flat_offset(t->opt, (size_t)opt_i) : 0;
        for (int r = 0; r < sc->world; r++) {
            size_t o0, ol;
            if (opt_i >= 0) { /* the optimizer's part: its flat range within this tensor */
                size_t r0, rl;
                lt_optim_flat_shard(t->opt, r, sc->world, &r0, &rl);
                size_t a = flat > r0 ? flat : r0, b = flat + p->numel < r0 + rl ? flat + p->numel : r0 + rl;
                o0 = b > a ? a - flat : 0;
                ol = b > a ? b - a : 0;
            } else {
                lt_comm_shard(p->numel, r, sc->world, &o0, &ol);
            }
            t->w_counts[i][r] = ol;
            if (r == sc->rank) t->w_off[i] = o0, t->w_len[i] = ol;
        }
        size_t bytes = t->w_len[i] * es;
        if (bytes > t->wstage_bytes) {
            unsigned char *h = realloc(t->wstage, bytes);
            if (!h) {
                st = lt_fail(err, LT_ERR_NOMEM, "trainer: out of memory");
                break;
            }
            t->wstage = h;
            t->wstage_bytes = bytes;
        }
        if ((st = be->alloc(be, bytes ? bytes : 1, &t->w_part[i], err))) break;
        if (bytes && !p->data) /* a deferred load: the part straight from the file */
            st = lt_model_load_range(m, i, t->w_off[i], t->w_len[i], t->w_part[i], err);
        else if (bytes && !(st = be->download(be, t->wstage, (char *)p->data + t->w_off[i] * es, bytes, err)) &&
                 !(st = be->sync(be, err)))
            st = be->upload(be, t->w_part[i], t->wstage, bytes, err);
        if (!st && opt_i >= 0) st = lt_optim_set_param_part(t->opt, (size_t)opt_i, t->w_part[i], err);
        if (st) lt_wrap(err, st, "ZeRO-3: the part of '%s'", p->name);
    }
    if (!st) {
        size_t mx = 0;
        for (int l = 0; l < L; l++) mx = gbytes[l + 2] > mx ? gbytes[l + 2] : mx;
        t->wbuf_bytes[0] = gbytes[LT_GRAD_GROUP_EMBED + 2];
        t->wbuf_bytes[1] = gbytes[LT_GRAD_GROUP_HEAD + 2];
        t->wbuf_bytes[2] = t->wbuf_bytes[3] = t->wbuf_bytes[4] = mx;
        for (int k = 0; k < 5 && !st; k++) {
            t->wheld[k] = INT32_MIN;
            if (t->wbuf_bytes[k]) st = be->alloc(be, t->wbuf_bytes[k], &t->wbuf[k], err);
        }
        if (st) lt_wrap(err, st, "ZeRO-3: the gathered weights' buffers");
    }
    free(gbytes);
    if (!st) st = be->sync(be, err);
    if (!st) st = lt_model_shard_weights(m, t->wsh, wprovide, t, err);
    return st;
}

/* ZeRO-2: the pool's buffers, sized for the groups */
static lt_status pool_alloc(lt_trainer *t, lt_err *err) {
    lt_model *m = t->m;
    lt_backend *be = lt_model_backend(m);
    int L = lt_model_config(m)->num_layers;
    t->pool_n[0] = lt_model_group_grad_numel(m, LT_GRAD_GROUP_HEAD);
    t->pool_n[1] = lt_model_group_grad_numel(m, LT_GRAD_GROUP_EMBED);
    size_t mx = 0;
    for (int l = 0; l < L; l++) {
        size_t n = lt_model_group_grad_numel(m, l);
        if (n > mx) mx = n;
    }
    t->pool_n[2] = t->pool_n[3] = mx;
    for (int k = 0; k < 4; k++) {
        float **p = k < 2 ? &t->pool_edge[k] : &t->pool_layer[k - 2];
        if (!t->pool_n[k]) continue;
        lt_status st = be->alloc(be, t->pool_n[k] * sizeof(float), (void **)p, err);
        if (st) return lt_wrap(err, st, "trainer: gradient pool (%zu floats)", t->pool_n[k]);
    }
    return LT_OK;
}

int64_t lt_trainer_async_reductions(const lt_trainer *t) { return t->n_async; }

void lt_trainer_gathers(const lt_trainer *t, int64_t *prefetched, int64_t *at_use) {
    *prefetched = t->n_prefetch;
    *at_use = t->n_gather;
}

void lt_trainer_memory(const lt_trainer *t, lt_trainer_mem *out) {
    memset(out, 0, sizeof *out);
    lt_model *m = t->m;
    for (size_t i = 0; i < lt_model_num_params(m); i++) {
        const lt_param *p = lt_model_param(m, i);
        void **q4 = lt_model_nf4_slot(m, i);
        if (t->wsh && t->wsh[i]) /* ZeRO-3: the part (NF4: w_len in bytes) */
            out->params += t->w_len[i] * (t->q4c && t->q4c[i] ? 1 : lt_dtype_size(p->dtype));
        else if (p->data) out->params += p->numel * lt_dtype_size(p->dtype);
        else if (q4 && *q4) out->params += lt_nf4_layout_of(p->numel).bytes; /* QLoRA, whole: the NF4 buffer */
    }
    for (int k = 0; k < 5; k++) out->params_gathered += t->wbuf_bytes[k]; /* ZeRO-3: the gathered groups */
    out->grad_buffers = (t->pooled ? t->pool_n[0] + t->pool_n[1] + t->pool_n[2] + t->pool_n[3]
                                   : lt_model_grads_flat(m, NULL) ? t->n : 0) * sizeof(float);
    out->grad_acc = t->own_acc ? t->sl * sizeof(float) : 0;
    out->optim = lt_optim_state_bytes(t->opt);
}

lt_status lt_trainer_distribute(lt_trainer *t, lt_comm *c, int zero, lt_dtype reduce_dtype, lt_err *err) {
    if (t->comm) return lt_fail(err, LT_ERR_INVALID, "trainer: already distributed");
    if (!c) return LT_OK;
    if (reduce_dtype != LT_F32 && reduce_dtype != LT_BF16)
        return lt_fail(err, LT_ERR_INVALID, "trainer: gradient reduction dtype %s (f32 or bf16)",
                       lt_dtype_name(reduce_dtype));
    if (zero < 0 || zero > 3)
        return lt_fail(err, LT_ERR_UNSUPPORTED, "trainer: --zero %d (0, 1, 2 or 3)", zero);
    if (zero >= 2 && reduce_dtype == LT_BF16)
        return lt_fail(err, LT_ERR_UNSUPPORTED,
                       "trainer: --zero %d with --grad-reduce-dtype bf16 (bf16 accumulates the micro-batches in a "
                       "full-size gradient, which ZeRO-2 does not keep; use f32)", zero);
    if (t->overlap < 0) { /* not set by lt_trainer_set_overlap: LT_OVERLAP, default on */
        const char *ov = getenv("LT_OVERLAP");
        if (!ov || !*ov || !strcmp(ov, "1")) t->overlap = 1;
        else if (!strcmp(ov, "0")) t->overlap = 0;
        else return lt_fail(err, LT_ERR_INVALID, "trainer: LT_OVERLAP='%s' (0: blocking collectives, 1: overlapped)", ov);
    }
    lt_backend *be = lt_model_backend(t->m);
    t->comm = c;
    t->stage = zero;
    t->zero = zero ? 1 : 0;
    t->bf16 = reduce_dtype == LT_BF16;
    lt_status st;
    if (zero >= 2) { /* no flat gradient: the pool below */
        if ((st = lt_model_pool_grads(t->m, err))) return st;
        t->pooled = 1;
        t->x = NULL;
    }
    t->sc = c;
    if (t->shard_group > 0 && t->shard_group != c->world) { /* HYBRID_SHARD */
        int n = t->shard_group;
        if (!zero)
            return lt_fail(err, LT_ERR_INVALID, "trainer: --shard-group %d needs --zero 1 or 2 (it shards their state)", n);
        if (c->world % n)
            return lt_fail(err, LT_ERR_INVALID,
                           "trainer: --shard-group %d does not divide the world size %d (groups of N consecutive ranks)",
                           n, c->world);
        if (reduce_dtype != LT_F32)
            return lt_fail(err, LT_ERR_UNSUPPORTED, "trainer: --shard-group with --grad-reduce-dtype bf16 (f32 only)");
        if (!c->split) return lt_fail(err, LT_ERR_UNSUPPORTED, "trainer: communicator '%s' cannot split", c->name);
        lt_status sst = c->split(c, c->rank / n, c->rank, &t->sc, err);
        if (!sst) sst = c->split(c, c->rank % n, c->rank, &t->cross, err);
        if (sst) {
            if (!t->sc) t->sc = c;
            return lt_wrap(err, sst, "trainer: --shard-group %d", n);
        }
    }
    t->counts = calloc((size_t)t->sc->world, sizeof *t->counts);
    if (!t->counts) return lt_fail(err, LT_ERR_NOMEM, "trainer: out of memory");
    /* the accumulator: the whole vector, or this rank's shard */
    t->s0 = 0;
    t->sl = t->n;
    if (t->zero) lt_optim_flat_shard(t->opt, t->sc->rank, t->sc->world, &t->s0, &t->sl);
    if (t->zero || !t->bf16) { /* bf16 without ZeRO: reduced in place in x */
        size_t bytes = (t->sl ? t->sl : 1) * sizeof(float);
        if ((st = be->alloc(be, bytes, (void **)&t->acc, err)))
            return lt_wrap(err, st, "trainer: gradient accumulator (%zu floats)", t->sl);
        be->zero(be, t->acc, bytes);
        t->own_acc = 1;
    } else {
        t->acc = t->x;
    }
    if (t->bf16) {
        t->hbuf = malloc((t->n ? t->n : 1) * sizeof *t->hbuf);
        t->hb16 = malloc((t->n ? t->n : 1) * sizeof *t->hb16);
        if (!t->hbuf || !t->hb16) return lt_fail(err, LT_ERR_NOMEM, "trainer: out of memory for bf16 staging");
    }
    if ((st = lt_optim_distribute(t->opt, t->sc, t->zero, t->acc, err))) return st;
    /* flat ranges of every group, in parameter order */
    lt_model *m = t->m;
    int L = lt_model_config(m)->num_layers;
    t->nslots = L + 2;
    size_t np = lt_model_num_params(m);
    t->ranges = calloc(np + 1, sizeof *t->ranges);
    t->nranges = calloc((size_t)t->nslots, sizeof *t->nranges);
    t->range0 = calloc((size_t)t->nslots, sizeof *t->range0);
    t->goff = calloc(np + 1, sizeof *t->goff);
    t->gcur = calloc((size_t)t->nslots, sizeof *t->gcur);
    if (!t->ranges || !t->nranges || !t->range0 || !t->goff || !t->gcur)
        return lt_fail(err, LT_ERR_NOMEM, "trainer: out of memory");
    int nr = 0;
    for (int slot = 0; slot < t->nslots; slot++) {
        t->range0[slot] = nr;
        size_t off = 0, goff = 0; /* flat offset; offset in the group's own buffer */
        for (size_t i = 0; i < np; i++) {
            lt_param *p = lt_model_param(m, i);
            if (!p->trainable) continue;
            if (lt_model_grad_group(m, i) + 2 == slot) {
                if (t->nranges[slot] && t->ranges[nr - 1][1] == off) {
                    t->ranges[nr - 1][1] = off + p->numel;
                } else {
                    t->ranges[nr][0] = off;
                    t->ranges[nr][1] = off + p->numel;
                    t->goff[nr] = goff;
                    nr++;
                    t->nranges[slot]++;
                }
                goff += p->numel;
            }
            off += p->numel;
        }
    }
    if (t->pooled) {
        if ((st = pool_alloc(t, err))) return st;
        lt_model_set_grad_provider(m, provide, t);
    }
    /* non-blocking reductions (f32 ZeRO; bf16 reduces blocking, once per step) */
    int nb = t->cross ? t->sc->reduce_scatter_sum_ordered_chain_start && t->sc->test_req && t->sc->wait_req
                      : c->reduce_scatter_sum_ordered_start && c->wait_req;
    if (t->overlap && nb && t->zero && !t->bf16) {
        t->rq_cap = 4 * (np + 8);
        t->rq = calloc(t->rq_cap, sizeof *t->rq);
        t->rq_buf = calloc(t->rq_cap, sizeof *t->rq_buf);
        t->rq_a = calloc(t->rq_cap, sizeof *t->rq_a);
        if (!t->rq || !t->rq_buf || !t->rq_a) return lt_fail(err, LT_ERR_NOMEM, "trainer: out of memory");
    }
    if (zero >= 3) {
        t->z3 = 1;
        if ((st = shard_weights(t, err))) return st;
    }
    lt_model_set_grad_hook(m, hook, t);
    return LT_OK;
}

static int64_t count_targets(const lt_batch *b) {
    int64_t n = 0;
    for (size_t i = 0; i < (size_t)b->B * b->T; i++) n += b->targets[i] >= 0;
    return n;
}

/* non-padding tokens: the loader pads a sequence's tail with one-token
 * documents of id 0 that are never targets */
static int64_t count_tokens(const lt_batch *b) {
    int64_t n = 0;
    for (int s = 0; s < b->B; s++) {
        size_t row = (size_t)s * b->T;
        int last = b->T;
        while (last > 0 && b->doc_start[row + last - 1] == last - 1 && b->targets[row + last - 1] < 0 &&
               b->tokens[row + last - 1] == 0)
            last--;
        n += last;
    }
    return n;
}

/* the optimizer update after the gradients are in place; st = LT_OK or the
 * NONFINITE status of the loss */
static lt_status finish_step(lt_trainer *t, lt_status st, int64_t step, lt_train_stats *s, lt_err *err) {
    if (t->rq) { /* every reduction of the step in the accumulator */
        lt_status sr = reductions_finish(t, -1, err);
        if (sr) return lt_wrap(err, sr, "step %lld", (long long)step);
    }
    if (!st) {
        lt_optim_stats os;
        st = lt_optim_step(t->opt, &os, err);
        for (int k = 0; k < 5; k++) { /* ZeRO-3: the parts changed */
            if (t->wpending[k] && !st) st = wfinish(t, k);
            t->wvalid[k] = 0;
        }
        if (!st) {
            s->step = os.step;
            s->lr = os.lr;
            s->grad_norm = os.grad_norm;
        } else if (st == LT_ERR_NONFINITE) {
            lt_wrap(err, st, "step %lld: non-finite gradient norm (loss %g)", (long long)step, s->loss);
            s->grad_norm = NAN;
        } else {
            return lt_wrap(err, st, "step %lld", (long long)step);
        }
    }
    if (st == LT_ERR_NONFINITE) {
        lt_model_zero_grads(t->m);
        if (!t->skip_nonfinite) return st;
        if (!t->comm || t->comm->rank == 0)
            fprintf(stderr, "train: skipping step %lld: %s\n", (long long)step, err ? err->msg : "non-finite");
        s->skipped = 1;
        s->step = lt_optim_steps_done(t->opt);
    }
    return LT_OK;
}

/* NEFTune: micro-batch g of step `step` draws its noise from the stream
 * (seed, step, g): reproducible, the same after a resume (step comes from the
 * optimizer's state) and independent of the world size, like the dropout. */
static void set_neftune(lt_trainer *t, int64_t step, int64_t g) {
    if (!(t->neft_alpha > 0)) return;
    lt_rng r;
    lt_rng_seed(&r, t->neft_seed ^ 0x4e4546546e6f6973ull); /* "NEFTnois" */
    uint64_t k = lt_rng_u64(&r) ^ (0x9e3779b97f4a7c15ull * (uint64_t)step);
    lt_rng_seed(&r, k);
    k = lt_rng_u64(&r) ^ (0xd1b54a32d192ed03ull * (uint64_t)(g + 1));
    lt_rng_seed(&r, k);
    lt_model_set_neftune(t->m, t->neft_alpha, lt_rng_u64(&r));
}

void lt_trainer_set_neftune(lt_trainer *t, double alpha, uint64_t seed) {
    t->neft_alpha = alpha > 0 ? (float)alpha : 0.0f;
    t->neft_seed = seed;
    if (!(t->neft_alpha > 0)) lt_model_set_neftune(t->m, 0.0f, 0);
}

/* without a communicator: every micro-batch accumulates into the gradients */
static lt_status step_plain(lt_trainer *t, const lt_batch *micro, int n_micro, int64_t n_tgt, int64_t step,
                            lt_train_stats *s, lt_err *err) {
    lt_model_zero_grads(t->m);
    double loss_sum = 0;
    lt_status st = LT_OK;
    for (int j = 0; j < n_micro; j++) {
        lt_step_result r;
        set_neftune(t, step, j);
        lt_status sj = lt_model_step(t->m, &micro[j], 1, (double)n_tgt, &r, err);
        if (!sj) loss_sum += r.loss_sum;
        else if (sj == LT_ERR_NONFINITE) {
            loss_sum = NAN;
            if (!st) st = lt_wrap(err, sj, "step %lld, micro-batch %d", (long long)step, j + 1);
        } else {
            return lt_wrap(err, sj, "step %lld, micro-batch %d", (long long)step, j + 1);
        }
    }
    s->loss = loss_sum / (double)n_tgt;
    return finish_step(t, st, step, s, err);
}

/* with a communicator: round j = this rank's micro-batch j (global index
 * j * world + rank); see lt_trainer.h */
static lt_status step_comm(lt_trainer *t, const lt_batch *micro, int n_micro, int64_t n_tgt, int64_t step,
                           lt_train_stats *s, lt_err *err) {
    lt_comm *c = t->comm;
    lt_backend *be = lt_model_backend(t->m);
    if (t->own_acc) be->zero(be, t->acc, (t->sl ? t->sl : 1) * sizeof(float));
    if (t->bf16) lt_model_zero_grads(t->m);
    uint64_t dseed = t->drop_rng ? lt_rng_u64(t->drop_rng) : 0;
    double loss_acc = 0; /* the fold of the micro-batches' loss sums in global order */
    lt_status st = LT_OK;
    for (int j = 0; j < n_micro; j++) {
        int64_t g = (int64_t)j * c->world + c->rank;
        lt_rng drng;
        if (t->drop_rng) { /* micro-batch g's dropout stream: independent of the world size */
            lt_rng_seed(&drng, dseed ^ (0x9e3779b97f4a7c15ull * (uint64_t)(g + 1)));
            lt_model_set_rng(t->m, &drng);
        }
        /* ZeRO-1: the last micro-batch's reductions may still read x (flat:
         * all of them complete, in start order, so each range is in flight
         * once and folds into acc in order; chains: their pieces have left,
         * the same range's next chain waits for the result in reduce_ordered) */
        if (t->rq && !t->pooled) {
            lt_status sr = reductions_finish(t, XBUF, err);
            if (sr) return lt_wrap(err, sr, "step %lld", (long long)step);
        }
        if (!t->bf16) lt_model_zero_grads(t->m); /* every micro-batch's gradient into a zeroed buffer */
        t->reduce_now = j == n_micro - 1;
        t->hook_st = LT_OK;
        double lsum = 0;
        lt_status sj = LT_OK;
        if (count_tokens(&micro[j]) == 0 && !t->z3) { /* (ZeRO-3 computes it: the weight gathers are collective) */
            /* all padding (an epoch's uneven tail): gradient 0, no compute;
             * the same reductions as the hooks would launch */
            for (int k = 0; k < lt_model_num_grad_groups(t->m); k++) {
                int grp = lt_model_grad_group_at(t->m, k);
                size_t gn = t->pooled ? lt_model_group_grad_numel(t->m, grp) : 0;
                if (gn && !provide(t, grp, gn)) {
                    t->hook_st = lt_fail(&t->hook_err, LT_ERR_NOMEM, "gradient pool: no buffer for group %d", grp);
                    break;
                }
                hook(t, grp);
            }
        } else {
            lt_step_result r;
            set_neftune(t, step, g);
            sj = lt_model_step(t->m, &micro[j], 1, (double)n_tgt, &r, err);
            if (!sj) lsum = r.loss_sum;
            else if (t->z3 && t->w_err.msg[0] && sj != LT_ERR_NONFINITE && err) *err = t->w_err;
        }
        if (t->drop_rng) lt_model_set_rng(t->m, t->drop_rng);
        if (sj == LT_ERR_NONFINITE) { /* go on: the other ranks must see it too */
            lsum = NAN;
            if (!st) st = lt_wrap(err, sj, "step %lld, micro-batch %lld", (long long)step, (long long)g + 1);
        } else if (sj) {
            return lt_wrap(err, sj, "step %lld, micro-batch %lld", (long long)step, (long long)g + 1);
        }
        if (t->hook_st) {
            if (err) *err = t->hook_err;
            return lt_wrap(err, t->hook_st, "step %lld", (long long)step);
        }
        lt_status sc = c->all_reduce_sum_ordered(c, &loss_acc, &lsum, 1, LT_F64, err);
        if (sc) return lt_wrap(err, sc, "step %lld: loss reduction", (long long)step);
    }
    if (!isfinite(loss_acc) && !st)
        st = lt_fail(err, LT_ERR_NONFINITE, "step %lld: the loss is not finite on another rank", (long long)step);
    s->loss = loss_acc / (double)n_tgt;
    lt_status r = finish_step(t, st, step, s, err);
    if (st == LT_ERR_NONFINITE && t->own_acc) be->zero(be, t->acc, (t->sl ? t->sl : 1) * sizeof(float));
    return r;
}

lt_status lt_trainer_step(lt_trainer *t, const lt_batch *micro, int n_micro, lt_train_stats *stats, lt_err *err) {
    lt_train_stats s = {0};
    s.grad_norm = NAN;
    int64_t step = lt_optim_steps_done(t->opt) + 1; /* 1-based, for messages */
    /* the loss normaliser: every micro-batch's targets (all ranks), counted first */
    int64_t cnt[2] = {0, 0}; /* targets, tokens */
    for (int j = 0; j < n_micro; j++) {
        cnt[0] += count_targets(&micro[j]);
        cnt[1] += count_tokens(&micro[j]);
    }
    lt_status st = LT_OK;
    if (t->comm && t->comm->world > 1 && (st = t->comm->all_reduce_sum(t->comm, cnt, 2, LT_I64, err)))
        return lt_wrap(err, st, "step %lld: target count", (long long)step);
    int64_t n_tgt = cnt[0];
    s.tokens = cnt[1];
    s.target_tokens = n_tgt;
    s.step = lt_optim_steps_done(t->opt);
    s.lr = lt_lr_at(&lt_optim_config(t->opt)->sched, s.step);
    if (n_tgt == 0) { /* nothing to learn from: no update */
        s.skipped = 1;
        s.loss = NAN;
        s.grad_norm = NAN;
        if (stats) *stats = s;
        return LT_OK;
    }
    if (!t->comm && lt_model_grads_pooled(t->m))
        return lt_fail(err, LT_ERR_INVALID, "step %lld: pooled gradients (ZeRO-2) need lt_trainer_distribute",
                       (long long)step);
    st = t->comm ? step_comm(t, micro, n_micro, n_tgt, step, &s, err)
                 : step_plain(t, micro, n_micro, n_tgt, step, &s, err);
    if (st) return st;
    if (stats) *stats = s;
    return LT_OK;
}

/* ---------------------------------------------------------------- LoRA */

static lt_status lora_spec_of(const lt_config *c, const lt_peft_config *cfg, lt_lora_spec *spec, lt_err *err) {
    if (cfg->r <= 0) return lt_fail(err, LT_ERR_INVALID, "LoRA: rank %d must be positive", cfg->r);
    if (!cfg->targets || (cfg->targets & ~LT_LORA_ANY_TARGETS))
        return lt_fail(err, LT_ERR_INVALID, "LoRA: no (or unknown) target modules");
    if (!(cfg->dropout >= 0 && cfg->dropout < 1))
        return lt_fail(err, LT_ERR_INVALID, "LoRA: dropout %g must be in [0, 1)", cfg->dropout);
    (void)c;
    memset(spec, 0, sizeof *spec);
    spec->r = cfg->r;
    spec->scale = (float)lt_lora_scale(cfg->alpha, cfg->r, cfg->rslora);
    spec->dropout = (float)cfg->dropout;
    spec->targets = cfg->targets;
    return LT_OK;
}

lt_status lt_trainer_add_lora(lt_model *m, const lt_peft_config *cfg, lt_rng *rng, lt_err *err) {
    const lt_config *c = lt_model_config(m);
    lt_lora_spec spec;
    lt_status st = lora_spec_of(c, cfg, &spec, err);
    if (st || (st = lt_model_add_lora(m, &spec, err))) return st;
    lt_backend *be = lt_model_backend(m);
    const unsigned targets = lt_lora_targets_for(c, cfg->targets); /* fused modules (phi3): qkv, gate_up */
    for (int l = 0; l < c->num_layers; l++) {
        for (int t = 0; t < LT_LORA_NTARGETS; t++) {
            if (!(targets & (1u << t))) continue;
            int in, outf;
            lt_lora_target_dims(c, t, &in, &outf);
            char name[160];
            lt_lora_peft_name(name, sizeof name, l, t, 0);
            lt_param *A = lt_model_find_param(m, name);
            if (!A) return lt_fail(err, LT_ERR_INVALID, "LoRA: the model has no parameter '%s'", name);
            float *host = malloc((size_t)cfg->r * in * sizeof *host);
            if (!host) return lt_fail(err, LT_ERR_NOMEM, "LoRA: out of memory");
            lt_lora_init_A(host, cfg->r, in, rng);
            st = be->upload_f32(be, A->data, LT_F32, host, (size_t)cfg->r * in, err);
            free(host);
            if (st) return lt_wrap(err, st, "LoRA: '%s'", name);
        }
    }
    return be->sync(be, err);
}

lt_status lt_trainer_load_adapter(lt_model *m, const char *dir, lt_peft_config *cfg, lt_err *err) {
    lt_peft_adapter *a = NULL;
    lt_status st = lt_peft_load(dir, &a, err);
    if (st) return lt_wrap(err, st, "adapter '%s'", dir);
    const lt_config *c = lt_model_config(m);
    if ((st = lt_peft_check(a, c, err))) {
        lt_wrap(err, st, "adapter '%s'", dir);
        goto done;
    }
    *cfg = a->cfg;
    lt_lora_spec spec;
    if ((st = lora_spec_of(c, cfg, &spec, err)) || (st = lt_model_add_lora(m, &spec, err))) goto done;
    lt_backend *be = lt_model_backend(m);
    for (size_t i = 0; i < a->n; i++) {
        const lt_peft_tensor *pt = &a->t[i];
        for (int isB = 0; isB < 2; isB++) {
            char name[160];
            lt_lora_peft_name(name, sizeof name, pt->layer, pt->target, isB);
            lt_param *p = lt_model_find_param(m, name);
            size_t n = (size_t)cfg->r * (isB ? pt->out : pt->in);
            if (!p || p->numel != n) {
                st = lt_fail(err, LT_ERR_FORMAT, "adapter '%s': tensor '%s' does not fit the model", dir, name);
                goto done;
            }
            if ((st = be->upload_f32(be, p->data, LT_F32, isB ? pt->B : pt->A, n, err))) goto done;
        }
    }
    if ((st = be->sync(be, err))) goto done;
    if (a->emb.mode) { /* trained embeddings: their values, and they train on */
        if ((st = lt_model_apply_peft_embed(m, &a->emb, err)) ||
            (st = lt_model_train_embeddings(m, a->emb.mode == LT_TRAIN_EMB_NEW ? a->emb.ids : NULL,
                                            a->emb.mode == LT_TRAIN_EMB_NEW ? (size_t)a->emb.rows : 0, err)))
            goto done;
    }
done:
    lt_peft_free(a);
    return st;
}

lt_status lt_trainer_train_embeddings(lt_model *m, const char *model_dir, const char *mode, lt_err *err) {
    const lt_config *c = lt_model_config(m);
    if (c->wrap) /* refused before training, not at export (lt_peft_export_embed) */
        return lt_fail(err, LT_ERR_UNSUPPORTED,
                       "--train-embeddings %s: trained embeddings for the language model inside %s are not supported",
                       mode, c->architecture);
    if (!strcmp(mode, "all")) return lt_model_train_embeddings(m, NULL, 0, err);
    if (strcmp(mode, "new")) return lt_fail(err, LT_ERR_INVALID, "--train-embeddings: unknown mode '%s'", mode);
    int32_t *v = NULL;
    size_t n = 0;
    lt_status st = lt_vocab_record_ids(model_dir, &v, &n, err);
    if (!st) st = lt_model_train_embeddings(m, v, (size_t)n, err);
    if (st) lt_wrap(err, st, "--train-embeddings new");
    free(v);
    return st;
}

lt_status lt_trainer_export_adapter(lt_model *m, const lt_peft_config *cfg_in, const char *out_dir,
                                    lt_export_progress_fn progress, void *pctx, lt_err *err) {
    const lt_config *c = lt_model_config(m);
    lt_peft_config rc = *cfg_in; /* the modules adapted: fused ones (phi3) under PEFT's names */
    rc.targets = lt_lora_targets_for(c, cfg_in->targets);
    rc.wrap = c->wrap; /* the language model inside a multimodal class: PEFT's names for it */
    const lt_peft_config *cfg = &rc;
    lt_backend *be = lt_model_backend(m);
    size_t cap = (size_t)c->num_layers * LT_LORA_NTARGETS, n = 0;
    lt_peft_tensor *ts = calloc(cap, sizeof *ts);
    if (!ts) return lt_fail(err, LT_ERR_NOMEM, "export: out of memory");
    lt_status st = LT_OK;
    for (int l = 0; l < c->num_layers && !st; l++) {
        for (int t = 0; t < LT_LORA_NTARGETS && !st; t++) {
            if (!(cfg->targets & (1u << t))) continue;
            lt_peft_tensor *pt = &ts[n++];
            pt->layer = l;
            pt->target = t;
            lt_lora_target_dims(c, t, &pt->in, &pt->out);
            for (int isB = 0; isB < 2 && !st; isB++) {
                char name[160];
                lt_lora_peft_name(name, sizeof name, l, t, isB);
                lt_param *p = lt_model_find_param(m, name);
                size_t cnt = (size_t)cfg->r * (isB ? pt->out : pt->in);
                float *h = malloc(cnt * sizeof *h);
                if (!p || !h) {
                    free(h);
                    st = lt_fail(err, LT_ERR_INVALID, "export: no LoRA parameter '%s'", name);
                    break;
                }
                if (isB) pt->B = h;
                else pt->A = h;
                if (progress) {
                    char what[200];
                    snprintf(what, sizeof what, "reading '%s'", name);
                    if ((st = progress(pctx, what, err))) break;
                }
                st = be->download_f32(be, h, p->data, LT_F32, cnt, err);
            }
        }
    }
    if (!st) st = be->sync(be, err);
    /* trained embeddings (lt_model_train_embeddings) */
    lt_peft_embed emb;
    memset(&emb, 0, sizeof emb);
    lt_param *E = lt_model_find_param(m, "model.embed_tokens.weight");
    lt_param *H = c->tie_word_embeddings ? NULL : lt_model_find_param(m, "lm_head.weight");
    if (!st && E && E->trainable) {
        const int32_t *rows;
        size_t nr = lt_model_trained_rows(m, &rows);
        emb.mode = nr ? LT_TRAIN_EMB_NEW : LT_TRAIN_EMB_ALL;
        emb.tie = c->tie_word_embeddings;
        emb.rows = nr ? (int64_t)nr : c->vocab_size;
        emb.cols = c->hidden_size;
        emb.ids = (int32_t *)rows;
        size_t all = (size_t)c->vocab_size * (size_t)c->hidden_size;
        float *tab = malloc(all * sizeof *tab);
        emb.embed = malloc((size_t)emb.rows * (size_t)emb.cols * sizeof(float));
        emb.head = H ? malloc((size_t)emb.rows * (size_t)emb.cols * sizeof(float)) : NULL;
        if (!tab || !emb.embed || (H && !emb.head)) st = lt_fail(err, LT_ERR_NOMEM, "export: out of memory");
        for (int k = 0; k < 2 && !st; k++) {
            lt_param *p = k ? H : E;
            float *dst = k ? emb.head : emb.embed;
            if (!p) continue;
            if (progress && (st = progress(pctx, k ? "reading lm_head.weight" : "reading model.embed_tokens.weight", err)))
                break;
            if (!(st = be->download_f32(be, tab, p->data, be->param_dtype, all, err))) st = be->sync(be, err);
            for (int64_t i = 0; !st && i < emb.rows; i++)
                memcpy(dst + i * emb.cols, tab + (size_t)(nr ? rows[i] : i) * (size_t)emb.cols,
                       (size_t)emb.cols * sizeof *dst);
        }
        free(tab);
    }
    if (!st) st = lt_peft_export_embed(out_dir, cfg, ts, n, emb.mode ? &emb : NULL, progress, pctx, err);
    free(emb.embed);
    free(emb.head);
    for (size_t i = 0; i < n; i++) {
        free((void *)ts[i].A);
        free((void *)ts[i].B);
    }
    free(ts);
    return st;
}
