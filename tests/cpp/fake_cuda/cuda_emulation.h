#pragma once
// Compiles cellfuse's generated CUDA C as host C++ (g++ -include cuda_emulation.h), for the fake
// driver (fake_cuda.cpp) to run: a launch runs its blocks one after another, each on `block` real
// threads that meet at a std::barrier wherever the kernel says __syncthreads(). Shared memory is
// a function-static array, which the threads of the block running share. The math functions are
// the host's (<cmath>): results differ from the GPU's in the last bits only.
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

struct cf_dim3 {
  unsigned x = 0, y = 0, z = 0;
};

namespace cf_emu {

inline thread_local cf_dim3 thread_idx, block_idx;
inline cf_dim3 block_dim, grid_dim;
inline std::barrier<>* block_barrier = nullptr;

template <class F>
void launch(unsigned grid, unsigned block, F&& body) {
  std::barrier<> barrier(static_cast<std::ptrdiff_t>(block));
  block_barrier = &barrier;
  grid_dim = {grid, 1, 1};
  block_dim = {block, 1, 1};
  std::vector<std::thread> threads;
  threads.reserve(block);
  for (unsigned t = 0; t < block; ++t)
    threads.emplace_back([&, t] {
      thread_idx = {t, 0, 0};
      for (unsigned b = 0; b < grid; ++b) {
        block_idx = {b, 0, 0};
        body();
        barrier.arrive_and_wait();  // the block is done before the next one reuses shared memory
      }
    });
  for (auto& th : threads) th.join();
  block_barrier = nullptr;
}

}  // namespace cf_emu

#define threadIdx cf_emu::thread_idx
#define blockIdx cf_emu::block_idx
#define blockDim cf_emu::block_dim
#define gridDim cf_emu::grid_dim
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __shared__ static

inline void __syncthreads() { cf_emu::block_barrier->arrive_and_wait(); }

inline float __int_as_float(int i) {
  float f;
  std::memcpy(&f, &i, sizeof f);
  return f;
}

inline double __longlong_as_double(long long i) {
  double d;
  std::memcpy(&d, &i, sizeof d);
  return d;
}
