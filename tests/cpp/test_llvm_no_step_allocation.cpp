// The time loop allocates nothing per step: a run of 400 steps makes exactly as many heap
// allocations as a run of 4 (counted by replacing the global operator new in this test binary).
#include <gtest/gtest.h>

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

#include "frontend/cells.h"
#include "runtime/cpu/cpu_cell.h"
#include "runtime/random_args.h"

namespace {
std::atomic<long> g_allocations{0};
}

// Every form of new and delete is replaced, so that no allocation is made by one allocator and
// freed by another (sanitizers check that).
namespace {
void* counted(std::size_t size, std::size_t align = 0) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (size == 0) size = 1;
  if (align > alignof(std::max_align_t)) return std::aligned_alloc(align, (size + align - 1) / align * align);
  return std::malloc(size);
}
void* counted_or_throw(std::size_t size, std::size_t align = 0) {
  if (void* p = counted(size, align)) return p;
  throw std::bad_alloc();
}
}  // namespace

void* operator new(std::size_t size) { return counted_or_throw(size); }
void* operator new[](std::size_t size) { return counted_or_throw(size); }
void* operator new(std::size_t size, const std::nothrow_t&) noexcept { return counted(size); }
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept { return counted(size); }
void* operator new(std::size_t size, std::align_val_t a) { return counted_or_throw(size, static_cast<std::size_t>(a)); }
void* operator new[](std::size_t size, std::align_val_t a) { return counted_or_throw(size, static_cast<std::size_t>(a)); }
void* operator new(std::size_t size, std::align_val_t a, const std::nothrow_t&) noexcept {
  return counted(size, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t size, std::align_val_t a, const std::nothrow_t&) noexcept {
  return counted(size, static_cast<std::size_t>(a));
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }

namespace cellfuse {
namespace {

// Allocations made by the second of two identical runs (the first one sets up the workspace).
long allocations_of_a_run(const CpuCell& compiled, const Cell& cell, std::int64_t steps, std::int64_t batch) {
  auto args = random_sequence_args<float>(cell, steps, batch, 1);
  SequenceResult<float> result;
  compiled.run_into(args, result);
  long before = g_allocations.load();
  compiled.run_into(args, result);
  return g_allocations.load() - before;
}

TEST(CpuRunner, AllocatesNothingPerStep) {
  for (const char* spec : {"lstm:16,32", "elman_proj:8,16,4", "lnlstm:8,16", "gru:5,7"}) {
    for (std::int64_t batch : {1, 3, 64}) {
      Cell cell = cells::by_spec(spec);
      CpuCell compiled(cell, batch, 2);
      long short_run = allocations_of_a_run(compiled, cell, 4, batch);
      long long_run = allocations_of_a_run(compiled, cell, 400, batch);
      EXPECT_EQ(short_run, long_run) << spec << " B=" << batch;
      EXPECT_LT(long_run, 64) << spec << " B=" << batch;  // and few per run
      EXPECT_GT(long_run, 0) << "the counter counts (the run makes its argument checks)";
    }
  }
}

}  // namespace
}  // namespace cellfuse
