/* lt_family.c -- the family registry. See lt_family.h. */
#include "lt_family.h"

#include <stdio.h>
#include <string.h>

extern const lt_family lt_family_llama, lt_family_mistral, lt_family_qwen2, lt_family_qwen3,
    lt_family_olmo2, lt_family_gemma2, lt_family_gemma3;
extern const lt_family lt_family_phi3;

/* indexed by lt_arch */
static const lt_family *const FAMILIES[] = {&lt_family_llama, &lt_family_mistral, &lt_family_qwen2,
                                            &lt_family_qwen3, &lt_family_olmo2, &lt_family_gemma2,
                                            &lt_family_gemma3, &lt_family_phi3};
#define N_FAMILIES (sizeof FAMILIES / sizeof FAMILIES[0])

size_t lt_family_count(void) { return N_FAMILIES; }

const lt_family *lt_family_at(size_t i) { return i < N_FAMILIES ? FAMILIES[i] : NULL; }

const lt_family *lt_family_get(lt_arch a) {
    for (size_t i = 0; i < N_FAMILIES; i++)
        if (FAMILIES[i]->arch == a) return FAMILIES[i];
    return NULL;
}

const lt_family *lt_family_find(const char *model_type) {
    for (size_t i = 0; i < N_FAMILIES; i++)
        if (!strcmp(FAMILIES[i]->model_type, model_type)) return FAMILIES[i];
    return NULL;
}

size_t lt_family_fixtures(const char **out, size_t cap) {
    size_t n = 0;
    for (size_t i = 0; i < N_FAMILIES; i++)
        for (const char *const *f = FAMILIES[i]->fixtures; f && *f; f++)
            if (n < cap) out[n++] = *f;
    return n;
}

const char *lt_family_list(void) {
    static char buf[256];
    size_t k = 0;
    buf[0] = 0;
    for (size_t i = 0; i < N_FAMILIES && k < sizeof buf; i++)
        k += (size_t)snprintf(buf + k, sizeof buf - k, "%s%s", i ? ", " : "", FAMILIES[i]->model_type);
    return buf;
}

const char *lt_arch_name(lt_arch a) {
    const lt_family *f = lt_family_get(a);
    return f ? f->model_type : "?";
}

const lt_family *lt_family_find_wrapper(const char *model_type) {
    for (size_t i = 0; i < N_FAMILIES; i++)
        if (FAMILIES[i]->wrapper && !strcmp(FAMILIES[i]->wrapper->model_type, model_type)) return FAMILIES[i];
    return NULL;
}

/* PEFT prefixes every module's name with this */
static const char PEFT_ROOT[] = "base_model.model.";

void lt_wrap_rules(const lt_family_wrapper *w, int lay, const char *from[2], const char *to[2]) {
    const lt_family_layout *L = &w->layouts[lay < 0 ? 0 : lay];
    from[0] = "model.";
    from[1] = "lm_head.";
    to[0] = L->body;
    to[1] = L->head;
}

static int starts(const char *s, const char *p) { return !strncmp(s, p, strlen(p)); }

int lt_wrap_name(const lt_family_wrapper *w, int lay, const char *name, char *out, size_t cap) {
    const char *from[2], *to[2], *root = "";
    if (w && lay >= LT_WRAP_LAYOUTS) w = NULL;
    if (w && lay < 0) {
        if (!starts(name, PEFT_ROOT)) w = NULL;
        root = PEFT_ROOT;
    }
    if (w) {
        lt_wrap_rules(w, lay, from, to);
        const char *rest = name + strlen(root);
        for (int k = 0; k < 2; k++)
            if (starts(rest, from[k]))
                return snprintf(out, cap, "%s%s%s", root, to[k], rest + strlen(from[k])) < (int)cap;
    }
    return snprintf(out, cap, "%s", name) < (int)cap;
}

int lt_wrap_unname(const lt_family_wrapper *w, int lay, const char *file, char *out, size_t cap) {
    const char *from[2], *to[2], *root = "";
    if (!w || lay >= LT_WRAP_LAYOUTS) return 0;
    if (lay < 0) {
        if (!starts(file, PEFT_ROOT)) return 0;
        root = PEFT_ROOT;
    }
    lt_wrap_rules(w, lay, from, to);
    const char *rest = file + strlen(root);
    for (int k = 0; k < 2; k++)
        if (starts(rest, to[k]))
            return snprintf(out, cap, "%s%s%s", root, from[k], rest + strlen(to[k])) < (int)cap;
    return 0;
}
