/* lt_fs.c -- see lt_fs.h */
#define _POSIX_C_SOURCE 200809L
#include "lt_fs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

lt_status lt_fs_mkdir_p(const char *path, lt_err *err) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return lt_fail(err, LT_ERR_INVALID, "%s: path too long", path);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || !*p) {
            char c = *p;
            *p = 0;
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return lt_fail(err, LT_ERR_IO, "%s: cannot create folder: %s", buf, strerror(errno));
            *p = c;
            if (!c) break;
        }
    }
    if (!lt_is_dir(path)) return lt_fail(err, LT_ERR_IO, "%s: exists and is not a folder", path);
    return LT_OK;
}

void lt_fs_rm_rf(const char *path) {
    struct stat st;
    if (lstat(path, &st) != 0) return;
    if (!S_ISDIR(st.st_mode)) {
        unlink(path);
        return;
    }
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        char sub[4096];
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            if (lt_path_join(sub, sizeof sub, path, e->d_name)) lt_fs_rm_rf(sub);
        }
        closedir(d);
    }
    rmdir(path);
}

lt_status lt_fs_fsync_dir(const char *path, lt_err *err) {
    int fd = open(path, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return lt_fail(err, LT_ERR_IO, "%s: cannot open folder: %s", path, strerror(errno));
    int r = fsync(fd);
    int e = errno;
    close(fd);
    if (r != 0 && e != EINVAL) return lt_fail(err, LT_ERR_IO, "%s: fsync failed: %s", path, strerror(e));
    return LT_OK;
}

lt_status lt_fs_copy_file(const char *src, const char *dst, lt_err *err) {
    char *data = NULL;
    size_t len = 0;
    lt_status st = lt_read_file(src, &data, &len, err);
    if (st != LT_OK) return st;
    st = lt_write_file_atomic(dst, data, len, err);
    free(data);
    return st;
}

int64_t lt_fs_file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) ? (int64_t)st.st_size : -1;
}

void lt_fs_dirname(const char *path, char *out, size_t cap) {
    snprintf(out, cap, "%s", path);
    size_t n = strlen(out);
    while (n > 1 && out[n - 1] == '/') out[--n] = 0;
    char *slash = strrchr(out, '/');
    if (!slash) snprintf(out, cap, ".");
    else if (slash == out) out[1] = 0;
    else *slash = 0;
}

lt_status lt_fs_replace_dir(const char *tmp, const char *final, lt_err *err) {
    char old[4096] = "", parent[4096];
    lt_status st = lt_fs_fsync_dir(tmp, err);
    if (st != LT_OK) return st;
    if (lt_is_dir(final)) {
        if (snprintf(old, sizeof old, "%s.old-%ld", final, (long)getpid()) >= (int)sizeof old)
            return lt_fail(err, LT_ERR_INVALID, "%s: path too long", final);
        lt_fs_rm_rf(old);
        if (rename(final, old) != 0)
            return lt_fail(err, LT_ERR_IO, "%s: cannot move the previous folder aside: %s", final, strerror(errno));
    } else if (lt_fs_file_size(final) >= 0) {
        return lt_fail(err, LT_ERR_IO, "%s: exists and is not a folder", final);
    }
    if (rename(tmp, final) != 0) {
        int e = errno;
        if (old[0]) rename(old, final);
        return lt_fail(err, LT_ERR_IO, "%s: cannot rename %s into place: %s", final, tmp, strerror(e));
    }
    if (old[0]) lt_fs_rm_rf(old);
    lt_fs_dirname(final, parent, sizeof parent);
    return lt_fs_fsync_dir(parent, err);
}

int lt_fs_pid_name_stale(const char *name) {
    const char *dash = strrchr(name, '-');
    if (!dash || !dash[1]) return 0;
    char *end = NULL;
    errno = 0;
    long pid = strtol(dash + 1, &end, 10);
    if (errno || *end || pid <= 0 || pid == (long)getpid() || (long)(pid_t)pid != pid) return 0;
    return kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

int lt_fs_remove_stale(const char *dir, const char *stem) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    size_t n = strlen(stem);
    int removed = 0;
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, stem, n) || (strncmp(e->d_name + n, ".tmp-", 5) && strncmp(e->d_name + n, ".old-", 5)))
            continue;
        if (!lt_fs_pid_name_stale(e->d_name) || !lt_path_join(path, sizeof path, dir, e->d_name)) continue;
        lt_fs_rm_rf(path);
        removed++;
    }
    closedir(d);
    return removed;
}
