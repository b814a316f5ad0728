/* lt_backend.c -- choosing a backend by name. */
#include "lt_backend.h"

#include <string.h>

#ifndef LT_HAVE_CUDA
lt_status lt_cuda_backend_create(int device, lt_backend **out, lt_err *err) {
    (void)device;
    *out = NULL;
    return lt_fail(err, LT_ERR_UNSUPPORTED, "this luxtrain was built without the CUDA backend (-DLUXTRAIN_CUDA=OFF)");
}
#endif

lt_status lt_backend_create(const char *name, int threads, lt_backend **out, lt_err *err) {
    *out = NULL;
    if (!name || !strcmp(name, "auto")) {
        lt_err e2;
        if (lt_cuda_backend_create(0, out, &e2) == LT_OK) return LT_OK;
        return lt_cpu_backend_create(threads, out, err);
    }
    if (!strcmp(name, "cpu")) return lt_cpu_backend_create(threads, out, err);
    if (!strcmp(name, "cuda")) return lt_cuda_backend_create(0, out, err);
    return lt_fail(err, LT_ERR_INVALID, "unknown device '%s' (expected cpu, cuda or auto)", name);
}
