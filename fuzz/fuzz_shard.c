// libFuzzer target: asa_shard_open, then reads of the whole shard, of its tail and one past the end.
#include "core/error.h"
#include "data/shard.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    asa_shard s;
    if (asa_shard_open(fuzz_temp_file(0, "sh", data, size), &s) != ASA_OK) return 0;
    int32_t *dst = malloc((size_t)s.count * sizeof(int32_t) + 4);
    (void)asa_shard_read(&s, 0, (size_t)s.count, dst);
    if (s.count) (void)asa_shard_read(&s, s.count - 1, 1, dst);
    if (asa_shard_read(&s, s.count, 1, dst) == ASA_OK) abort();  // past the end must be refused
    free(dst);
    asa_shard_close(&s);
    return 0;
}
