// CUDA graphs of CudaCell: a sequence of a given shape and set of buffers is launched directly
// once, captured on its second run and replayed from then on (several kept, least recently used
// evicted first).
#include "runtime/cuda/cuda_cell_impl.h"

#include <algorithm>
#include <cstdint>

namespace cellfuse {

void CudaCell::Impl::drop_graph() {
  for (auto& g : graphs_cached) (void)cuda::driver().graph_exec_destroy(g.exec);
  graphs_cached.clear();
  seen_once.clear();
}

CUgraphExec CudaCell::Impl::capture(const DeviceSequenceArgs& a, CUstream stream, const GraphKey& key) {
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

void CudaCell::Impl::run_locked(const DeviceSequenceArgs& a, CUstream stream) {
  const cuda::Driver& d = cuda::driver();
  prepare_workspace(a.steps);
  if (has_run && last_stream != stream) cuda::check(d.stream_wait_event(stream, done, 0), "cuStreamWaitEvent");
  if (timing && a.steps > 0) plan_for(a, stream);
  if (profile::Recorder* rec = profile::active()) {
    run_profiled(*rec, a, stream);
  } else if (graphs && a.steps > 0 && !active.fn) {
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

}  // namespace cellfuse
