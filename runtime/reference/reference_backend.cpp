// The reference interpreter behind the Backend interface: the optimized cell, one node at a time.
#include "compiler/pipeline.h"
#include "runtime/backend.h"

namespace cellfuse {
namespace {

class ReferenceSequence : public SequenceProgram {
 public:
  explicit ReferenceSequence(Cell cell) : cell_(std::move(cell)) {}
  CompileInfo info() const override { return {}; }
  SequenceResult<float> run(const SequenceArgs<float>& args) const override { return interpret_sequence(cell_, args); }
  SequenceResult<double> run(const SequenceArgs<double>& args) const override { return interpret_sequence(cell_, args); }

 private:
  Cell cell_;
};

class ReferenceTraining : public TrainingProgram {
 public:
  explicit ReferenceTraining(const Cell& cell) : backward_(differentiate_stage(cell)) {}
  CompileInfo info() const override { return {}; }
  BpttResult<float> run(const SequenceArgs<float>& args, const LossGradients<float>& seeds) const override {
    return reference_bptt(backward_, args, seeds);
  }
  BpttResult<double> run(const SequenceArgs<double>& args, const LossGradients<double>& seeds) const override {
    return reference_bptt(backward_, args, seeds);
  }

 private:
  BackwardCell backward_;
};

class ReferenceBackend : public Backend {
 public:
  std::string_view name() const override { return "ref"; }
  std::shared_ptr<const SequenceProgram> compile(const Cell& cell, const TargetOptions&) const override {
    return std::make_shared<ReferenceSequence>(optimize_stage(cell));
  }
  std::shared_ptr<const TrainingProgram> compile_training(const Cell& cell, const TargetOptions&) const override {
    return std::make_shared<ReferenceTraining>(cell);
  }
};

}  // namespace

std::unique_ptr<Backend> make_reference_backend() { return std::make_unique<ReferenceBackend>(); }

}  // namespace cellfuse
