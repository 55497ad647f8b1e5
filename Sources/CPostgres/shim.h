#ifndef WALLET_CPOSTGRES_SHIM_H
#define WALLET_CPOSTGRES_SHIM_H

#include <libpq-fe.h>

#endif
