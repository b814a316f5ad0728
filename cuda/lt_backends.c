/* lt_backends.c -- registering the device backends this build has into
 * core's registry (see lt_backends.h). */
#include "lt_backends.h"

#include <stdio.h>

#ifndef LT_HAVE_CUDA
lt_status lt_cuda_backend_create(int device, lt_backend **out, lt_err *err) {
    (void)device;
    *out = NULL;
    return lt_fail(err, LT_ERR_UNSUPPORTED, "this luxtrain was built without the CUDA backend (-DLUXTRAIN_CUDA=OFF)");
}
#endif

lt_status lt_backends_init(lt_err *err) {
#ifdef LT_HAVE_CUDA
    lt_status st = lt_cuda_backend_register(err);
    if (st != LT_OK) return lt_wrap(err, st, "registering the CUDA backend");
#else
    (void)err;
#endif
    return LT_OK;
}

/* At program start, before main: the registry is plain static data in core,
 * so nothing here depends on the order of other constructors. */
__attribute__((constructor)) static void lt_backends_auto_init(void) {
    lt_err err;
    if (lt_backends_init(&err) != LT_OK) fprintf(stderr, "luxtrain: %s\n", err.msg);
}
