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
class Programs final : public CompiledPrograms {
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

 private:
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
class Cuda final : public BackendUnderTest {
 public:
  explicit Cuda(bool fake_driver) : fake_driver_(fake_driver) {}
  const std::string& name() const override { return name_; }
  std::unique_ptr<CompiledPrograms> compile(const Cell& cell, std::int64_t batch, bool forward, bool training) const override {
    using Result = Programs<CudaCell, CudaBptt>;
    if (!fake_driver_)
      return std::make_unique<Result>(forward ? std::make_unique<CudaCell>(cell, batch) : nullptr,
                                      training ? std::make_unique<CudaBptt>(cell, batch) : nullptr);
    // Host builds of the kernels: each runner loads the ones named when it is made.
    auto forward_cell = forward ? testing_support::emulated_cell(cell, batch) : nullptr;
    auto training_cells = training ? testing_support::emulated_bptt(cell, batch) : nullptr;
    return std::make_unique<Result>(std::move(forward_cell), std::move(training_cells), &testing_support::fake_errors);
  }

 private:
  bool fake_driver_;
  std::string name_ = "cuda";
};
#endif

}  // namespace

std::unique_ptr<BackendUnderTest> cpu_backend(int threads) { return std::make_unique<Cpu>(threads); }

std::unique_ptr<BackendUnderTest> cuda_backend(bool fake_driver) {
#ifdef CELLFUSE_HAVE_CUDA
  if (fake_driver) testing_support::use_fake_cuda();
  std::string why;
  if (!cuda::cuda_available(&why))
    throw Error("the CUDA backend cannot run here: " + why +
                (fake_driver ? "" : " (on a machine without a GPU, --fake-cuda runs the kernels on the fake driver)"));
  return std::make_unique<Cuda>(fake_driver);
#else
  (void)fake_driver;
  throw Error("this build has no CUDA backend (configured without the CUDA toolkit's NVRTC; see CELLFUSE_WITH_CUDA)");
#endif
}

}  // namespace cellfuse::stress
