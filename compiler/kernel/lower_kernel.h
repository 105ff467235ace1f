#pragma once
// Lowers one fused group of a stage (see fusion.h) to a kernel: decides which values live in
// memory and which are recomputed inline, turns slices and concatenations into column offsets
// (splitting a loop where a concatenation changes pieces), and merges loops that can run as one.
#include <string>
#include <vector>

#include "compiler/ir/graph.h"
#include "compiler/kernel/kernel.h"

namespace cellfuse::kernel {

struct LoweredKernel {
  Kernel kernel;
  std::vector<ValueId> values;     // the graph value each buffer holds; invalid for scratch
  std::vector<std::string> notes;  // why each value inside the kernel was put in scratch memory
};

struct KernelContext {
  const Cell* stage;
  std::vector<ValueId> nodes;       // the group, in definition order
  std::vector<bool> available;      // values in memory before the kernel runs
  std::vector<bool> needed_after;   // group values read after the kernel (or stage results)
  std::string name;
};

LoweredKernel lower_kernel(const KernelContext& context);

// Merges adjacent loops of equal extent where the later one reads what the earlier one wrote only
// at the same column; forwards those values and drops scratch stores nothing reads any more.
void merge_loops(Kernel& kernel);

}  // namespace cellfuse::kernel
