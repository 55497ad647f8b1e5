#ifndef WALLET_CCRYPTO_SHIM_H
#define WALLET_CCRYPTO_SHIM_H

/* OpenSSL's libcrypto (Debian's libssl-dev): SHA-256 for the ledger's hash chain and
   request fingerprints, HMAC-SHA256 for signatures. Only the one-shot functions, which
   OpenSSL 3 keeps undeprecated. */
#include <openssl/sha.h>
#include <openssl/hmac.h>
#include <openssl/evp.h>
#include <openssl/crypto.h>

#endif
