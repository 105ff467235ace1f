#pragma once
// The one interface behind which every way of running a cell sits: the reference interpreter
// (the oracle), the CPU backend and the CUDA backend. A backend compiles a cell for its target
// (compile() in compiler/pipeline.h for the compiled ones), and the program it returns owns its
// workspaces (allocated when a sequence length is first seen, kept for the next run of that
// length) and runs whole sequences forward, or forward and backward (BPTT, with the one driver
// of bptt_driver.h on the compiled backends).
//
//   const Backend& cpu = backend("cpu");
//   auto program = cpu.compile(cell, options);        // cached by graph and options
//   SequenceResult<float> r = program->run(args);
//
// A new backend is one class behind this interface plus one line in backends.cpp.
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "compiler/target.h"
#include "runtime/reference/bptt.h"
#include "runtime/reference/interpreter.h"

namespace cellfuse {

// What a compilation cost and where it runs, for reports (the CLI prints it).
struct CompileInfo {
  std::optional<double> ms;   // none where nothing is compiled (the interpreter)
  std::string device;         // e.g. "NVIDIA H100 (sm_90)"; empty for the host
  bool from_disk_cache = false;
};

// A cell compiled for inference.
class SequenceProgram {
 public:
  virtual ~SequenceProgram() = default;
  virtual CompileInfo info() const = 0;
  virtual SequenceResult<float> run(const SequenceArgs<float>& args) const = 0;
  virtual SequenceResult<double> run(const SequenceArgs<double>& args) const = 0;
};

// A cell compiled for training: forward and backward over a whole sequence, with
// reference_bptt's contract.
class TrainingProgram {
 public:
  virtual ~TrainingProgram() = default;
  virtual CompileInfo info() const = 0;
  virtual BpttResult<float> run(const SequenceArgs<float>& args, const LossGradients<float>& seeds) const = 0;
  virtual BpttResult<double> run(const SequenceArgs<double>& args, const LossGradients<double>& seeds) const = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string_view name() const = 0;  // "ref", "cpu", "cuda"
  // Compiles `cell` for options.batch (options.target is this backend's; training ignored).
  virtual std::shared_ptr<const SequenceProgram> compile(const Cell& cell, const TargetOptions& options) const = 0;
  virtual std::shared_ptr<const TrainingProgram> compile_training(const Cell& cell, const TargetOptions& options) const = 0;
};

// The backend of that name; Error naming the ones this build has when there is none.
const Backend& backend(std::string_view name);
// The names of the backends this build has, in order ("ref", then "cpu", "cuda" when built).
std::vector<std::string> backend_names();

// Each backend's maker (backends.cpp lists them).
std::unique_ptr<Backend> make_reference_backend();
std::unique_ptr<Backend> make_cpu_backend();   // runtime/cpu/cpu_backend.cpp, with LLVM
std::unique_ptr<Backend> make_cuda_backend();  // runtime/cuda/cuda_backend.cpp, with CUDA

}  // namespace cellfuse
