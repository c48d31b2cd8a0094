// libFuzzer target: the eval data readers. The first byte picks the reader (LAMBADA or one of the
// multiple-choice tasks, PIQA also with a labels file), the rest is the file; for PIQA with labels the
// file is cut at the first "\n\n\n" and what follows is the labels file.
#include <string.h>

#include "core/error.h"
#include "eval/lambada.h"
#include "eval/mc.h"
#include "fuzz_util.h"

static const char *const tasks[] = {"lambada", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge",
                                    "boolq", "piqa+labels"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const char *task = tasks[data[0] % (sizeof tasks / sizeof tasks[0])];
    data++, size--;
    if (!strcmp(task, "lambada")) {
        asa_lambada_set set;
        if (asa_lambada_load(fuzz_temp_file(0, "ev", data, size), &set) == ASA_OK) asa_lambada_free(&set);
        return 0;
    }
    const char *labels = NULL;
    size_t main_size = size;
    if (!strcmp(task, "piqa+labels")) {
        task = "piqa";
        size_t off = size;
        for (size_t i = 0; i + 3 <= size; i++)
            if (!memcmp(data + i, "\n\n\n", 3)) {
                main_size = i, off = i + 3;
                break;
            }
        labels = fuzz_temp_file(1, "labels", data + off, size - off);
    }
    asa_mc_set set;
    if (asa_mc_load(task, fuzz_temp_file(0, "ev", data, main_size), labels, &set) == ASA_OK) {
        for (int i = 0; i < set.n; i++)
            if (set.ex[i].gold < 0 || set.ex[i].gold >= set.ex[i].n_choices) abort();
        asa_mc_free(&set);
    }
    return 0;
}
