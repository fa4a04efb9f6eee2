/* cfg.c -- configuration from one table: defaults, environment, flags, --help. */
#include "cfg.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *type_name(enum cfg_type t)
{
    switch (t) {
    case CFG_STR: return "text";
    case CFG_INT: return "integer";
    case CFG_DOUBLE: return "number";
    case CFG_BOOL: return "bool";
    }
    return "?";
}

/* Parses one value into its destination. Returns 0 or -1 with err filled. */
static int set_value(const struct cfg_opt *o, const char *val, char *err, size_t errlen)
{
    char *end = NULL;

    switch (o->type) {
    case CFG_STR: {
        size_t len = strlen(val);
        if ((double)len < o->min || (double)len > o->max) {
            snprintf(err, errlen, "%s (--%s): length %zu is out of range %.0f..%.0f",
                     o->env, o->flag, len, o->min, o->max);
            return -1;
        }
        *(const char **)o->dst = val;
        return 0;
    }
    case CFG_INT: {
        errno = 0;
        long v = strtol(val, &end, 10);
        if (errno || end == val || *end != '\0') {
            snprintf(err, errlen, "%s (--%s): '%s' is not an integer", o->env, o->flag, val);
            return -1;
        }
        if ((double)v < o->min || (double)v > o->max) {
            snprintf(err, errlen, "%s (--%s): %ld is out of range %.0f..%.0f",
                     o->env, o->flag, v, o->min, o->max);
            return -1;
        }
        *(long *)o->dst = v;
        return 0;
    }
    case CFG_DOUBLE: {
        errno = 0;
        double v = strtod(val, &end);
        if (errno || end == val || *end != '\0' || !isfinite(v)) {
            snprintf(err, errlen, "%s (--%s): '%s' is not a number", o->env, o->flag, val);
            return -1;
        }
        if (v < o->min || v > o->max) {
            snprintf(err, errlen, "%s (--%s): %g is out of range %g..%g",
                     o->env, o->flag, v, o->min, o->max);
            return -1;
        }
        *(double *)o->dst = v;
        return 0;
    }
    case CFG_BOOL:
        if (!strcasecmp(val, "1") || !strcasecmp(val, "true") ||
            !strcasecmp(val, "yes") || !strcasecmp(val, "on")) {
            *(int *)o->dst = 1;
            return 0;
        }
        if (!strcasecmp(val, "0") || !strcasecmp(val, "false") ||
            !strcasecmp(val, "no") || !strcasecmp(val, "off")) {
            *(int *)o->dst = 0;
            return 0;
        }
        snprintf(err, errlen, "%s (--%s): '%s' is not a boolean (true/false)", o->env, o->flag, val);
        return -1;
    }
    snprintf(err, errlen, "%s: unknown option type", o->env);
    return -1;
}

static const struct cfg_opt *find_flag(const struct cfg_opt *opts, size_t n,
                                       const char *name, size_t namelen)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(opts[i].flag) == namelen && !strncmp(opts[i].flag, name, namelen))
            return &opts[i];
    return NULL;
}

int cfg_load(const struct cfg_opt *opts, size_t n, int argc, char **argv,
             const char *prog, const char *summary, char *err, size_t errlen)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            cfg_usage(stdout, prog, summary, opts, n);
            return CFG_HELP;
        }
    }
    /* Defaults first, then the environment: the last one wins. */
    for (size_t i = 0; i < n; i++) {
        if (set_value(&opts[i], opts[i].def, err, errlen) < 0)
            return CFG_ERR;
        const char *env = getenv(opts[i].env);
        /* Empty means unset: .env and compose files write VAR= for "default". */
        if (env && *env && set_value(&opts[i], env, err, errlen) < 0)
            return CFG_ERR;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0) {
            snprintf(err, errlen, "unexpected argument '%s' (see --help)", a);
            return CFG_ERR;
        }
        a += 2;
        const char *eq = strchr(a, '=');
        size_t namelen = eq ? (size_t)(eq - a) : strlen(a);
        const struct cfg_opt *o = find_flag(opts, n, a, namelen);
        if (!o) {
            snprintf(err, errlen, "unknown option '%s' (see --help)", argv[i]);
            return CFG_ERR;
        }
        const char *val;
        if (eq) {
            val = eq + 1;
        } else if (o->type == CFG_BOOL && (i + 1 >= argc || !strncmp(argv[i + 1], "--", 2))) {
            val = "true";   /* a bare boolean flag switches it on */
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            snprintf(err, errlen, "option --%s needs a value", o->flag);
            return CFG_ERR;
        }
        if (set_value(o, val, err, errlen) < 0)
            return CFG_ERR;
    }
    return CFG_OK;
}

void cfg_usage(FILE *out, const char *prog, const char *summary,
               const struct cfg_opt *opts, size_t n)
{
    fprintf(out, "Usage: %s [--option VALUE]...\n%s\n\n", prog, summary);
    fprintf(out, "Every option can also be set by its environment variable; "
                 "a flag wins over the variable.\n\n");
    for (size_t i = 0; i < n; i++) {
        const struct cfg_opt *o = &opts[i];
        char range[64] = "";
        if (o->type == CFG_INT)
            snprintf(range, sizeof range, ", %.0f..%.0f", o->min, o->max);
        else if (o->type == CFG_DOUBLE)
            snprintf(range, sizeof range, ", %g..%g", o->min, o->max);
        fprintf(out, "  --%-20s %s (%s%s, default '%s')\n  %-22s %s\n",
                o->flag, o->env, type_name(o->type), range, o->def, "", o->help);
    }
}

int cfg_read_secret(const char *path, char *out, size_t outlen, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    int rc = -1;
    if (!fgets(out, (int)outlen, f)) {
        snprintf(err, errlen, "%s: empty", path);
        goto out;
    }
    size_t n = strcspn(out, "\r\n");
    if (out[n] == '\0' && !feof(f) && fgetc(f) != EOF) {
        snprintf(err, errlen, "%s: longer than %zu bytes", path, outlen - 1);
        goto out;
    }
    out[n] = '\0';
    if (n == 0) {
        snprintf(err, errlen, "%s: empty first line", path);
        goto out;
    }
    rc = 0;
out:
    if (rc < 0)
        memset(out, 0, outlen);
    fclose(f);
    return rc;
}
