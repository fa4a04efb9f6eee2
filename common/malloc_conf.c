/* malloc_conf.c -- jemalloc's settings for ingestion and storage, read by
 * jemalloc when it starts (MALLOC_CONF in the environment overrides them).
 * Linked only into the jemalloc builds of the services (Makefile, MALLOC),
 * never into libcommon.a: an archive member that nothing references would
 * not be linked at all.
 *
 * Freed memory goes back to the kernel at once, as glibc does for large
 * blocks, so RSS shows what is in use, not a 1 MiB body freed seconds ago
 * (jemalloc's default keeps it for 10 s; bench/NOTES.md). */
const char *malloc_conf = "dirty_decay_ms:0,muzzy_decay_ms:0";
