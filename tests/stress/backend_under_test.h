#pragma once
// The backend the differential check runs a cell through (cellfuse_differential --backend):
// the CPU backend (CpuCell, CpuBptt), or the CUDA backend (CudaCell, CudaBptt) on the machine's
// GPU or, with --fake-cuda, on the fake driver with host builds of the kernels
// (tests/cpp/fake_cuda/emulated_cuda.h). The check itself (differential.h) is the same for all.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "compiler/ir/graph.h"
#include "runtime/reference/bptt.h"

namespace cellfuse::stress {

// One cell compiled by a backend: its inference program and its training programs (each only
// when asked for). Runs take the cell's dtype.
class CompiledPrograms {
 public:
  virtual ~CompiledPrograms() = default;
  virtual SequenceResult<float> forward(const SequenceArgs<float>& args) const = 0;
  virtual SequenceResult<double> forward(const SequenceArgs<double>& args) const = 0;
  virtual BpttResult<float> bptt(const SequenceArgs<float>& args, const LossGradients<float>& seeds) const = 0;
  virtual BpttResult<double> bptt(const SequenceArgs<double>& args, const LossGradients<double>& seeds) const = 0;
  // What went wrong besides the results since the last call (the fake driver: a write past an
  // allocation, a launch it could not run), then cleared; "" when nothing did.
  virtual std::string take_errors() const { return ""; }
  // How each compiled program's time loop ran ("forward graph", "bptt backward resident", ...:
  // the CUDA backend's loop plans, after the runs); empty for a backend without a choice.
  virtual std::vector<std::string> loop_plans() const { return {}; }
};

class BackendUnderTest {
 public:
  virtual ~BackendUnderTest() = default;
  // "cpu" or "cuda": how every Failure::where of its checks begins ("cuda bptt", ...).
  virtual const std::string& name() const = 0;
  // Compiles `cell` for `batch`: the inference program when `forward`, the training programs
  // when `training`. Throws Error for what the backend refuses.
  virtual std::unique_ptr<CompiledPrograms> compile(const Cell& cell, std::int64_t batch, bool forward,
                                                    bool training) const = 0;
};

// The CPU backend with a team of `threads`.
std::unique_ptr<BackendUnderTest> cpu_backend(int threads);

// The CUDA backend, on the machine's device 0, or with `fake_driver` on the fake driver (chosen
// here with testing_support::use_fake_cuda(): call this before anything else loads the CUDA
// driver). `loop`: the time loop's plan asked of every cell (CudaOptions::loop: auto, graph,
// persistent or resident; a plan that does not fit a cell runs the graph, as the runtime does).
// Throws Error saying why when there is none: no CUDA backend in this build, no driver, no
// device; or when `loop` is none of those names.
std::unique_ptr<BackendUnderTest> cuda_backend(bool fake_driver, const std::string& loop = "auto");

}  // namespace cellfuse::stress
