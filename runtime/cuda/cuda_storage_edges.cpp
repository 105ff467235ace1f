// 16-bit storage at the edges of a CudaCell run: the caller's bf16/f16 tensors are widened into
// f32 buffers of the cell, the f32 program runs on them, and the results are rounded back.
#include "runtime/cuda/cuda_cell_impl.h"

#include "compiler/ir/error.h"

namespace cellfuse {

CudaCell::Impl::Sizes CudaCell::Impl::sizes(std::int64_t steps) const {
  const Cell& c = cell();
  Sizes z;
  for (ValueId v : c.inputs) z.inputs.push_back(steps * batch * c.graph.node(v).shape.features());
  for (ValueId v : c.states) z.states.push_back(batch * c.graph.node(v).shape.features());
  for (ValueId v : c.params) z.params.push_back(c.graph.node(v).shape.elements(batch));
  for (const auto& o : c.outputs) z.outputs.push_back(steps * batch * c.graph.node(o.value).shape.features());
  return z;
}

void CudaCell::Impl::convert(Storage format, bool to_f32, CUdeviceptr from, CUdeviceptr to, std::int64_t n, CUstream stream) const {
  const int f = static_cast<int>(format);
  CUfunction fn = to_f32 ? widen[f] : narrow[f];
  if (!fn) throw InternalError("CUDA backend: no conversion kernel for " + std::string(storage_name(format)));
  shared.launch_support(fn, from, to, n, 1, stream, to_f32 ? "cuLaunchKernel(widen)" : "cuLaunchKernel(narrow)");
}

void CudaCell::Impl::run_stored(const DeviceSequenceArgs& a, CUstream stream) {
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

}  // namespace cellfuse
