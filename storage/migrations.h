/* migrations.h -- the schema migrations compiled into storage.
 *
 * The table is generated at build time by scripts/embed-migrations.sh from
 * storage/migrations/NNNN_name.sql (see the Makefile), so the binary carries
 * its own schema and needs no files at run time. */
#ifndef SF_STORAGE_MIGRATIONS_H
#define SF_STORAGE_MIGRATIONS_H

#include <stddef.h>

struct migration {
    int version;       /* NNNN of the file name, >= 1, unique */
    const char *name;  /* the file name's "name" part, e.g. "init" */
    const char *sql;   /* the whole file; may hold several statements but no
                        * transaction control: it runs inside the migration
                        * transaction (so no CREATE INDEX CONCURRENTLY) */
};

/* Sorted by ascending version; storage_migrations_count >= 1. */
extern const struct migration storage_migrations[];
extern const size_t storage_migrations_count;

#endif
