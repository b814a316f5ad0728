/*
 * lt_fs.h -- file-system helpers for the checkpoint writer and the
 * exporters: folders, recursive removal, fsync of a folder, copying a file,
 * and putting a finished temporary folder into place.
 */
#ifndef LT_FS_H
#define LT_FS_H

#include <stdio.h>

#include "lt_base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* mkdir -p */
lt_status lt_fs_mkdir_p(const char *path, lt_err *err);
/* mkdir -p that also says which folder levels it created: `top` receives the
 * outermost folder this call made ("" when path existed already), for
 * lt_fs_rm_made to take back on failure */
lt_status lt_fs_mkdir_p_made(const char *path, char *top, size_t cap, lt_err *err);
/* Take back what lt_fs_mkdir_p_made(path) made: rm -rf path, then remove each
 * (empty) parent folder up to and including top; nothing when top is "". */
void lt_fs_rm_made(const char *path, const char *top);
/* rm -rf (errors ignored; a missing path is fine) */
void lt_fs_rm_rf(const char *path);
/* fsync a folder (its entries: created / renamed files) */
lt_status lt_fs_fsync_dir(const char *path, lt_err *err);
/* copy src to dst (temporary name, fsync, rename) */
lt_status lt_fs_copy_file(const char *src, const char *dst, lt_err *err);
/* Rename the finished folder tmp to final. If final exists it is first
 * renamed to "<final>.old-<pid>" and removed after the swap, so a crash
 * leaves either the old or the new folder complete (or the old one under
 * the .old name). fsyncs the parent folder. */
lt_status lt_fs_replace_dir(const char *tmp, const char *final, lt_err *err);
/* Temporary names end in "-<host>-<pid>" (core's lt_tmp_tag). */
/* Who left `name` ("<anything>-<host>-<pid>")? LT_FS_TMP_STALE: this host,
 * a pid that is not ours and no longer runs (kill(pid, 0) fails with ESRCH);
 * LT_FS_TMP_FOREIGN: another host, or no host in the name (an older
 * luxtrain): nobody here can tell, so it stays; its host goes to `host` when
 * given ("" if none); LT_FS_TMP_KEEP: a live process of this host, or not a
 * temporary name at all. */
enum { LT_FS_TMP_KEEP = 0, LT_FS_TMP_STALE = 1, LT_FS_TMP_FOREIGN = 2 };
int lt_fs_tmp_owner(const char *name, char *host, size_t cap);
/* lt_fs_tmp_owner(name) == LT_FS_TMP_STALE */
int lt_fs_pid_name_stale(const char *name);
/* Remove the leftovers "<stem>.tmp-<host>-<pid>" and "<stem>.old-<host>-<pid>"
 * in folder `dir` (of lt_export's, lt_ckpt's and lt_fs_replace_dir's writers;
 * stem "" matches lt_ckpt's ".tmp-step-N-<host>-<pid>"; stem NULL matches any
 * "<anything>.tmp-<host>-<pid>", such as tokenize's ".NAME.h5.tmp-<host>-<pid>"
 * shards and lt_write_file_atomic's files) whose process is gone;
 * returns how many were removed. Those of another host are left, with one
 * line each on `note` when it is not NULL. */
int lt_fs_remove_stale_note(const char *dir, const char *stem, FILE *note);
/* lt_fs_remove_stale_note(dir, stem, NULL) */
int lt_fs_remove_stale(const char *dir, const char *stem);
/* size of a regular file, -1 if absent */
int64_t lt_fs_file_size(const char *path);
/* 1 if path is a folder that exists and holds anything */
int lt_fs_nonempty_dir(const char *path);
/* parent folder of path into out ("." if none) */
void lt_fs_dirname(const char *path, char *out, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
