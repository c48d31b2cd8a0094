// Shared by the fuzz targets: the readers under test take a path, so each input is written to a temp file
// (in /dev/shm when there is one, to keep the disk out of the loop) that is made once per process and
// slot and rewritten in place for every run. Slot 0 is the main file, slot 1 a second one beside it.
// Also the exercise the tokenizer targets share.
#ifndef ASA_FUZZ_UTIL_H
#define ASA_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "asa/tokenizer.h"
#include "core/error.h"

static char fuzz_paths[2][256];

static void fuzz_remove_temp_files(void) {
    for (int i = 0; i < 2; i++)
        if (fuzz_paths[i][0]) unlink(fuzz_paths[i]);
}

static inline const char *fuzz_temp_file(int slot, const char *tag, const uint8_t *data, size_t size) {
    static int fds[2] = {-1, -1};
    if (fds[0] < 0 && fds[1] < 0) atexit(fuzz_remove_temp_files);
    if (fds[slot] < 0) {
        const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(fuzz_paths[slot], sizeof fuzz_paths[slot], "%s/asa-fuzz-%s-XXXXXX", dir, tag);
        fds[slot] = mkstemp(fuzz_paths[slot]);
        if (fds[slot] < 0) abort();
    }
    if (ftruncate(fds[slot], 0) != 0) abort();
    for (size_t off = 0; off < size;) {
        ssize_t w = pwrite(fds[slot], data + off, size - off, (off_t)off);
        if (w <= 0) abort();
        off += (size_t)w;
    }
    return fuzz_paths[slot];
}

// What the tokenizer targets do with a tokenizer that loaded: encode a short text with special tokens and
// invalid UTF-8, and decode it back, then free it.
static inline void fuzz_use_tokenizer(asa_tokenizer *tok) {
    static const char text[] = "Hello world, it's 2024!\n<|endoftext|> \xff\xfe ok";
    asa_token_buf b = {0};
    if (asa_tokenizer_encode(tok, text, sizeof text - 1, ASA_ENCODE_SPECIAL, &b) == ASA_OK) {
        char *out;
        size_t len;
        if (asa_tokenizer_decode(tok, b.ids, b.n, &out, &len) == ASA_OK) free(out);
    }
    asa_token_buf_free(&b);
    asa_tokenizer_free(tok);
}

#endif
