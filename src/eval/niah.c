// S-NIAH prompts, length fitting, scoring, generation and the accuracy picture.
#include "eval/niah.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/fileio.h"
#include "infer/decode.h"
#include "infer/generate.h"
#include "infer/sampler.h"

// Small stand-ins for the wonderwords adjective and noun lists RULER draws its keys from.
static const char *const niah_adjectives[] = {
    "ancient", "bitter", "brave", "bright", "calm", "clever", "cold", "crooked", "curious", "damp",
    "eager", "empty", "fancy", "fierce", "gentle", "gifted", "golden", "hollow", "humble", "icy",
    "jolly", "lazy", "little", "loud", "lucky", "mellow", "misty", "narrow", "noisy", "odd",
    "pale", "proud", "quiet", "rapid", "rough", "rusty", "shiny", "silent", "sleepy", "smooth",
    "sour", "steep", "sticky", "swift", "tame", "tender", "tidy", "vast", "wild", "witty"};
static const char *const niah_nouns[] = {
    "anchor", "badger", "basket", "beacon", "blanket", "bottle", "bridge", "candle", "canyon", "castle",
    "cellar", "compass", "cottage", "crystal", "dolphin", "engine", "falcon", "feather", "garden", "glacier",
    "hammer", "harbor", "helmet", "island", "jacket", "kettle", "ladder", "lantern", "meadow", "mirror",
    "monkey", "needle", "orchard", "painter", "parrot", "pepper", "pillow", "pocket", "puzzle", "rabbit",
    "ribbon", "saddle", "shovel", "spider", "teacup", "thimble", "tunnel", "velvet", "wagon", "window"};

#define COUNT(a) ((int)(sizeof(a) / sizeof *(a)))

int asa_niah_words_init(asa_niah_words *hw, const char *text, size_t len) {
    memset(hw, 0, sizeof *hw);
    hw->buf = asa_malloc(len + 1);
    memcpy(hw->buf, text, len);
    hw->buf[len] = 0;
    int cap = 0;
    for (size_t i = 0; i < len;) {
        while (i < len && isspace((unsigned char)hw->buf[i])) hw->buf[i++] = 0;
        if (i >= len) break;
        if (hw->n == cap) {
            cap = cap ? cap * 2 : 4096;
            hw->w = realloc(hw->w, sizeof(char *) * cap);
            ASA_CHECK(hw->w);
        }
        hw->w[hw->n++] = hw->buf + i;
        while (i < len && !isspace((unsigned char)hw->buf[i])) i++;
    }
    if (hw->n == 0) {
        asa_niah_words_free(hw);
        return asa_err_set("haystack text: no words");
    }
    return ASA_OK;
}

void asa_niah_words_free(asa_niah_words *hw) {
    free(hw->buf);
    free(hw->w);
    memset(hw, 0, sizeof *hw);
}

void asa_niah_draw(asa_rng *rng, int task, char key[64], char value[64]) {
    snprintf(key, 64, "%s-%s", niah_adjectives[asa_rng_below(rng, COUNT(niah_adjectives))],
             niah_nouns[asa_rng_below(rng, COUNT(niah_nouns))]);
    if (task != 3) {
        snprintf(value, 64, "%u", 1000000u + asa_rng_below(rng, 9000000u));
        return;
    }
    unsigned char b[16];
    for (int i = 0; i < 16; i++) b[i] = (unsigned char)asa_rng_below(rng, 256);
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);  // version 4
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);  // RFC 4122 variant
    char *w = value;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) *w++ = '-';
        w += sprintf(w, "%02x", b[i]);
    }
}

// A growable string.
typedef struct {
    char *s;
    size_t n, cap;
} sbuf;

static void put(sbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->s = realloc(b->s, b->cap);
        ASA_CHECK(b->s);
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}

static void puts_(sbuf *b, const char *s) { put(b, s, strlen(s)); }

// A word that ends a sentence: its last character, past closing quotes and brackets, is . ! or ?.
static int ends_sentence(const char *w) {
    size_t n = strlen(w);
    while (n > 0 && strchr("\"')]", w[n - 1])) n--;
    return n > 0 && strchr(".!?", w[n - 1]);
}

char *asa_niah_prompt(const asa_niah_spec *spec, const asa_niah_words *hw, int n_units, const char *key,
                      const char *value, asa_niah_sample *s) {
    const char *kind = spec->task == 3 ? "uuid" : "number";
    char needle[256];
    snprintf(needle, sizeof needle, "One of the special magic %ss for %s is: %s.", kind, key, value);
    sbuf b = {0};
    char head[256];
    snprintf(head, sizeof head,
             "A special magic %s is hidden within the following text. Make sure to memorize it. I will quiz you "
             "about the %s afterwards.\n",
             kind, kind);
    puts_(&b, head);
    s->hay_begin = b.n;
    if (spec->task == 1) {
        // RULER's noise haystack: the filler repeated, one per line, the needle a line of its own.
        int at = (int)(spec->depth * n_units + 0.5);
        for (int i = 0; i <= n_units; i++) {
            if (i == at) {
                if (i > 0) puts_(&b, "\n");
                s->needle_at = b.n;
                puts_(&b, needle);
            }
            if (i == n_units) break;
            if (b.n > s->hay_begin) puts_(&b, "\n");
            puts_(&b, ASA_NIAH_FILLER);
        }
    } else {
        // Essay haystack: n_units words (the text repeated as needed), the needle inserted after
        // floor(depth * sentences) sentences, as RULER places it.
        int *bound = asa_malloc(sizeof(int) * (size_t)(n_units + 2)), nb = 0;
        bound[nb++] = 0;
        for (int i = 1; i <= n_units; i++)
            if (ends_sentence(hw->w[(i - 1) % hw->n]) || i == n_units) bound[nb++] = i;
        int at = bound[(int)(spec->depth * (nb - 1))];
        free(bound);
        for (int i = 0; i <= n_units; i++) {
            if (i == at) {
                if (b.n > s->hay_begin) puts_(&b, " ");
                s->needle_at = b.n;
                puts_(&b, needle);
            }
            if (i == n_units) break;
            if (b.n > s->hay_begin) puts_(&b, " ");
            puts_(&b, hw->w[i % hw->n]);
        }
    }
    s->hay_end = b.n;
    char tail[512];
    snprintf(tail, sizeof tail,
             "\nWhat is the special magic %s for %s mentioned in the provided text? The special magic %s for %s "
             "mentioned in the provided text is",
             kind, key, kind, key);
    puts_(&b, tail);
    return b.s;
}

static int count_tokens(asa_encoder *enc, const char *text, int *n) {
    asa_token_buf ids = {0};
    int rc = asa_encoder_encode(enc, text, strlen(text), 0, &ids);
    *n = (int)ids.n;
    asa_token_buf_free(&ids);
    return rc;
}

// Prompt with n units into s (replacing the previous one); *fits = its tokens are within the budget.
static int try_units(const asa_niah_spec *spec, const asa_niah_words *hw, int n, asa_encoder *enc, asa_niah_sample *s,
                     int *fits) {
    free(s->prompt);
    s->prompt = asa_niah_prompt(spec, hw, n, s->key, s->value, s);
    s->n_units = n;
    if (count_tokens(enc, s->prompt, &s->n_tokens) != ASA_OK) return ASA_ERR;
    *fits = s->n_tokens <= spec->length - spec->answer_tokens;
    return ASA_OK;
}

int asa_niah_make(const asa_niah_spec *spec, const asa_niah_words *hw, asa_encoder *enc, asa_rng *rng,
                  asa_niah_sample *s) {
    memset(s, 0, sizeof *s);
    if (spec->task < 1 || spec->task > 3) return asa_err_set("niah: task %d is not 1, 2 or 3", spec->task);
    if (spec->task > 1 && (!hw || hw->n == 0)) return asa_err_set("niah: task %d needs a haystack text", spec->task);
    asa_niah_draw(rng, spec->task, s->key, s->value);
    int fits;
    if (try_units(spec, hw, 0, enc, s, &fits) != ASA_OK) return ASA_ERR;
    if (!fits) {
        int need = s->n_tokens;
        asa_niah_sample_free(s);
        return asa_err_set("niah: length %d leaves no room for a haystack (the bare prompt takes %d tokens and the "
                           "answer %d)", spec->length, need, spec->answer_tokens);
    }
    // Invariant: lo fits, hi does not. Every unit adds at least one token, so hi exists below length.
    int lo = 0, hi = 1;
    for (;;) {
        if (try_units(spec, hw, hi, enc, s, &fits) != ASA_OK) return ASA_ERR;
        if (!fits) break;
        lo = hi;
        hi *= 2;
    }
    while (hi - lo > 1) {
        int mid = lo + (hi - lo) / 2;
        if (try_units(spec, hw, mid, enc, s, &fits) != ASA_OK) return ASA_ERR;
        if (fits) lo = mid;
        else hi = mid;
    }
    return try_units(spec, hw, lo, enc, s, &fits);
}

void asa_niah_sample_free(asa_niah_sample *s) {
    free(s->prompt);
    s->prompt = NULL;
}

int asa_niah_found(const char *output, const char *value) {
    size_t n = strlen(value);
    if (n == 0) return 1;
    for (const char *p = output; *p; p++)
        if (!strncasecmp(p, value, n)) return 1;
    return 0;
}

typedef struct {
    const asa_tokenizer *tok;
    sbuf out;
} gen_sink;

static void on_token(void *user, int32_t id) {
    gen_sink *g = user;
    size_t len;
    const char *bytes = asa_tokenizer_token(g->tok, id, &len);
    if (bytes) put(&g->out, bytes, len);
}

int asa_niah_generate(const asa_model *m, const asa_tokenizer *tok, const int32_t *prompt, int n_prompt,
                      int max_new, char **text) {
    asa_sampler_config sc = asa_sampler_defaults();
    sc.greedy = 1;
    asa_sampler sampler;
    // Padding ids past the tokenizer's vocabulary are never text: they are not generated.
    if (asa_sampler_init(&sampler, &sc, asa_tokenizer_vocab_size(tok), 0) != ASA_OK) return ASA_ERR;
    asa_decoder dec;
    asa_decoder_init(&dec, m, 1, n_prompt + max_new);
    gen_sink g = {tok, {0}};
    put(&g.out, "", 0);
    int rc = asa_generate(&dec, &sampler, prompt, n_prompt, max_new, asa_tokenizer_eot(tok), on_token, &g, NULL);
    asa_decoder_free(&dec);
    asa_sampler_free(&sampler);
    if (rc != ASA_OK) {
        free(g.out.s);
        return ASA_ERR;
    }
    *text = g.out.s;
    return ASA_OK;
}

int asa_niah_svg(const char *path, const char *title, int n_tasks, const int *tasks, const int *lengths, int n_len,
                 const double *depths, int n_depth, const double *const *acc) {
    const int cw = 64, ch = 22, left = 70, top = 60, gap = 40;
    const int panel_w = left + n_len * cw, W = n_tasks * (panel_w + gap) + 20, H = top + n_depth * ch + 60;
    sbuf b = {0};
    char line[512];
    snprintf(line, sizeof line,
             "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" "
             "font-size=\"11\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
             "<text x=\"10\" y=\"18\" font-size=\"14\">%s</text>\n",
             W, H, title);
    puts_(&b, line);
    for (int t = 0; t < n_tasks; t++) {
        int x0 = 10 + t * (panel_w + gap);
        snprintf(line, sizeof line, "<text x=\"%d\" y=\"40\" font-size=\"12\">S-NIAH-%d (rows: depth, columns: length)</text>\n",
                 x0, tasks[t]);
        puts_(&b, line);
        for (int d = 0; d < n_depth; d++) {
            snprintf(line, sizeof line, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%.0f%%</text>\n", x0 + left - 6,
                     top + d * ch + 15, depths[d] * 100);
            puts_(&b, line);
            for (int l = 0; l < n_len; l++) {
                double a = acc[t][d * n_len + l];
                int r = a < 0 ? 220 : (int)(230 * (1 - a)), g = a < 0 ? 220 : (int)(200 * a + 30);
                snprintf(line, sizeof line,
                         "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"rgb(%d,%d,80)\" stroke=\"white\"/>\n"
                         "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%s%.0f</text>\n",
                         x0 + left + l * cw, top + d * ch, cw, ch, r, g, x0 + left + l * cw + cw / 2, top + d * ch + 15,
                         a < 0 ? "-" : "", a < 0 ? 0.0 : a * 100);
                puts_(&b, line);
            }
        }
        for (int l = 0; l < n_len; l++) {
            snprintf(line, sizeof line, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%d</text>\n",
                     x0 + left + l * cw + cw / 2, top + n_depth * ch + 16, lengths[l]);
            puts_(&b, line);
        }
    }
    puts_(&b, "</svg>\n");
    int rc = asa_file_write_atomic(path, b.s, b.n);
    free(b.s);
    return rc;
}
