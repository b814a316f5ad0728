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

lt_status lt_fs_mkdir_p_made(const char *path, char *top, size_t cap, lt_err *err) {
    char buf[4096];
    if (top && cap) top[0] = 0;
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return lt_fail(err, LT_ERR_INVALID, "%s: path too long", path);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || !*p) {
            char c = *p;
            *p = 0;
            if (mkdir(buf, 0755) == 0) {
                if (top && cap && !top[0]) snprintf(top, cap, "%s", buf);
            } else if (errno != EEXIST) {
                return lt_fail(err, LT_ERR_IO, "%s: cannot create folder: %s", buf, strerror(errno));
            }
            *p = c;
            if (!c) break;
        }
    }
    if (!lt_is_dir(path)) return lt_fail(err, LT_ERR_IO, "%s: exists and is not a folder", path);
    return LT_OK;
}

lt_status lt_fs_mkdir_p(const char *path, lt_err *err) { return lt_fs_mkdir_p_made(path, NULL, 0, err); }

void lt_fs_rm_made(const char *path, const char *top) {
    if (!top || !top[0]) return;
    lt_fs_rm_rf(path);
    char cur[4096], up[4096];
    size_t n = strlen(top);
    snprintf(cur, sizeof cur, "%s", path);
    /* the levels between path and top: each one's parent, while it lies inside top */
    while (strlen(cur) > n && !strncmp(cur, top, n) && cur[n] == '/') {
        lt_fs_dirname(cur, up, sizeof up);
        if (!strcmp(up, cur)) break;
        snprintf(cur, sizeof cur, "%s", up);
        if (rmdir(cur) != 0) return; /* not empty: something else lives there */
    }
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
        char tag[128];
        lt_tmp_tag(tag, sizeof tag);
        if (snprintf(old, sizeof old, "%s.old-%s", final, tag) >= (int)sizeof old)
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

int lt_fs_tmp_owner(const char *name, char *host, size_t cap) {
    if (host && cap) host[0] = 0;
    const char *dash = strrchr(name, '-');
    if (!dash || !dash[1]) return LT_FS_TMP_KEEP;
    char *end = NULL;
    errno = 0;
    long pid = strtol(dash + 1, &end, 10);
    if (errno || *end || pid <= 0 || (long)(pid_t)pid != pid) return LT_FS_TMP_KEEP;
    const char *h = dash; /* the host: between the dash before it and the last one */
    while (h > name && h[-1] != '-') h--;
    size_t hn = (size_t)(dash - h);
    if (h == name) hn = 0; /* "<anything>-<pid>": no host (an older luxtrain) */
    if (host && cap) snprintf(host, cap, "%.*s", (int)hn, h);
    char tag[128];
    lt_tmp_tag(tag, sizeof tag);
    size_t mine = strcspn(tag, "-");
    /* a '-' never appears in a tag's host, so the first one ends it */
    if (!hn || hn != mine || strncmp(h, tag, mine)) return LT_FS_TMP_FOREIGN;
    if (pid == (long)getpid()) return LT_FS_TMP_KEEP;
    return kill((pid_t)pid, 0) != 0 && errno == ESRCH ? LT_FS_TMP_STALE : LT_FS_TMP_KEEP;
}

int lt_fs_pid_name_stale(const char *name) { return lt_fs_tmp_owner(name, NULL, 0) == LT_FS_TMP_STALE; }

int lt_fs_remove_stale_note(const char *dir, const char *stem, FILE *note) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    size_t n = stem ? strlen(stem) : 0;
    int removed = 0;
    struct dirent *e;
    char path[4096], host[128], tag[128];
    while ((e = readdir(d))) {
        if (!stem ? !strstr(e->d_name, ".tmp-")
                  : strncmp(e->d_name, stem, n) || (strncmp(e->d_name + n, ".tmp-", 5) && strncmp(e->d_name + n, ".old-", 5)))
            continue;
        if (!lt_path_join(path, sizeof path, dir, e->d_name)) continue;
        int who = lt_fs_tmp_owner(e->d_name, host, sizeof host);
        if (who == LT_FS_TMP_STALE) {
            lt_fs_rm_rf(path);
            removed++;
        } else if (who == LT_FS_TMP_FOREIGN && note) {
            lt_tmp_tag(tag, sizeof tag);
            tag[strcspn(tag, "-")] = 0;
            fprintf(note, "note: left %s: unfinished, written on %s%s (this is %s); remove it once no run uses it\n",
                    path, host[0] ? "host " : "another host or by an older luxtrain", host, tag);
        }
    }
    closedir(d);
    return removed;
}

int lt_fs_remove_stale(const char *dir, const char *stem) { return lt_fs_remove_stale_note(dir, stem, NULL); }

int lt_fs_nonempty_dir(const char *path) {
    DIR *d = opendir(path);
    if (!d) return 0;
    struct dirent *e;
    int any = 0;
    while (!any && (e = readdir(d))) any = strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return any;
}
