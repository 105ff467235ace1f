// The CPU backend behind the Backend interface: CpuCell and CpuBptt through their caches.
#include "runtime/backend.h"
#include "runtime/cpu/cpu_bptt.h"
#include "runtime/cpu/cpu_cell.h"

namespace cellfuse {
namespace {

class CpuSequence : public SequenceProgram {
 public:
  explicit CpuSequence(std::shared_ptr<const CpuCell> cell) : cell_(std::move(cell)) {}
  CompileInfo info() const override { return {cell_->compile_ms(), {}, false}; }
  SequenceResult<float> run(const SequenceArgs<float>& args) const override { return cell_->run(args); }
  SequenceResult<double> run(const SequenceArgs<double>& args) const override { return cell_->run(args); }

 private:
  std::shared_ptr<const CpuCell> cell_;
};

class CpuTraining : public TrainingProgram {
 public:
  explicit CpuTraining(std::shared_ptr<const CpuBptt> bptt) : bptt_(std::move(bptt)) {}
  CompileInfo info() const override { return {bptt_->compile_ms(), {}, false}; }
  BpttResult<float> run(const SequenceArgs<float>& args, const LossGradients<float>& seeds) const override {
    return bptt_->run(args, seeds);
  }
  BpttResult<double> run(const SequenceArgs<double>& args, const LossGradients<double>& seeds) const override {
    return bptt_->run(args, seeds);
  }

 private:
  std::shared_ptr<const CpuBptt> bptt_;
};

class CpuBackend : public Backend {
 public:
  std::string_view name() const override { return "cpu"; }
  std::shared_ptr<const SequenceProgram> compile(const Cell& cell, const TargetOptions& options) const override {
    return std::make_shared<CpuSequence>(compile_cpu(cell, options.batch));
  }
  std::shared_ptr<const TrainingProgram> compile_training(const Cell& cell, const TargetOptions& options) const override {
    return std::make_shared<CpuTraining>(compile_cpu_bptt(cell, options.batch));
  }
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace cellfuse
