#include <sqlite3.h>

/* sqlite3_config is variadic, which Swift cannot call: one wrapper per setting used.
   Without memory statistics, sqlite3_malloc and sqlite3_free skip the global mutex
   they otherwise take to count every allocation (about 160 of each per POST). */
static inline int usersd_sqlite3_disable_memstatus(void) {
    return sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

/* Statement and savepoint journals up to `bytes` stay in one memory chunk of that
   size; a larger one spills to a temporary file. */
static inline int usersd_sqlite3_statement_journal_spill(int bytes) {
    return sqlite3_config(SQLITE_CONFIG_STMTJRNL_SPILL, bytes);
}
