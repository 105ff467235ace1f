#pragma once
// Kernel IR -> LLVM IR for the host CPU: each kernel becomes
//
//   void <name>(void* const* buffers, int64_t row_begin, int64_t row_end,
//               int64_t part, int64_t parts, void (*barrier)(void*), void* barrier_context)
//
// buffers[i] points at row 0 of kernel buffer i (scratch buffers at the row `row_begin`), rows
// are contiguous with `cols` elements. Element loops run `lanes` wide with a scalar tail; the
// transcendental functions come from vector_math.h, never from libm.
//
// `parts` callers may run the same rows together, each with its `part`: element loops and
// matrix products then split their columns (on whole vectors, so every element is computed by
// the same instructions whatever the split), loops with reductions run in part 0, and the
// parts meet at `barrier` between statements. With parts = 1 the barrier is never called.
#include "compiler/kernel/kernel.h"

namespace llvm {
class Module;
}

namespace cellfuse::llvm_codegen {

// The C signature of every generated kernel.
using KernelFunction = void (*)(void* const* buffers, std::int64_t row_begin, std::int64_t row_end,
                                std::int64_t part, std::int64_t parts, void (*barrier)(void*),
                                void* barrier_context);

void emit_kernel(llvm::Module& module, const kernel::Kernel& kernel);

// Vectors of output columns one MatVec tile accumulates for `rows` rows at once: as many as fit
// the registers beside the rows' accumulators. A packed weight's panel is this times the lanes.
int product_unroll(std::int64_t rows);

}  // namespace cellfuse::llvm_codegen
