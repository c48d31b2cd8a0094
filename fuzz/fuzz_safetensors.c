// libFuzzer target: asa_st_open on arbitrary bytes, then every tensor read as f32 and as i32.
#include "core/error.h"
#include "core/safetensors.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    asa_st_file f;
    if (asa_st_open(fuzz_temp_file(0, "st", data, size), &f) != ASA_OK) return 0;
    for (int i = 0; i < f.count; i++) {
        const asa_st_tensor *t = &f.tensors[i];
        // numel is bounded by the data region, i.e. by the input's size, so these allocations are small.
        float *x = malloc(t->numel * sizeof(float) + 1);
        int32_t *y = malloc(t->numel * sizeof(int32_t) + 1);
        (void)asa_st_read_f32(&f, t, x, t->numel);
        (void)asa_st_read_i32(&f, t, y, t->numel);
        if (asa_st_find(&f, t->name) == NULL) abort();
        free(x);
        free(y);
    }
    (void)asa_st_meta(&f, "format");
    asa_st_close(&f);
    return 0;
}
