// `asa info`: parameter counts per layer kind, KV-cache bytes (SPEC §5) and training activation memory
// of a config.
#include <stdio.h>
#include <string.h>

#include "asa/config.h"
#include "cli/cli.h"
#include "core/error.h"
#include "model/kv_cache_size.h"
#include "model/model.h"
#include "model/params.h"

static const char KINDS[] = "FWNLG";
static const char *KIND_NAMES[] = {"full (F)", "window (W)", "NSA (N)", "ASA local (L)", "ASA global (G)"};

int cmd_info(int argc, char **argv) {
    const char *config_path = NULL;
    int context = 8192;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config")) {
            if (!(config_path = cli_value("info", argc, argv, &i))) return 2;
        } else if (!strcmp(argv[i], "--context")) {
            const char *v = cli_value("info", argc, argv, &i);
            if (!v || cli_parse_int("info", "--context", v, 1, 1 << 30, &context)) return 2;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: asa info --config FILE [--context T]\n"
                   "  Prints parameters in total and per layer kind, and the KV cache per token and at\n"
                   "  context T (default 8192) per layer kind and for the model, in bf16 bytes, and the\n"
                   "  activation memory of training on one sequence of T tokens, with and without\n"
                   "  --recompute.\n");
            return 0;
        } else {
            fprintf(stderr, "asa info: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!config_path) {
        fprintf(stderr, "asa info: --config FILE is required\n");
        return 2;
    }
    asa_config cfg;
    if (asa_config_load(config_path, &cfg) != ASA_OK) {
        fprintf(stderr, "asa info: %s\n", asa_err_msg());
        return 1;
    }
    asa_param_layout layout;
    asa_layout_build(&cfg, &layout);
    asa_param_counts pc;
    asa_param_counts_get(&layout, &cfg, &pc);
    char b1[32], b2[32], b3[32];

    printf("config      %s\n", config_path);
    printf("model       layer_pattern \"%s\" x %d layers (%s), hidden %d, heads %d, vocab %d\n", cfg.layer_pattern,
           cfg.num_hidden_layers, cfg.layer_kinds, cfg.hidden_size, cfg.num_heads, cfg.vocab_size);
    printf("\nparameters  %s (%zu)\n", cli_human((double)pc.total, b1, sizeof b1), pc.total);
    printf("  %-22s %12zu\n", "embedding", pc.embedding);
    printf("  %-22s %12zu%s\n", "lm_head", pc.lm_head, cfg.tie_word_embeddings ? "  (tied to embedding)" : "");
    for (int k = 0; k < 5; k++) {
        if (!pc.layers_per_kind[k]) continue;
        char label[64];
        snprintf(label, sizeof label, "attention %s", KIND_NAMES[k]);
        printf("  %-22s %12zu  (%d layers, %zu each)\n", label, pc.per_kind[k], pc.layers_per_kind[k],
               pc.per_kind[k] / (size_t)pc.layers_per_kind[k]);
    }
    printf("  %-22s %12zu  (%d layers)\n", "mlp", pc.mlp, cfg.num_hidden_layers);
    printf("  %-22s %12zu\n", "final norm", pc.final_norm);

    printf("\nKV cache (bf16) at context %d\n", context);
    printf("  %-16s %6s %14s %14s %16s %16s\n", "kind", "layers", "elems/token", "tokens kept", "bytes/layer",
           "all layers");
    long long total = 0;
    for (int k = 0; k < 5; k++) {
        if (!pc.layers_per_kind[k]) continue;
        asa_kv_size s = asa_kv_size_of(&cfg, KINDS[k], context);
        long long bytes = asa_kv_bytes(&cfg, KINDS[k], context, 2);
        total += bytes * pc.layers_per_kind[k];
        printf("  %-16s %6d %14lld %14lld %16s %16s\n", KIND_NAMES[k], pc.layers_per_kind[k], (long long)s.per_token,
               (long long)s.tokens, cli_bytes((double)bytes, b1, sizeof b1),
               cli_bytes((double)bytes * pc.layers_per_kind[k], b2, sizeof b2));
    }
    printf("  model total: %s at %d tokens = %s per token\n", cli_bytes((double)total, b1, sizeof b1), context,
           cli_bytes((double)total / context, b3, sizeof b3));

    // What asa train allocates for activations on top of weights, gradients and AdamW moments.
    printf("\ntraining activations for one sequence of %d tokens (x B for a batch of B)\n", context);
    printf("  %-22s %12s %12s\n", "", "fp32, tf32", "bf16");
    double act[2][2];
    for (int rc = 0; rc < 2; rc++)
        for (int t = 0; t < 2; t++) act[rc][t] = (double)asa_model_act_bytes(&cfg, t ? ASA_BF16 : ASA_F32, 1, context, rc);
    printf("  %-22s %12s %12s\n", "every layer kept", cli_bytes(act[0][0], b1, sizeof b1), cli_bytes(act[0][1], b2, sizeof b2));
    printf("  %-22s %12s %12s  (%.1f%%: each layer's input kept, its activations recomputed before\n"
           "  %-22s %12s %12s   its backward: one more forward of every layer but the last)\n",
           "--recompute", cli_bytes(act[1][0], b1, sizeof b1), cli_bytes(act[1][1], b2, sizeof b2),
           100.0 * act[1][0] / act[0][0], "", "", "");
    asa_layout_free(&layout);
    return 0;
}
