#pragma once
// Shared by the CPU backend tests: a cell's forward and BPTT on the CPU against the f64 reference
// BPTT on the same fresh random arguments and loss gradients (f32 cells: the reference runs the
// cell converted to f64 on the f32 arguments widened).
#include <cstdint>
#include <string>

#include "backend_check.h"
#include "compiler/passes/autodiff.h"
#include "runtime/cpu/cpu_bptt.h"
#include "runtime/cpu/cpu_cell.h"

namespace cellfuse::testing_support {

// Relative tolerances: 1e-5 for an f32 cell, 1e-12 for an f64 one.
inline void expect_cpu_forward_and_bptt(const Cell& cell, std::int64_t steps, std::int64_t batch, std::uint64_t seed,
                                        const std::string& what) {
  if (cell.graph.dtype() == DType::f32) {
    auto args = random_sequence_args<float>(cell, steps, batch, seed);
    auto seeds = random_loss_gradients<float>(cell, steps, batch, seed);
    auto want = reference_bptt(differentiate(as_f64(cell)), convert<float, double>(args), convert_seeds<float, double>(seeds));
    expect_matches(compile_cpu(cell, batch)->run(args), want.forward, 1e-5, what + " forward");
    expect_grads(CpuBptt(cell, batch).run(args, seeds).grads, want.grads, 1e-5, what + " gradients");
  } else {
    auto args = random_sequence_args<double>(cell, steps, batch, seed);
    auto seeds = random_loss_gradients<double>(cell, steps, batch, seed);
    auto want = reference_bptt(differentiate(cell), args, seeds);
    expect_matches(compile_cpu(cell, batch)->run(args), want.forward, 1e-12, what + " forward");
    expect_grads(CpuBptt(cell, batch).run(args, seeds).grads, want.grads, 1e-12, what + " gradients");
  }
}

}  // namespace cellfuse::testing_support
