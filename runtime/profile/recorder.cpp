#include "runtime/profile/recorder.h"

#include <chrono>

#include "compiler/kernel/kernel.h"

namespace cellfuse::profile {

std::atomic<Recorder*> g_active{nullptr};

namespace {
std::atomic<std::uint64_t> g_generation{0};
}  // namespace

const char* phase_name(Phase phase) { return phase == Phase::Forward ? "forward" : "backward"; }

const char* call_kind_name(CallKind kind) {
  switch (kind) {
    case CallKind::Gemm: return "gemm";
    case CallKind::Kernel: return "kernel";
  }
  return "?";
}

Recorder::Recorder() : generation_(++g_generation) { d_.origin_ns = now_ns(); }

std::int64_t Recorder::now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

int Recorder::add_site(CallSite site) {
  std::lock_guard<std::mutex> lock(mutex_);
  d_.sites.push_back(std::move(site));
  return static_cast<int>(d_.sites.size() - 1);
}

int Recorder::add_label(const std::string& label) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (std::size_t i = 0; i < d_.labels.size(); ++i)
    if (d_.labels[i] == label) return static_cast<int>(i);
  d_.labels.push_back(label);
  return static_cast<int>(d_.labels.size() - 1);
}

void Recorder::add_program(ProgramInfo info) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const ProgramInfo& p : d_.programs)
    if (p.name == info.name && p.phase == info.phase && p.target == info.target) return;
  d_.programs.push_back(std::move(info));
}

void Recorder::call(int site, std::int64_t begin_ns, std::int64_t end_ns) {
  std::lock_guard<std::mutex> lock(mutex_);
  d_.host.push_back({site, -1, step_, run_ < 0 ? 0 : run_, phase_, begin_ns, end_ns});
}

void Recorder::span(int label, std::int64_t begin_ns, std::int64_t end_ns, int step, std::int64_t steps) {
  std::lock_guard<std::mutex> lock(mutex_);
  d_.host.push_back({-1, label, step, run_ < 0 ? 0 : run_, phase_, begin_ns, end_ns, steps});
}

void Recorder::device(const DeviceEvent& event) {
  std::lock_guard<std::mutex> lock(mutex_);
  d_.device.push_back(event);
}

void Recorder::compile_log(const std::vector<StageLog>& log, const std::string& what) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (const StageLog& s : log) {
    if (s.start_ns == 0) continue;  // not a stage of its own (the optimizer's input)
    d_.compile.push_back({s.name, what, s.start_ns, s.start_ns + static_cast<std::int64_t>(s.ms * 1e6)});
  }
}

void Recorder::compile_event(const std::string& name, const std::string& what, std::int64_t begin_ns, std::int64_t end_ns) {
  std::lock_guard<std::mutex> lock(mutex_);
  d_.compile.push_back({name, what, begin_ns, end_ns});
}

void Recorder::cache(const std::string& what, bool hit) {
  const std::int64_t at = now_ns();
  std::lock_guard<std::mutex> lock(mutex_);
  d_.caches.push_back({what, hit, at});
}

int Recorder::begin_run() {
  std::lock_guard<std::mutex> lock(mutex_);
  run_ = d_.runs++;
  return run_;
}

void Recorder::discard_runs() {
  std::lock_guard<std::mutex> lock(mutex_);
  d_.host.clear();
  d_.device.clear();
  d_.runs = 0;
  run_ = -1;
}

Recorder::Data Recorder::data() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return d_;
}

namespace {

// FLOPs and bytes of one kernel call over `rows` rows: a fused product 2 k n per row, an element
// instruction or a reduction one per element; every non-scratch buffer read or written once.
void kernel_cost(const kernel::Kernel& k, std::int64_t rows, std::size_t elem, double& flops, double& bytes) {
  flops = 0;
  bytes = 0;
  const double r = static_cast<double>(rows);
  for (const auto& st : k.body) {
    if (st.kind == kernel::Statement::Kind::MatVec) {
      flops += 2.0 * r * static_cast<double>(st.matvec.k) * static_cast<double>(st.matvec.n);
      continue;
    }
    double per_element = static_cast<double>(st.loop.reductions.size());
    for (const auto& inst : st.loop.insts) per_element += inst.kind == kernel::Inst::Kind::Compute ? 1 : 0;
    flops += r * static_cast<double>(st.loop.extent) * per_element;
  }
  for (const auto& b : k.buffers) {
    if (b.role == kernel::BufferRole::Scratch) continue;
    bytes += static_cast<double>(b.batched ? rows : b.rows) * static_cast<double>(b.cols) * static_cast<double>(elem);
  }
}

}  // namespace

std::vector<CallSite> stage_sites(const Cell& stage, const std::vector<ProgramStep>& steps, std::int64_t rows, std::size_t elem) {
  std::vector<CallSite> out;
  const Graph& g = stage.graph;
  for (const ProgramStep& step : steps) {
    CallSite site;
    site.stage = stage.name;
    if (step.kind == ProgramStep::Kind::Gemm) {
      const GemmStep& gm = step.gemm;
      site.kind = CallKind::Gemm;
      site.name = "gemm " + g.ref(gm.out) + " = " + g.ref(gm.x) + " x " + g.ref(gm.weight) + (gm.transposed ? "^T" : "");
      const double r = static_cast<double>(rows), k = static_cast<double>(gm.k), n = static_cast<double>(gm.n);
      site.flops = 2 * r * k * n + (gm.bias.valid() ? r * n : 0);
      site.bytes = (r * k + k * n + r * n + (gm.bias.valid() ? n : 0)) * static_cast<double>(elem);
    } else {
      site.kind = CallKind::Kernel;
      site.name = step.kernel.kernel.name;
      kernel_cost(step.kernel.kernel, rows, elem, site.flops, site.bytes);
    }
    out.push_back(std::move(site));
  }
  return out;
}

ProgramInfo program_info(const Cell& cell, const std::array<const StageProgram*, 3>& stages, Phase phase,
                         const std::string& target) {
  ProgramInfo info;
  info.name = cell.name;
  info.phase = phase;
  info.target = target;
  for (const Node& n : cell.graph.nodes()) info.ops += is_leaf(n.op) ? 0 : 1;
  const char* stage_names[3] = {"pre", "loop", "post"};
  for (int s = 0; s < 3; ++s) {
    for (const ProgramStep& step : stages[s]->steps)
      (step.kind == ProgramStep::Kind::Gemm ? info.gemms[s] : info.kernels[s]) += 1;
    for (const std::string& note : stages[s]->notes)  // the boundaries; not the kernels' scratch choices
      if (note.find("scratch: ") == std::string::npos) info.boundaries.push_back(std::string(stage_names[s]) + ": " + note);
  }
  return info;
}

ProgramInfo program_info(const CompiledProgram& program, Phase phase, const std::string& target) {
  return program_info(program.cell, {&program.stages[0], &program.stages[1], &program.stages[2]}, phase, target);
}

}  // namespace cellfuse::profile
