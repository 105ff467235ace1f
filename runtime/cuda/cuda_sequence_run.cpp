// The sequence runner of CudaCell: per-length workspaces and the pre, loop and post stages of a
// whole sequence enqueued on a stream (the mirror of CpuCell::run_view).
#include "runtime/cuda/cuda_cell_impl.h"

#include <cstdint>

#include "compiler/ir/error.h"

namespace cellfuse {

using cuda_run::as_pointer;
using cuda_run::offset;

void CudaCell::Impl::prepare_workspace(std::int64_t steps) {
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

void CudaCell::Impl::enqueue(const DeviceSequenceArgs& a, CUstream stream) {
  const Cell& cell = this->cell();
  const std::int64_t B = batch, steps = a.steps;
  auto cols = [](const Cell& c, ValueId v) { return c.graph.node(v).shape.features(); };
  if (shared.blas) {
    const cuda::Cublas& blas = cuda::cublas();
    cuda::check(blas.set_stream(shared.blas, stream), "cublasSetStream");
    // Setting a stream resets cuBLAS to its default workspace pool: ours again, so that cuBLAS
    // allocates nothing (inside a graph capture least of all).
    cuda::check(blas.set_workspace(shared.blas, as_pointer<void>(blas_workspace.get()), blas_workspace.bytes()),
                "cublasSetWorkspace");
  }
  profile::RunSpans spans(cell.name, steps);  // the profiler's; nothing when it is off
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
    spans.stage_begin();
    run.run(stream);
    spans.stage_end(static_cast<profile::RunSpans::Stage>(s));
  };

  run_batch_stage(0);
  if (active.fn) {  // one kernel for all steps: Persistent (a grid) or Resident (one block)
    const auto& pl = program.plan.loop;
    const Cell& c = *pl.cell;
    std::vector<CUdeviceptr> pointers;
    for (const auto& in : pl.inputs) pointers.push_back(source(in));
    for (std::size_t s = 0; s < c.states.size(); ++s) pointers.push_back(a.states[s]);
    for (int p : pl.params) pointers.push_back(a.params[static_cast<std::size_t>(p)]);
    for (auto o : output_memory[1]) pointers.push_back(o);
    for (std::size_t s = 0; s < c.states.size(); ++s) pointers.push_back(a.final_states[s]);
    pointers.push_back(active.workspace);
    pointers.push_back(active.barrier);
    long long n = steps, reverse = a.reverse ? 1 : 0;
    std::vector<void*> args;
    for (auto& p : pointers) args.push_back(&p);
    args.push_back(&n);
    args.push_back(&reverse);
    profile::Recorder* rec = spans.recorder();
    const std::int64_t begin = rec ? profile::Recorder::now_ns() : 0;
    if (rec && shared.timer) shared.timer->before(stream);
    spans.stage_begin();
    cuda::check(shared.d->launch_cooperative_kernel(active.fn, active.grid, 1, 1, static_cast<unsigned>(active.kernel->threads), 1,
                                                    1, active.shared, stream, args.data()),
                ("cuLaunchCooperativeKernel(" + active.kernel->name + ")").c_str());
    if (rec) {
      const int site = persistent_call_site(*rec, steps);
      if (shared.timer) shared.timer->after(stream, site, -1, rec->phase(), rec->run());
      rec->call(site, begin, profile::Recorder::now_ns());
    }
    spans.stage_end(profile::RunSpans::Loop);
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
    spans.stage_begin();
    for (std::int64_t k = 0; k < steps; ++k) {
      const std::int64_t t = a.reverse ? steps - 1 - k : k;
      spans.step_begin(t);
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
      spans.step_end(t);
    }
    spans.stage_end(profile::RunSpans::Loop);
  }
  for (std::size_t s = 0; s < cell.states.size(); ++s)
    shared.copy(a.final_states[s], state_at[s], B * cols(cell, cell.states[s]), stream);
  run_batch_stage(2);
}

void CudaCell::Impl::run_any(const DeviceSequenceArgs& a, CUstream stream) {
  if (storage == Storage::Native) run_locked(a, stream);
  else run_stored(a, stream);
}

void CudaCell::Impl::check_device_args(const DeviceSequenceArgs& a) const {
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

CUstream CudaCell::Impl::start(CudaStream caller) {
  if (caller) return caller;
  const cuda::Driver& d = cuda::driver();
  cuda::check(d.event_record(entry, nullptr), "cuEventRecord(legacy stream)");
  cuda::check(d.stream_wait_event(own_stream, entry, 0), "cuStreamWaitEvent");
  return own_stream;
}

void CudaCell::Impl::finish(CudaStream caller) {
  if (!caller) cuda::check(cuda::driver().stream_wait_event(nullptr, done, 0), "cuStreamWaitEvent(legacy stream)");
}

}  // namespace cellfuse
