#include "runtime/cuda/cuda_cell.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>
#include <tuple>

#include "compiler/ir/error.h"
#include "runtime/cuda/driver.h"
#include "runtime/cuda/host_transfer.h"
#include "runtime/cuda/kernel_cache.h"
#include "runtime/cuda/nvrtc.h"
#include "runtime/sequence_check.h"

namespace cellfuse {

TargetOptions cuda_target(std::int64_t batch, const cuda_codegen::ProgramOptions& program, Storage storage) {
  TargetOptions options;
  options.target = Target::Cuda;
  options.batch = batch;
  options.storage = storage;
  options.fuse = program.fuse;
  options.cuda_block_threads = program.emit.max_threads;
  options.cuda_shared_limit = program.emit.shared_limit;
  return options;
}

CudaBinary build_cuda_binary(const Cell& cell, std::int64_t batch, const std::string& architecture,
                             const cuda_codegen::ProgramOptions& options, cuda::KernelCache* cache) {
  CudaBinary out;
  out.program = std::move(*compile(cell, cuda_target(batch, options, Storage::Native)).forward.cuda);
  out.architecture = architecture;
  cuda::KernelCache& c = cache ? *cache : cuda::default_kernel_cache();
  out.cubin = c.get_or_compile(out.program.source, architecture, {}, cell.name + ".cu");
  return out;
}

namespace {

std::atomic<std::size_t> g_compile_count{0};

// The rule Auto follows (choose_loop_strategy): the persistent loop kernel at batch 1 when the
// fused weights have at least kAutoPersistentMinWeight elements, else the graph path. Measured on
// an H200 (bench_gpu --sweep, forward ms at T=1000, graph vs persistent; gpu_persistent.md):
//   B=1: lstm:512 6.95 vs 6.45, lstm:1024 10.94 vs 9.59, gru:512 8.66 vs 6.11,
//        gru:1024 10.98 vs 8.95, elman:1024 5.67 vs 5.62 (weights >= 1M elements: persistent);
//        lstm:256 (W5) 5.43 vs 5.60 at its best grid, gru:256 5.30 vs 5.70, elman:256 4.34 vs
//        4.53, lstm:64 4.63 vs 6.19 (smaller weights: the grid barriers cost more than the
//        graph's launches);
//   B=4 and 8: the graph path wins everywhere (1.07x to 7.6x), the per-block products of the
//        persistent kernel are latency-bound for more than one row.
constexpr std::int64_t kAutoPersistentRows = 1;
constexpr std::int64_t kAutoPersistentMinWeight = 512 * 1024;

// cuBLAS's recommended workspace on Hopper; set explicitly so that graph capture never has
// cuBLAS allocate.
constexpr std::size_t kCublasWorkspaceBytes = std::size_t{32} << 20;
// Support kernels: threads a block, most blocks.
constexpr unsigned kSupportThreads = 256;
constexpr std::int64_t kSupportMaxBlocks = 4096;

CUdeviceptr offset(CUdeviceptr base, std::int64_t elements, std::size_t elem) {
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
    for (std::size_t i = 0; i < program.steps.size(); ++i) {
      if (program.steps[i].kind == ProgramStep::Kind::Gemm) gemm(program.steps[i].gemm, stream);
      else launch(i, stream);
    }
    for (std::size_t o = 0; o < output_memory_.size(); ++o)
      if (!direct_output_[o]) {
        ValueId v = stage_.outputs[o].value;
        sh_.copy(output_memory_[o], at(v), rows_ * g_.node(v).shape.features(), stream);
      }
  }

 private:
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
};

// What one sequence length needs on the device, kept between runs of that length.
struct Workspace {
  std::int64_t steps = -1;
  std::optional<GpuStageRunner> stages[3];
  std::vector<cuda::DeviceMemory> exports[3];
  std::vector<cuda::DeviceMemory> current, next;
};

// The host API's device copies of its arguments and results, kept between runs of a length;
// with 16-bit storage, also the f32 buffers a run widens its arguments into and computes its
// results in.
struct HostStaging {
  std::int64_t steps = -1;
  std::vector<cuda::DeviceMemory> inputs, states, params, outputs, final_states;
};

// A graph is valid for the exact launches it captured: the length and every pointer.
struct GraphKey {
  std::int64_t steps = -1;
  bool reverse = false;
  std::vector<DevicePointer> pointers;
  friend bool operator==(const GraphKey&, const GraphKey&) = default;
};

LoopStrategy strategy_from_environment(LoopStrategy asked) {
  if (asked != LoopStrategy::Auto) return asked;
  const char* v = std::getenv("CELLFUSE_CUDA_LOOP");
  if (!v || !*v || std::string(v) == "auto") return LoopStrategy::Auto;
  if (std::string(v) == "persistent") return LoopStrategy::Persistent;
  if (std::string(v) == "graph") return LoopStrategy::Graph;
  throw Error("CELLFUSE_CUDA_LOOP: '" + std::string(v) + "' is none of auto, persistent, graph");
}

// Blocks of the persistent kernel's grid before the co-residency limit: one a multiprocessor.
// On W5 (lstm:256 B=1 T=1000, H200) 8 blocks took 13.7 ms, 16 7.3, 32 6.05, 66 5.72, 132 5.60:
// spreading the product wins over the cheaper barrier of a small grid.
// $CELLFUSE_CUDA_PERSISTENT_BLOCKS overrides (bench_gpu --sweep).
std::int64_t wanted_persistent_blocks(int multiprocessors) {
  if (const char* v = std::getenv("CELLFUSE_CUDA_PERSISTENT_BLOCKS"); v && std::atoi(v) > 0) return std::atoi(v);
  return std::max(multiprocessors, 1);
}

bool graphs_allowed_by_environment() {
  const char* v = std::getenv("CELLFUSE_CUDA_GRAPHS");
  return !(v && std::string(v) == "0");
}

}  // namespace

struct CudaCell::Impl {
  cuda_codegen::CudaProgram program;
  GpuStage stages[3];
  const cuda::Device* dev = nullptr;
  std::string architecture;
  CUmodule module = nullptr;
  Shared shared;
  cuda::DeviceMemory blas_workspace;
  CUstream own_stream = nullptr;  // non-blocking: it can capture graphs while others use stream 0
  CUevent done = nullptr;         // recorded after every run, on the run's stream
  CUevent entry = nullptr;        // the legacy stream's work before a run given no stream
  CUstream last_stream = nullptr;
  bool has_run = false;
  std::int64_t batch = 0;
  double compile_ms = 0;
  bool from_cache = false;
  bool graphs = true;
  // The persistent loop kernel, when chosen.
  CUfunction persistent_fn = nullptr;
  unsigned persistent_grid = 0, persistent_shared = 0;
  cuda::DeviceMemory persistent_ws, persistent_bar;
  std::string loop_reason;
  std::mutex mutex;
  Workspace ws;
  HostStaging staging;
  // 16-bit storage: the conversion kernels and the f32 side of the caller's tensors.
  Storage storage = Storage::Native;
  CUfunction widen[3] = {}, narrow[3] = {};  // indexed by Storage
  HostStaging wide;
  // Captured graphs, most recently used last. Several, because a framework's caching allocator
  // hands out a few recurring sets of buffers (a training loop alternates between them), and a
  // single graph keyed by pointers would then never be replayed.
  static constexpr std::size_t kMaxGraphs = 8;
  struct CachedGraph {
    GraphKey key;
    CUgraphExec exec = nullptr;
  };
  std::vector<CachedGraph> graphs_cached;
  std::vector<GraphKey> seen_once;  // keys run without a graph once; the second run captures
  std::size_t captures = 0;

  ~Impl() {
    // Nothing here may throw; failures mean the context is gone already.
    if (!dev) return;  // the driver or the device was never had
    const cuda::Driver& d = cuda::driver();
    (void)d.ctx_set_current(dev->context);
    if (own_stream) (void)d.stream_synchronize(own_stream);
    if (last_stream && last_stream != own_stream) (void)d.stream_synchronize(last_stream);
    for (auto& g : graphs_cached) (void)d.graph_exec_destroy(g.exec);
    if (done) (void)d.event_destroy(done);
    if (entry) (void)d.event_destroy(entry);
    if (shared.blas) (void)cuda::cublas().destroy(shared.blas);
    for (auto& s : ws.stages) s.reset();
    if (own_stream) (void)d.stream_destroy(own_stream);
    if (module) (void)d.module_unload(module);
  }

  const Cell& cell() const { return program.cell; }

  void drop_graph() {
    for (auto& g : graphs_cached) (void)cuda::driver().graph_exec_destroy(g.exec);
    graphs_cached.clear();
    seen_once.clear();
  }

  void prepare_workspace(std::int64_t steps) {
    if (ws.steps == steps) return;
    drop_graph();  // graphs point into the old workspace
    const std::int64_t B = batch, rows = steps * B;
    for (int s = 0; s < 3; ++s) {
      ws.stages[s].reset();
      ws.exports[s].clear();
    }
    ws.current.clear();
    ws.next.clear();
    ws.steps = steps;
    for (int s = 0; s < 3; ++s) {
      if (!stages[s].stage->cell) continue;
      ws.stages[s].emplace(stages[s], s == 1 ? B : rows, shared);
      const Cell& c = *stages[s].stage->cell;
      for (const auto& o : c.outputs)
        ws.exports[s].emplace_back(static_cast<std::size_t>(rows * c.graph.node(o.value).shape.features()) * shared.elem);
    }
    for (ValueId st : cell().states) {
      const auto bytes = static_cast<std::size_t>(B * cell().graph.node(st).shape.features()) * shared.elem;
      ws.current.emplace_back(bytes);
      ws.next.emplace_back(bytes);
    }
  }

  // Enqueues a whole sequence on `stream` (the mirror of CpuCell::run_into).
  void enqueue(const DeviceSequenceArgs& a, CUstream stream) {
    const Cell& cell = this->cell();
    const std::int64_t B = batch, steps = a.steps;
    auto cols = [](const Cell& c, ValueId v) { return c.graph.node(v).shape.features(); };
    if (shared.blas) cuda::check(cuda::cublas().set_stream(shared.blas, stream), "cublasSetStream");
    if (steps == 0) {
      for (std::size_t s = 0; s < cell.states.size(); ++s)
        shared.copy(a.final_states[s], a.states[s], B * cols(cell, cell.states[s]), stream);
      return;
    }
    std::vector<CUdeviceptr> output_memory[3];
    for (int s = 0; s < 3; ++s)
      for (auto& e : ws.exports[s]) output_memory[s].push_back(e.get());
    for (std::size_t o = 0; o < program.plan.outputs.size(); ++o)
      output_memory[static_cast<int>(program.plan.outputs[o].stage)][static_cast<std::size_t>(program.plan.outputs[o].index)] =
          a.outputs[o];
    auto source = [&](const StageInput& in) -> CUdeviceptr {
      switch (in.from) {
        case StageInput::From::CellInput: return a.inputs[static_cast<std::size_t>(in.index)];
        case StageInput::From::Pre: return output_memory[0][static_cast<std::size_t>(in.index)];
        case StageInput::From::Loop: return output_memory[1][static_cast<std::size_t>(in.index)];
      }
      return 0;
    };
    auto run_batch_stage = [&](int s) {
      if (!ws.stages[s]) return;
      auto& run = *ws.stages[s];
      const Cell& c = *stages[s].stage->cell;
      run.bind_params(a.params, stream);
      for (std::size_t i = 0; i < c.inputs.size(); ++i) run.bind(c.inputs[i], source(stages[s].stage->inputs[i]));
      run.bind_outputs(output_memory[s]);
      run.run(stream);
    };

    run_batch_stage(0);
    if (persistent_fn) {
      const auto& pl = program.plan.loop;
      const Cell& c = *pl.cell;
      std::vector<CUdeviceptr> pointers;
      for (const auto& in : pl.inputs) pointers.push_back(source(in));
      for (std::size_t s = 0; s < c.states.size(); ++s) pointers.push_back(a.states[s]);
      for (int p : pl.params) pointers.push_back(a.params[static_cast<std::size_t>(p)]);
      for (auto o : output_memory[1]) pointers.push_back(o);
      for (std::size_t s = 0; s < c.states.size(); ++s) pointers.push_back(a.final_states[s]);
      pointers.push_back(persistent_ws.get());
      pointers.push_back(persistent_bar.get());
      long long n = steps, reverse = a.reverse ? 1 : 0;
      std::vector<void*> args;
      for (auto& p : pointers) args.push_back(&p);
      args.push_back(&n);
      args.push_back(&reverse);
      cuda::check(shared.d->launch_cooperative_kernel(persistent_fn, persistent_grid, 1, 1,
                                                      static_cast<unsigned>(program.persistent.threads), 1, 1, persistent_shared,
                                                      stream, args.data()),
                  ("cuLaunchCooperativeKernel(" + program.persistent.name + ")").c_str());
      run_batch_stage(2);
      return;
    }
    // Where each state is read from by the next step: the caller's initial state first.
    std::vector<CUdeviceptr> state_at(a.states.begin(), a.states.end());
    if (ws.stages[1]) {
      auto& run = *ws.stages[1];
      const Cell& c = *program.plan.loop.cell;
      run.bind_params(a.params, stream);
      std::vector<CUdeviceptr> inputs, step_outputs(c.outputs.size());
      std::vector<std::int64_t> input_size, output_size;
      for (std::size_t i = 0; i < c.inputs.size(); ++i) {
        inputs.push_back(source(program.plan.loop.inputs[i]));
        input_size.push_back(B * cols(c, c.inputs[i]));
      }
      for (const auto& o : c.outputs) output_size.push_back(B * cols(c, o.value));
      // Step t reads each state where step t-1 wrote its next value, so that no copy is needed
      // between steps (each would be one more node of the graph per step): a next state that is
      // also a per-step output stays in its slice (never overwritten); one that lives in memory of
      // the stage is written to two buffers in turn (`current` on even steps, `next` on odd), so
      // a step never writes what it reads; anything else (a leaf) is copied to those buffers.
      enum class Keep { InOutput, Alternate, Copy };
      std::vector<Keep> keep;
      for (ValueId v : c.next_states)
        keep.push_back(run.is_direct_output(v) ? Keep::InOutput : run.is_temporary(v) ? Keep::Alternate : Keep::Copy);
      for (std::int64_t k = 0; k < steps; ++k) {
        const std::int64_t t = a.reverse ? steps - 1 - k : k;
        auto& turn = k % 2 == 0 ? ws.current : ws.next;
        for (std::size_t i = 0; i < c.inputs.size(); ++i) run.bind(c.inputs[i], offset(inputs[i], t * input_size[i], shared.elem));
        for (std::size_t s = 0; s < c.states.size(); ++s) run.bind(c.states[s], state_at[s]);
        for (std::size_t o = 0; o < c.outputs.size(); ++o)
          step_outputs[o] = offset(output_memory[1][o], t * output_size[o], shared.elem);
        run.bind_outputs(step_outputs);
        for (std::size_t s = 0; s < c.states.size(); ++s)
          if (keep[s] == Keep::Alternate) run.bind(c.next_states[s], turn[s].get());
        run.run(stream);
        for (std::size_t s = 0; s < c.states.size(); ++s) {
          state_at[s] = run.at(c.next_states[s]);
          if (keep[s] == Keep::Copy) {
            shared.copy(turn[s].get(), state_at[s], B * cols(c, c.states[s]), stream);
            state_at[s] = turn[s].get();
          }
        }
      }
    }
    for (std::size_t s = 0; s < cell.states.size(); ++s)
      shared.copy(a.final_states[s], state_at[s], B * cols(cell, cell.states[s]), stream);
    run_batch_stage(2);
  }

  CUgraphExec capture(const DeviceSequenceArgs& a, CUstream stream, const GraphKey& key) {
    const cuda::Driver& d = cuda::driver();
    if (graphs_cached.size() >= kMaxGraphs) {  // evict the least recently used
      (void)d.graph_exec_destroy(graphs_cached.front().exec);
      graphs_cached.erase(graphs_cached.begin());
    }
    cuda::check(d.stream_begin_capture(stream, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL), "cuStreamBeginCapture");
    CUgraph g = nullptr;
    try {
      enqueue(a, stream);
    } catch (...) {
      (void)d.stream_end_capture(stream, &g);
      if (g) (void)d.graph_destroy(g);
      throw;
    }
    cuda::check(d.stream_end_capture(stream, &g), "cuStreamEndCapture");
    CUgraphExec exec = nullptr;
    CUresult r = d.graph_instantiate(&exec, g, 0);
    (void)d.graph_destroy(g);
    cuda::check(r, "cuGraphInstantiateWithFlags");
    graphs_cached.push_back({key, exec});
    ++captures;
    return exec;
  }

  // Which way the loop stage runs (after the module is loaded and own_stream made).
  void choose_loop_strategy(LoopStrategy asked) {
    const cuda_codegen::PersistentLoop& p = program.persistent;
    if (asked == LoopStrategy::Graph) {
      loop_reason = "graph: asked for";
      return;
    }
    if (!p.ok()) {
      loop_reason = "graph: no persistent kernel: " + p.reason;
      return;
    }
    // The rule, from measurements: see kAutoPersistentRows.
    if (asked == LoopStrategy::Auto && batch > kAutoPersistentRows) {
      loop_reason = "graph: batch " + std::to_string(batch) + " > " + std::to_string(kAutoPersistentRows) +
                    " (the persistent kernel was measured slower there)";
      return;
    }
    if (asked == LoopStrategy::Auto && p.weight_elements < kAutoPersistentMinWeight) {
      loop_reason = "graph: fused weights of " + std::to_string(p.weight_elements) + " elements < " +
                    std::to_string(kAutoPersistentMinWeight) + " (the persistent kernel was measured slower there)";
      return;
    }
    const cuda::Driver& d = cuda::driver();
    int cooperative = 0, optin = 0;
    cuda::check(d.device_get_attribute(&cooperative, CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH, dev->device), "cuDeviceGetAttribute");
    cuda::check(d.device_get_attribute(&optin, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, dev->device),
                "cuDeviceGetAttribute");
    if (!cooperative) {
      loop_reason = "graph: the device cannot launch cooperative kernels";
      return;
    }
    CUfunction fn = nullptr;
    cuda::check(d.module_get_function(&fn, module, p.name.c_str()), ("cuModuleGetFunction(" + p.name + ")").c_str());
    // The grid: as wanted, but never more blocks than can be co-resident with the shared memory
    // each then needs (which grows as the grid shrinks).
    std::int64_t grid = std::min<std::int64_t>(wanted_persistent_blocks(dev->multiprocessors), std::int64_t{1} << 16);
    for (;;) {
      const std::int64_t bytes = p.shared_bytes(grid);
      if (bytes > optin) {
        loop_reason = "graph: the persistent kernel needs " + std::to_string(bytes) + " bytes of shared memory a block on " +
                      std::to_string(grid) + " blocks; the device allows " + std::to_string(optin);
        return;
      }
      cuda::check(d.func_set_attribute(fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, static_cast<int>(bytes)),
                  "cuFuncSetAttribute");
      int per_sm = 0;
      cuda::check(d.occupancy_max_active_blocks(&per_sm, fn, p.threads, static_cast<std::size_t>(bytes)),
                  "cuOccupancyMaxActiveBlocksPerMultiprocessor");
      const std::int64_t resident = static_cast<std::int64_t>(per_sm) * dev->multiprocessors;
      if (resident >= grid) {
        persistent_shared = static_cast<unsigned>(bytes);
        break;
      }
      if (resident == 0) {
        loop_reason = "graph: no block of the persistent kernel fits a multiprocessor";
        return;
      }
      grid = resident;
    }
    persistent_fn = fn;
    persistent_grid = static_cast<unsigned>(grid);
    persistent_ws = cuda::DeviceMemory(static_cast<std::size_t>(std::max<std::int64_t>(p.workspace_elements, 1)) * shared.elem);
    persistent_bar = cuda::DeviceMemory(2 * sizeof(unsigned));
    cuda::check(d.memset_d8_async(persistent_bar.get(), 0, 2 * sizeof(unsigned), own_stream), "cuMemsetD8Async");
    cuda::check(d.stream_synchronize(own_stream), "cuStreamSynchronize");
    loop_reason = std::string("persistent") + (asked == LoopStrategy::Auto ? "" : " (asked for)") + ": " +
                  std::to_string(grid) + " blocks of " + std::to_string(p.threads) + " threads, " + std::to_string(persistent_shared) +
                  " bytes of shared memory each, " + std::to_string(p.barriers_per_step) + " grid barrier(s) a step";
  }

  // Elements of each argument of a sequence of `steps` steps, in DeviceSequenceArgs's order.
  struct Sizes {
    std::vector<std::int64_t> inputs, states, params, outputs;
  };
  Sizes sizes(std::int64_t steps) const {
    const Cell& c = cell();
    Sizes z;
    for (ValueId v : c.inputs) z.inputs.push_back(steps * batch * c.graph.node(v).shape.features());
    for (ValueId v : c.states) z.states.push_back(batch * c.graph.node(v).shape.features());
    for (ValueId v : c.params) z.params.push_back(c.graph.node(v).shape.elements(batch));
    for (const auto& o : c.outputs) z.outputs.push_back(steps * batch * c.graph.node(o.value).shape.features());
    return z;
  }

  void convert(Storage format, bool to_f32, CUdeviceptr from, CUdeviceptr to, std::int64_t n, CUstream stream) const {
    const int f = static_cast<int>(format);
    CUfunction fn = to_f32 ? widen[f] : narrow[f];
    if (!fn) throw InternalError("CUDA backend: no conversion kernel for " + std::string(storage_name(format)));
    shared.launch_support(fn, from, to, n, 1, stream, to_f32 ? "cuLaunchKernel(widen)" : "cuLaunchKernel(narrow)");
  }

  // 16-bit storage: widens the arguments into f32 buffers, runs, rounds the results back. The
  // f32 buffers stay the same between runs of a length, so the inner run's graphs replay.
  void run_stored(const DeviceSequenceArgs& a, CUstream stream) {
    const cuda::Driver& d = cuda::driver();
    const Sizes z = sizes(a.steps);
    if (wide.steps != a.steps) {
      if (has_run) cuda::check(d.event_synchronize(done), "cuEventSynchronize");  // a run may still read them
      drop_graph();
      wide = HostStaging{};
      wide.steps = a.steps;
      auto alloc = [&](const std::vector<std::int64_t>& n, std::vector<cuda::DeviceMemory>& to) {
        for (std::int64_t e : n) to.emplace_back(static_cast<std::size_t>(e) * sizeof(float));
      };
      alloc(z.inputs, wide.inputs);
      alloc(z.states, wide.states);
      alloc(z.params, wide.params);
      alloc(z.outputs, wide.outputs);
      alloc(z.states, wide.final_states);
    }
    if (has_run && last_stream != stream) cuda::check(d.stream_wait_event(stream, done, 0), "cuStreamWaitEvent");
    DeviceSequenceArgs f;
    f.steps = a.steps;
    f.reverse = a.reverse;
    auto widen_all = [&](const std::vector<DevicePointer>& from, const std::vector<cuda::DeviceMemory>& to,
                         const std::vector<std::int64_t>& n, std::vector<DevicePointer>& into) {
      for (std::size_t i = 0; i < from.size(); ++i) {
        convert(storage, true, from[i], to[i].get(), n[i], stream);
        into.push_back(to[i].get());
      }
    };
    widen_all(a.inputs, wide.inputs, z.inputs, f.inputs);
    widen_all(a.states, wide.states, z.states, f.states);
    widen_all(a.params, wide.params, z.params, f.params);
    for (const auto& m : wide.outputs) f.outputs.push_back(m.get());
    for (const auto& m : wide.final_states) f.final_states.push_back(m.get());
    run_locked(f, stream);
    for (std::size_t o = 0; o < a.outputs.size(); ++o) convert(storage, false, f.outputs[o], a.outputs[o], z.outputs[o], stream);
    for (std::size_t s = 0; s < a.final_states.size(); ++s)
      convert(storage, false, f.final_states[s], a.final_states[s], z.states[s], stream);
    cuda::check(d.event_record(done, stream), "cuEventRecord");
  }

  void run_any(const DeviceSequenceArgs& a, CUstream stream) {
    if (storage == Storage::Native) run_locked(a, stream);
    else run_stored(a, stream);
  }

  // With the mutex held and the context current.
  void run_locked(const DeviceSequenceArgs& a, CUstream stream) {
    const cuda::Driver& d = cuda::driver();
    prepare_workspace(a.steps);
    if (has_run && last_stream != stream) cuda::check(d.stream_wait_event(stream, done, 0), "cuStreamWaitEvent");
    if (graphs && a.steps > 0 && !persistent_fn) {
      GraphKey key{a.steps, a.reverse, {}};
      for (const auto* list : {&a.inputs, &a.states, &a.params, &a.outputs, &a.final_states})
        key.pointers.insert(key.pointers.end(), list->begin(), list->end());
      key.pointers.push_back(reinterpret_cast<std::uintptr_t>(stream));
      auto cached = std::find_if(graphs_cached.begin(), graphs_cached.end(),
                                 [&](const CachedGraph& g) { return g.key == key; });
      auto seen = std::find(seen_once.begin(), seen_once.end(), key);
      if (cached != graphs_cached.end()) {
        CachedGraph hit = *cached;
        graphs_cached.erase(cached);
        graphs_cached.push_back(hit);
        cuda::check(d.graph_launch(hit.exec, stream), "cuGraphLaunch");
      } else if (seen != seen_once.end()) {
        // The second run of a shape and buffers: capture it once, replay it from now on.
        seen_once.erase(seen);
        cuda::check(d.graph_launch(capture(a, stream, key), stream), "cuGraphLaunch");
      } else {
        enqueue(a, stream);
        if (seen_once.size() >= kMaxGraphs) seen_once.erase(seen_once.begin());
        seen_once.push_back(key);
      }
    } else {
      enqueue(a, stream);
    }
    cuda::check(d.event_record(done, stream), "cuEventRecord");
    last_stream = stream;
    has_run = true;
  }

  void check_device_args(const DeviceSequenceArgs& a) const {
    const Cell& c = cell();
    auto count = [](const char* what, std::size_t got, std::size_t want) {
      if (got != want)
        throw Error(std::string("CUDA backend: the cell has ") + std::to_string(want) + " " + what + " but " +
                    std::to_string(got) + " were given");
    };
    count("input(s)", a.inputs.size(), c.inputs.size());
    count("state(s)", a.states.size(), c.states.size());
    count("param(s)", a.params.size(), c.params.size());
    count("output(s)", a.outputs.size(), c.outputs.size());
    count("final state(s)", a.final_states.size(), c.states.size());
    if (a.steps < 0) throw Error("CUDA backend: a negative sequence length");
    auto non_null = [](const std::vector<DevicePointer>& list, const char* what) {
      for (auto p : list)
        if (p == 0) throw Error(std::string("CUDA backend: a null device pointer among the ") + what);
    };
    non_null(a.states, "states");
    non_null(a.params, "params");
    non_null(a.final_states, "final states");
    if (a.steps > 0) {
      non_null(a.inputs, "inputs");
      non_null(a.outputs, "outputs");
    }
  }

  // The stream a run given `caller` works on. Given none (the legacy default stream), it runs on
  // the cell's own non-blocking stream, ordered after the legacy stream's earlier work here and
  // before its later work by finish().
  CUstream start(CudaStream caller) {
    if (caller) return caller;
    const cuda::Driver& d = cuda::driver();
    cuda::check(d.event_record(entry, nullptr), "cuEventRecord(legacy stream)");
    cuda::check(d.stream_wait_event(own_stream, entry, 0), "cuStreamWaitEvent");
    return own_stream;
  }
  void finish(CudaStream caller) {
    if (!caller) cuda::check(cuda::driver().stream_wait_event(nullptr, done, 0), "cuStreamWaitEvent(legacy stream)");
  }
};

CudaCell::CudaCell(const Cell& cell, std::int64_t batch, const CudaOptions& options) : impl_(std::make_unique<Impl>()) {
  auto start = std::chrono::steady_clock::now();
  if (batch < 1) throw Error("CUDA backend: batch size must be at least 1, got " + std::to_string(batch));
  if (options.storage != Storage::Native && cell.graph.dtype() != DType::f32)
    throw Error("CUDA backend: " + std::string(storage_name(options.storage)) + " storage needs an f32 cell; '" + cell.name +
                "' is " + std::string(dtype_name(cell.graph.dtype())));
  (void)cuda::driver();  // throws "no CUDA driver ..." on a machine without one, before compiling
  load(std::move(compile(cell, cuda_target(batch, options.program, options.storage)).forward), batch, options);
  impl_->compile_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

CudaCell::CudaCell(CompiledProgram program, std::int64_t batch, const CudaOptions& options) : impl_(std::make_unique<Impl>()) {
  auto start = std::chrono::steady_clock::now();
  load(std::move(program), batch, options);
  impl_->compile_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

void CudaCell::load(CompiledProgram compiled, std::int64_t batch, const CudaOptions& options) {
  if (!compiled.cuda) throw InternalError("CudaCell: the program was not compiled for the CUDA target");
  Impl& m = *impl_;
  m.storage = options.storage;
  const cuda::Driver& d = cuda::driver();  // throws "no CUDA driver ..." on a machine without one
  m.dev = &cuda::device(options.device);
  cuda::make_current(*m.dev);
  m.batch = batch;
  m.architecture = cuda::architecture_for(m.dev->major, m.dev->minor);
  m.program = std::move(*compiled.cuda);
  const std::string& name = m.program.cell.name;
  std::vector<char> cubin =
      cuda::default_kernel_cache().get_or_compile(m.program.source, m.architecture, {}, name + ".cu", &m.from_cache);
  cuda::check(d.module_load_data(&m.module, cubin.data()), "cuModuleLoadData");
  m.shared.d = &d;
  m.shared.dtype = m.program.cell.graph.dtype();
  m.shared.elem = dtype_size(m.shared.dtype);
  const std::string suffix = m.shared.dtype == DType::f32 ? "f32" : "f64";
  cuda::check(d.module_get_function(&m.shared.transpose, m.module, ("cf_transpose_" + suffix).c_str()), "cuModuleGetFunction(transpose)");
  cuda::check(d.module_get_function(&m.shared.fill_rows, m.module, ("cf_fill_rows_" + suffix).c_str()), "cuModuleGetFunction(fill_rows)");
  for (Storage format : {Storage::BF16, Storage::F16}) {
    const std::string f(storage_name(format));
    const int i = static_cast<int>(format);
    cuda::check(d.module_get_function(&m.widen[i], m.module, ("cf_widen_" + f).c_str()), "cuModuleGetFunction(widen)");
    cuda::check(d.module_get_function(&m.narrow[i], m.module, ("cf_narrow_" + f).c_str()), "cuModuleGetFunction(narrow)");
  }
  const SequenceStage* stages[3] = {&m.program.plan.pre, &m.program.plan.loop, &m.program.plan.post};
  bool any_gemm = false;
  for (int s = 0; s < 3; ++s) {
    GpuStage& gs = m.stages[s];
    gs.stage = stages[s];
    gs.code = &m.program.stages[s];
    for (std::size_t i = 0; i < gs.code->program.steps.size(); ++i) {
      CUfunction fn = nullptr;
      if (gs.code->program.steps[i].kind == ProgramStep::Kind::Kernel) {
        const std::string& kernel = gs.code->kernels[i].name;
        cuda::check(d.module_get_function(&fn, m.module, kernel.c_str()), ("cuModuleGetFunction(" + kernel + ")").c_str());
      } else {
        any_gemm = true;
      }
      gs.functions.push_back(fn);
    }
  }
  if (any_gemm) {
    const cuda::Cublas& b = cuda::cublas();
    cuda::check(b.create(&m.shared.blas), "cublasCreate");
    cuda::check(b.set_math_mode(m.shared.blas, CUBLAS_DEFAULT_MATH), "cublasSetMathMode(CUBLAS_DEFAULT_MATH)");
    m.blas_workspace = cuda::DeviceMemory(kCublasWorkspaceBytes);
    cuda::check(b.set_workspace(m.shared.blas, as_pointer<void>(m.blas_workspace.get()), kCublasWorkspaceBytes), "cublasSetWorkspace");
  }
  cuda::check(d.stream_create(&m.own_stream, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
  m.choose_loop_strategy(strategy_from_environment(options.loop));
  cuda::check(d.event_create(&m.done, CU_EVENT_DISABLE_TIMING), "cuEventCreate");
  cuda::check(d.event_create(&m.entry, CU_EVENT_DISABLE_TIMING), "cuEventCreate");
  m.graphs = options.graphs && graphs_allowed_by_environment();
  ++g_compile_count;
}

CudaCell::~CudaCell() = default;

std::int64_t CudaCell::batch() const { return impl_->batch; }
DType CudaCell::dtype() const { return impl_->program.cell.graph.dtype(); }
Storage CudaCell::storage() const { return impl_->storage; }

void CudaCell::convert_storage(Storage storage, bool widen, DevicePointer from, DevicePointer to, std::int64_t n,
                               CudaStream stream) const {
  impl_->convert(storage, widen, from, to, n, stream);
}
double CudaCell::compile_ms() const { return impl_->compile_ms; }
bool CudaCell::cubin_from_cache() const { return impl_->from_cache; }
std::string CudaCell::architecture() const { return impl_->architecture; }
std::string CudaCell::device_name() const { return impl_->dev->name; }
bool CudaCell::graphs() const { return impl_->graphs; }
const std::string& CudaCell::source() const { return impl_->program.source; }

bool CudaCell::persistent() const { return impl_->persistent_fn != nullptr; }
int CudaCell::persistent_blocks() const { return static_cast<int>(impl_->persistent_grid); }
std::string CudaCell::loop_strategy_reason() const { return impl_->loop_reason; }

std::size_t CudaCell::graph_captures() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->captures;
}

std::string CudaCell::describe() const {
  const Impl& m = *impl_;
  std::string out = print_plan(m.program.plan) + "# loop strategy: " + m.loop_reason + "\n";
  const char* names[3] = {"pre", "loop", "post"};
  for (int s = 0; s < 3; ++s) {
    if (!m.stages[s].stage->cell) continue;
    out += "# program of stage " + std::string(names[s]) + "\n" + print_program(*m.stages[s].stage->cell, m.program.stages[s].program) + "\n";
  }
  return out + m.program.source;
}

void CudaCell::run_device(const DeviceSequenceArgs& args, CudaStream stream) const {
  Impl& m = *impl_;
  m.check_device_args(args);
  std::lock_guard<std::mutex> lock(m.mutex);
  cuda::make_current(*m.dev);
  m.run_any(args, m.start(stream));
  m.finish(stream);
}

template <class T>
SequenceResult<T> CudaCell::run(const SequenceArgs<T>& args, CudaStream stream) const {
  Impl& m = *impl_;
  const Cell& cell = m.cell();
  const std::int64_t steps = check_sequence_args(cell, args, m.batch, "CUDA backend");
  const std::int64_t B = m.batch;
  SequenceResult<T> result;
  for (const auto& o : cell.outputs) result.outputs.emplace_back(std::vector<std::int64_t>{steps, B, cell.graph.node(o.value).shape.features()});
  for (const auto& s : args.states) result.final_states.emplace_back(s.shape);

  std::lock_guard<std::mutex> lock(m.mutex);
  cuda::make_current(*m.dev);
  CUstream s = m.start(stream);
  HostStaging& io = m.staging;
  if (io.steps != steps) {
    m.drop_graph();  // graphs point at the old staging buffers
    io = HostStaging{};
    io.steps = steps;
    auto alloc = [&](const auto& tensors, std::vector<cuda::DeviceMemory>& to) {
      for (const auto& t : tensors) to.emplace_back(t.data.size() * cuda::stored_size<T>(m.storage));
    };
    alloc(args.inputs, io.inputs);
    alloc(args.states, io.states);
    alloc(args.params, io.params);
    alloc(result.outputs, io.outputs);
    alloc(result.final_states, io.final_states);
  }
  auto upload = [&](const std::vector<HostTensor<T>>& from, const std::vector<cuda::DeviceMemory>& to) {
    for (std::size_t i = 0; i < from.size(); ++i) cuda::upload(to[i].get(), from[i].data.data(), from[i].data.size(), m.storage, s);
  };
  upload(args.inputs, io.inputs);
  upload(args.states, io.states);
  upload(args.params, io.params);
  DeviceSequenceArgs d;
  d.steps = steps;
  auto pointers = [](const std::vector<cuda::DeviceMemory>& from, std::vector<DevicePointer>& to) {
    for (const auto& mem : from) to.push_back(mem.get());
  };
  pointers(io.inputs, d.inputs);
  pointers(io.states, d.states);
  pointers(io.params, d.params);
  pointers(io.outputs, d.outputs);
  pointers(io.final_states, d.final_states);
  m.check_device_args(d);
  m.run_any(d, s);
  cuda::Downloads<T> downloads(s);
  auto download = [&](const std::vector<cuda::DeviceMemory>& from, std::vector<HostTensor<T>>& to) {
    for (std::size_t i = 0; i < to.size(); ++i) downloads.add(to[i].data.data(), from[i].get(), to[i].data.size(), m.storage);
  };
  download(io.outputs, result.outputs);
  download(io.final_states, result.final_states);
  downloads.finish();
  return result;
}

template SequenceResult<float> CudaCell::run(const SequenceArgs<float>&, CudaStream) const;
template SequenceResult<double> CudaCell::run(const SequenceArgs<double>&, CudaStream) const;

std::shared_ptr<const CudaCell> compile_cuda(const Cell& cell, std::int64_t batch, const CudaOptions& options) {
  static std::mutex mutex;
  // Never destroyed: a cached cell freed at exit would call the driver after it shut down.
  static auto& cache =
      *new std::map<std::tuple<std::uint64_t, std::int64_t, int, int, int, int, bool, int, int>, std::shared_ptr<const CudaCell>>();
  auto key = std::make_tuple(cell_hash(cell), batch, static_cast<int>(cell.graph.dtype()), options.device,
                             static_cast<int>(options.program.fuse), options.program.emit.max_threads, options.graphs,
                             static_cast<int>(strategy_from_environment(options.loop)), static_cast<int>(options.storage));
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  auto compiled = std::make_shared<const CudaCell>(cell, batch, options);
  cache[key] = compiled;
  return compiled;
}

std::size_t cuda_compile_count() { return g_compile_count.load(); }

}  // namespace cellfuse
