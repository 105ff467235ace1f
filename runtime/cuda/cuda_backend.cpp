// The CUDA backend behind the Backend interface: CudaCell and CudaBptt through their caches.
#include "runtime/backend.h"
#include "runtime/cuda/cuda_bptt.h"
#include "runtime/cuda/cuda_cell.h"

namespace cellfuse {
namespace {

CudaOptions cuda_options(const TargetOptions& o) {
  CudaOptions options;
  options.storage = o.storage;
  options.program.fuse = o.fuse;
  options.program.emit.max_threads = o.cuda_block_threads;
  options.program.emit.shared_limit = o.cuda_shared_limit;
  return options;
}

class CudaSequence : public SequenceProgram {
 public:
  explicit CudaSequence(std::shared_ptr<const CudaCell> cell) : cell_(std::move(cell)) {}
  CompileInfo info() const override {
    return {cell_->compile_ms(), cell_->device_name() + " (" + cell_->architecture() + ")", cell_->cubin_from_cache()};
  }
  SequenceResult<float> run(const SequenceArgs<float>& args) const override { return cell_->run(args); }
  SequenceResult<double> run(const SequenceArgs<double>& args) const override { return cell_->run(args); }

 private:
  std::shared_ptr<const CudaCell> cell_;
};

class CudaTraining : public TrainingProgram {
 public:
  explicit CudaTraining(std::shared_ptr<const CudaBptt> bptt) : bptt_(std::move(bptt)) {}
  CompileInfo info() const override {
    const CudaCell& f = bptt_->forward_cell();
    return {bptt_->compile_ms(), f.device_name() + " (" + f.architecture() + ")", bptt_->cubins_from_cache()};
  }
  BpttResult<float> run(const SequenceArgs<float>& args, const LossGradients<float>& seeds) const override {
    return bptt_->run(args, seeds);
  }
  BpttResult<double> run(const SequenceArgs<double>& args, const LossGradients<double>& seeds) const override {
    return bptt_->run(args, seeds);
  }

 private:
  std::shared_ptr<const CudaBptt> bptt_;
};

class CudaBackend : public Backend {
 public:
  std::string_view name() const override { return "cuda"; }
  std::shared_ptr<const SequenceProgram> compile(const Cell& cell, const TargetOptions& options) const override {
    return std::make_shared<CudaSequence>(compile_cuda(cell, options.batch, cuda_options(options)));
  }
  std::shared_ptr<const TrainingProgram> compile_training(const Cell& cell, const TargetOptions& options) const override {
    return std::make_shared<CudaTraining>(compile_cuda_bptt(cell, options.batch, cuda_options(options)));
  }
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend() { return std::make_unique<CudaBackend>(); }

}  // namespace cellfuse
