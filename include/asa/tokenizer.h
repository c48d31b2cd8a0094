// Byte-level BPE tokenizer (GPT-2 style): Hugging Face tokenizer.json load and save, the GPT-2 (r50k)
// vocabulary in tiktoken format, encoding (GPT-2 pre-tokenizer regex, then merges by rank inside each
// piece), exact decoding, and training on text files.
//
// Tokens are byte strings. Ids are dense, 0 .. vocab_size-1. A tokenizer is immutable once built, so one
// can be shared by threads; each thread encodes through its own asa_encoder (piece cache, regex state).
// Functions that take user input return ASA_OK or ASA_ERR with a message in asa_err_msg().
#ifndef ASA_TOKENIZER_H
#define ASA_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct asa_tokenizer asa_tokenizer;
typedef struct asa_encoder asa_encoder;

// A growable array of token ids; encode appends to it. Zero-initialise, free with asa_token_buf_free.
typedef struct {
    int32_t *ids;
    size_t n, cap;
} asa_token_buf;

void asa_token_buf_push(asa_token_buf *b, int32_t id);
void asa_token_buf_free(asa_token_buf *b);

// A Hugging Face tokenizer.json: model.type "BPE", ByteLevel pre-tokenizer (GPT-2 regex, no prefix
// space) and ByteLevel decoder, no normalizer; merges as "a b" strings or ["a", "b"] pairs; added_tokens
// become special tokens.
int asa_tokenizer_load(const char *path, asa_tokenizer **out);
// A tiktoken rank file ("<base64 token bytes> <rank>" per line, ranks 0..n-1, merges implied by ranks,
// as for GPT-2's r50k_base) plus <|endoftext|> with id n (50256 for r50k_base).
int asa_tokenizer_load_tiktoken(const char *path, asa_tokenizer **out);
// Writes tokenizer.json atomically, in the form Hugging Face `tokenizers` loads.
int asa_tokenizer_save(const asa_tokenizer *tok, const char *path);
void asa_tokenizer_free(asa_tokenizer *tok);

int asa_tokenizer_vocab_size(const asa_tokenizer *tok);
int asa_tokenizer_num_merges(const asa_tokenizer *tok);
// Id of <|endoftext|>, or -1 if the tokenizer has none.
int asa_tokenizer_eot(const asa_tokenizer *tok);
// The bytes of one token (not NUL-terminated), or NULL for an id out of range.
const char *asa_tokenizer_token(const asa_tokenizer *tok, int id, size_t *len);
// The id of the token with exactly these bytes, or -1.
int asa_tokenizer_find(const asa_tokenizer *tok, const char *bytes, size_t len);

// Encoding flags. Without ASA_ENCODE_SPECIAL, "<|endoftext|>" in the text is encoded as plain text.
#define ASA_ENCODE_SPECIAL 1

// Per-thread encoding state: compiled-regex match data and a cache of piece -> ids.
asa_encoder *asa_encoder_new(const asa_tokenizer *tok);
void asa_encoder_free(asa_encoder *enc);
// Appends the ids of text[0..len) to out. Any bytes encode, invalid UTF-8 included (bytes that are not
// valid UTF-8 become pieces of their own).
int asa_encoder_encode(asa_encoder *enc, const char *text, size_t len, int flags, asa_token_buf *out);
// One-off encode through a temporary encoder (no cache kept between calls).
int asa_tokenizer_encode(const asa_tokenizer *tok, const char *text, size_t len, int flags, asa_token_buf *out);
// The first offset >= from where text can be cut so that encoding the two parts gives exactly the ids of
// encoding the whole (special tokens containing '\n' aside), or len if there is none: just after a '\n'
// that has printable ASCII on both sides. For encoding or counting a large text in parallel chunks.
size_t asa_tokenizer_cut_point(const char *text, size_t len, size_t from);

// Concatenates the bytes of the tokens into a new NUL-terminated buffer (caller frees); *len excludes
// the NUL. An id out of range is an error.
int asa_tokenizer_decode(const asa_tokenizer *tok, const int32_t *ids, size_t n, char **text, size_t *len);

// Training. Pieces come from the same pre-tokenizer as encoding; special tokens in the text are cut out
// first. Merges go to the pair with the highest count, ties to the smallest (left id, right id).
typedef struct {
    const char *special_token;  // last id of the vocabulary; NULL means "<|endoftext|>", "" means none
    // Called now and then with stage "read" (done/total in bytes) and "merge" (in merges); may be NULL.
    void (*progress)(void *ctx, const char *stage, int64_t done, int64_t total);
    void *progress_ctx;
} asa_tokenizer_train_opts;

// Trains on the given files up to vocab_size tokens (256 byte tokens, the merges, the special token).
// Stops early, with a smaller vocabulary, if the text runs out of pairs to merge. opts may be NULL.
int asa_tokenizer_train(const char *const *files, int n_files, int vocab_size, const asa_tokenizer_train_opts *opts,
                        asa_tokenizer **out);

#endif
