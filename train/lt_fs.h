/*
 * lt_fs.h -- file-system helpers for the checkpoint writer and the
 * exporters: folders, recursive removal, fsync of a folder, copying a file,
 * and putting a finished temporary folder into place.
 */
#ifndef LT_FS_H
#define LT_FS_H

#include "lt_base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* mkdir -p */
lt_status lt_fs_mkdir_p(const char *path, lt_err *err);
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
/* Is `name` ("<anything>-<pid>") a leftover of a process that no longer runs
 * on this machine? (pid > 0, not ours, kill(pid, 0) fails with ESRCH) */
int lt_fs_pid_name_stale(const char *name);
/* Remove the leftovers "<stem>.tmp-<pid>" and "<stem>.old-<pid>" in folder
 * `dir` (of lt_export's and lt_fs_replace_dir's writers) whose process is
 * gone; returns how many were removed. */
int lt_fs_remove_stale(const char *dir, const char *stem);
/* size of a regular file, -1 if absent */
int64_t lt_fs_file_size(const char *path);
/* parent folder of path into out ("." if none) */
void lt_fs_dirname(const char *path, char *out, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
