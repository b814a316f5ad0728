/*
 * lt_sha256.h -- SHA-256 (FIPS 180-4), used to fingerprint tokenizer files.
 */
#ifndef LT_SHA256_H
#define LT_SHA256_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lt_sha256 {
    uint32_t h[8];
    uint64_t nbytes;
    uint8_t buf[64];
    size_t nbuf;
} lt_sha256;

void lt_sha256_init(lt_sha256 *c);
void lt_sha256_update(lt_sha256 *c, const void *data, size_t n);
void lt_sha256_final(lt_sha256 *c, uint8_t out[32]);
/* one shot; hex: 64 lowercase hex digits + NUL */
void lt_sha256_hex(const void *data, size_t n, char hex[65]);

#ifdef __cplusplus
}
#endif
#endif
