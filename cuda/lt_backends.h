/*
 * lt_backends.h -- the layer above core that links the device backends and
 * registers them into core's registry (core/lt_backend.h), as ggml's backend
 * registry does: core never calls up into cuda/.
 *
 * Registration happens by itself at program start (a constructor in
 * lt_backends.c; the library is linked whole, see cuda/CMakeLists.txt);
 * lt_backends_init does the same explicitly and may be called any number of
 * times. Programs create backends through lt_backend_create(_device).
 */
#ifndef LT_BACKENDS_H
#define LT_BACKENDS_H

#include "lt_backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Register every device backend this build has (none without CUDA). */
lt_status lt_backends_init(lt_err *err);

/* The CUDA backend (cuda/lt_cuda_backend.cu); LT_ERR_UNSUPPORTED when built
 * without CUDA or when no device is present (the message says which).
 * Options read from the environment once, at creation (lt_backend_set_option
 * changes them afterwards):
 *   LT_ATTN_VERSION     attn_version     "1" | "2" (default 2 where it applies)
 *   LT_LORA_VERSION     lora_version     "1" | "2" (default 2)
 *   LT_LORA_CHUNK_ROWS  lora_chunk_rows  rows per chunk of the LoRA v2 frozen
 *                                        product, "0" = automatic (default)
 *   LT_NF4_VERSION      nf4_version      "1" (dequantized tiles + cuBLAS) | "2"
 *                                        (fused dequantize-in-GEMM, default) */
lt_status lt_cuda_backend_create(int device, lt_backend **out, lt_err *err);
/* Adds "cuda" to the registry (called by lt_backends_init). */
lt_status lt_cuda_backend_register(lt_err *err);

#ifdef __cplusplus
}
#endif
#endif
