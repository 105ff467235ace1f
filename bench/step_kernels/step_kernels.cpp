// The batch-1 step product of W5 (h W_hh^T, 256 -> 1024 fp32, 1 MiB of weights) through every
// kernel cellfuse has for it, timed in CPU time of each calling thread (steady on a loaded
// machine: time spent descheduled does not count), on one thread and on two threads that each
// take half of the columns (as the team splits it). Built and run by run.sh, which links the
// generated W5 loop kernel (its LLVM IR through llc) as cf_lstm_loop_k0.
#include <immintrin.h>
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <thread>
#include <vector>

#include "runtime/cpu/packed_gemm.h"
#include "runtime/cpu/quant/quant_matrix.h"
#include "runtime/cpu/team.h"

using namespace cellfuse::cpu;
extern "C" void cf_lstm_loop_k0(void**, long, long, long, long, void (*)(void*), void*);

namespace {

double thread_us() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) * 1e6 + static_cast<double>(t.tv_nsec) / 1e3;
}

template <class F>
double best_us_per_call(F f, int calls = 3000) {
  double best = 1e30;
  for (int round = 0; round < 9; ++round) {
    const double start = thread_us();
    for (int i = 0; i < calls; ++i) f();
    best = std::min(best, (thread_us() - start) / calls);
  }
  return best;
}

// The reference: k-major panels of 64 columns, 4 accumulators, nothing else (what a kernel bound
// by reading its weights reaches).
__attribute__((target("avx512f"))) void panels64(const float* w, const float* x, float* out, long k, long c0, long c1) {
  for (long p = c0; p < c1; p += 64) {
    const float* pw = w + p * k;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (long kk = 0; kk < k; ++kk) {
      const __m512 xv = _mm512_set1_ps(x[kk]);
      a0 = _mm512_fmadd_ps(xv, _mm512_load_ps(pw + kk * 64), a0);
      a1 = _mm512_fmadd_ps(xv, _mm512_load_ps(pw + kk * 64 + 16), a1);
      a2 = _mm512_fmadd_ps(xv, _mm512_load_ps(pw + kk * 64 + 32), a2);
      a3 = _mm512_fmadd_ps(xv, _mm512_load_ps(pw + kk * 64 + 48), a3);
    }
    _mm512_storeu_ps(out + p, a0), _mm512_storeu_ps(out + p + 16, a1);
    _mm512_storeu_ps(out + p + 32, a2), _mm512_storeu_ps(out + p + 48, a3);
  }
}

// The FMA ceiling of one core: 12 independent chains of 512-bit FMAs (more than latency x
// throughput on any AVX-512 core), 16 multiply-adds each; noipa, so that the repeated calls are
// not folded into one.
__attribute__((target("avx512f"), noipa)) float fma_chains(long iterations) {
  __m512 a[12];
  for (int i = 0; i < 12; ++i) a[i] = _mm512_set1_ps(0.001f * static_cast<float>(i));
  const __m512 m = _mm512_set1_ps(0.9999f), c = _mm512_set1_ps(0.0001f);
  for (long it = 0; it < iterations; ++it)
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) a[i] = _mm512_fmadd_ps(a[i], m, c);
  __m512 s = a[0];
  for (int i = 1; i < 12; ++i) s = _mm512_add_ps(s, a[i]);
  return _mm512_reduce_add_ps(s);
}

}  // namespace

int main() {
  {
    const long iterations = 200'000;
    volatile float sink = 0;
    const double us = best_us_per_call([&] { sink = fma_chains(iterations); }, 20);
    std::printf("FMA ceiling, one core: %.1f GMAC/s fp32 (CPU time)\n\n", 12.0 * 16 * iterations / us / 1e3);
  }
  const long k = 256, n = 1024;
  std::mt19937 rng(1);
  std::normal_distribution<float> d(0, 0.1f);
  std::vector<float> W(n * k), x(k), out(n), bias(n), c(256), pre(1024), scratch(1024), c_next(256), h_next(256);
  for (auto* v : {&W, &x, &bias, &c, &pre})
    for (float& f : *v) f = d(rng);
  // The generated kernel reads W_hh^T in panels of 64 columns ([k, 64] blocks), as panels64 does.
  float* wt = static_cast<float*>(std::aligned_alloc(64, n * k * sizeof(float)));
  for (long p = 0; p < n; p += 64)
    for (long kk = 0; kk < k; ++kk)
      for (long col = 0; col < 64; ++col) wt[p * k + kk * 64 + col] = W[(p + col) * k + kk];
  auto quantized = quant::QuantMatrix::quantize(W.data(), true, k, n, quant::Format::F32);
  quant::Activations act;
  act.prepare(quant::Format::F32, x.data(), 1, k, k);
  PackedWeights packed;
  packed.pack(W.data(), true, k, n);
  void* buffers[8] = {x.data(), wt, bias.data(), scratch.data(), c.data(), pre.data(), c_next.data(), h_next.data()};

  auto report = [](const char* what, int threads, auto fn) {
    std::vector<double> us(static_cast<std::size_t>(threads));
    std::vector<std::thread> members;
    for (int p = 0; p < threads; ++p) members.emplace_back([&, p] { us[p] = best_us_per_call([&] { fn(p, threads); }); });
    for (auto& m : members) m.join();
    std::printf("| %s | %d |", what, threads);
    for (double u : us) std::printf(" %.2f", u);
    std::printf(" |\n");
  };
  std::printf("| kernel | threads | CPU us per call (each thread) |\n| --- | --- | --- |\n");
  for (int threads : {1, 2}) {
    report("generated W5 loop kernel (product + gates)", threads, [&](int p, int parts) {
      cf_lstm_loop_k0(buffers, 0, 1, p, parts, +[](void*) {}, nullptr);
    });
    report("k-major panels of 64, 4 accumulators (product)", threads, [&](int p, int parts) {
      panels64(wt, x.data(), out.data(), k, n / 64 * p / parts * 64, n / 64 * (p + 1) / parts * 64);
    });
    report("generation's fp32 panels, QuantMatrix F32 (product)", threads, [&](int p, int parts) {
      quantized.multiply_rows(act, nullptr, out.data(), n, n / 16 * p / parts * 16, n / 16 * (p + 1) / parts * 16);
    });
  }
  auto team = shared_team(1);
  report("packed GEMM at one row (product)", 1, [&](int, int) { packed.multiply(*team, x.data(), nullptr, out.data(), 1); });
}
