/* cfg.h -- configuration from one table: defaults, environment, flags, --help.
 *
 * Each service describes its settings once, as an array of struct cfg_opt.
 * cfg_load() applies, in order of precedence: the default, the environment
 * variable (an empty one counts as unset), then the command-line flag
 * (--flag VALUE or --flag=VALUE). Every
 * value is checked against its type and bounds; the first bad one makes
 * cfg_load() fail with a message naming the variable (and the flag).
 * The same table produces --help.
 *
 * cfg never logs and never exits: the caller decides. */
#ifndef SF_CFG_H
#define SF_CFG_H

#include <stddef.h>
#include <stdio.h>

enum cfg_type {
    CFG_STR,    /* dst: const char **; points into env/argv/default, not owned.
                 * min/max bound the length in bytes. */
    CFG_INT,    /* dst: long *; min/max bound the value. */
    CFG_DOUBLE, /* dst: double *; min/max bound the value. */
    CFG_BOOL    /* dst: int *; accepts 1/0, true/false, yes/no, on/off. */
};

struct cfg_opt {
    const char *flag;    /* long option without "--", e.g. "http-port" */
    const char *env;     /* environment variable, e.g. "INGESTION_HTTP_PORT" */
    enum cfg_type type;
    void *dst;
    const char *def;     /* default, as text; never NULL */
    double min, max;
    const char *help;    /* one line */
};

enum { CFG_OK = 0, CFG_HELP = 1, CFG_ERR = -1 };

/* Fills every dst. Returns CFG_OK; CFG_HELP when -h/--help was given (the
 * usage was printed to stdout, the caller should exit 0); CFG_ERR with a
 * message in err (e.g. "INGESTION_HTTP_PORT (--http-port): 70000 is out of
 * range 1..65535") on an unknown flag, a missing value or a bad value. */
int cfg_load(const struct cfg_opt *opts, size_t n, int argc, char **argv,
             const char *prog, const char *summary, char *err, size_t errlen);

/* Reads a secret (a password) from the file at path: its first line, without
 * the newline, into out. Returns 0, or -1 with a message naming the file in
 * err (unreadable, empty, or longer than outlen - 1). The secret itself is
 * never put in err. */
int cfg_read_secret(const char *path, char *out, size_t outlen, char *err, size_t errlen);

/* Writes the usage: summary, then one line per option with its flag,
 * variable, default, bounds and help. */
void cfg_usage(FILE *out, const char *prog, const char *summary,
               const struct cfg_opt *opts, size_t n);

#endif
