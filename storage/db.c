/* db.c -- storage's PostgreSQL side: connect, migrate, store readings
 * idempotently, record dead letters. One attempt per call; the caller retries. */
#include "db.h"
#include "rowfmt.h"

#include <libpq-fe.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Key of the transaction-scoped advisory lock that serialises migrations
 * between replicas: the bytes "SFMIGRAT". Any constant works as long as it
 * never changes and no other advisory-lock user of this database picks it. */
#define MIGRATION_LOCK_KEY "6000568530642288980"

#define OID_TEXT 25    /* pg_type.oid of text and bytea: stable since forever */
#define OID_BYTEA 17

#define DEAD_REASON_MAX 2000

/* A whole message in one statement: ROWFMT_COLUMNS from the arrays of
 * rowfmt_arrays (in that order, with their column types) and ingested_by;
 * stored_at keeps its default.
 *
 * Two forms. STORE_NEW is a plain INSERT: the primary key's unique check
 * happens during the one B-tree descent that inserts the key, and a key
 * already stored fails the whole statement (23505, nothing inserted).
 * STORE_DEDUP adds ON CONFLICT DO NOTHING, which absorbs keys already
 * stored or repeated inside the message (only DO UPDATE refuses to touch a
 * row twice), at the price of a second descent per row: PostgreSQL probes
 * the index for a conflict before inserting (ExecCheckIndexConstraints, 28%
 * of a backend's time in perf; pgbench: 40-row statements 22% faster
 * without it). db_store_batch tries STORE_NEW and falls back to STORE_DEDUP
 * on 23505; after a duplicate it stays on STORE_DEDUP for a while, since
 * duplicates come in runs (redeliveries, a client's retries). No conflict
 * target: the primary key is the only unique index, and a target would need
 * SELECT on its columns, which storage's role has not.
 *
 * In key order: an insert waits for any other transaction that holds an
 * uncommitted row of the same key, so two storages inserting overlapping
 * messages in different orders (a client's retries, gathered in another
 * order by another replica) would wait for each other until PostgreSQL
 * aborts one (40P01, after deadlock_timeout). In one order one only waits
 * for the other. COLLATE "C": the same order whatever the database's
 * collation, and the cheapest to compare. */
#define STORE_NEW "store_new"
#define STORE_DEDUP "store_dedup"
#define STORE_SQL \
    "INSERT INTO readings (" ROWFMT_COLUMNS ")" \
    " SELECT s, t, ts, v, u, rv, ru, tg, ra, $10::text FROM unnest(" \
    "$1::text[], $2::text[], $3::timestamptz[], $4::float8[], $5::text[], $6::float8[], " \
    "$7::text[], $8::jsonb[], $9::timestamptz[]) AS r(s, t, ts, v, u, rv, ru, tg, ra)" \
    " ORDER BY s COLLATE \"C\", t COLLATE \"C\", ts"
#define STORE_DEDUP_SQL STORE_SQL " ON CONFLICT DO NOTHING"
/* Messages stored with STORE_DEDUP after the last one that held a duplicate:
 * one failed STORE_NEW (a wasted statement, and an ERROR line in
 * PostgreSQL's log) per this many messages at most. */
#define DEDUP_AFTER_DUPLICATE 100
#define NAMEDATALEN_MAX 63   /* PostgreSQL's longest identifier */

struct db {
    PGconn *conn;
    char *conninfo;
    char *owner_conninfo;   /* NULL: migrations run over conninfo */
    char *appname;
    struct rowfmt_arrays arrays;   /* the current batch's columns, reused */
    int dedup_left;   /* messages still to store with STORE_DEDUP */
};

/* --- errors --------------------------------------------------------------- */

int db_classify_sqlstate(const char *sqlstate)
{
    if (!sqlstate || strlen(sqlstate) != 5)
        return DB_RETRY;
    /* Only errors about the data itself can never succeed. Anything else
     * (schema, grants, resources, shutdown) is a problem of the system that
     * someone will fix, and dead-lettering every message meanwhile would turn
     * an outage into data loss. */
    if (!strncmp(sqlstate, "22", 2) || !strncmp(sqlstate, "23", 2) ||
        !strncmp(sqlstate, "54", 2))
        return DB_REJECTED;
    return DB_RETRY;
}

/* Copies msg into err as one line: libpq messages end in '\n' and the server
 * adds DETAIL/HINT lines. Whitespace runs become one space. */
static void one_line(char *err, size_t errlen, const char *prefix, const char *msg)
{
    if (snprintf(err, errlen, "%s%s", prefix, msg ? msg : "") < 0)
        return;
    char *w = err;
    for (const char *r = err; *r; r++) {
        int space = *r == '\n' || *r == '\r' || *r == '\t' || *r == ' ';
        if (space && (w == err || w[-1] == ' '))
            continue;
        *w++ = space ? ' ' : *r;
    }
    while (w > err && w[-1] == ' ')
        w--;
    *w = '\0';
}

/* Describes a failed result (res may be NULL) in err and says whether to
 * retry. The connection's health decides first: a query that failed because
 * the server went away has no SQLSTATE worth trusting. */
static int fail(struct db *db, const PGresult *res, const char *what, char *err, size_t errlen)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    char prefix[160];

    if (state && primary) {
        snprintf(prefix, sizeof prefix, "%s: %s ", what, state);
        one_line(err, errlen, prefix, primary);
    } else {
        snprintf(prefix, sizeof prefix, "%s: ", what);
        const char *m = res ? PQresultErrorMessage(res) : "";
        one_line(err, errlen, prefix, m && *m ? m : PQerrorMessage(db->conn));
    }
    if (PQstatus(db->conn) != CONNECTION_OK)
        return DB_RETRY;
    return db_classify_sqlstate(state);
}

/* Leaves no transaction open after a failure; best effort. */
static void rollback_quietly(struct db *db)
{
    if (db->conn && PQstatus(db->conn) == CONNECTION_OK &&
        PQtransactionStatus(db->conn) != PQTRANS_IDLE)
        PQclear(PQexec(db->conn, "ROLLBACK"));
}

/* Runs a statement that returns no rows. Returns DB_OK or what fail() says. */
static int exec_cmd(struct db *db, const char *sql, const char *what, char *err, size_t errlen)
{
    PGresult *res = PQexec(db->conn, sql);
    int rc = PQresultStatus(res) == PGRES_COMMAND_OK ? DB_OK : fail(db, res, what, err, errlen);
    PQclear(res);
    return rc;
}

/* COMMIT, checking that it really committed: COMMIT of a transaction that
 * already failed answers "ROLLBACK" with PGRES_COMMAND_OK. */
static int commit(struct db *db, char *err, size_t errlen)
{
    PGresult *res = PQexec(db->conn, "COMMIT");
    int rc;
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        rc = fail(db, res, "commit", err, errlen);
    else if (strcmp(PQcmdStatus(res), "COMMIT") != 0) {
        snprintf(err, errlen, "commit: server answered %s", PQcmdStatus(res));
        rc = DB_RETRY;
    } else
        rc = DB_OK;
    PQclear(res);
    return rc;
}

static long cmd_tuples(PGresult *res)
{
    return strtol(PQcmdTuples(res), NULL, 10);
}

/* Plans sql as the session's statement name. */
static int prepare(struct db *db, const char *name, const char *sql, char *err, size_t errlen)
{
    PGresult *res = PQprepare(db->conn, name, sql, 0, NULL);
    int rc = PQresultStatus(res) == PGRES_COMMAND_OK ? DB_OK
                                                     : fail(db, res, "prepare", err, errlen);
    PQclear(res);
    return rc;
}

/* --- lifecycle -------------------------------------------------------------- */

struct db *db_create(const char *conninfo, const char *owner_conninfo,
                     const char *application_name)
{
    struct db *db = calloc(1, sizeof *db);
    if (!db)
        return NULL;
    db->conninfo = strdup(conninfo);
    db->appname = strdup(application_name);
    if (owner_conninfo && *owner_conninfo && !(db->owner_conninfo = strdup(owner_conninfo))) {
        db_destroy(db);
        return NULL;
    }
    if (!db->conninfo || !db->appname) {
        db_destroy(db);
        return NULL;
    }
    return db;
}

static void disconnect(struct db *db)
{
    PQfinish(db->conn);   /* NULL is fine */
    db->conn = NULL;
}

void db_destroy(struct db *db)
{
    if (!db)
        return;
    disconnect(db);
    rowfmt_arrays_free(&db->arrays);
    free(db->conninfo);
    free(db->owner_conninfo);
    free(db->appname);
    free(db);
}

int db_is_up(const struct db *db)
{
    return db->conn && PQstatus(db->conn) == CONNECTION_OK;
}

/* libpq prints NOTICEs ("relation ... already exists, skipping") to stderr
 * by default, which would break the one-line-per-event log. Nothing we run
 * raises one worth an operator's attention. */
static void drop_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* A new connection to conninfo with our settings, or NULL with err set. */
static PGconn *open_conn(const struct db *db, const char *conninfo, const char *what,
                         char *err, size_t errlen)
{
    /* Later keywords win. Ours come before dbname (the expanded conninfo),
     * so DATABASE_URL can override them, except client_encoding: the readings'
     * text is sent as UTF-8 whatever the server's default is. The timeouts keep a
     * dead network from blocking a query for the kernel's ~15 minutes. */
    const char *const keys[] = {
        "application_name", "connect_timeout", "keepalives_idle", "keepalives_interval",
        "keepalives_count", "tcp_user_timeout", "dbname", "client_encoding", NULL
    };
    const char *const vals[] = {
        db->appname, "10", "10", "5", "3", "10000", conninfo, "UTF8", NULL
    };
    PGconn *conn = PQconnectdbParams(keys, vals, 1);
    if (!conn) {
        snprintf(err, errlen, "%s: out of memory", what);
        return NULL;
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        char prefix[64];
        snprintf(prefix, sizeof prefix, "%s: ", what);
        one_line(err, errlen, prefix, PQerrorMessage(conn));
        PQfinish(conn);
        return NULL;
    }
    PQsetNoticeProcessor(conn, drop_notice, NULL);
    return conn;
}

/* Whatever the server's or the role's defaults: a COMMIT is on disk before
 * we acknowledge (synchronous_commit = off would break ack-after-commit on a
 * server crash; local and the stronger settings are kept), and a statement
 * stuck behind someone's lock or a stalled server fails and is retried,
 * rather than holding paho's thread, and a SIGTERM, for ever. Timeouts the
 * operator set are kept. Each is read back for db.connected. */
#define SESSION_SETTINGS_SQL \
    "SELECT CASE WHEN current_setting('synchronous_commit') = 'off'" \
    " THEN set_config('synchronous_commit', 'on', false)" \
    " ELSE current_setting('synchronous_commit') END," \
    " CASE WHEN current_setting('lock_timeout') = '0'" \
    " THEN set_config('lock_timeout', '10s', false) ELSE current_setting('lock_timeout') END," \
    " CASE WHEN current_setting('statement_timeout') = '0'" \
    " THEN set_config('statement_timeout', '1min', false)" \
    " ELSE current_setting('statement_timeout') END"

static int connect_db(struct db *db, struct db_ensure_info *info, char *err, size_t errlen)
{
    disconnect(db);
    if (!(db->conn = open_conn(db, db->conninfo, "connect", err, errlen)))
        return DB_RETRY;
    info->server_version = PQserverVersion(db->conn);
    snprintf(info->where, sizeof info->where, "host=%s port=%s dbname=%s user=%s",
             PQhost(db->conn), PQport(db->conn), PQdb(db->conn), PQuser(db->conn));
    /* Ingestion accepts any Unicode text in ids, units and tags. Another
     * encoding refuses some of it (LATIN1 has no "€"), and SQL_ASCII stores
     * bytes unchecked: readings answered 202 would be refused here, after
     * the fact. Say so once, at startup, instead. */
    const char *enc = PQparameterStatus(db->conn, "server_encoding");
    if (!enc || strcmp(enc, "UTF8")) {
        snprintf(err, errlen, "database %s is encoded %s, not UTF8: readings may hold any "
                 "Unicode text (create it with ENCODING 'UTF8' TEMPLATE template0)",
                 PQdb(db->conn), enc ? enc : "(unknown)");
        disconnect(db);
        return DB_FATAL;
    }
    PGresult *res = PQexec(db->conn, SESSION_SETTINGS_SQL);
    int rc = DB_OK;
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 && PQnfields(res) == 3)
        snprintf(info->settings, sizeof info->settings,
                 "synchronous_commit=%s lock_timeout=%s statement_timeout=%s",
                 PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2));
    else
        rc = fail(db, res, "settings", err, errlen);
    PQclear(res);
    if (rc != DB_OK)
        disconnect(db);
    return rc;
}

/* --- migrations ------------------------------------------------------------- */

static int has_version(const PGresult *res, int version)
{
    for (int i = 0; i < PQntuples(res); i++)
        if (strtol(PQgetvalue(res, i, 0), NULL, 10) == version)
            return 1;
    return 0;
}

/* A migration's SQL failed: retry only when the cause is around it (lost
 * connection, shutdown, lock or resource trouble); otherwise the SQL itself
 * is wrong and no retry can fix the binary. */
static int migration_failure(const struct db *db, const PGresult *res)
{
    const char *s = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (PQstatus(db->conn) != CONNECTION_OK || !s)
        return DB_RETRY;
    static const char *const transient[] = { "08", "40", "53", "57", "58", "55P03" };
    for (size_t i = 0; i < sizeof transient / sizeof transient[0]; i++)
        if (!strncmp(s, transient[i], strlen(transient[i])))
            return DB_RETRY;
    return DB_FATAL;
}

static int grant_writer(struct db *db, const char *role, char *err, size_t errlen);

/* grant_to: the role to grant storage's rights to in the same transaction
 * (NULL: none). Under the lock too: GRANTs of two replicas reconnecting
 * together would otherwise fail with "tuple concurrently updated" (XX000),
 * which is not transient to migration_failure. */
static int migrate(struct db *db, db_event_fn *on_event, void *ctx,
                   struct db_ensure_info *info, const char *grant_to, char *err,
                   size_t errlen)
{
    PGresult *done = NULL;
    int rc;

    /* One transaction under one lock: a replica that starts while another
     * migrates waits, then finds the versions recorded and does nothing.
     * The lock comes first so that CREATE TABLE IF NOT EXISTS cannot race. */
    if ((rc = exec_cmd(db, "BEGIN", "migrate: begin", err, errlen)) != DB_OK)
        goto out;
    PGresult *res = PQexec(db->conn, "SELECT pg_advisory_xact_lock(" MIGRATION_LOCK_KEY ")");
    rc = PQresultStatus(res) == PGRES_TUPLES_OK ? DB_OK
                                                : fail(db, res, "migrate: lock", err, errlen);
    PQclear(res);
    if (rc != DB_OK)
        goto out;
    rc = exec_cmd(db,
                  "CREATE TABLE IF NOT EXISTS schema_migrations ("
                  " version int PRIMARY KEY,"
                  " name text NOT NULL,"
                  " applied_at timestamptz NOT NULL DEFAULT now())",
                  "migrate: schema_migrations", err, errlen);
    if (rc != DB_OK)
        goto out;
    done = PQexec(db->conn, "SELECT version FROM schema_migrations");
    if (PQresultStatus(done) != PGRES_TUPLES_OK) {
        rc = fail(db, done, "migrate: read versions", err, errlen);
        goto out;
    }

    int highest = 0;
    for (int i = 0; i < PQntuples(done); i++) {
        int v = (int)strtol(PQgetvalue(done, i, 0), NULL, 10);
        if (v > highest)
            highest = v;
    }
    for (size_t i = 0; i < storage_migrations_count; i++) {
        const struct migration *m = &storage_migrations[i];
        if (has_version(done, m->version))
            continue;
        char what[160];
        snprintf(what, sizeof what, "migration %04d_%s", m->version, m->name);
        res = PQexec(db->conn, m->sql);
        ExecStatusType st = PQresultStatus(res);
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY) {
            fail(db, res, what, err, errlen);
            rc = migration_failure(db, res);
            PQclear(res);
            goto out;
        }
        PQclear(res);
        char vtext[16];
        snprintf(vtext, sizeof vtext, "%d", m->version);
        const char *params[2] = { vtext, m->name };
        res = PQexecParams(db->conn,
                           "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                           2, NULL, params, NULL, NULL, 0);
        rc = PQresultStatus(res) == PGRES_COMMAND_OK ? DB_OK : fail(db, res, what, err, errlen);
        PQclear(res);
        if (rc != DB_OK)
            goto out;
        info->applied++;
        if (m->version > highest)
            highest = m->version;
    }
    if (grant_to && (rc = grant_writer(db, grant_to, err, errlen)) != DB_OK)
        goto out;
    if ((rc = commit(db, err, errlen)) != DB_OK)
        goto out;
    info->schema_version = highest;
    /* Reported only now: before COMMIT nothing was applied. */
    if (on_event)
        for (size_t i = 0; i < storage_migrations_count; i++)
            if (!has_version(done, storage_migrations[i].version))
                on_event(ctx, info, &storage_migrations[i]);
out:
    if (rc != DB_OK) {
        info->applied = 0;
        rollback_quietly(db);
    }
    PQclear(done);
    return rc;
}

/* What storage's own role may do, and nothing more: insert rows and dead
 * letters (INSERT ... ON CONFLICT DO NOTHING without a conflict target
 * needs no other right). The owner grants it after every migration run, so
 * a new table gets its grant with the migration that makes it. */
static int grant_writer(struct db *db, const char *role, char *err, size_t errlen)
{
    char *id = PQescapeIdentifier(db->conn, role, strlen(role));
    if (!id) {
        one_line(err, errlen, "grant: ", PQerrorMessage(db->conn));
        return DB_RETRY;
    }
    char sql[1024];
    snprintf(sql, sizeof sql,
             "GRANT USAGE ON SCHEMA public TO %s;"
             "GRANT INSERT ON readings, dead_letters TO %s;"
             "GRANT USAGE ON SEQUENCE dead_letters_id_seq TO %s", id, id, id);
    PQfreemem(id);
    PGresult *res = PQexec(db->conn, sql);
    int rc = DB_OK;
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        one_line(err, errlen, "grant to storage's role: ", PQresultErrorMessage(res));
        rc = migration_failure(db, res);
    }
    PQclear(res);
    return rc;
}

/* DATABASE_OWNER_URL: the migrations and the grants run over a connection
 * of the owner role, closed right after; storage's own connection (db->conn,
 * already up) then only ever inserts. */
static int migrate_as_owner(struct db *db, db_event_fn *on_event, void *ctx,
                            struct db_ensure_info *info, char *err, size_t errlen)
{
    PGconn *writer = db->conn;
    char role[NAMEDATALEN_MAX + 1];
    snprintf(role, sizeof role, "%s", PQuser(writer));
    if (!(db->conn = open_conn(db, db->owner_conninfo, "connect as owner (DATABASE_OWNER_URL)",
                               err, errlen))) {
        db->conn = writer;
        return DB_RETRY;
    }
    int rc = migrate(db, on_event, ctx, info, role, err, errlen);
    PQfinish(db->conn);
    db->conn = writer;
    return rc;
}

int db_ensure(struct db *db, db_event_fn *on_event, void *ctx,
              struct db_ensure_info *info, char *err, size_t errlen)
{
    int rc;

    memset(info, 0, sizeof *info);
    if (db_is_up(db)) {
        if (PQtransactionStatus(db->conn) == PQTRANS_IDLE)
            return DB_OK;
        rollback_quietly(db);   /* a bug left a transaction open: end it */
        if (db_is_up(db) && PQtransactionStatus(db->conn) == PQTRANS_IDLE)
            return DB_OK;
    }
    if ((rc = connect_db(db, info, err, errlen)) != DB_OK)
        return rc;
    if (on_event)
        on_event(ctx, info, NULL);
    if (db->owner_conninfo)
        rc = migrate_as_owner(db, on_event, ctx, info, err, errlen);
    else
        rc = migrate(db, on_event, ctx, info, NULL, err, errlen);
    if (rc != DB_OK)
        goto fail;
    /* Per session: both forms of the batch insert, planned once. */
    if ((rc = prepare(db, STORE_NEW, STORE_SQL, err, errlen)) != DB_OK ||
        (rc = prepare(db, STORE_DEDUP, STORE_DEDUP_SQL, err, errlen)) != DB_OK)
        goto fail;
    info->connected = 1;
    return DB_OK;
fail:
    /* Start from scratch next time rather than reason about a half-set-up
     * session. */
    disconnect(db);
    return rc;
}

/* --- readings --------------------------------------------------------------- */

int db_store_batch(struct db *db, const struct reading_batch *b, const char *ingested_by,
                   struct db_batch_result *res, char *err, size_t errlen)
{
    const char *values[ROWFMT_NCOLS];
    int lengths[ROWFMT_NCOLS];
    /* The arrays binary, ingested_by text. */
    static const int formats[ROWFMT_NCOLS] = { 1, 1, 1, 1, 1, 1, 1, 1, 1, 0 };
    _Static_assert(ROWFMT_NCOLS == 10, "formats: one per column");
    int rc;

    memset(res, 0, sizeof *res);
    if (!db_is_up(db)) {
        snprintf(err, errlen, "not connected");
        return DB_RETRY;
    }
    rowfmt_arrays_reset(&db->arrays);
    for (size_t i = 0; i < b->n; i++)
        rowfmt_arrays_add(&db->arrays, &b->v[i]);
    if (rowfmt_arrays_finish(&db->arrays, values, lengths) < 0) {
        snprintf(err, errlen, "out of memory formatting %zu readings", b->n);
        return DB_RETRY;
    }
    values[ROWFMT_NCOLS - 1] = ingested_by;
    lengths[ROWFMT_NCOLS - 1] = 0;

    /* One statement outside BEGIN/COMMIT is its own transaction, committed
     * before the server answers: an OK here is a commit (a failing commit
     * is the result libpq returns last, so it is never mistaken for one). */
    PGresult *r = NULL;
    if (db->dedup_left <= 0) {
        r = PQexecPrepared(db->conn, STORE_NEW, ROWFMT_NCOLS, values, lengths, formats, 0);
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        if (PQresultStatus(r) != PGRES_COMMAND_OK && state && !strcmp(state, "23505") &&
            PQstatus(db->conn) == CONNECTION_OK) {
            PQclear(r);   /* a key already stored: nothing was inserted */
            r = NULL;
        }
    } else {
        db->dedup_left--;
    }
    if (!r)
        r = PQexecPrepared(db->conn, STORE_DEDUP, ROWFMT_NCOLS, values, lengths, formats, 0);
    if (PQresultStatus(r) == PGRES_COMMAND_OK) {
        res->inserted = cmd_tuples(r);
        res->duplicates = (long)b->n - res->inserted;
        if (res->duplicates)   /* (none if the 23505 was of a row since rolled back) */
            db->dedup_left = DEDUP_AFTER_DUPLICATE;
        rc = DB_OK;
    } else {
        rc = fail(db, r, "insert", err, errlen);
    }
    PQclear(r);
    return rc;
}

/* Appends "; [i] why" to reasons (DEAD_REASON_MAX bytes), marking the
 * cut with "; ..." once it is nearly full. */
static void note_rejection(char *reasons, size_t i, const char *why)
{
    size_t len = strlen(reasons);
    if (len + 6 >= DEAD_REASON_MAX || strstr(reasons, "; ..."))
        return;
    if (len > DEAD_REASON_MAX - 300)
        snprintf(reasons + len, DEAD_REASON_MAX - len, "; ...");
    else
        snprintf(reasons + len, DEAD_REASON_MAX - len, "; [%zu] %s", i, why);
}

static int insert_dead_letter(struct db *db, const char *topic, const char *reason,
                              const void *payload, size_t len, char *err, size_t errlen);

/* Inserts reading i under a savepoint. Returns DB_OK (stored or duplicate),
 * DB_REJECTED (refused, savepoint rolled back, why filled) or DB_RETRY. */
static int store_one(struct db *db, const struct reading *r, const char *by,
                     long *inserted, char *why, size_t whylen)
{
    struct rowfmt_params p;
    int rc;

    rowfmt_params(&p, r, by);
    if ((rc = exec_cmd(db, "SAVEPOINT one_reading", "savepoint", why, whylen)) != DB_OK)
        return DB_RETRY;
    PGresult *res = PQexecParams(db->conn,
                                 "INSERT INTO readings (" ROWFMT_COLUMNS ")"
                                 " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                                 " ON CONFLICT DO NOTHING",
                                 ROWFMT_NCOLS, NULL, p.values, NULL, NULL, 0);
    if (PQresultStatus(res) == PGRES_COMMAND_OK) {
        *inserted += cmd_tuples(res);
        PQclear(res);
        return exec_cmd(db, "RELEASE SAVEPOINT one_reading", "release", why, whylen) == DB_OK
                   ? DB_OK : DB_RETRY;
    }
    rc = fail(db, res, "insert", why, whylen);
    PQclear(res);
    if (rc != DB_REJECTED)
        return DB_RETRY;
    char ignored[200];
    if (exec_cmd(db, "ROLLBACK TO SAVEPOINT one_reading", "rollback", ignored,
                 sizeof ignored) != DB_OK)
        return DB_RETRY;
    return DB_REJECTED;
}

int db_store_rows(struct db *db, const struct reading_batch *b, const char *ingested_by,
                  const char *topic, const void *payload, size_t len,
                  struct db_batch_result *res, char *err, size_t errlen)
{
    char *reasons = NULL;   /* "; [i] why" for each refused reading */
    char first[340] = "";   /* the first refusal, for the caller's log */
    char dl_err[300] = "";  /* why the dead letter itself was refused */
    int rc;

    memset(res, 0, sizeof *res);
    if (!db_is_up(db)) {
        snprintf(err, errlen, "not connected");
        return DB_RETRY;
    }
    if (!(reasons = calloc(1, DEAD_REASON_MAX))) {
        snprintf(err, errlen, "out of memory");
        return DB_RETRY;
    }
    if ((rc = exec_cmd(db, "BEGIN", "begin", err, errlen)) != DB_OK)
        goto out;
    for (size_t i = 0; i < b->n; i++) {
        char why[300];
        rc = store_one(db, &b->v[i], ingested_by, &res->inserted, why, sizeof why);
        if (rc == DB_RETRY) {
            snprintf(err, errlen, "%s", why);
            goto out;
        }
        if (rc == DB_REJECTED) {
            res->rejected++;
            if (!*first)
                snprintf(first, sizeof first, "reading %zu: %s", i, why);
            /* "insert: " says nothing in a list of refused readings */
            note_rejection(reasons, i, strncmp(why, "insert: ", 8) ? why : why + 8);
        }
    }
    rc = DB_OK;
    if (res->rejected) {
        char reason[DEAD_REASON_MAX + 100];
        snprintf(reason, sizeof reason, "database refused %ld of %zu readings%s",
                 res->rejected, b->n, reasons);
        /* Under a savepoint: should even the dead letter be refused, the
         * good readings are still committed (and the caller says so). */
        if ((rc = exec_cmd(db, "SAVEPOINT dead_letter", "savepoint", err, errlen)) != DB_OK)
            goto out;
        rc = insert_dead_letter(db, topic, reason, payload, len, dl_err, sizeof dl_err);
        if (rc == DB_REJECTED)
            rc = exec_cmd(db, "ROLLBACK TO SAVEPOINT dead_letter", "rollback", err, errlen);
        else if (rc == DB_OK)
            dl_err[0] = '\0';
        else
            snprintf(err, errlen, "%s", dl_err);
        if (rc != DB_OK)
            goto out;
    }
    if ((rc = commit(db, err, errlen)) != DB_OK)
        goto out;
    res->duplicates = (long)b->n - res->inserted - res->rejected;
    res->dead_letter_refused = *dl_err != '\0';
    if (*first)
        snprintf(err, errlen, "%s%s%s", first, *dl_err ? "; dead letter refused too: " : "",
                 dl_err);
out:
    if (rc != DB_OK) {
        res->inserted = res->rejected = 0;
        rollback_quietly(db);
    }
    /* A refusal here is of BEGIN, a savepoint or the COMMIT (a deferred
     * constraint, say), not of a reading: nothing was stored, so the message
     * must not be acknowledged. As any system problem: retried. */
    if (rc == DB_REJECTED)
        rc = DB_RETRY;
    free(reasons);
    return rc;
}

/* --- dead letters ----------------------------------------------------------- */

static int insert_dead_letter(struct db *db, const char *topic, const char *reason,
                              const void *payload, size_t len, char *err, size_t errlen)
{
    char *t = strdup(topic ? topic : "");
    char *why = strdup(reason ? reason : "");
    int rc;

    if (!t || !why) {
        snprintf(err, errlen, "out of memory");
        rc = DB_RETRY;
        goto out;
    }
    if (len > INT_MAX) {
        snprintf(err, errlen, "dead letter: payload of %zu bytes is too large", len);
        rc = DB_REJECTED;
        goto out;
    }
    /* A reason may quote the garbage it complains about, and a text column
     * refuses invalid UTF-8: clean both, the payload keeps the raw bytes. */
    rowfmt_utf8_clean(t);
    rowfmt_utf8_clean(why);
    const Oid types[3] = { OID_TEXT, OID_TEXT, OID_BYTEA };
    const char *vals[3] = { t, why, len ? (const char *)payload : "" };
    const int lens[3] = { 0, 0, (int)len };
    const int formats[3] = { 0, 0, 1 };   /* the payload goes binary: no escaping */
    PGresult *r = PQexecParams(db->conn,
                               "INSERT INTO dead_letters (topic, reason, payload)"
                               " VALUES ($1, $2, $3)",
                               3, types, vals, lens, formats, 0);
    rc = PQresultStatus(r) == PGRES_COMMAND_OK ? DB_OK : fail(db, r, "dead letter", err, errlen);
    PQclear(r);
out:
    free(t);
    free(why);
    return rc;
}

int db_dead_letter(struct db *db, const char *topic, const char *reason,
                   const void *payload, size_t len, char *err, size_t errlen)
{
    if (!db_is_up(db)) {
        snprintf(err, errlen, "not connected");
        return DB_RETRY;
    }
    /* A single statement outside a transaction block commits by itself. */
    return insert_dead_letter(db, topic, reason, payload, len, err, errlen);
}
