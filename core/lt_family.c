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
