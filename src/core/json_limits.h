// Limits checked on JSON text from outside before cJSON parses it. cJSON spends about 64 bytes on each
// value, so a file of tiny values ("[0,0,0,...") costs some 30 times its size in memory, and it refuses
// nesting deeper than CJSON_NESTING_LIMIT with the same NULL as any syntax error. The scan here bounds
// both and says which limit was hit, with the line.
#ifndef ASA_CORE_JSON_LIMITS_H
#define ASA_CORE_JSON_LIMITS_H

#include <stddef.h>

typedef struct {
    size_t max_items;   // elements of one array or members of one object
    size_t max_values;  // values in the whole text (counted as commas + arrays + objects + 1, an upper bound)
    const char *why;    // appended to a size message: what real files hold (may be NULL)
} asa_json_limits;

// Limits for files of one small JSON record a line (eval JSONL): far more than any record needs.
#define ASA_JSON_RECORD_LIMITS ((asa_json_limits){1024, 4096, " (one record of an eval file needs a few dozen)"})

// Scans text[0..len) (strings and escapes respected, syntax otherwise not checked: cJSON does that) and
// refuses nesting beyond cJSON's limit, then, when lim is not NULL, its size limits. Errors start with src.
int asa_json_check(const char *text, size_t len, const char *src, const asa_json_limits *lim);

#endif
