#ifndef WALLET_CSQLITE_SHIM_H
#define WALLET_CSQLITE_SHIM_H

#include <sqlite3.h>

/// SQLITE_TRANSIENT is a cast macro that Swift does not import: it tells SQLite
/// to copy bound text before the call returns, so Swift may free its buffer.
static inline sqlite3_destructor_type csqlite_transient(void) {
    return SQLITE_TRANSIENT;
}

#endif
