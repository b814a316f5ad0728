/*
 * lt_opt.h -- option parsing helpers shared by the commands (tools/) and the
 * training option table (train/lt_train_opts.c): whole-string numbers with a
 * message naming the option, and the nearest valid option for a typo.
 */
#ifndef LT_OPT_H
#define LT_OPT_H

#include <stddef.h>

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
