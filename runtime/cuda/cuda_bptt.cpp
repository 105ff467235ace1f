#include "runtime/cuda/cuda_bptt.h"

#include <algorithm>
#include <chrono>
#include <climits>
#include <future>
#include <map>
#include <mutex>
#include <tuple>

#include "compiler/ir/error.h"
#include "runtime/bptt_driver.h"
#include "runtime/cuda/cuda_cell_impl.h"
#include "runtime/cuda/driver.h"
#include "runtime/cuda/host_transfer.h"
#include "runtime/profile/recorder.h"
#include "runtime/sequence_check.h"

namespace cellfuse {
namespace {

// As CudaCell's: set explicitly so that cuBLAS never allocates while it runs.
constexpr std::size_t kCublasWorkspaceBytes = std::size_t{32} << 20;

template <class P>
P* as_pointer(CUdeviceptr p) {
  return reinterpret_cast<P*>(static_cast<std::uintptr_t>(p));
}

std::int64_t features(const Cell& c, ValueId v) { return c.graph.node(v).shape.features(); }

void expect_count(const char* what, std::size_t got, std::size_t want) {
  if (got != want)
    throw Error(std::string("CUDA backward: the cell has ") + std::to_string(want) + " " + what + " but " +
                std::to_string(got) + " were given");
}

void expect_non_null(const std::vector<DevicePointer>& list, const char* what) {
  for (auto p : list)
    if (p == 0) throw Error(std::string("CUDA backward: a null device pointer among the ") + what);
}

}  // namespace

struct CudaBptt::Impl {
  BackwardCell backward;
  Cell forward;  // forward_with_tape(backward)
  std::int64_t batch = 0;
  std::size_t user_outputs = 0, saves = 0;
  std::unique_ptr<CudaCell> forward_cell, backward_step;
  const cuda::Device* dev = nullptr;
  std::size_t elem = 4;
  double compile_ms = 0;

  cublasHandle_t blas = nullptr;
  cuda::DeviceMemory blas_workspace;
  CUevent done = nullptr;  // recorded after every backward, on its stream
  CudaStream last_stream = nullptr;
  bool has_run = false;
  // The workspace: one [rows, n] buffer per backward-step output after the input gradients, and
  // `rows` ones; for up to `rows` = T*B rows.
  std::int64_t rows = 0;
  std::vector<cuda::DeviceMemory> step_scratch;
  cuda::DeviceMemory ones;
  // run()'s device copies, kept for one sequence length.
  struct Staging {
    std::int64_t steps = -1;
    std::vector<cuda::DeviceMemory> memory;
    DeviceTrainingArgs args;
  } staging;
  // 16-bit storage: the f32 buffers the caller's tensors are widened into and the results are
  // computed in, one set for the forward and one for the backward, kept for one sequence length
  // (so that the inner cells' graphs replay).
  Storage storage = Storage::Native;
  struct Wide {
    std::int64_t steps = -1;
    std::vector<cuda::DeviceMemory> memory;
  } wide_forward, wide_backward;
  std::mutex mutex;

  ~Impl() {
    if (!dev) return;
    const cuda::Driver& d = cuda::driver();
    (void)d.ctx_set_current(dev->context);
    if (has_run) (void)d.event_synchronize(done);
    if (done) (void)d.event_destroy(done);
    if (blas) (void)cuda::cublas().destroy(blas);
  }

  void check(const DeviceTrainingArgs& a, bool for_backward) const {
    const Cell& f = forward;
    expect_count("input(s)", a.inputs.size(), f.inputs.size());
    expect_count("param(s)", a.params.size(), f.params.size());
    expect_count("tape tensor(s)", a.tape.size(), f.outputs.size() - user_outputs);
    if (a.steps < 0) throw Error("CUDA backward: a negative sequence length");
    expect_non_null(a.params, "params");
    if (!for_backward) {
      expect_count("state(s)", a.states.size(), f.states.size());
      expect_count("output(s)", a.outputs.size(), user_outputs);
      expect_count("final state(s)", a.final_states.size(), f.states.size());
      return;
    }
    expect_count("output gradient(s)", a.output_grads.size(), user_outputs);
    expect_count("final-state gradient(s)", a.final_state_grads.size(), f.states.size());
    expect_count("input gradient(s)", a.input_grads.size(), f.inputs.size());
    expect_count("state gradient(s)", a.state_grads.size(), f.states.size());
    expect_count("param gradient(s)", a.param_grads.size(), f.params.size());
    expect_non_null(a.final_state_grads, "final-state gradients");
    expect_non_null(a.state_grads, "state gradients");
    expect_non_null(a.param_grads, "param gradients");
    if (a.steps > 0) {
      expect_non_null(a.inputs, "inputs");
      expect_non_null(a.tape, "tape tensors");
      expect_non_null(a.output_grads, "output gradients");
      expect_non_null(a.input_grads, "input gradients");
    }
  }

  // With the mutex held: room for `need` rows, waiting for the previous backward before the
  // old buffers go.
  void reserve(std::int64_t need) {
    need = std::max<std::int64_t>(need, 1);  // a sequence of length 0 still passes the pointers
    if (need <= rows) return;
    const cuda::Driver& d = cuda::driver();
    if (has_run) cuda::check(d.event_synchronize(done), "cuEventSynchronize");
    step_scratch.clear();
    ones = cuda::DeviceMemory();
    const Cell& step = backward.step;
    for (std::size_t o = forward.inputs.size(); o < step.outputs.size(); ++o)
      step_scratch.emplace_back(static_cast<std::size_t>(need * features(step, step.outputs[o].value)) * elem);
    ones = cuda::DeviceMemory(static_cast<std::size_t>(need) * elem);
    // Pageable memory: the copy has taken the data when the call returns.
    if (elem == sizeof(float)) {
      std::vector<float> host(static_cast<std::size_t>(need), 1.0f);
      cuda::check(d.memcpy_htod_async(ones.get(), host.data(), host.size() * elem, nullptr), "cuMemcpyHtoDAsync(ones)");
    } else {
      std::vector<double> host(static_cast<std::size_t>(need), 1.0);
      cuda::check(d.memcpy_htod_async(ones.get(), host.data(), host.size() * elem, nullptr), "cuMemcpyHtoDAsync(ones)");
    }
    cuda::check(d.stream_synchronize(nullptr), "cuStreamSynchronize");
    rows = need;
  }

  // out (column-major m x n, ld m) = a (op_a) * b (op_b) + beta * out, in the cell's dtype.
  void gemm(cublasOperation_t op_a, cublasOperation_t op_b, std::int64_t m, std::int64_t n, std::int64_t k, CUdeviceptr a,
            std::int64_t lda, CUdeviceptr b, std::int64_t ldb, bool accumulate, CUdeviceptr out, std::int64_t ldc) const {
    for (std::int64_t v : {m, n, k, lda, ldb, ldc})
      if (v > INT_MAX) throw Error("CUDA backward: a parameter-gradient product too large for cuBLAS's int sizes");
    const cuda::Cublas& b_ = cuda::cublas();
    const int M = static_cast<int>(m), N = static_cast<int>(n), K = static_cast<int>(k);
    if (elem == sizeof(float)) {
      const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
      cuda::check(b_.sgemm(blas, op_a, op_b, M, N, K, &alpha, as_pointer<const float>(a), static_cast<int>(lda),
                           as_pointer<const float>(b), static_cast<int>(ldb), &beta, as_pointer<float>(out), static_cast<int>(ldc)),
                  "cublasSgemm");
    } else {
      const double alpha = 1.0, beta = accumulate ? 1.0 : 0.0;
      cuda::check(b_.dgemm(blas, op_a, op_b, M, N, K, &alpha, as_pointer<const double>(a), static_cast<int>(lda),
                           as_pointer<const double>(b), static_cast<int>(ldb), &beta, as_pointer<double>(out), static_cast<int>(ldc)),
                  "cublasDgemm");
    }
  }

  std::int64_t numel(ValueId v, std::int64_t steps) const {
    const Shape& s = forward.graph.node(v).shape;
    return s.is_batched() ? steps * batch * s.features() : s.elements(batch);
  }
  std::int64_t state_numel(ValueId v) const { return batch * forward.graph.node(v).shape.features(); }

  // f32 buffers of `sizes` elements in `w`, kept while `steps` stays (else reallocated after the
  // previous run is done with them); the caller's stream then waits for any run on another one.
  std::vector<CUdeviceptr> wide_buffers(Wide& w, std::int64_t steps, const std::vector<std::int64_t>& sizes, CudaStream stream) {
    const cuda::Driver& d = cuda::driver();
    if (w.steps != steps) {
      if (has_run) cuda::check(d.event_synchronize(done), "cuEventSynchronize");
      w.memory.clear();
      for (std::int64_t n : sizes) w.memory.emplace_back(static_cast<std::size_t>(std::max<std::int64_t>(n, 1)) * sizeof(float));
      w.steps = steps;
    }
    if (has_run && last_stream != stream) cuda::check(d.stream_wait_event(stream, done, 0), "cuStreamWaitEvent");
    std::vector<CUdeviceptr> out;
    for (const auto& mem : w.memory) out.push_back(mem.get());
    return out;
  }

  void convert(bool to_f32, CUdeviceptr from, CUdeviceptr to, std::int64_t n, CudaStream stream) const {
    forward_cell->convert_storage(storage, to_f32, from, to, n, stream);
  }

  void finished(CudaStream stream) {
    cuda::check(cuda::driver().event_record(done, stream), "cuEventRecord");
    last_stream = stream;
    has_run = true;
  }

  // With the mutex held and the context current.
  void forward_locked(const DeviceTrainingArgs& a, CudaStream stream) {
    if (storage == Storage::Native) {
      forward_cell->run_device(forward_sequence(backward, a, "CUDA training forward"), stream);
      return;
    }
    // 16-bit storage: widen the arguments, run in f32 (the tape is the caller's, f32), narrow.
    std::vector<std::int64_t> sizes;
    for (ValueId v : forward.inputs) sizes.push_back(numel(v, a.steps));
    for (ValueId v : forward.states) sizes.push_back(state_numel(v));
    for (ValueId v : forward.params) sizes.push_back(numel(v, a.steps));
    for (std::size_t o = 0; o < user_outputs; ++o) sizes.push_back(numel(forward.outputs[o].value, a.steps));
    for (ValueId v : forward.states) sizes.push_back(state_numel(v));
    const std::vector<CUdeviceptr> wide = wide_buffers(wide_forward, a.steps, sizes, stream);
    DeviceTrainingArgs f;
    f.steps = a.steps;
    std::size_t slot = 0;
    auto widen = [&](const std::vector<DevicePointer>& from, std::vector<DevicePointer>& into) {
      for (DevicePointer p : from) {
        convert(true, p, wide[slot], sizes[slot], stream);
        into.push_back(wide[slot++]);
      }
    };
    widen(a.inputs, f.inputs);
    widen(a.states, f.states);
    widen(a.params, f.params);
    const std::size_t first_output = slot;
    for (std::size_t o = 0; o < user_outputs; ++o) f.outputs.push_back(wide[slot++]);
    f.tape = a.tape;
    for (std::size_t st = 0; st < forward.states.size(); ++st) f.final_states.push_back(wide[slot++]);
    forward_cell->run_device(forward_sequence(backward, f, "CUDA training forward"), stream);
    for (std::size_t o = 0; o < user_outputs; ++o)
      convert(false, wide[first_output + o], a.outputs[o], sizes[first_output + o], stream);
    for (std::size_t st = 0; st < forward.states.size(); ++st)
      convert(false, wide[first_output + user_outputs + st], a.final_states[st], sizes[first_output + user_outputs + st], stream);
    finished(stream);
  }

  // The backward with 16-bit storage: widens what it reads, runs backward_locked in f32, narrows
  // the gradients. With the mutex held and the context current.
  void backward_stored(const DeviceTrainingArgs& a, CudaStream stream) {
    std::vector<std::int64_t> sizes;
    for (ValueId v : forward.inputs) sizes.push_back(numel(v, a.steps));
    for (ValueId v : forward.params) sizes.push_back(numel(v, a.steps));
    for (std::size_t o = 0; o < user_outputs; ++o) sizes.push_back(numel(forward.outputs[o].value, a.steps));
    for (ValueId v : forward.states) sizes.push_back(state_numel(v));
    const std::size_t reads = sizes.size();
    for (ValueId v : forward.inputs) sizes.push_back(numel(v, a.steps));
    for (ValueId v : forward.states) sizes.push_back(state_numel(v));
    for (ValueId v : forward.params) sizes.push_back(numel(v, a.steps));
    const std::vector<CUdeviceptr> wide = wide_buffers(wide_backward, a.steps, sizes, stream);
    DeviceTrainingArgs f;
    f.steps = a.steps;
    f.tape = a.tape;
    std::size_t slot = 0;
    auto widen = [&](const std::vector<DevicePointer>& from, std::vector<DevicePointer>& into) {
      for (DevicePointer p : from) {
        // A sequence of length 0 reads no [T,B,n] tensor; its pointers may be null.
        if (sizes[slot] > 0) convert(true, p, wide[slot], sizes[slot], stream);
        into.push_back(wide[slot++]);
      }
    };
    widen(a.inputs, f.inputs);
    widen(a.params, f.params);
    widen(a.output_grads, f.output_grads);
    widen(a.final_state_grads, f.final_state_grads);
    for (std::size_t i = 0; i < forward.inputs.size(); ++i) f.input_grads.push_back(wide[slot++]);
    for (std::size_t i = 0; i < forward.states.size(); ++i) f.state_grads.push_back(wide[slot++]);
    for (std::size_t i = 0; i < forward.params.size(); ++i) f.param_grads.push_back(wide[slot++]);
    backward_locked(f, stream);
    slot = reads;
    auto narrow = [&](const std::vector<DevicePointer>& to) {
      for (DevicePointer p : to) {
        if (sizes[slot] > 0) convert(false, wide[slot], p, sizes[slot], stream);
        ++slot;
      }
    };
    narrow(a.input_grads);
    narrow(a.state_grads);
    narrow(a.param_grads);
    finished(stream);
  }

  void backward_any(const DeviceTrainingArgs& a, CudaStream stream) {
    if (storage == Storage::Native) backward_locked(a, stream);
    else backward_stored(a, stream);
  }

  // With the mutex held and the context current.
  void backward_locked(const DeviceTrainingArgs& a, CudaStream stream) {
    const cuda::Driver& d = cuda::driver();
    // The previous backward may still read the workspace on another stream.
    if (has_run && last_stream != stream) cuda::check(d.stream_wait_event(stream, done, 0), "cuStreamWaitEvent");
    reserve(a.steps * batch);
    std::vector<DevicePointer> scratch;
    for (const auto& m : step_scratch) scratch.push_back(m.get());
    const DeviceSequenceArgs s = backward_sequence(backward, a, scratch);
    backward_step->run_device(s, stream);
    // The parameter gradients over all T*B rows, on the caller's stream (with a null stream,
    // run_device has ordered the legacy stream after the backward step).
    cuda::check(cuda::cublas().set_stream(blas, stream), "cublasSetStream");
    // Setting a stream resets cuBLAS to its default workspace pool: ours again.
    cuda::check(cuda::cublas().set_workspace(blas, as_pointer<void>(blas_workspace.get()), blas_workspace.bytes()),
                "cublasSetWorkspace");
    ParamGradients kernels(*this, stream);
    parameter_gradients(backward, a, s, batch, kernels);
    finished(stream);
  }

  // The parameter-gradient primitives of the shared BPTT driver: cuBLAS products in the cell's
  // dtype, a column sum as a product with the workspace's vector of ones.
  class ParamGradients : public ParamGradientKernels<DevicePointer, DevicePointer> {
   public:
    ParamGradients(const Impl& m, CudaStream stream) : m_(m), stream_(stream) {}
    void zero(DevicePointer out, std::int64_t elements) override {
      cuda::check(cuda::driver().memset_d8_async(out, 0, static_cast<std::size_t>(elements) * m_.elem, stream_), "cuMemsetD8Async");
    }
    void a_t_b(DevicePointer out, DevicePointer a, DevicePointer b, std::int64_t m, std::int64_t n, std::int64_t rows,
               bool accumulate) override {
      // Row-major dP[m][n] = A^T B is column-major dP^T (n x m) = B' A'^T, where B' (n x rows)
      // and A' (m x rows) are the row-major [rows, n] and [rows, m] matrices as they lie.
      m_.gemm(CUBLAS_OP_N, CUBLAS_OP_T, n, m, rows, b, n, a, m, accumulate, out, n);
    }
    void column_sum(DevicePointer out, DevicePointer a, std::int64_t n, std::int64_t rows, bool accumulate) override {
      // dP[n] = A'(n x rows) * ones(rows).
      m_.gemm(CUBLAS_OP_N, CUBLAS_OP_N, n, 1, rows, a, n, m_.ones.get(), rows, accumulate, out, n);
    }

   private:
    const Impl& m_;
    CudaStream stream_;
  };
};

CudaBptt::CudaBptt(const Cell& cell, std::int64_t batch, const CudaOptions& asked) : impl_(std::make_unique<Impl>()) {
  // Each of the two cells picks its own loop plan (CELLFUSE_CUDA_LOOP, else timing: the
  // forward with its tape and the reversed step differ); with timing off, training keeps the
  // graph path, as the fixed rule was measured on forward runs only.
  CudaOptions options = asked;
  options.loop = cuda_run::strategy_from_environment(asked.loop);
  if (options.loop == LoopStrategy::Auto && !cuda_run::plan_timing_enabled()) options.loop = LoopStrategy::Graph;
  if (asked.storage != Storage::Native && cell.graph.dtype() != DType::f32)
    throw Error("CUDA backward: " + std::string(storage_name(asked.storage)) + " storage needs an f32 cell; '" + cell.name +
                "' is " + std::string(dtype_name(cell.graph.dtype())));
  options.storage = Storage::Native;  // the cells compute in f32; this object converts at its edges
  auto start = std::chrono::steady_clock::now();
  Impl& m = *impl_;
  m.batch = batch;
  m.storage = asked.storage;
  TargetOptions target = cuda_target(batch, options.program, Storage::Native);
  target.training = true;
  CompiledCell compiled = compile(cell, target);
  if (profile::Recorder* rec = profile::active()) rec->compile_log(compiled.log, cell.name + " (training)");
  m.backward = std::move(*compiled.backward);
  m.forward = forward_with_tape(m.backward);
  m.user_outputs = static_cast<std::size_t>(m.backward.user_outputs);
  m.saves = m.backward.saved_outputs.size();
  for (std::size_t k = 0; k < m.saves; ++k)
    if (m.backward.saved_outputs[k] != static_cast<int>(m.user_outputs + k))
      throw InternalError("CUDA backward: the saves are not the forward's outputs after the user outputs");
  m.elem = dtype_size(m.forward.graph.dtype());

  // Two NVRTC compilations at once: the first compile of a training cell takes the longer of the
  // two, not their sum.
  auto step = std::async(std::launch::async, [&] {
    return std::make_unique<CudaCell>(std::move(*compiled.backward_step), batch, options);
  });
  try {
    m.forward_cell = std::make_unique<CudaCell>(std::move(compiled.forward), batch, options);
  } catch (...) {
    try {
      step.get();
    } catch (...) {
    }
    throw;
  }
  m.backward_step = step.get();

  const cuda::Driver& d = cuda::driver();
  m.dev = &cuda::device(options.device);
  cuda::ContextScope context(*m.dev);
  cuda::check(d.event_create(&m.done, CU_EVENT_DISABLE_TIMING), "cuEventCreate");
  const cuda::Cublas& b = cuda::cublas();
  cuda::check(b.create(&m.blas), "cublasCreate");
  cuda::check(b.set_math_mode(m.blas, CUBLAS_DEFAULT_MATH), "cublasSetMathMode(CUBLAS_DEFAULT_MATH)");
  m.blas_workspace = cuda::DeviceMemory(kCublasWorkspaceBytes);  // set with the stream of each backward
  m.compile_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

CudaBptt::~CudaBptt() = default;

std::vector<std::int64_t> CudaBptt::tape_widths() const {
  const Impl& m = *impl_;
  std::vector<std::int64_t> out;
  for (std::size_t o = m.user_outputs; o < m.forward.outputs.size(); ++o) out.push_back(features(m.forward, m.forward.outputs[o].value));
  return out;
}

const BackwardCell& CudaBptt::backward_cell() const { return impl_->backward; }
std::int64_t CudaBptt::batch() const { return impl_->batch; }
DType CudaBptt::dtype() const { return impl_->forward.graph.dtype(); }
double CudaBptt::compile_ms() const { return impl_->compile_ms; }
bool CudaBptt::cubins_from_cache() const { return impl_->forward_cell->cubin_from_cache() && impl_->backward_step->cubin_from_cache(); }
const CudaCell& CudaBptt::forward_cell() const { return *impl_->forward_cell; }
const CudaCell& CudaBptt::backward_step() const { return *impl_->backward_step; }

std::string CudaBptt::describe() const {
  return print_backward(impl_->backward) + "\n# forward\n" + impl_->forward_cell->describe() + "\n# backward step\n" +
         impl_->backward_step->describe();
}

void CudaBptt::forward_device(const DeviceTrainingArgs& a, CudaStream stream) const {
  Impl& m = *impl_;
  m.check(a, false);
  std::lock_guard<std::mutex> lock(m.mutex);
  cuda::ContextScope context(*m.dev);
  profile::PhaseScope phase(profile::Phase::Forward);
  m.forward_locked(a, stream);
}

void CudaBptt::backward_device(const DeviceTrainingArgs& a, CudaStream stream) const {
  Impl& m = *impl_;
  m.check(a, true);
  std::lock_guard<std::mutex> lock(m.mutex);
  cuda::ContextScope context(*m.dev);
  profile::PhaseScope phase(profile::Phase::Backward);
  m.backward_any(a, stream);
}

Storage CudaBptt::storage() const { return impl_->storage; }

template <class T>
BpttResult<T> CudaBptt::run(const SequenceArgs<T>& args, const LossGradients<T>& seeds, CudaStream stream) const {
  Impl& m = *impl_;
  const Cell& f = m.forward;
  const std::int64_t B = m.batch;
  const std::int64_t steps = check_sequence_args(f, args, B, "CUDA backend");
  if (seeds.outputs.size() != m.user_outputs || seeds.final_states.size() != f.states.size())
    throw Error("CUDA backward: expected gradients for " + std::to_string(m.user_outputs) + " output(s) and " +
                std::to_string(f.states.size()) + " final state(s)");
  BpttResult<T> result;
  for (std::size_t o = 0; o < m.user_outputs; ++o) result.forward.outputs.emplace_back(tensor_dims(f.graph.node(f.outputs[o].value).shape, B, steps));
  for (ValueId s : f.states) result.forward.final_states.emplace_back(tensor_dims(f.graph.node(s).shape, B));
  for (std::size_t o = 0; o < seeds.outputs.size(); ++o)
    if (seeds.outputs[o].shape != result.forward.outputs[o].shape)
      throw Error("CUDA backward: the gradient of output '" + f.outputs[o].name + "' is " + shape_string(seeds.outputs[o].shape) +
                  " but the output is " + shape_string(result.forward.outputs[o].shape));
  for (std::size_t s = 0; s < seeds.final_states.size(); ++s)
    if (seeds.final_states[s].shape != result.forward.final_states[s].shape)
      throw Error("CUDA backward: the gradient of final state %" + std::string(f.leaf_name(f.states[s])) + " is " +
                  shape_string(seeds.final_states[s].shape) + " but the state is " + shape_string(result.forward.final_states[s].shape));
  result.grads.inputs.reserve(f.inputs.size());
  for (const auto& x : args.inputs) result.grads.inputs.emplace_back(x.shape);
  for (const auto& s : args.states) result.grads.states.emplace_back(s.shape);
  for (const auto& p : args.params) result.grads.params.emplace_back(p.shape);
  std::vector<HostTensor<T>> tape;
  for (std::int64_t w : tape_widths()) tape.emplace_back(std::vector<std::int64_t>{steps, B, w});

  // Every host tensor of the call in one list, in the order of the device buffers below. The
  // tape is f32 whatever the storage; the rest is stored as the caller would (16-bit or T).
  struct Slot {
    std::vector<DevicePointer>* list;
    const HostTensor<T>* tensor;
    bool tape = false;
  };
  std::lock_guard<std::mutex> lock(m.mutex);
  cuda::ContextScope context(*m.dev);
  DeviceTrainingArgs& d = m.staging.args;
  auto slots = [&] {
    std::vector<Slot> out;
    auto add = [&](std::vector<DevicePointer>& list, const std::vector<HostTensor<T>>& tensors) {
      for (const auto& t : tensors) out.push_back({&list, &t, &list == &d.tape});
    };
    add(d.inputs, args.inputs);
    add(d.states, args.states);
    add(d.params, args.params);
    add(d.outputs, result.forward.outputs);
    add(d.final_states, result.forward.final_states);
    add(d.tape, tape);
    add(d.output_grads, seeds.outputs);
    add(d.final_state_grads, seeds.final_states);
    add(d.input_grads, result.grads.inputs);
    add(d.state_grads, result.grads.states);
    add(d.param_grads, result.grads.params);
    return out;
  }();
  auto storage_of = [&](const Slot& s) { return s.tape ? Storage::Native : m.storage; };
  if (m.staging.steps != steps) {
    if (m.has_run) cuda::check(cuda::driver().event_synchronize(m.done), "cuEventSynchronize");
    m.staging = Impl::Staging{};
    m.staging.steps = steps;
    for (const Slot& s : slots) {
      // An empty tensor (a sequence of length 0) still gets a byte: the pointers are never null.
      m.staging.memory.emplace_back(std::max<std::size_t>(1, s.tensor->data.size() * cuda::stored_size<T>(storage_of(s))));
      s.list->push_back(m.staging.memory.back().get());
    }
  }
  d.steps = steps;
  auto upload = [&](std::size_t first, std::size_t count) {
    for (std::size_t i = first; i < first + count; ++i)
      cuda::upload(m.staging.memory[i].get(), slots[i].tensor->data.data(), slots[i].tensor->data.size(), storage_of(slots[i]), stream);
  };
  cuda::Downloads<T> downloads(stream);
  auto download = [&](std::size_t first, std::size_t count) {
    for (std::size_t i = first; i < first + count; ++i)
      downloads.add(const_cast<T*>(slots[i].tensor->data.data()), m.staging.memory[i].get(), slots[i].tensor->data.size(),
                    storage_of(slots[i]));
  };
  const std::size_t n_in = args.inputs.size() + args.states.size() + args.params.size();
  const std::size_t n_fwd = result.forward.outputs.size() + result.forward.final_states.size() + tape.size();
  const std::size_t n_seed = seeds.outputs.size() + seeds.final_states.size();
  upload(0, n_in);
  upload(n_in + n_fwd, n_seed);
  m.check(d, false);
  m.check(d, true);
  {
    profile::PhaseScope phase(profile::Phase::Forward);
    m.forward_locked(d, stream);
  }
  profile::PhaseScope phase(profile::Phase::Backward);
  m.backward_any(d, stream);
  download(n_in, result.forward.outputs.size() + result.forward.final_states.size());
  download(n_in + n_fwd + n_seed, slots.size() - (n_in + n_fwd + n_seed));
  downloads.finish();
  return result;
}

template BpttResult<float> CudaBptt::run(const SequenceArgs<float>&, const LossGradients<float>&, CudaStream) const;
template BpttResult<double> CudaBptt::run(const SequenceArgs<double>&, const LossGradients<double>&, CudaStream) const;

std::shared_ptr<const CudaBptt> compile_cuda_bptt(const Cell& cell, std::int64_t batch, const CudaOptions& options) {
  static std::mutex mutex;
  // Never destroyed, like compile_cuda's cache: the driver may be gone at exit.
  static auto& cache =
      *new std::map<std::tuple<std::uint64_t, std::int64_t, int, int, int, int, bool, int, int>, std::shared_ptr<const CudaBptt>>();
  auto key = std::make_tuple(cell_hash(cell), batch, static_cast<int>(cell.graph.dtype()), options.device,
                             static_cast<int>(options.program.fuse), options.program.emit.max_threads, options.graphs,
                             static_cast<int>(options.loop), static_cast<int>(options.storage));
  std::lock_guard<std::mutex> lock(mutex);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  auto compiled = std::make_shared<const CudaBptt>(cell, batch, options);
  cache[key] = compiled;
  return compiled;
}

}  // namespace cellfuse
