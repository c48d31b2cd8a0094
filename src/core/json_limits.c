// The pre-parse scan of JSON text (see json_limits.h).
#include "core/json_limits.h"

#include <cjson/cJSON.h>

#include "core/error.h"

int asa_json_check(const char *text, size_t len, const char *src, const asa_json_limits *lim) {
    size_t max_items = lim ? lim->max_items : (size_t)-1, max_values = lim ? lim->max_values : (size_t)-1;
    const char *why = lim && lim->why ? lim->why : "";
    // Elements so far of each open array or object: commas seen, plus one once it holds anything.
    size_t items[CJSON_NESTING_LIMIT + 1];
    int nonempty[CJSON_NESTING_LIMIT + 1];
    int depth = 0, in_str = 0;
    size_t line = 1, values = 1;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (c == '\n') line++;
        if (in_str) {
            if (c == '\\') i++;  // the escaped character cannot end the string (a "\u" escape is plain hex)
            else if (c == '"') in_str = 0;
            continue;
        }
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') continue;
        if (c == ']' || c == '}') {
            if (depth > 0) depth--;
            continue;
        }
        if (depth > 0 && c != ',' && c != ':' && !nonempty[depth]) {
            nonempty[depth] = 1;
            if (++items[depth] > max_items) goto too_many;
        }
        if (c == '"') {
            in_str = 1;
        } else if (c == '[' || c == '{') {
            if (depth == CJSON_NESTING_LIMIT)
                return asa_err_set("%s: JSON nested more than %d levels deep (at line %zu), the parser's limit", src,
                                   CJSON_NESTING_LIMIT, line);
            depth++;
            items[depth] = 0;
            nonempty[depth] = 0;
            values++;
        } else if (c == ',') {
            values++;
            if (depth > 0 && ++items[depth] > max_items) goto too_many;
        }
        if (values > max_values)
            return asa_err_set("%s: more than %zu JSON values (at line %zu), the limit for this file%s", src,
                               max_values, line, why);
    }
    return ASA_OK;
too_many:
    return asa_err_set("%s: a JSON array or object with more than %zu elements (at line %zu), the limit for this file%s",
                       src, max_items, line, why);
}
