#include "backend_under_test.h"

#include "compiler/ir/error.h"
#include "runtime/cpu/cpu_bptt.h"
#include "runtime/cpu/cpu_cell.h"
#ifdef CELLFUSE_HAVE_CUDA
#include "fake_cuda/emulated_cuda.h"
#include "runtime/cuda/cuda_bptt.h"
#include "runtime/cuda/cuda_cell.h"
#include "runtime/cuda/driver.h"
#endif

namespace cellfuse::stress {
namespace {

// A backend's two runner classes behind CompiledPrograms (either may be absent: not asked for).
template <class Forward, class Training>
class Programs : public CompiledPrograms {
 public:
  Programs(std::unique_ptr<Forward> forward, std::unique_ptr<Training> training, std::string (*errors)() = nullptr)
      : forward_(std::move(forward)), training_(std::move(training)), errors_(errors) {}
  SequenceResult<float> forward(const SequenceArgs<float>& args) const override { return forward_->run(args); }
  SequenceResult<double> forward(const SequenceArgs<double>& args) const override { return forward_->run(args); }
  BpttResult<float> bptt(const SequenceArgs<float>& args, const LossGradients<float>& seeds) const override {
    return training_->run(args, seeds);
  }
  BpttResult<double> bptt(const SequenceArgs<double>& args, const LossGradients<double>& seeds) const override {
    return training_->run(args, seeds);
  }
  std::string take_errors() const override { return errors_ ? errors_() : ""; }

 protected:
  std::unique_ptr<Forward> forward_;
  std::unique_ptr<Training> training_;
  std::string (*errors_)();
};

class Cpu final : public BackendUnderTest {
 public:
  explicit Cpu(int threads) : threads_(threads) {}
  const std::string& name() const override { return name_; }
  std::unique_ptr<CompiledPrograms> compile(const Cell& cell, std::int64_t batch, bool forward, bool training) const override {
    return std::make_unique<Programs<CpuCell, CpuBptt>>(forward ? std::make_unique<CpuCell>(cell, batch, threads_) : nullptr,
                                                         training ? std::make_unique<CpuBptt>(cell, batch, threads_) : nullptr);
  }

 private:
  int threads_;
  std::string name_ = "cpu";
};

#ifdef CELLFUSE_HAVE_CUDA
class CudaPrograms final : public Programs<CudaCell, CudaBptt> {
 public:
  using Programs::Programs;
  std::vector<std::string> loop_plans() const override {
    std::vector<std::string> plans;
    auto plan = [](const CudaCell& c) { return std::string(loop_strategy_name(c.loop_plan())); };
    if (forward_) plans.push_back("forward " + plan(*forward_));
    if (training_) {
      plans.push_back("bptt forward " + plan(training_->forward_cell()));
      plans.push_back("bptt backward " + plan(training_->backward_step()));
    }
    return plans;
  }
};

class Cuda final : public BackendUnderTest {
 public:
  Cuda(bool fake_driver, LoopStrategy loop) : fake_driver_(fake_driver) { options_.loop = loop; }
  const std::string& name() const override { return name_; }
  std::unique_ptr<CompiledPrograms> compile(const Cell& cell, std::int64_t batch, bool forward, bool training) const override {
    if (!fake_driver_)
      return std::make_unique<CudaPrograms>(forward ? std::make_unique<CudaCell>(cell, batch, options_) : nullptr,
                                            training ? std::make_unique<CudaBptt>(cell, batch, options_) : nullptr);
    // Host builds of the kernels: each runner loads the ones named when it is made.
    auto forward_cell = forward ? testing_support::emulated_cell(cell, batch, options_) : nullptr;
    auto training_cells = training ? testing_support::emulated_bptt(cell, batch, options_) : nullptr;
    return std::make_unique<CudaPrograms>(std::move(forward_cell), std::move(training_cells), &testing_support::fake_errors);
  }

 private:
  bool fake_driver_;
  CudaOptions options_;
  std::string name_ = "cuda";
};

LoopStrategy loop_strategy_named(const std::string& name) {
  for (LoopStrategy s : {LoopStrategy::Auto, LoopStrategy::Graph, LoopStrategy::Persistent, LoopStrategy::Resident})
    if (name == loop_strategy_name(s)) return s;
  throw Error("the CUDA loop plan '" + name + "' is none of auto, graph, persistent, resident");
}
#endif

}  // namespace

std::unique_ptr<BackendUnderTest> cpu_backend(int threads) { return std::make_unique<Cpu>(threads); }

std::unique_ptr<BackendUnderTest> cuda_backend(bool fake_driver, const std::string& loop) {
#ifdef CELLFUSE_HAVE_CUDA
  const LoopStrategy strategy = loop_strategy_named(loop);
  if (fake_driver) testing_support::use_fake_cuda();
  std::string why;
  if (!cuda::cuda_available(&why))
    throw Error("the CUDA backend cannot run here: " + why +
                (fake_driver ? "" : " (on a machine without a GPU, --fake-cuda runs the kernels on the fake driver)"));
  return std::make_unique<Cuda>(fake_driver, strategy);
#else
  (void)fake_driver, (void)loop;
  throw Error("this build has no CUDA backend (configured without the CUDA toolkit's NVRTC; see CELLFUSE_WITH_CUDA)");
#endif
}

}  // namespace cellfuse::stress
