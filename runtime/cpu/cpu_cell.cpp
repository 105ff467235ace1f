#include "runtime/cpu/cpu_cell.h"

#include <llvm/IR/LLVMContext.h>  // the module handed to the JIT
#include <llvm/IR/Module.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <tuple>

#include "compiler/ir/error.h"
#include "runtime/cpu/llvm_jit.h"
#include "runtime/cpu/stage_runner.h"
#include "runtime/cpu/team.h"
#include "runtime/memory_limits.h"
#include "runtime/profile/recorder.h"
#include "runtime/sequence_check.h"

namespace cellfuse {
namespace {

// Atomic: cells are compiled from many threads at once (ThreadSanitizer, test_llvm_concurrency).
std::atomic<std::size_t> g_compile_count{0};

// What one sequence length needs in memory, kept between runs of that length: the stage
// runners, the arrays stages hand to each other, and the two arrays of every state.
template <class T>
struct Workspace {
  std::int64_t steps = -1;  // the length of the piece it is laid out for
  std::optional<cpu::StageRunner<T>> stages[3];
  std::vector<std::vector<T>> exports[3];
  std::vector<std::vector<T>> current, next;
};

// A sequence runs in pieces of at most this many rows (steps x batch): the arrays the stages hand
// to each other (hoisted products, the loop's outputs for the post stage) are sized for one piece,
// so memory does not grow with the sequence's length (a million steps of inference run in the
// memory of a few thousand), while a piece still gives the hoisted GEMMs thousands of rows.
constexpr std::int64_t kPieceRows = 8192;

}  // namespace

struct CpuCell::Impl {
  CompiledProgram program;  // what compile() made: the cell, its stages, their kernels
  const Cell& cell = program.cell;
  const SequencePlan& plan = program.plan;
  cpu::CompiledStage stages[3];  // pre, loop, post
  std::unique_ptr<LlvmJit> jit;
  std::shared_ptr<cpu::Team> team;  // the process's team of this size (cpu::shared_team)
  std::int64_t batch = 0;
  double compile_ms = 0;
  // Runs are serialized: they share the team and the workspace.
  std::mutex mutex;
  // Two layouts kept: a long sequence's full pieces and its last, shorter one.
  Workspace<float> f32[2];
  Workspace<double> f64[2];
  int next_slot = 0;
  std::uint64_t profiled = 0;  // the profiler generation this program was registered with
  // The pointer lists a run fills, kept (cleared, their capacity reused) so that the pieces of a
  // long sequence allocate nothing.
  template <class T>
  struct Lists {
    std::vector<T*> output_memory[3];
    std::vector<const T*> params;
    std::vector<T*> inputs, step_outputs;
    std::vector<std::int64_t> input_size, output_size;
    SequenceView<T> piece;
  };
  Lists<float> lists_f32;
  Lists<double> lists_f64;
  template <class T>
  Lists<T>& lists() {
    if constexpr (std::is_same_v<T, float>) return lists_f32;
    else return lists_f64;
  }

  // The workspace laid out for `steps` if there is one, else the one to lay out again.
  template <class T>
  Workspace<T>& workspace(std::int64_t steps) {
    Workspace<T>* slots;
    if constexpr (std::is_same_v<T, float>) slots = f32;
    else slots = f64;
    for (int i = 0; i < 2; ++i)
      if (slots[i].steps == steps) return slots[i];
    Workspace<T>& w = slots[next_slot];
    next_slot ^= 1;
    return w;
  }
};

static TargetOptions cpu_target(std::int64_t batch, int threads) {
  TargetOptions options;
  options.target = Target::Cpu;
  options.batch = batch;
  options.threads = threads;
  return options;
}

CpuCell::CpuCell(const Cell& cell, std::int64_t batch, int threads) : impl_(std::make_unique<Impl>()) {
  auto start = std::chrono::steady_clock::now();
  const TargetOptions options = cpu_target(batch, threads);
  CompiledCell compiled = compile(cell, options);
  if (profile::Recorder* rec = profile::active()) rec->compile_log(compiled.log, cell.name);
  load(std::move(compiled.forward), options);
  impl_->compile_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

CpuCell::CpuCell(CompiledProgram program, const TargetOptions& options) : impl_(std::make_unique<Impl>()) {
  auto start = std::chrono::steady_clock::now();
  load(std::move(program), options);
  impl_->compile_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

void CpuCell::load(CompiledProgram program, const TargetOptions& options) {
  if (options.target != Target::Cpu || !program.llvm)
    throw InternalError("CpuCell: the program was not compiled for the CPU target");
  Impl& m = *impl_;
  m.program = std::move(program);
  m.batch = options.batch;
  const SequenceStage* stages[3] = {&m.plan.pre, &m.plan.loop, &m.plan.post};
  for (int s = 0; s < 3; ++s) {
    m.stages[s].stage = stages[s];
    m.stages[s].program = m.program.stages[s];
  }
  cpu::use_single_threaded_blas();
  m.team = cpu::shared_team(options.threads > 0 ? options.threads : cpu::default_thread_count());
  const std::int64_t jit_begin = profile::Recorder::now_ns();
  m.jit = std::make_unique<LlvmJit>();
  m.jit->add_module(std::move(m.program.llvm->module), std::move(m.program.llvm->context));
  m.program.llvm.reset();
  for (auto& cs : m.stages)
    for (const auto& step : cs.program.steps)
      cs.functions.push_back(step.kind == ProgramStep::Kind::Kernel
                                 ? reinterpret_cast<llvm_codegen::KernelFunction>(m.jit->lookup(step.kernel.kernel.name))
                                 : nullptr);
  if (profile::Recorder* rec = profile::active())  // the lookups optimized and compiled the module
    rec->compile_event("LLVM JIT (-O3, native code)", m.cell.name, jit_begin, profile::Recorder::now_ns());
  ++g_compile_count;
}

CpuCell::~CpuCell() = default;

std::int64_t CpuCell::batch() const { return impl_->batch; }
DType CpuCell::dtype() const { return impl_->cell.graph.dtype(); }
double CpuCell::compile_ms() const { return impl_->compile_ms; }
int CpuCell::threads() const { return impl_->team->size(); }

std::string CpuCell::describe() const {
  std::string out = print_plan(impl_->plan);
  const char* names[3] = {"pre", "loop", "post"};
  for (int s = 0; s < 3; ++s) {
    const auto& cs = impl_->stages[s];
    if (!cs.stage->cell) continue;
    out += "# program of stage " + std::string(names[s]) + "\n" + print_program(*cs.stage->cell, cs.program) + "\n";
  }
  return out;
}

template <class T>
void CpuCell::run_into(const SequenceArgs<T>& args, SequenceResult<T>& result) const {
  const Cell& cell = impl_->cell;
  const std::int64_t steps = check_sequence_args(cell, args, impl_->batch, "CPU backend");
  const std::int64_t B = impl_->batch;
  // The caller's result tensors are written in place when they have the right shapes.
  result.outputs.resize(cell.outputs.size());
  for (std::size_t o = 0; o < cell.outputs.size(); ++o)
    result.outputs[o].fit({steps, B, cell.graph.node(cell.outputs[o].value).shape.features()});
  result.final_states.resize(cell.states.size());
  SequenceView<T> view;
  view.steps = steps;
  for (const auto& t : args.inputs) view.inputs.push_back(t.data.data());
  for (const auto& t : args.states) view.states.push_back(t.data.data());
  for (const auto& t : args.params) view.params.push_back(t.data.data());
  for (auto& t : result.outputs) view.outputs.push_back(t.data.data());
  for (std::size_t s = 0; s < cell.states.size(); ++s) {
    result.final_states[s].fit(args.states[s].shape);
    view.final_states.push_back(result.final_states[s].data.data());
  }
  run_view(view);
}

template <class T>
void CpuCell::run_view(const SequenceView<T>& view) const {
  Impl& m = *impl_;
  const Cell& cell = m.cell;
  if ((cell.graph.dtype() == DType::f32) != std::is_same_v<T, float>)
    throw Error("CPU backend: the cell is " + std::string(dtype_name(cell.graph.dtype())) +
                " but the arguments are " + (std::is_same_v<T, float> ? "f32" : "f64"));
  if (view.inputs.size() != cell.inputs.size() || view.states.size() != cell.states.size() ||
      view.params.size() != cell.params.size() || view.outputs.size() != cell.outputs.size() ||
      view.final_states.size() != cell.states.size() || view.steps < 0)
    throw Error("CPU backend: a sequence view with the wrong number of inputs, states, params or outputs");
  const std::int64_t B = m.batch;
  std::lock_guard<std::mutex> lock(m.mutex);
  std::lock_guard<std::mutex> team_lock(m.team->user_mutex());
  profile::RunSpans spans(cell.name, view.steps);
  if (profile::Recorder* rec = spans.recorder(); rec && m.profiled != rec->generation()) {
    rec->add_program(profile::program_info(m.program, rec->phase(), "cpu"));
    m.profiled = rec->generation();
  }
  // One piece of the sequence, its states from part.states, its final states to part.final_states.
  // t0: the piece's first step in the whole sequence (the profiler's step numbers).
  auto run_piece = [&](const SequenceView<T>& part, std::int64_t t0) {
    const std::int64_t steps = part.steps, rows = steps * B;
    auto cols = [](const Cell& c, ValueId v) { return c.graph.node(v).shape.features(); };

    Workspace<T>& ws = m.template workspace<T>(steps);
    if (ws.steps != steps) {
      // Sizes are checked before they are allocated (memory_limits.h); what the check cannot see
      // (the stage runners' scratch) fails as bad_alloc, reported the same way.
      try {
        ws.steps = -1;
        for (int s = 0; s < 3; ++s) {
          ws.stages[s].reset();
          ws.exports[s].clear();
        }
        ws.current.clear();
        ws.next.clear();
        for (int s = 0; s < 3; ++s) {
          if (!m.stages[s].stage->cell) continue;
          const Cell& c = *m.stages[s].stage->cell;
          for (const auto& o : c.outputs)
            ws.exports[s].emplace_back(checked_bytes({rows, cols(c, o.value)}, sizeof(T), "a CPU stage's output") / sizeof(T));
          ws.stages[s].emplace(m.stages[s], s == 1 ? B : rows, *m.team);
        }
        for (ValueId s : cell.states) {
          const std::size_t n = checked_bytes({B, cols(cell, s)}, sizeof(T), "a CPU state buffer") / sizeof(T);
          ws.current.emplace_back(n);
          ws.next.emplace_back(n);
        }
        ws.steps = steps;
      } catch (const std::bad_alloc&) {
        throw Error("CPU backend: cannot allocate the workspace of " + std::to_string(steps) + " steps at batch " +
                    std::to_string(B) + " (" + std::to_string(rows) + " rows): out of memory");
      } catch (const std::length_error&) {
        throw Error("CPU backend: the workspace of " + std::to_string(steps) + " steps at batch " + std::to_string(B) +
                    " is larger than this machine can address");
      }
    }
    // Each stage output lives in the caller's output (a cell output) or in an export array that a
    // later stage reads, [T*B, cols] either way.
    auto& lists = m.template lists<T>();
    auto& output_memory = lists.output_memory;
    for (auto& list : output_memory) list.clear();
    for (int s = 0; s < 3; ++s)
      for (auto& e : ws.exports[s]) output_memory[s].push_back(e.data());
    for (std::size_t o = 0; o < m.plan.outputs.size(); ++o)
      output_memory[static_cast<int>(m.plan.outputs[o].stage)][m.plan.outputs[o].index] = part.outputs[o];
    auto source = [&](const StageInput& in) -> T* {
      switch (in.from) {
        case StageInput::From::CellInput: return const_cast<T*>(part.inputs[in.index]);
        case StageInput::From::Pre: return output_memory[0][in.index];
        case StageInput::From::Loop: return output_memory[1][in.index];
      }
      return nullptr;
    };
    auto& params = lists.params;
    params.assign(part.params.begin(), part.params.end());
    auto run_batch_stage = [&](int s) {
      if (steps == 0 || !ws.stages[s]) return;
      auto& run = *ws.stages[s];
      const Cell& c = *m.stages[s].stage->cell;
      run.bind_params(params);
      for (std::size_t i = 0; i < c.inputs.size(); ++i) run.bind(c.inputs[i], source(m.stages[s].stage->inputs[i]));
      run.bind_outputs(output_memory[s].data());
      spans.stage_begin();
      run.run();
      spans.stage_end(static_cast<profile::RunSpans::Stage>(s));
    };

    run_batch_stage(0);
    for (std::size_t s = 0; s < cell.states.size(); ++s)
      std::memcpy(ws.current[s].data(), part.states[s], ws.current[s].size() * sizeof(T));
    if (ws.stages[1]) {
      auto& run = *ws.stages[1];
      const Cell& c = *m.plan.loop.cell;
      run.bind_params(params);
      auto &inputs = lists.inputs, &step_outputs = lists.step_outputs;
      auto &input_size = lists.input_size, &output_size = lists.output_size;
      inputs.clear();
      input_size.clear();
      output_size.clear();
      step_outputs.assign(c.outputs.size(), nullptr);
      for (std::size_t i = 0; i < c.inputs.size(); ++i) {
        inputs.push_back(source(m.plan.loop.inputs[i]));
        input_size.push_back(B * cols(c, c.inputs[i]));
      }
      for (const auto& o : c.outputs) output_size.push_back(B * cols(c, o.value));
      // The step reads `current` and its next states are copied into `next`; then they swap.
      spans.stage_begin();
      for (std::int64_t i = 0; i < steps; ++i) {
        const std::int64_t t = part.reverse ? steps - 1 - i : i;
        spans.step_begin(t0 + t);
        for (std::size_t k = 0; k < c.inputs.size(); ++k) run.bind(c.inputs[k], inputs[k] + t * input_size[k]);
        for (std::size_t s = 0; s < c.states.size(); ++s) run.bind(c.states[s], ws.current[s].data());
        for (std::size_t o = 0; o < c.outputs.size(); ++o) step_outputs[o] = output_memory[1][o] + t * output_size[o];
        run.bind_outputs(step_outputs.data());
        run.run();
        for (std::size_t s = 0; s < c.states.size(); ++s)
          std::memcpy(ws.next[s].data(), run.at(c.next_states[s]), ws.next[s].size() * sizeof(T));
        std::swap(ws.current, ws.next);
        spans.step_end(t0 + t);
      }
      spans.stage_end(profile::RunSpans::Loop);
    }
    for (std::size_t s = 0; s < cell.states.size(); ++s)
      std::memcpy(part.final_states[s], ws.current[s].data(), ws.current[s].size() * sizeof(T));
    run_batch_stage(2);
  };
  const std::int64_t piece_steps = std::max<std::int64_t>(1, kPieceRows / std::max<std::int64_t>(B, 1));
  if (view.steps <= piece_steps) return run_piece(view, 0);
  // Pieces in the order the loop runs (last first when reversed); each starts from the states the
  // previous one ended with, which it left in view.final_states.
  auto offset = [&](const Cell& c, ValueId v, std::int64_t t0) { return t0 * B * c.graph.node(v).shape.features(); };
  const std::int64_t pieces = (view.steps + piece_steps - 1) / piece_steps;
  for (std::int64_t i = 0; i < pieces; ++i) {
    const std::int64_t p = view.reverse ? pieces - 1 - i : i;
    const std::int64_t t0 = p * piece_steps, len = std::min(piece_steps, view.steps - t0);
    SequenceView<T>& piece = m.template lists<T>().piece;
    piece = view;  // copy-assigned into kept vectors: no allocation once they have the capacity
    piece.steps = len;
    for (std::size_t k = 0; k < cell.inputs.size(); ++k) piece.inputs[k] = view.inputs[k] + offset(cell, cell.inputs[k], t0);
    for (std::size_t o = 0; o < cell.outputs.size(); ++o)
      piece.outputs[o] = view.outputs[o] + offset(cell, cell.outputs[o].value, t0);
    if (i > 0)
      for (std::size_t s = 0; s < cell.states.size(); ++s) piece.states[s] = view.final_states[s];
    run_piece(piece, t0);
  }
}

template <class T>
SequenceResult<T> CpuCell::run(const SequenceArgs<T>& args) const {
  SequenceResult<T> result;
  run_into(args, result);
  return result;
}

template void CpuCell::run_view(const SequenceView<float>&) const;
template void CpuCell::run_view(const SequenceView<double>&) const;
template void CpuCell::run_into(const SequenceArgs<float>&, SequenceResult<float>&) const;
template void CpuCell::run_into(const SequenceArgs<double>&, SequenceResult<double>&) const;
template SequenceResult<float> CpuCell::run(const SequenceArgs<float>&) const;
template SequenceResult<double> CpuCell::run(const SequenceArgs<double>&) const;

std::shared_ptr<const CpuCell> compile_cpu(const Cell& cell, std::int64_t batch) {
  static std::mutex mutex;
  static std::map<std::tuple<std::uint64_t, std::int64_t, int>, std::shared_ptr<const CpuCell>> cache;
  auto key = std::make_tuple(cell_hash(cell), batch, static_cast<int>(cell.graph.dtype()));
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(key);
  profile::Recorder* rec = profile::active();
  if (rec) rec->cache("CPU program " + cell.name + " (batch " + std::to_string(batch) + ")", it != cache.end());
  if (it != cache.end()) return it->second;
  auto compiled = std::make_shared<const CpuCell>(cell, batch);
  cache[key] = compiled;
  return compiled;
}

std::size_t cpu_compile_count() { return g_compile_count.load(); }

}  // namespace cellfuse
