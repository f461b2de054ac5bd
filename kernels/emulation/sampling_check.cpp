// Runs kernels/sampling.cu on the CPU emulation and compares with a line-by-line port of
// src/model/cuda/sampling.rs's reference.
#include "cuda_emu.h"
#include "sampling.cu"
#include <cstdio>
#include <random>

static unsigned key_of(float f) {
    unsigned u; std::memcpy(&u, &f, 4);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
static u64 fixed_w(float w) { return (u64)(w * (float)(1ull << 40)); }
static u64 target_of(float fraction, u64 total) {
    double t = std::ceil((double)fraction * (double)total);
    u64 whole = t < 1.0 ? 1 : (u64)t;
    return std::min(whole, total);
}
static unsigned argmax_ref(const float* l, unsigned n) {
    unsigned best = 0;
    for (unsigned i = 0; i < n; ++i) if (l[i] > l[best]) best = i;
    return best;
}
struct P { float t; unsigned k; float top_p, min_p, u; };
static std::vector<std::pair<unsigned, u64>> candidates_ref(const float* l, unsigned n, P p) {
    float inv_t = 1.0f / p.t;
    std::vector<float> s(n);
    for (unsigned i = 0; i < n; ++i) s[i] = l[i] * inv_t;
    float mx = l[argmax_ref(l, n)] * inv_t;
    std::vector<unsigned> order(n);
    for (unsigned i = 0; i < n; ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](unsigned a, unsigned b) {
        unsigned ka = key_of(s[a]), kb = key_of(s[b]);
        return ka != kb ? ka > kb : a < b;
    });
    std::vector<u64> w(n, 0);
    unsigned kept = (p.k > 0 && p.k < n) ? p.k : n;
    for (unsigned j = 0; j < kept; ++j) {
        unsigned i = order[j];
        float x = std::exp(s[i] - mx);
        if (x >= p.min_p) w[i] = fixed_w(x);
    }
    std::vector<std::pair<unsigned, u64>> out;
    if (p.top_p < 1.0f) {
        u64 total = 0; for (auto x : w) total += x;
        u64 target = target_of(p.top_p, total);
        u64 running = 0;
        for (unsigned i : order) { if (running >= target) w[i] = 0; running += w[i]; }
        for (unsigned i : order) if (w[i]) out.push_back({i, w[i]});
    } else {
        for (unsigned i = 0; i < n; ++i) if (w[i]) out.push_back({i, w[i]});
    }
    return out;
}
static unsigned sample_ref(const float* l, unsigned n, P p) {
    unsigned best = argmax_ref(l, n);
    if (p.t <= 0 || p.k == 1) return best;
    auto c = candidates_ref(l, n, p);
    u64 total = 0; for (auto& x : c) total += x.second;
    u64 target = target_of(p.u, total);
    u64 running = 0;
    for (auto& x : c) { running += x.second; if (running >= target) return x.first; }
    return best;
}

int main(int argc, char** argv) {
    unsigned vocab = argc > 1 ? atoi(argv[1]) : 1000;
    unsigned per_setting = argc > 2 ? atoi(argv[2]) : 4;
    std::vector<P> settings = {
        {0, 0, 1, 0, 0}, {1, 1, 1, 0, 0}, {1, 0, 1, 0, 0}, {0.7f, 0, 1, 0, 0},
        {1, 0, 1, 0.05f, 0}, {1, 0, 0.9f, 0, 0}, {0.8f, 40, 0.8f, 0, 0}, {1.3f, 20, 1, 0, 0},
        {0.2f, 0, 0.5f, 0.1f, 0}, {1, 50, 0.95f, 0.01f, 0}, {1, 0, 0.0f, 0, 0}, {2.0f, 3, 1, 0, 0},
    };
    std::mt19937 rng(42);
    std::uniform_real_distribution<float> U(-2, 2), U01(0, 1);
    unsigned rows = settings.size() * per_setting;
    std::vector<float> logits(rows * vocab), params(rows * 4);
    std::vector<unsigned> top_k(rows), out(rows, 12345);
    for (auto& x : logits) x = 4 * U(rng);
    // Exact ties at the top of the first rows, and a run of equal logits.
    for (unsigned r = 0; r < 6 && r < rows; ++r) {
        logits[r * vocab + 7] = 20; logits[r * vocab + 3] = 20;
        for (unsigned i = 10; i < 30; ++i) logits[r * vocab + i] = 9.5f;
    }
    for (unsigned r = 0; r < rows; ++r) {
        P p = settings[r % settings.size()];
        p.u = U01(rng);
        if (r % 7 == 0) p.u = 0.0f;
        params[r * 4] = p.t; params[r * 4 + 1] = p.top_p; params[r * 4 + 2] = p.min_p; params[r * 4 + 3] = p.u;
        top_k[r] = p.k;
    }
    launch(dim3{rows, 1, 1}, dim3{SAMPLE_THREADS, 1, 1}, [&] {
        sample_f32(logits.data(), vocab, params.data(), top_k.data(), out.data());
    });
    int bad = 0;
    for (unsigned r = 0; r < rows; ++r) {
        P p{params[r * 4], top_k[r], params[r * 4 + 1], params[r * 4 + 2], params[r * 4 + 3]};
        unsigned want = sample_ref(&logits[r * vocab], vocab, p);
        if (out[r] != want) {
            ++bad;
            printf("row %u (t %g k %u top_p %g min_p %g u %g): kernel %u reference %u\n", r, p.t, p.k, p.top_p, p.min_p, p.u, out[r], want);
        }
    }
    printf("vocab %u: %u rows, %d mismatches\n", vocab, rows, bad);
    return bad != 0;
}
