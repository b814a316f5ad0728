/*
 * lt_opt.h -- the one option parser of every command (tools/lt_cmd_*.c,
 * train/lt_train_opts.c, bench/): a command describes its options in a table
 * (lt_optdef: name, kind, field, default, range, help) and gets parsing
 * ("--name value", "--name=value", flags, lists, positional arguments),
 * defaults, range checks with messages naming the option, the nearest valid
 * option for a typo, --help text, a docs table, and (where the command wants
 * it) a JSON file of options and the resolved options as JSON -- all from
 * that table, so every printed default is the real one.
 *
 * Also: whole-string number helpers for the few values parsed outside a
 * table.
 */
#ifndef LT_OPT_H
#define LT_OPT_H

#include <stddef.h>
#include <stdio.h>

#include "lt_base.h"

/* ---- option tables ---- */

typedef enum {
    LT_OPT_SECTION, /* a heading in --help and the docs table (name = the heading) */
    LT_OPT_STR,     /* char * (owned: lt_opts_free frees it); NULL when unset */
    LT_OPT_LIST,    /* char ** (owned) + int count at off_n: the arguments up to the next "--" one */
    LT_OPT_LONG,    /* long in [lo, hi] (open ends: lo_open / hi_open; hi >= LT_OPT_BIG: no upper bound) */
    LT_OPT_DBL,     /* finite double in [lo, hi], likewise */
    LT_OPT_FLAG,    /* int 0/1: "--name" sets it; "--name=true|false|1|0"; JSON true/false */
    LT_OPT_CHOICE,  /* char * (owned), one of `choices` */
    LT_OPT_CUSTOM,  /* `parse` turns the text into the field; `format` writes it back (JSON) */
} lt_opt_kind;

#define LT_OPT_BIG 1e18
#define LT_OPT_MAX 128 /* options (sections included) per table */

typedef struct lt_optdef {
    const char *name; /* without "--" */
    lt_opt_kind k;
    size_t off;       /* the field in the options struct */
    size_t off_n;     /* LT_OPT_LIST: its int count */
    const char *def;  /* default, as text (NULL = none) */
    const char *meta; /* value placeholder in --help ("DIR") */
    double lo, hi;    /* LT_OPT_LONG / LT_OPT_DBL range */
    int lo_open, hi_open;
    int hashed; /* the command's own use (train: part of the trajectory hash) */
    const char *help;
    const char *const *choices;                                     /* LT_OPT_CHOICE, NULL-terminated */
    lt_status (*parse)(const char *text, void *field, lt_err *err); /* LT_OPT_CUSTOM */
    void (*format)(const void *field, char *buf, size_t cap);      /* LT_OPT_CUSTOM */
    int required; /* "--name META is required" unless given */
} lt_optdef;

typedef struct lt_optset {
    const char *cmd;   /* "generate": messages "generate: ..."; help "luxtrain generate --help" */
    const char *usage; /* the lines --help prints before the options ("usage: luxtrain generate ...\n...") */
    const lt_optdef *defs;
    size_t n;
    const char *const (*alias)[2]; /* {other tools' name, ours}: for "did you mean" */
    size_t n_alias;
    size_t off_given; /* unsigned char[LT_OPT_MAX] in the options struct: set by a flag or the JSON file */
    size_t off_help;  /* int in the options struct: --help / -h was given */
    /* positional arguments (pos_max 0: none): char ** (owned) + int count */
    size_t off_pos, off_npos;
    int pos_min, pos_max;
    const char *pos_meta; /* "CHECKPOINT" for "needs CHECKPOINT" */
    int json_config;      /* the option named "config" is a JSON file of options, applied before the flags */
    void (*more_help)(FILE *f); /* printed after the options (lists only known at run time) */
} lt_optset;

/* The rows every command with a backend has: --device (cpu, cuda, auto;
 * `def` its default) and --threads. `type` is the options struct. */
extern const char *const lt_opt_devices[]; /* "cpu", "cuda", "auto", NULL */
#define LT_OPT_ROW_DEVICE(type, field, def_)                                                                 \
    {.name = "device", .k = LT_OPT_CHOICE, .off = offsetof(type, field), .def = def_, .meta = "D",             \
     .choices = lt_opt_devices, .help = "auto = cuda if a GPU is present, else cpu"}
#define LT_OPT_ROW_THREADS(type, field)                                                                     \
    {.name = "threads", .k = LT_OPT_LONG, .off = offsetof(type, field), .def = "0", .meta = "N", .lo = 0,     \
     .hi = 4096, .help = "CPU threads; 0 = OpenMP's default"}

/* Defaults into a zeroed struct (allocated strings: free with lt_opts_free). */
lt_status lt_opts_defaults(const lt_optset *s, void *o, lt_err *err);
void lt_opts_free(const lt_optset *s, void *o);
/* Parse argv (argv[0], the command's name, is skipped): defaults, the JSON
 * config when the set has one, the flags in order, required options and the
 * positional count. On --help / -h anywhere only the help field is set.
 * `o` is initialized here: free it with lt_opts_free even on failure. */
lt_status lt_opts_parse(const lt_optset *s, int argc, char **argv, void *o, lt_err *err);
/* lt_opts_parse for a command's main: returns -1 to go on, 0 after printing
 * --help to stdout, 2 after printing "<cmd>: <message>" and one
 * "(luxtrain <cmd> --help lists the options)" line to stderr. */
int lt_opts_cli(const lt_optset *s, int argc, char **argv, void *o);
/* A command's whole main: o (zeroed by the caller) parsed with
 * lt_opts_cli, run(o) when it says go on, o freed; the exit code. */
int lt_opts_main(const lt_optset *s, int argc, char **argv, void *o, int (*run)(void *o));
/* A JSON object of options (keys: names with '-' or '_'); `origin` names it. */
lt_status lt_opts_apply_json(const lt_optset *s, void *o, const char *json, const char *origin, lt_err *err);
/* Was the option set by a flag or the JSON file? (0 for an unknown name) */
int lt_opts_given(const lt_optset *s, const void *o, const char *name);
const lt_optdef *lt_opts_find(const lt_optset *s, const char *name);
void lt_opts_help(const lt_optset *s, FILE *f);
void lt_opts_markdown(const lt_optset *s, FILE *f);
/* The options as a JSON object (every option but sections and "config";
 * hashed_only: those with hashed != 0, and hashed == 2 ones only when not at
 * their default). cJSON_free / free the result; NULL when out of memory. */
char *lt_opts_to_json(const lt_optset *s, const void *o, int hashed_only, int formatted);

/* Option parsing helpers: parse a whole string as a number, else print
 * "<cmd>: <opt> expects <what>, got '<s>'" and return 0. */
int lt_parse_int(const char *cmd, const char *opt, const char *s, long lo, long hi, long *out);
int lt_parse_double(const char *cmd, const char *opt, const char *s, double *out);

/* Unknown options. lt_nearest collects the candidate option closest to what
 * was typed (Levenshtein distance over the names without leading dashes and
 * without a "=value" tail); lt_nearest_best returns it when
 * it is close enough to be a plausible typo, else NULL. */
typedef struct {
    const char *best;
    size_t dist, len;
} lt_nearest;
void lt_nearest_offer(lt_nearest *n, const char *given, const char *candidate);
/* compare with `compared` (another tool's name for the option), suggest `suggested` */
void lt_nearest_offer_alias(lt_nearest *n, const char *given, const char *compared, const char *suggested);
const char *lt_nearest_best(const lt_nearest *n, const char *given);

/* Prints, once: "<cmd>: unknown option '<arg>'; did you mean '<nearest>'?"
 * and "(luxtrain <cmd> --help lists the options)". valid: the command's
 * options ("--name"), NULL-terminated. Returns 2 (bad usage). */
int lt_opt_unknown_option(const char *cmd, const char *arg, const char *const *valid);

#endif
