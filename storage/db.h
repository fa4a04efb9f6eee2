/* db.h -- storage's PostgreSQL side (libpq): connect, migrate, store a batch
 * of readings idempotently, record dead letters.
 *
 * One struct db is one connection, used by one thread at a time. Nothing
 * here logs, sleeps or retries: every call makes one attempt and says
 * whether trying again can help; the caller owns the policy.
 * Errors come back as a one-line message in a caller-owned buffer. */
#ifndef SF_STORAGE_DB_H
#define SF_STORAGE_DB_H

#include "migrations.h"
#include "reading.h"

#include <stddef.h>

struct db;

enum db_status {
    DB_OK = 0,
    DB_RETRY = -1,     /* nothing was committed; the same call may succeed
                        * later (connection lost, server shutting down,
                        * deadlock, disk full, missing table or grant ...) */
    DB_REJECTED = -2,  /* nothing was committed; the data itself is refused
                        * (SQLSTATE class 22 data exception, 23 integrity
                        * constraint, 54 program limit): retrying never helps */
    DB_FATAL = -3      /* the database cannot serve us, and retrying cannot
                        * change that: a migration failed for a reason other
                        * than the connection, or it is not encoded UTF8 */
};

/* Creates a handle; does not connect. conninfo is a libpq URI or key=value
 * string (copied); owner_conninfo (NULL or "": none) is the connection of
 * the role that owns the tables: when given, the migrations run over it and
 * then grant conninfo's role what storing needs, so conninfo's role can be
 * one that may only INSERT. application_name is what pg_stat_activity shows
 * unless conninfo sets one. Returns NULL on out of memory. */
struct db *db_create(const char *conninfo, const char *owner_conninfo,
                     const char *application_name);

/* Closes the connection (PQfinish) and frees everything; NULL is fine. */
void db_destroy(struct db *db);

/* 1 when a connection exists and libpq still believes it is good. libpq
 * notices a dead server only on the next query, so 1 is a hint, 0 is sure. */
int db_is_up(const struct db *db);

struct db_ensure_info {
    int connected;       /* 1 if this call (re)connected */
    int schema_version;  /* highest version recorded in schema_migrations */
    int applied;         /* migrations applied by this call */
    int server_version;  /* PQserverVersion(), e.g. 150004 */
    char where[200];     /* "host=... port=... dbname=... user=..." (no password) */
    char settings[160];  /* "synchronous_commit=on lock_timeout=10s statement_timeout=1min" */
};

/* db_ensure's report, for the caller's log: called with m == NULL right
 * after a new connection is up (info->where and server_version are set),
 * then once per migration applied, after its COMMIT. */
typedef void db_event_fn(void *ctx, const struct db_ensure_info *info,
                         const struct migration *m);

/* Makes sure the connection is usable: when it is up and idle, returns
 * DB_OK at once (info->connected = 0). Otherwise closes what is left,
 * connects, applies the pending embedded migrations (one transaction under
 * a fixed advisory lock, so replicas starting together are safe; a no-op
 * when the schema is current) and creates the per-session staging table.
 * Returns DB_OK, DB_RETRY (cannot connect, or a transient error) or
 * DB_FATAL (not a UTF8 database, or a migration's SQL failed). on_event
 * may be NULL. */
int db_ensure(struct db *db, db_event_fn *on_event, void *ctx,
              struct db_ensure_info *info, char *err, size_t errlen);

struct db_batch_result {
    long inserted;    /* new rows */
    long duplicates;  /* rows whose (sensor_id, type, ts) was already stored */
    long rejected;    /* db_store_rows only: rows the database refused */
    int dead_letter_refused;  /* db_store_rows only: their dead letter was
                               * refused too, so they are lost (rare: only a
                               * data-class error on dead_letters itself) */
};

/* Stores every reading of b in one transaction: one INSERT ... SELECT FROM
 * unnest(<one array per column>), outside BEGIN and COMMIT (one round trip);
 * a plain INSERT, and if a key was already stored, again with ON CONFLICT DO
 * NOTHING (two round trips; db.c says why). Readings already stored count as
 * duplicates, so storing a batch twice is harmless. DB_OK means committed. On DB_REJECTED nothing
 * was stored: use db_store_rows() to save the rest. */
int db_store_batch(struct db *db, const struct reading_batch *b, const char *ingested_by,
                   struct db_batch_result *res, char *err, size_t errlen);

/* The slow path after DB_REJECTED: one transaction, one savepoint per
 * reading; each reading the database refuses is skipped, and if any was,
 * one dead letter (topic, a reason listing them, the whole payload) is
 * written in the same transaction. DB_OK means committed; then
 * res->rejected tells how many were refused and, when > 0, err holds the
 * first refusal. Returns DB_OK or DB_RETRY. */
int db_store_rows(struct db *db, const struct reading_batch *b, const char *ingested_by,
                  const char *topic, const void *payload, size_t len,
                  struct db_batch_result *res, char *err, size_t errlen);

/* Records a message storage cannot use: topic and reason (made valid UTF-8
 * first), payload as bytea. Returns DB_OK (committed), DB_RETRY or
 * DB_REJECTED. */
int db_dead_letter(struct db *db, const char *topic, const char *reason,
                   const void *payload, size_t len, char *err, size_t errlen);

/* How an error with this SQLSTATE (5 characters, or NULL when the server
 * gave none, e.g. a lost connection) should be handled: DB_REJECTED for
 * classes 22, 23 and 54, DB_RETRY for everything else. */
int db_classify_sqlstate(const char *sqlstate);

#endif
