/* lt_chat_file.c -- where a tokenizer's chat_template text is found (see
 * lt_chat.h); apart from the renderers, which need no JSON. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lt_chat.h"
#include "lt_json.h"

static char *dup_str(const char *s) {
    size_t n = strlen(s);
    char *r = malloc(n + 1);
    if (r) memcpy(r, s, n + 1);
    return r;
}

lt_status lt_chat_template_text(const char *cfg_path, char **text, lt_err *err) {
    *text = NULL;
    /* transformers 5 writes the template to chat_template.jinja next to the
     * config, and a file there takes precedence over the config's key */
    char jpath[4096];
    const char *slash = strrchr(cfg_path, '/');
    int n = snprintf(jpath, sizeof jpath, "%.*schat_template.jinja", slash ? (int)(slash - cfg_path + 1) : 0,
                     cfg_path);
    if (n < 0 || (size_t)n >= sizeof jpath) return lt_fail(err, LT_ERR_INVALID, "%s: path too long", cfg_path);
    if (lt_file_exists(jpath)) {
        size_t len = 0;
        lt_status st = lt_read_file(jpath, text, &len, err);
        if (st) return st;
        if (strlen(*text) != len) {
            free(*text);
            *text = NULL;
            return lt_fail(err, LT_ERR_FORMAT, "%s: holds a NUL byte", jpath);
        }
        return LT_OK;
    }
    if (!lt_file_exists(cfg_path)) return LT_OK;
    cJSON *root = NULL;
    lt_status st = lt_json_load_file(cfg_path, &root, err);
    if (st) return st;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "chat_template");
    const char *s = cJSON_IsString(t) ? t->valuestring : NULL;
    if (cJSON_IsArray(t)) { /* [{"name": "default", "template": ...}, ...] */
        const cJSON *it;
        cJSON_ArrayForEach(it, t) {
            const cJSON *nm = cJSON_GetObjectItemCaseSensitive(it, "name"),
                        *tt = cJSON_GetObjectItemCaseSensitive(it, "template");
            if (cJSON_IsString(nm) && !strcmp(nm->valuestring, "default") && cJSON_IsString(tt)) s = tt->valuestring;
        }
    }
    if (s && !(*text = dup_str(s))) st = lt_fail(err, LT_ERR_NOMEM, "out of memory");
    cJSON_Delete(root);
    return st;
}
