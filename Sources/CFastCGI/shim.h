#ifndef WALLET_CFASTCGI_SHIM_H
#define WALLET_CFASTCGI_SHIM_H

#include <fcgiapp.h>

#endif
