#ifndef AMQPSCOPE_CCRYPTO_SHIM_H
#define AMQPSCOPE_CCRYPTO_SHIM_H
// OpenSSL's libcrypto: the AEAD ciphers and HMAC that TLS record decryption needs. Maintained ciphers only.
#include <openssl/evp.h>
#include <openssl/hmac.h>
#endif
