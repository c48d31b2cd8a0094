// Sampler: greedy is argmax (ties to the lower id), top-k = 1 and a tiny top-p reduce to greedy,
// empirical frequencies match softmax(logits / temperature) restricted by top-k / top-p within sampling
// error, seeds reproduce, and bad settings are errors.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "infer/sampler.h"
#include "testutil.h"

static asa_sampler_config cfg_of(int greedy, float temperature, int top_k, float top_p) {
    asa_sampler_config c = asa_sampler_defaults();
    c.greedy = greedy, c.temperature = temperature, c.top_k = top_k, c.top_p = top_p;
    return c;
}

// Every config here must pick the argmax on random logits of a large vocabulary.
static void check_reduces_to_greedy(const char *what, asa_sampler_config cfg) {
    const int V = 1000;
    asa_rng r;
    asa_rng_seed(&r, 1);
    float *logits = malloc(sizeof(float) * V);
    asa_sampler s;
    TU_CHECK(asa_sampler_init(&s, &cfg, V, 7) == ASA_OK, "%s: init failed", what);
    int bad = 0;
    for (int trial = 0; trial < 200; trial++) {
        tu_fill_normal(logits, V, &r, 3.0f);
        if (trial % 10 == 0) logits[V - 1] = logits[17] = 100.0f;  // a tie: the lower id wins
        int32_t want = asa_argmax(logits, V), got = asa_sampler_sample(&s, logits);
        if (trial % 10 == 0) TU_CHECK(want == 17, "argmax tie went to %d", want);
        int is_max = 1;
        for (int i = 0; i < V; i++) is_max &= logits[want] >= logits[i];
        TU_CHECK(is_max, "argmax %d is not a maximum", want);
        bad += got != want;
    }
    TU_CHECK(bad == 0, "%s: %d of 200 draws were not the argmax", what, bad);
    printf("  %-30s = argmax on 200 draws\n", what);
    asa_sampler_free(&s);
    free(logits);
}

// Expected distribution in double: softmax(logits / T), then top-k, then the shortest head reaching p.
static void reference_dist(const float *logits, int V, float T, int top_k, float top_p, double *p) {
    double mx = -INFINITY, sum = 0;
    for (int i = 0; i < V; i++) mx = fmax(mx, logits[i]);
    for (int i = 0; i < V; i++) sum += p[i] = exp((logits[i] - mx) / T);
    for (int i = 0; i < V; i++) p[i] /= sum;
    int order[16];
    for (int i = 0; i < V; i++) order[i] = i;
    for (int i = 0; i < V; i++)  // selection sort: descending, ties to the lower id
        for (int j = i + 1; j < V; j++)
            if (p[order[j]] > p[order[i]]) {
                int t = order[i];
                order[i] = order[j], order[j] = t;
            }
    int kept = top_k > 0 && top_k < V ? top_k : V;
    double mass = 0;
    for (int e = 0; e < kept; e++) mass += p[order[e]];
    double cum = 0;
    int e = 0;
    while (e < kept) {
        cum += p[order[e++]];
        if (cum >= top_p * mass) break;
    }
    for (int f = e; f < V; f++) p[order[f]] = 0;
    for (int i = 0; i < V; i++) p[i] /= cum;
}

// N draws: each token's frequency within 5 standard deviations of its expected probability (a false
// failure has probability ~1e-6 per token), and tokens outside the kept set never drawn.
static void check_frequencies(const char *what, float T, int top_k, float top_p) {
    const float logits[6] = {1.0f, 0.5f, -0.3f, 2.0f, 0.0f, 1.9f};
    const int V = 6, N = 200000;
    double want[6];
    reference_dist(logits, V, T, top_k, top_p, want);
    asa_sampler_config cfg = cfg_of(0, T, top_k, top_p);
    asa_sampler s;
    TU_CHECK(asa_sampler_init(&s, &cfg, V, 12345) == ASA_OK, "%s: init failed", what);
    float dist[6];
    asa_sampler_distribution(&s, logits, dist);
    for (int i = 0; i < V; i++) TU_CHECK(fabs(dist[i] - want[i]) < 1e-6, "%s: distribution[%d] %.7f vs %.7f", what, i, dist[i], want[i]);
    long count[6] = {0}, out_of_range = 0;
    for (int n = 0; n < N; n++) {
        int32_t t = asa_sampler_sample(&s, logits);
        if (t >= 0 && t < V) count[t]++;
        else out_of_range++;
    }
    TU_CHECK(out_of_range == 0, "%s: %ld tokens out of range", what, out_of_range);
    double worst = 0;
    for (int i = 0; i < V; i++) {
        const double f = (double)count[i] / N, sd = sqrt(want[i] * (1 - want[i]) / N);
        if (want[i] == 0) TU_CHECK(count[i] == 0, "%s: token %d outside the kept set drawn %ld times", what, i, count[i]);
        else TU_CHECK(fabs(f - want[i]) <= 5 * sd, "%s: token %d frequency %.5f, expected %.5f (sd %.5f)", what, i, f, want[i], sd);
        if (sd > 0 && fabs(f - want[i]) / sd > worst) worst = fabs(f - want[i]) / sd;
    }
    printf("  %-30s frequencies within %.2f sd of the expected ones\n", what, worst);
    asa_sampler_free(&s);
}

static void check_seeds(void) {
    const int V = 50;
    float logits[50];
    asa_rng r;
    asa_rng_seed(&r, 3);
    tu_fill_normal(logits, V, &r, 1.0f);
    asa_sampler_config cfg = cfg_of(0, 0.9f, 20, 0.95f);
    asa_sampler a, b, c;
    asa_sampler_init(&a, &cfg, V, 42);
    asa_sampler_init(&b, &cfg, V, 42);
    asa_sampler_init(&c, &cfg, V, 43);
    int same_ab = 1, same_ac = 1;
    for (int n = 0; n < 1000; n++) {
        int32_t ta = asa_sampler_sample(&a, logits), tb = asa_sampler_sample(&b, logits), tc = asa_sampler_sample(&c, logits);
        same_ab &= ta == tb;
        same_ac &= ta == tc;
    }
    TU_CHECK(same_ab, "the same seed gave different tokens");
    TU_CHECK(!same_ac, "seeds 42 and 43 gave the same 1000 tokens");
    asa_sampler_free(&a), asa_sampler_free(&b), asa_sampler_free(&c);
}

static void check_bad_settings(void) {
    asa_sampler s;
    asa_sampler_config bad[] = {cfg_of(0, -1.0f, 0, 1.0f), cfg_of(0, INFINITY, 0, 1.0f), cfg_of(0, NAN, 0, 1.0f),
                                cfg_of(0, 1.0f, -1, 1.0f), cfg_of(0, 1.0f, 0, 0.0f), cfg_of(0, 1.0f, 0, 1.5f),
                                cfg_of(0, 1.0f, 0, NAN)};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        TU_CHECK(asa_sampler_init(&s, &bad[i], 10, 1) == ASA_ERR && strstr(asa_err_msg(), "sampler"), "bad config %zu accepted", i);
}

int main(void) {
    check_reduces_to_greedy("greedy", cfg_of(1, 1.0f, 0, 1.0f));
    check_reduces_to_greedy("temperature 0", cfg_of(0, 0.0f, 0, 1.0f));
    check_reduces_to_greedy("top-k 1", cfg_of(0, 1.0f, 1, 1.0f));
    check_reduces_to_greedy("top-p 1e-6", cfg_of(0, 1.0f, 0, 1e-6f));
    check_frequencies("temperature 1", 1.0f, 0, 1.0f);
    check_frequencies("temperature 0.5", 0.5f, 0, 1.0f);
    check_frequencies("temperature 2, top-k 3", 2.0f, 3, 1.0f);
    check_frequencies("temperature 1, top-p 0.7", 1.0f, 0, 0.7f);
    check_frequencies("top-k 4, top-p 0.9", 1.0f, 4, 0.9f);
    check_seeds();
    check_bad_settings();
    return tu_finish("test_sampler");
}
