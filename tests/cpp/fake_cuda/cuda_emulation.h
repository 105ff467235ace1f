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
#include <cstddef>
#include <memory>
#include <thread>
#include <vector>

struct cf_dim3 {
  unsigned x = 0, y = 0, z = 0;
};

namespace cf_emu {

inline thread_local cf_dim3 thread_idx, block_idx;
inline cf_dim3 block_dim, grid_dim;
inline thread_local std::barrier<>* block_barrier = nullptr;
inline thread_local unsigned char* dynamic_shared = nullptr;
inline std::barrier<>* grid_barrier = nullptr;

template <class F>
void launch(unsigned grid, unsigned block, F&& body) {
  std::barrier<> barrier(static_cast<std::ptrdiff_t>(block));
  grid_dim = {grid, 1, 1};
  block_dim = {block, 1, 1};
  std::vector<std::thread> threads;
  threads.reserve(block);
  for (unsigned t = 0; t < block; ++t)
    threads.emplace_back([&, t] {
      thread_idx = {t, 0, 0};
      block_barrier = &barrier;
      for (unsigned b = 0; b < grid; ++b) {
        block_idx = {b, 0, 0};
        body();
        barrier.arrive_and_wait();  // the block is done before the next one reuses shared memory
      }
    });
  for (auto& th : threads) th.join();
}

// A cooperative launch: every block at once (grid * block real threads), each block with its
// own barrier and `shared` bytes of dynamic shared memory; cf_grid_sync meets all of them.
template <class F>
void launch_cooperative(unsigned grid, unsigned block, unsigned shared, F&& body) {
  std::vector<std::unique_ptr<std::barrier<>>> barriers;
  std::vector<std::vector<std::max_align_t>> memory(grid, std::vector<std::max_align_t>(shared / sizeof(std::max_align_t) + 1));
  for (unsigned b = 0; b < grid; ++b) barriers.push_back(std::make_unique<std::barrier<>>(static_cast<std::ptrdiff_t>(block)));
  std::barrier<> all(static_cast<std::ptrdiff_t>(grid) * block);
  grid_barrier = &all;
  grid_dim = {grid, 1, 1};
  block_dim = {block, 1, 1};
  std::vector<std::thread> threads;
  threads.reserve(static_cast<std::size_t>(grid) * block);
  for (unsigned b = 0; b < grid; ++b)
    for (unsigned t = 0; t < block; ++t)
      threads.emplace_back([&, b, t] {
        thread_idx = {t, 0, 0};
        block_idx = {b, 0, 0};
        block_barrier = barriers[b].get();
        dynamic_shared = reinterpret_cast<unsigned char*>(memory[b].data());
        body();
      });
  for (auto& th : threads) th.join();
  grid_barrier = nullptr;
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

// The persistent loop kernel's primitives (compiler/codegen/cuda/cuda_persistent.cpp).
#define CF_EMULATION 1
#define CF_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(cf_emu::dynamic_shared)
inline void cf_grid_sync(unsigned*) { cf_emu::grid_barrier->arrive_and_wait(); }
template <class T>
T __ldcg(const T* p) {
  return *p;
}

inline float __int_as_float(int i) {
  float f;
  std::memcpy(&f, &i, sizeof f);
  return f;
}

inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline unsigned __float_as_uint(float f) {
  unsigned u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

inline double __longlong_as_double(long long i) {
  double d;
  std::memcpy(&d, &i, sizeof d);
  return d;
}
