// Runs kernels/paged_attention.cu and kernels/rms_norm_rope.cu on the CPU emulation and
// compares with plain references (ports of the CPU references in src/model/cuda/*.rs).
#include "cuda_emu.h"
#include "paged_attention.cu"
#include "rms_norm_rope.cu"
#include <cstdio>
#include <random>

static std::mt19937 rng(7);
static float U() { return std::uniform_real_distribution<float>(-2, 2)(rng); }

static int check_attention(unsigned n_heads, unsigned n_kv, unsigned D, std::vector<unsigned> lens) {
    unsigned n = lens.size();
    unsigned maxlen = *std::max_element(lens.begin(), lens.end());
    unsigned stride = (maxlen + 15) / 16;
    unsigned num_blocks = n * stride + 3;
    std::vector<unsigned> order(num_blocks);
    for (unsigned b = 0; b < num_blocks; ++b) order[b] = b;
    std::sort(order.begin(), order.end(), [&](unsigned a, unsigned b) { return (a * 7919) % num_blocks < (b * 7919) % num_blocks; });
    std::vector<unsigned> tables(order.begin(), order.begin() + n * stride);
    size_t plane = (size_t)num_blocks * n_kv * 16 * D;
    std::vector<__half> cache(2 * plane, __half{(_Float16)0});
    unsigned width = n_kv * D;
    // Write every sequence's keys and values with the write kernel.
    for (unsigned s = 0; s < n; ++s) {
        unsigned len = lens[s];
        std::vector<float> k(len * width), v(len * width);
        for (auto& x : k) x = U();
        for (auto& x : v) x = U();
        std::vector<unsigned> slots(len);
        for (unsigned p = 0; p < len; ++p) slots[p] = tables[s * stride + p / 16] * 16 + p % 16;
        unsigned total = len * width;
        launch(dim3{(total + 255) / 256, 1, 1}, dim3{256, 1, 1}, [&] {
            paged_kv_write_f16(k.data(), v.data(), width, width, slots.data(), cache.data(), num_blocks, len, n_kv, D);
        });
        // Check the write.
        for (unsigned p = 0; p < len; ++p)
            for (unsigned h = 0; h < n_kv; ++h)
                for (unsigned d = 0; d < D; ++d) {
                    unsigned slot = slots[p];
                    size_t at = (((size_t)(slot / 16) * n_kv + h) * 16 + slot % 16) * D + d;
                    if ((float)cache[at].v != (float)(_Float16)k[p * width + h * D + d] ||
                        (float)cache[plane + at].v != (float)(_Float16)v[p * width + h * D + d]) {
                        printf("write mismatch\n");
                        return 1;
                    }
                }
    }
    std::vector<float> q(n * n_heads * D), out(n * n_heads * D, -7);
    for (auto& x : q) x = U();
    float scale = 1.0f / std::sqrt((float)D);
    auto kernel = D == 64 ? paged_attention_d64_f16 : D == 128 ? paged_attention_d128_f16 : paged_attention_d256_f16;
    launch(dim3{n_heads, n, 1}, dim3{ATTN_WARPS * 32, 1, 1}, [&] {
        kernel(out.data(), q.data(), n_heads * D, cache.data(), num_blocks, tables.data(), stride, lens.data(), n_heads, n_kv, scale);
    });
    // Reference.
    float worst = 0;
    for (unsigned s = 0; s < n; ++s)
        for (unsigned h = 0; h < n_heads; ++h) {
            unsigned kvh = h / (n_heads / n_kv), len = lens[s];
            std::vector<float> sc(len);
            auto at = [&](unsigned p) {
                unsigned slot = tables[s * stride + p / 16] * 16 + p % 16;
                return (((size_t)(slot / 16) * n_kv + kvh) * 16 + slot % 16) * D;
            };
            for (unsigned p = 0; p < len; ++p) {
                float dot = 0;
                for (unsigned d = 0; d < D; ++d) dot += q[(s * n_heads + h) * D + d] * (float)cache[at(p) + d].v;
                sc[p] = dot * scale;
            }
            float mx = -INFINITY, sum = 0;
            for (float x : sc) mx = std::max(mx, x);
            for (float& x : sc) { x = std::exp(x - mx); sum += x; }
            for (unsigned d = 0; d < D; ++d) {
                float acc = 0;
                for (unsigned p = 0; p < len; ++p) acc += sc[p] * (float)cache[plane + at(p) + d].v;
                float want = len ? acc / sum : 0;
                float got = out[(s * n_heads + h) * D + d];
                worst = std::max(worst, std::abs(got - want) / std::max(1.0f, std::abs(want)));
            }
        }
    printf("attention %u/%u heads of %u, %zu seqs: worst relative diff %g\n", n_heads, n_kv, D, lens.size(), worst);
    return !(worst < 1e-5);
}

static int check_norm_rope() {
    unsigned rows = 5, width = 896, stride = 1000;
    std::vector<float> x(rows * stride), w(width), out(rows * width);
    for (auto& v : x) v = U();
    for (auto& v : w) v = U();
    launch(dim3{rows, 1, 1}, dim3{256, 1, 1}, [&] { rms_norm_f32(x.data(), w.data(), out.data(), width, stride, 1e-6f); });
    float worst = 0;
    for (unsigned r = 0; r < rows; ++r) {
        float sq = 0;
        for (unsigned i = 0; i < width; ++i) sq += x[r * stride + i] * x[r * stride + i];
        float root = std::sqrt(sq / width + 1e-6f);
        for (unsigned i = 0; i < width; ++i) {
            float want = x[r * stride + i] / root * w[i];
            worst = std::max(worst, std::abs(out[r * width + i] - want) / std::max(1.0f, std::abs(want)));
        }
    }
    printf("rms_norm: worst relative diff %g\n", worst);
    int bad = !(worst < 1e-5);
    for (unsigned interleaved = 0; interleaved < 2; ++interleaved) {
        unsigned hd = 64, half = 32, heads = 16, width2 = 20 * hd, maxpos = 64;
        std::vector<float> c(maxpos * half), s(maxpos * half);
        for (unsigned p = 0; p < maxpos; ++p)
            for (unsigned i = 0; i < half; ++i) {
                float th = p / std::pow(1e6f, 2.0f * i / hd);
                c[p * half + i] = std::cos(th); s[p * half + i] = std::sin(th);
            }
        std::vector<unsigned> pos = {0, 5, 63, 17, 64};
        std::vector<float> xr(pos.size() * width2);
        for (auto& v : xr) v = U();
        auto want = xr;
        for (unsigned r = 0; r < pos.size(); ++r)
            for (unsigned h = 0; h < heads; ++h)
                for (unsigned i = 0; i < half; ++i) {
                    float* head = &want[r * width2 + h * hd];
                    unsigned a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + half;
                    if (pos[r] >= maxpos) { head[a] = NAN; head[b] = NAN; continue; }
                    float x0 = head[a], x1 = head[b], cc = c[pos[r] * half + i], ss = s[pos[r] * half + i];
                    head[a] = x0 * cc - x1 * ss; head[b] = x0 * ss + x1 * cc;
                }
        unsigned pairs = pos.size() * heads * half;
        launch(dim3{(pairs + 255) / 256, 1, 1}, dim3{256, 1, 1}, [&] {
            rope_f32(xr.data(), width2, pos.size(), heads, pos.data(), c.data(), s.data(), maxpos, half, interleaved);
        });
        int diffs = 0;
        for (size_t i = 0; i < xr.size(); ++i)
            if (!(xr[i] == want[i] || (std::isnan(xr[i]) && std::isnan(want[i])))) ++diffs;
        printf("rope interleaved=%u: %d elements differ\n", interleaved, diffs);
        bad |= diffs != 0;
    }
    return bad;
}

int main() {
    int bad = check_norm_rope();
    bad |= check_attention(14, 2, 64, {1, 15, 16, 17, 64, 65, 200});
    bad |= check_attention(12, 2, 128, {1, 33, 100});
    bad |= check_attention(8, 4, 256, {3, 70});
    bad |= check_attention(4, 4, 64, {0, 5});
    printf(bad ? "FAILED\n" : "all match\n");
    return bad;
}
