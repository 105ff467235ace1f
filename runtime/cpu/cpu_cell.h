#pragma once
// A cell compiled for the CPU (compile() in compiler/pipeline.h: hoisted into pre/loop/post
// stages, fused into kernels, generated as LLVM IR), JIT-compiled for the host and run over whole
// sequences in native code. Compile once, run many sequences.
//
//   auto compiled = cellfuse::compile_cpu(cell, /*batch=*/8);   // cached by graph, batch, dtype
//   auto result = compiled->run(args);                            // any sequence length
#include <memory>
#include <string>

#include "compiler/ir/graph.h"
#include "compiler/pipeline.h"
#include "runtime/reference/interpreter.h"
#include "runtime/sequence_buffers.h"  // SequenceView

namespace cellfuse {

class CpuCell {
 public:
  // Compiles `cell` (f32 or f64, as declared) for batch size `batch`, to run on `threads`
  // threads (0: CELLFUSE_NUM_THREADS, else every core). Results are the same bit for bit
  // whatever the thread count. Throws Error when the cell uses something the CPU backend cannot
  // compile, naming the op and the value.
  CpuCell(const Cell& cell, std::int64_t batch, int threads = 0);
  // Loads a program compile() made for Target::Cpu (its LLVM module into the JIT) with the
  // options it was compiled with.
  CpuCell(CompiledProgram program, const TargetOptions& options);
  ~CpuCell();
  CpuCell(const CpuCell&) = delete;
  CpuCell& operator=(const CpuCell&) = delete;

  // Runs a whole sequence. The arguments are checked like the interpreter's (counts, shapes,
  // dtype); the batch must be the one compiled for.
  template <class T>
  SequenceResult<T> run(const SequenceArgs<T>& args) const;
  // The same, writing into `result`'s tensors where they already have the right shapes (no
  // allocation when the same result is passed again).
  template <class T>
  void run_into(const SequenceArgs<T>& args, SequenceResult<T>& result) const;
  // The same on borrowed memory; only the counts are checked (the caller checks shapes).
  template <class T>
  void run_view(const SequenceView<T>& view) const;

  std::int64_t batch() const;
  DType dtype() const;
  double compile_ms() const;
  int threads() const;
  // The stages, GEMMs, kernels and fusion decisions, as text.
  std::string describe() const;

 private:
  void load(CompiledProgram program, const TargetOptions& options);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The in-memory JIT cache: one compiled cell per (graph hash, batch size, dtype). A new sequence
// length or new data never recompiles.
std::shared_ptr<const CpuCell> compile_cpu(const Cell& cell, std::int64_t batch);

// How many compilations the cache has done (for tests of the cache).
std::size_t cpu_compile_count();

}  // namespace cellfuse
