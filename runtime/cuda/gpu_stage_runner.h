#pragma once
// Runs one compiled stage (compile()'s StageProgram with its CUDA kernels) on the GPU: binds every
// value of the stage to device memory and enqueues the GEMMs (cuBLAS) and kernels in order on a
// stream. The mirror of runtime/cpu/stage_runner.h. Everything is allocated when a runner is
// made; a run only rebinds pointers and enqueues, so a sequence allocates nothing per step (and
// can be captured in a graph).
#include <algorithm>
#include <climits>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "compiler/ir/error.h"
#include "compiler/pipeline.h"
#include "runtime/cuda/cuda_cell.h"
#include "runtime/cuda/cuda_profile.h"
#include "runtime/cuda/driver.h"

namespace cellfuse::cuda_run {

// Support kernels: threads a block, most blocks.
constexpr unsigned kSupportThreads = 256;
constexpr std::int64_t kSupportMaxBlocks = 4096;

inline CUdeviceptr offset(CUdeviceptr base, std::int64_t elements, std::size_t elem) {
  return base + static_cast<CUdeviceptr>(elements) * elem;
}

template <class P>
P* as_pointer(CUdeviceptr p) {
  return reinterpret_cast<P*>(static_cast<std::uintptr_t>(p));
}

// What every stage runner of one cell shares.
struct Shared {
  const cuda::Driver* d = nullptr;
  DType dtype = DType::f32;
  std::size_t elem = 4;
  CUfunction transpose = nullptr, fill_rows = nullptr;
  cublasHandle_t blas = nullptr;
  DeviceTimer* timer = nullptr;  // set only during a profiled run (runtime/profile)

  void launch_support(CUfunction fn, CUdeviceptr a, CUdeviceptr b, std::int64_t rows, std::int64_t cols,
                      CUstream stream, const char* what) const {
    const std::int64_t n = rows * cols;
    if (n == 0) return;
    auto blocks = static_cast<unsigned>(std::min<std::int64_t>(kSupportMaxBlocks, (n + kSupportThreads - 1) / kSupportThreads));
    long long r = rows, c = cols;
    void* args[] = {&a, &b, &r, &c};
    cuda::check(d->launch_kernel(fn, blocks, 1, 1, kSupportThreads, 1, 1, 0, stream, args, nullptr), what);
  }

  void copy(CUdeviceptr to, CUdeviceptr from, std::int64_t elements, CUstream stream) const {
    if (elements == 0 || to == from) return;
    cuda::check(d->memcpy_dtod_async(to, from, static_cast<std::size_t>(elements) * elem, stream), "cuMemcpyDtoDAsync");
  }
};

struct GpuStage {
  const SequenceStage* stage = nullptr;
  const cuda_codegen::CudaStage* code = nullptr;
  std::vector<CUfunction> functions;  // per program step; null for a GEMM
};

// Runs one compiled stage on the GPU: binds every value of the stage to device memory, runs the
// GEMMs (cuBLAS) and kernels in order on a stream. Everything is allocated when the runner is
// made; a run only rebinds pointers and enqueues, so a sequence allocates nothing per step (and
// can be captured in a graph).
class GpuStageRunner {
 public:
  GpuStageRunner(const GpuStage& gs, std::int64_t rows, const Shared& sh)
      : gs_(gs), stage_(*gs.stage->cell), g_(stage_.graph), sh_(sh), rows_(rows), where_(g_.size(), 0) {
    const auto& program = gs.code->program;
    for (ValueId v : program.temporaries) {
      temporaries_.emplace_back(static_cast<std::size_t>(rows * g_.node(v).shape.features()) * sh.elem);
      where_[v.index] = temporaries_.back().get();
    }
    calls_.resize(program.steps.size());
    for (std::size_t i = 0; i < program.steps.size(); ++i) {
      const ProgramStep& step = program.steps[i];
      if (step.kind != ProgramStep::Kind::Kernel) continue;
      const auto& ck = gs.code->kernels[i];
      if (ck.global_scratch_per_block > 0)
        calls_[i].scratch = cuda::DeviceMemory(static_cast<std::size_t>(ck.blocks(rows) * ck.global_scratch_per_block) * sh.elem);
      const auto& k = step.kernel.kernel;
      for (std::size_t b = 0; b < k.buffers.size(); ++b)
        if (k.buffers[b].transposed) {
          ValueId v = step.kernel.buffers[b];
          if (!transposed_.count(v.index))
            transposed_.emplace(v.index, cuda::DeviceMemory(static_cast<std::size_t>(k.buffers[b].rows * k.buffers[b].cols) * sh.elem));
        }
    }
    direct_output_.assign(stage_.outputs.size(), false);
    std::vector<bool> taken(g_.size(), false);
    for (std::size_t o = 0; o < stage_.outputs.size(); ++o) {
      ValueId v = stage_.outputs[o].value;
      direct_output_[o] = !is_leaf(g_.node(v).op) && !taken[v.index];
      taken[v.index] = true;
    }
    output_memory_.assign(stage_.outputs.size(), 0);
  }

  // Binds the parameters and refreshes the transposed copies fused products read.
  void bind_params(const std::vector<DevicePointer>& params, CUstream stream) {
    for (std::size_t p = 0; p < stage_.params.size(); ++p)
      where_[stage_.params[p].index] = params[static_cast<std::size_t>(gs_.stage->params[p])];
    for (auto& [index, copy] : transposed_) {
      const Shape& s = g_.nodes()[index].shape;  // [n, k]; the copy is [k, n]
      sh_.launch_support(sh_.transpose, where_[index], copy.get(), s.dims[0], s.dims[1], stream, "cuLaunchKernel(transpose)");
    }
  }

  void bind(ValueId v, CUdeviceptr memory) { where_[v.index] = memory; }
  // `v` is written straight into the memory bind_outputs() gave it.
  bool is_direct_output(ValueId v) const {
    for (std::size_t o = 0; o < stage_.outputs.size(); ++o)
      if (direct_output_[o] && stage_.outputs[o].value == v) return true;
    return false;
  }
  // `v` has memory of its own (a GEMM or kernel writes it), which bind() may move.
  bool is_temporary(ValueId v) const {
    const auto& t = gs_.code->program.temporaries;
    return std::find(t.begin(), t.end(), v) != t.end();
  }
  CUdeviceptr at(ValueId v) const { return where_[v.index]; }

  void bind_outputs(const std::vector<CUdeviceptr>& memory) {
    for (std::size_t o = 0; o < output_memory_.size(); ++o) {
      output_memory_[o] = memory[o];
      if (direct_output_[o]) where_[stage_.outputs[o].value.index] = output_memory_[o];
    }
  }

  void run(CUstream stream) {
    const auto& program = gs_.code->program;
    // Profiling (runtime/profile): off, one load of a null pointer per stage run.
    if (profile::Recorder* rec = profile::active()) {
      const auto& sites = profile::sites_for(*rec, sites_generation_, sites_, stage_, program.steps, rows_, sh_.elem);
      for (std::size_t i = 0; i < program.steps.size(); ++i) {
        const std::int64_t begin = profile::Recorder::now_ns();
        if (sh_.timer) sh_.timer->before(stream);
        run_step(i, stream);
        if (sh_.timer) sh_.timer->after(stream, sites[i], rec->step(), rec->phase(), rec->run());
        rec->call(sites[i], begin, profile::Recorder::now_ns());
      }
    } else {
      for (std::size_t i = 0; i < program.steps.size(); ++i) run_step(i, stream);
    }
    for (std::size_t o = 0; o < output_memory_.size(); ++o)
      if (!direct_output_[o]) {
        ValueId v = stage_.outputs[o].value;
        sh_.copy(output_memory_[o], at(v), rows_ * g_.node(v).shape.features(), stream);
      }
  }

 private:
  void run_step(std::size_t i, CUstream stream) {
    const auto& program = gs_.code->program;
    if (program.steps[i].kind == ProgramStep::Kind::Gemm) gemm(program.steps[i].gemm, stream);
    else launch(i, stream);
  }

  struct Call {
    cuda::DeviceMemory scratch;
  };

  CUdeviceptr bound(ValueId v) const {
    CUdeviceptr p = where_[v.index];
    if (p == 0) throw InternalError("CUDA runner: " + g_.describe(v) + " has no memory");
    return p;
  }

  void launch(std::size_t i, CUstream stream) {
    const KernelStep& step = gs_.code->program.steps[i].kernel;
    const cuda_codegen::CudaKernel& ck = gs_.code->kernels[i];
    std::vector<CUdeviceptr> pointers;
    for (int b : ck.pointer_buffers) {
      ValueId v = step.buffers[static_cast<std::size_t>(b)];
      pointers.push_back(step.kernel.buffers[static_cast<std::size_t>(b)].transposed ? transposed_.at(v.index).get() : bound(v));
    }
    long long rows = rows_;
    CUdeviceptr scratch = calls_[i].scratch.get();
    std::vector<void*> args;
    for (auto& p : pointers) args.push_back(&p);
    args.push_back(&rows);
    args.push_back(&scratch);
    const std::int64_t blocks = ck.blocks(rows_);
    if (blocks == 0) return;
    if (blocks > INT_MAX) throw Error("CUDA backend: " + ck.name + " would need " + std::to_string(blocks) + " blocks");
    cuda::check(sh_.d->launch_kernel(gs_.functions[i], static_cast<unsigned>(blocks), 1, 1, static_cast<unsigned>(ck.threads), 1,
                                     1, 0, stream, args.data(), nullptr),
                ("cuLaunchKernel(" + ck.name + ")").c_str());
  }

  // out[rows, n] = x[rows, k] W^T (+ bias) for linear (W [n, k]), x W for matmul (W [k, n]), in
  // row-major terms; cuBLAS sees the column-major transposes: out^T = W^T' x^T.
  void gemm(const GemmStep& gm, CUstream stream) {
    const cuda::Cublas& b = cuda::cublas();
    if (gm.n > INT_MAX || gm.k > INT_MAX) throw Error("CUDA backend: a matrix product too large for cuBLAS's int sizes");
    CUdeviceptr x = bound(gm.x), w = bound(gm.weight), out = bound(gm.out);
    if (gm.bias.valid()) sh_.launch_support(sh_.fill_rows, out, bound(gm.bias), rows_, gm.n, stream, "cuLaunchKernel(fill_rows)");
    const cublasOperation_t op = gm.transposed ? CUBLAS_OP_T : CUBLAS_OP_N;
    const int n = static_cast<int>(gm.n), k = static_cast<int>(gm.k), ldw = gm.transposed ? k : n;
    constexpr std::int64_t kChunk = std::int64_t{1} << 30;
    for (std::int64_t r0 = 0; r0 < rows_; r0 += kChunk) {
      const int m = static_cast<int>(std::min(kChunk, rows_ - r0));
      CUdeviceptr xr = offset(x, r0 * gm.k, sh_.elem), outr = offset(out, r0 * gm.n, sh_.elem);
      if (sh_.dtype == DType::f32) {
        const float alpha = 1.0f, beta = gm.bias.valid() ? 1.0f : 0.0f;
        cuda::check(b.sgemm(sh_.blas, op, CUBLAS_OP_N, n, m, k, &alpha, as_pointer<const float>(w), ldw,
                            as_pointer<const float>(xr), k, &beta, as_pointer<float>(outr), n),
                    "cublasSgemm");
      } else {
        const double alpha = 1.0, beta = gm.bias.valid() ? 1.0 : 0.0;
        cuda::check(b.dgemm(sh_.blas, op, CUBLAS_OP_N, n, m, k, &alpha, as_pointer<const double>(w), ldw,
                            as_pointer<const double>(xr), k, &beta, as_pointer<double>(outr), n),
                    "cublasDgemm");
      }
    }
  }

  const GpuStage& gs_;
  const Cell& stage_;
  const Graph& g_;
  const Shared& sh_;
  std::int64_t rows_;
  std::vector<CUdeviceptr> where_;
  std::vector<cuda::DeviceMemory> temporaries_;
  std::map<std::uint32_t, cuda::DeviceMemory> transposed_;
  std::vector<Call> calls_;
  std::vector<bool> direct_output_;
  std::vector<CUdeviceptr> output_memory_;
  std::vector<int> sites_;  // the profiler's ids of the steps, for the recorder of this generation
  std::uint64_t sites_generation_ = 0;
};

}  // namespace cellfuse::cuda_run
