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
#include "runtime/cuda/cuda_cell_impl.h"
#include "runtime/sequence_check.h"

namespace cellfuse {
namespace {

// cuBLAS's recommended workspace on Hopper; set explicitly so that graph capture never has
// cuBLAS allocate.
constexpr std::size_t kCublasWorkspaceBytes = std::size_t{32} << 20;

bool graphs_allowed_by_environment() {
  const char* v = std::getenv("CELLFUSE_CUDA_GRAPHS");
  return !(v && std::string(v) == "0");
}

}  // namespace

using cuda_run::as_pointer;

CudaCell::Impl::~Impl() {
  // Nothing here may throw; failures mean the context is gone already.
  if (!dev) return;  // the driver or the device was never had
  const cuda::Driver& d = cuda::driver();
  (void)d.ctx_set_current(dev->context);
  if (own_stream) (void)d.stream_synchronize(own_stream);
  // The last run's end, not its stream: a caller's stream may be gone by now (its handle reused).
  if (has_run) (void)d.event_synchronize(done);
  for (auto& g : graphs_cached) (void)d.graph_exec_destroy(g.exec);
  if (done) (void)d.event_destroy(done);
  if (entry) (void)d.event_destroy(entry);
  if (shared.blas) (void)cuda::cublas().destroy(shared.blas);
  for (auto& s : ws.stages) s.reset();
  if (own_stream) (void)d.stream_destroy(own_stream);
  if (module) (void)d.module_unload(module);
}

const Cell& CudaCell::Impl::cell() const {
  return program.cell;
}

CudaCell::CudaCell(const Cell& cell, std::int64_t batch, const CudaOptions& options) : impl_(std::make_unique<Impl>()) {
  auto start = std::chrono::steady_clock::now();
  if (batch < 1) throw Error("CUDA backend: batch size must be at least 1, got " + std::to_string(batch));
  if (options.storage != Storage::Native && cell.graph.dtype() != DType::f32)
    throw Error("CUDA backend: " + std::string(storage_name(options.storage)) + " storage needs an f32 cell; '" + cell.name +
                "' is " + std::string(dtype_name(cell.graph.dtype())));
  (void)cuda::driver();  // throws "no CUDA driver ..." on a machine without one, before compiling
  CompiledCell compiled = compile(cell, cuda_target(batch, options.program, options.storage));
  if (profile::Recorder* rec = profile::active()) rec->compile_log(compiled.log, cell.name);
  load(std::move(compiled.forward), batch, options);
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
  cuda::ContextScope context(*m.dev);
  m.batch = batch;
  m.architecture = cuda::architecture_for(m.dev->major, m.dev->minor);
  m.program = std::move(*compiled.cuda);
  const std::string& name = m.program.cell.name;
  const std::int64_t nvrtc_begin = profile::Recorder::now_ns();
  std::vector<char> cubin =
      cuda::default_kernel_cache().get_or_compile(m.program.source, m.architecture, {}, name + ".cu", &m.from_cache);
  if (profile::Recorder* rec = profile::active()) {
    rec->cache("cubin " + name + ".cu (" + m.architecture + ", disk cache)", m.from_cache);
    rec->compile_event(m.from_cache ? "cubin from the disk cache" : "NVRTC", name, nvrtc_begin, profile::Recorder::now_ns());
  }
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
    m.blas_workspace = cuda::DeviceMemory(kCublasWorkspaceBytes);  // set with the stream of each run (enqueue)
  }
  cuda::check(d.stream_create(&m.own_stream, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
  m.choose_loop_strategy(cuda_run::strategy_from_environment(options.loop));
  cuda::check(d.event_create(&m.done, CU_EVENT_DISABLE_TIMING), "cuEventCreate");
  cuda::check(d.event_create(&m.entry, CU_EVENT_DISABLE_TIMING), "cuEventCreate");
  m.graphs = options.graphs && graphs_allowed_by_environment();
  cuda_run::count_cuda_compile();
}

CudaCell::~CudaCell() = default;

std::int64_t CudaCell::batch() const { return impl_->batch; }
DType CudaCell::dtype() const { return impl_->program.cell.graph.dtype(); }
Storage CudaCell::storage() const { return impl_->storage; }

void CudaCell::convert_storage(Storage storage, bool widen, DevicePointer from, DevicePointer to, std::int64_t n,
                               CudaStream stream) const {
  cuda::ContextScope context(*impl_->dev);  // a public entry point: launches on the cell's device
  impl_->convert(storage, widen, from, to, n, stream);
}
double CudaCell::compile_ms() const { return impl_->compile_ms; }
bool CudaCell::cubin_from_cache() const { return impl_->from_cache; }
std::string CudaCell::architecture() const { return impl_->architecture; }
std::string CudaCell::device_name() const { return impl_->dev->name; }
bool CudaCell::graphs() const { return impl_->graphs; }
const std::string& CudaCell::source() const { return impl_->program.source; }

bool CudaCell::persistent() const { return impl_->active.kind == LoopStrategy::Persistent; }
int CudaCell::persistent_blocks() const { return persistent() ? static_cast<int>(impl_->active.grid) : 0; }
LoopStrategy CudaCell::loop_plan() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->timing && impl_->timed.empty() ? LoopStrategy::Auto : impl_->active.kind;
}
std::string CudaCell::loop_strategy_reason() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->loop_reason + impl_->plan_reasons;
}

std::size_t CudaCell::graph_captures() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->captures;
}

std::string CudaCell::describe() const {
  const Impl& m = *impl_;
  std::string out = print_plan(m.program.plan) + "# loop strategy: " + loop_strategy_reason() + "\n";
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
  cuda::ContextScope context(*m.dev);
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
  cuda::ContextScope context(*m.dev);
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

}  // namespace cellfuse
