/* malloc_conf.c -- jemalloc's settings for ingestion and storage, read by
 * jemalloc when it starts (MALLOC_CONF in the environment overrides them).
 * Linked only into the jemalloc builds of the services (Makefile, MALLOC),
 * never into libcommon.a: an archive member that nothing references would
 * not be linked at all.
 *
 * Freed memory goes back to the kernel at once, as glibc does for large
 * blocks, so RSS shows what is in use, not a 1 MiB body freed seconds ago
 * (jemalloc's default keeps it for 10 s; bench/NOTES.md).
 *
 * Except what the thread cache keeps: blocks up to 512 KiB (jemalloc's
 * default stops at 32 KiB), so that an MQTT message's buffers (up to
 * INGESTION_MAX_MESSAGE_KIB, 256, in ingestion, in libmosquitto's copy and
 * in paho's) are used again by the next message instead of being given back
 * and faulted in anew: on this project's virtual machines a page fault and
 * the TLB flush of giving pages back cost a quarter of ingestion's CPU in
 * batch. The cache holds up to 20 blocks of a size and gives back those it
 * finds unused as the thread allocates on; what it kept in the bench: ingestion's
 * peak RSS in batch went from 7.4 to 10.6 MiB, storage's from 14.5 to 15.8
 * (bench/NOTES.md, 2026-12-07 from 11:46), and the tests of ingestion's
 * memory hold. */
const char *malloc_conf = "dirty_decay_ms:0,muzzy_decay_ms:0,tcache_max:524288";
