/* lt_backend.c -- the backend registry, choosing a backend by name, the op
 * slot check and backend options (see lt_backend.h). */
#include "lt_backend.h"

#include <stddef.h>
#include <string.h>

/* ---- registry ---- */

static lt_status cpu_create(int device, int threads, lt_backend **out, lt_err *err) {
    (void)device;
    return lt_cpu_backend_create(threads, out, err);
}

static const lt_backend_reg cpu_reg = {"cpu", cpu_create};

enum { MAX_BACKENDS = 8 };
static const lt_backend_reg *regs[MAX_BACKENDS] = {&cpu_reg};
static int nregs = 1;

lt_status lt_backend_register(const lt_backend_reg *reg, lt_err *err) {
    if (!reg || !reg->name || !reg->create)
        return lt_fail(err, LT_ERR_INVALID, "backend registry: a registration without a name or create function");
    if (lt_backend_find(reg->name)) return LT_OK;
    if (nregs == MAX_BACKENDS)
        return lt_fail(err, LT_ERR_NOMEM, "backend registry: full (%d backends) registering '%s'", MAX_BACKENDS,
                       reg->name);
    regs[nregs++] = reg;
    return LT_OK;
}

const lt_backend_reg *lt_backend_find(const char *name) {
    for (int i = 0; name && i < nregs; i++)
        if (!strcmp(regs[i]->name, name)) return regs[i];
    return NULL;
}

int lt_backend_count(void) { return nregs; }

const lt_backend_reg *lt_backend_get(int i) { return i >= 0 && i < nregs ? regs[i] : NULL; }

static void registered_names(char *buf, size_t cap) {
    size_t at = 0;
    buf[0] = '\0';
    for (int i = 0; i < nregs && at + 1 < cap; i++) {
        size_t n = strlen(regs[i]->name);
        if (at + n + 3 >= cap) break;
        if (i) memcpy(buf + at, ", ", 2), at += 2;
        memcpy(buf + at, regs[i]->name, n + 1);
        at += n;
    }
}

lt_status lt_backend_create_device(const char *name, int device, int threads, lt_backend **out, lt_err *err) {
    *out = NULL;
    if (!name || !strcmp(name, "auto")) {
        for (int i = 0; i < nregs; i++) {
            if (regs[i] == &cpu_reg) continue;
            lt_err e2;
            if (regs[i]->create(device, threads, out, &e2) == LT_OK) return LT_OK;
        }
        return lt_cpu_backend_create(threads, out, err);
    }
    const lt_backend_reg *r = lt_backend_find(name);
    if (!r) {
        char names[256];
        registered_names(names, sizeof names);
        if (!strcmp(name, "cuda"))
            return lt_fail(err, LT_ERR_UNSUPPORTED,
                           "device 'cuda': this luxtrain has no CUDA backend (built with -DLUXTRAIN_CUDA=OFF, "
                           "or the program does not link lt_backends); available: %s",
                           names);
        return lt_fail(err, LT_ERR_INVALID, "unknown device '%s' (expected auto or one of: %s)", name, names);
    }
    return r->create(device, threads, out, err);
}

lt_status lt_backend_create(const char *name, int threads, lt_backend **out, lt_err *err) {
    return lt_backend_create_device(name, 0, threads, out, err);
}

/* ---- op slots ---- */

#define SLOT(f) {#f, offsetof(lt_backend, f)}
static const struct {
    const char *name;
    size_t off;
} slots[] = {
    SLOT(alloc),          SLOT(free),          SLOT(upload_f32),    SLOT(download_f32),   SLOT(upload),
    SLOT(download),       SLOT(zero),          SLOT(sync),          SLOT(destroy),        SLOT(embedding_fwd),
    SLOT(embedding_bwd),  SLOT(matmul_fwd),    SLOT(matmul_bwd),    SLOT(rmsnorm_fwd),    SLOT(rmsnorm_bwd),
    SLOT(rope_fwd),       SLOT(rope_bwd),      SLOT(attention_fwd), SLOT(attention_bwd),  SLOT(swiglu_fwd),
    SLOT(swiglu_bwd),     SLOT(add),           SLOT(cross_entropy), SLOT(lora_fwd),       SLOT(lora_bwd),
    SLOT(sumsq),          SLOT(adamw),         SLOT(add_rmsnorm_fwd), SLOT(embed_noise),
    SLOT(rmsnorm_off_fwd), SLOT(rmsnorm_off_bwd), SLOT(add_rmsnorm_off_fwd), SLOT(geglu_fwd), SLOT(geglu_bwd),
    SLOT(attention_cap_fwd), SLOT(attention_cap_bwd), SLOT(cross_entropy_cap), SLOT(scale),
    SLOT(nf4_dequant),    SLOT(nf4_matmul_fwd), SLOT(nf4_matmul_bwd),
    SLOT(copy),           SLOT(native_stream), SLOT(sumsq_units),
};
#undef SLOT
/* a slot added to lt_backend but not to this list fails the build (the +1 is
 * set_option, which may stay empty) */
_Static_assert(sizeof slots / sizeof slots[0] + 1 ==
                   (sizeof(lt_backend) - offsetof(lt_backend, alloc)) / sizeof(void (*)(void)),
               "lt_backend.c: the slot list does not match struct lt_backend");

int lt_backend_slot_count(void) { return (int)(sizeof slots / sizeof slots[0]); }

const char *lt_backend_slot_name(int i) { return i >= 0 && i < lt_backend_slot_count() ? slots[i].name : NULL; }

lt_status lt_backend_check_slots(const lt_backend *be, lt_err *err) {
    for (int i = 0; i < lt_backend_slot_count(); i++) {
        void (*fn)(void);
        memcpy(&fn, (const char *)be + slots[i].off, sizeof fn); /* every slot is a function pointer */
        if (!fn)
            return lt_fail(err, LT_ERR_UNSUPPORTED, "backend '%s': no kernel for op '%s' (its slot is empty)",
                           be->name ? be->name : "?", slots[i].name);
    }
    return LT_OK;
}

/* ---- options ---- */

lt_status lt_backend_set_option(lt_backend *be, const char *key, const char *value, lt_err *err) {
    if (!key || !value)
        return lt_fail(err, LT_ERR_INVALID, "backend '%s': option without a %s", be->name, key ? "value" : "name");
    if (!be->set_option)
        return lt_fail(err, LT_ERR_INVALID, "backend '%s' has no options (asked to set '%s' to '%s')", be->name, key,
                       value);
    return be->set_option(be, key, value, err);
}
