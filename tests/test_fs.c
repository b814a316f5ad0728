/*
 * test_fs.c -- lt_fs's temporary names and cleanups:
 *   - lt_tmp_tag is "<host>-<pid>" with a host free of '-';
 *   - lt_fs_tmp_owner: this host + a dead pid is stale, this host + a live pid
 *     (or ours) is kept, another host or no host at all (an older luxtrain's
 *     "final.tmp-<pid>") is foreign, and its host is named;
 *   - lt_fs_remove_stale_note removes only the stale ones and notes the
 *     foreign ones, one line each;
 *   - lt_fs_mkdir_p_made / lt_fs_rm_made take back exactly the levels made.
 */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lt_fs.h"
#include "lt_test.h"

static void mk(const char *dir, const char *name) {
    char p[4096];
    lt_err err = {{0}};
    snprintf(p, sizeof p, "%s/%s", dir, name);
    LT_CHECK_OK(lt_fs_mkdir_p(p, &err), &err);
}

static int has(const char *dir, const char *name) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return lt_is_dir(p);
}

int main(void) {
    const char *tmp = lt_test_tmpdir("test_fs");
    char tag[128], host[128], name[512], dead_s[160], live_s[160], me[128];
    lt_err err = {{0}};
    lt_tmp_tag(tag, sizeof tag);
    char *dash = strchr(tag, '-');
    LT_CHECK(dash && dash > tag && strtol(dash + 1, NULL, 10) == (long)getpid() && !strchr(dash + 1, '-'),
             "tag '%s' is not <host>-<pid>", tag);
    snprintf(me, sizeof me, "%.*s", dash ? (int)(dash - tag) : 0, tag);

    pid_t dead = fork();
    if (dead == 0) _exit(0);
    waitpid(dead, NULL, 0);
    pid_t live = fork();
    if (live == 0) {
        pause();
        _exit(0);
    }
    snprintf(dead_s, sizeof dead_s, "%s-%ld", me, (long)dead);
    snprintf(live_s, sizeof live_s, "%s-%ld", me, (long)live);

    snprintf(name, sizeof name, "final.tmp-%s", dead_s);
    LT_CHECK(lt_fs_tmp_owner(name, host, sizeof host) == LT_FS_TMP_STALE && !strcmp(host, me),
             "%s: dead pid of this host should be stale (host '%s')", name, host);
    snprintf(name, sizeof name, ".tmp-step-000010-%s", dead_s);
    LT_CHECK(lt_fs_pid_name_stale(name), "%s: lt_ckpt's temp name of a dead pid should be stale", name);
    snprintf(name, sizeof name, "hf.tmp-%s", live_s);
    LT_CHECK(lt_fs_tmp_owner(name, NULL, 0) == LT_FS_TMP_KEEP, "%s: a live pid is kept", name);
    snprintf(name, sizeof name, "hf.tmp-%s", tag);
    LT_CHECK(lt_fs_tmp_owner(name, NULL, 0) == LT_FS_TMP_KEEP, "%s: our own pid is kept", name);
    snprintf(name, sizeof name, "adapter.tmp-other_node.x-%ld", (long)dead);
    LT_CHECK(lt_fs_tmp_owner(name, host, sizeof host) == LT_FS_TMP_FOREIGN && !strcmp(host, "other_node.x"),
             "%s: another host is foreign (host '%s')", name, host);
    snprintf(name, sizeof name, "final.tmp-%ld", (long)dead);
    LT_CHECK(lt_fs_tmp_owner(name, host, sizeof host) == LT_FS_TMP_FOREIGN && !host[0],
             "%s: no host (older luxtrain) is foreign, not removed (host '%s')", name, host);
    LT_CHECK(lt_fs_tmp_owner("final", NULL, 0) == LT_FS_TMP_KEEP, "a plain name is kept");
    LT_CHECK(lt_fs_tmp_owner("final.tmp-x-12ab", NULL, 0) == LT_FS_TMP_KEEP, "a non-numeric pid is kept");

    /* the cleanup of one folder */
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/step-000010", tmp);
    lt_fs_rm_rf(dir);
    char n_dead[256], n_old[256], n_live[256], n_other[256], n_oth2[256];
    snprintf(n_dead, sizeof n_dead, "hf.tmp-%s", dead_s);
    snprintf(n_old, sizeof n_old, "hf.old-%s", dead_s);
    snprintf(n_live, sizeof n_live, "hf.tmp-%s", live_s);
    snprintf(n_other, sizeof n_other, "hf.tmp-other_node.x-%ld", (long)dead);
    snprintf(n_oth2, sizeof n_oth2, "adapter.tmp-%s", dead_s); /* another stem */
    mk(dir, n_dead);
    mk(dir, n_dead); /* idempotent */
    mk(dir, "hf");
    mk(dir, n_old);
    mk(dir, n_live);
    mk(dir, n_other);
    mk(dir, n_oth2);
    char notes[4096] = "";
    FILE *f = fmemopen(notes, sizeof notes - 1, "w");
    int gone = lt_fs_remove_stale_note(dir, "hf", f);
    fclose(f);
    LT_CHECK(gone == 2 && !has(dir, n_dead) && !has(dir, n_old), "removed %d, expected hf.tmp/hf.old of the dead pid",
             gone);
    LT_CHECK(has(dir, "hf") && has(dir, n_live) && has(dir, n_other) && has(dir, n_oth2),
             "hf/, the live pid's, the other host's or another stem's folder was removed");
    char want[8192];
    snprintf(want, sizeof want, "note: left %s/%s: unfinished, written on host other_node.x (this is %s)", dir, n_other,
             me);
    LT_CHECK(strstr(notes, want) && !strchr(strchr(notes, '\n') + 1, '\n'), "notes: '%s', expected one line '%s'",
             notes, want);
    LT_CHECK(lt_fs_remove_stale_note(dir, "adapter", NULL) == 1 && !has(dir, n_oth2), "adapter.tmp of a dead pid");
    kill(live, SIGKILL);
    waitpid(live, NULL, 0);

    /* mkdir -p that says what it made, and takes back exactly that */
    char top[4096], path[4096], made[4096];
    snprintf(top, sizeof top, "%s/a", tmp);
    lt_fs_rm_rf(top);
    snprintf(path, sizeof path, "%s/a/b/c/", tmp);
    LT_CHECK_OK(lt_fs_mkdir_p_made(path, made, sizeof made, &err), &err);
    LT_CHECK(!strcmp(made, top), "made '%s', expected '%s'", made, top);
    snprintf(name, sizeof name, "%s/a/b/c/file", tmp);
    LT_CHECK_OK(lt_write_file_atomic(name, "x", 1, &err), &err);
    lt_fs_rm_made(path, made);
    LT_CHECK(!lt_is_dir(top), "%s is still there", top);
    /* a existed: only b and c go */
    LT_CHECK_OK(lt_fs_mkdir_p(top, &err), &err);
    LT_CHECK_OK(lt_fs_mkdir_p_made(path, made, sizeof made, &err), &err);
    snprintf(name, sizeof name, "%s/a/b", tmp);
    LT_CHECK(!strcmp(made, name), "made '%s', expected '%s'", made, name);
    lt_fs_rm_made(path, made);
    LT_CHECK(lt_is_dir(top) && !lt_is_dir(name), "a should stay, a/b go");
    /* everything existed: nothing made, nothing removed */
    LT_CHECK_OK(lt_fs_mkdir_p(path, &err), &err);
    LT_CHECK_OK(lt_fs_mkdir_p_made(path, made, sizeof made, &err), &err);
    LT_CHECK(!made[0], "made '%s' of a folder that existed", made);
    lt_fs_rm_made(path, made);
    LT_CHECK(lt_is_dir(path), "an existing folder was removed");
    return lt_test_finish("test_fs");
}
