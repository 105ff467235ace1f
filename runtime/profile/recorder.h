#pragma once
// The profiler's recording side: what the runners call while a cellfuse::Profiler is on. Off by
// default, and then a runner pays one relaxed load of a global pointer per stage run (active()
// returns null) and nothing else. On, each GEMM and kernel call is two clock reads and one
// append under a mutex; names and static costs (FLOPs, bytes) are registered once per runner
// ("call sites"), so a call carries only small integers.
//
// The Profiler (profiler.h) owns the recorder, turns its events into the Chrome trace and the
// overhead report; this header depends only on compiler/pipeline.h so that the CPU
// and CUDA runners (cellfuse_cpu, cellfuse_cuda) can include it.
#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "compiler/pipeline.h"  // StageLog, CompiledProgram, ProgramStep

namespace cellfuse::profile {

enum class CallKind : std::uint8_t {
  Gemm,    // a matrix product (BLAS, packed, cuBLAS, a parameter gradient's A^T B)
  Kernel,  // a generated fused kernel (pointwise work, possibly with fused products)
};
enum class Phase : std::uint8_t { Forward, Backward };

const char* phase_name(Phase phase);
const char* call_kind_name(CallKind kind);

// One GEMM or kernel of one compiled stage, with what one call of it costs.
struct CallSite {
  std::string name;   // as `cellfuse print --fusion` names it ("cf_lstm_loop_k0", "gemm %0 = %x x %W^T")
  std::string stage;  // "lstm_loop", "param grads", ...
  CallKind kind = CallKind::Kernel;
  double flops = 0;   // per call
  double bytes = 0;   // per call: every operand read and every result written once
};

// A compiled program that ran while recording: its static shape, for the report.
struct ProgramInfo {
  std::string name;    // the cell's name
  Phase phase = Phase::Forward;
  std::string target;  // "cpu" or "cuda"
  int ops = 0;         // non-leaf ops of the cell after the graph passes (what eager would dispatch)
  int kernels[3] = {0, 0, 0};  // pre, loop, post
  int gemms[3] = {0, 0, 0};
  std::vector<std::string> boundaries;  // the fusion notes: every boundary with its reason
};

// A host-side event: a call of a site, or a named span (a sequence, a stage, a step).
struct HostEvent {
  std::int32_t site = -1;   // a call: its CallSite; -1 for a span
  std::int32_t label = -1;  // a span: index into labels
  std::int32_t step = -1;   // the time step, -1 outside the loop
  std::int32_t run = 0;     // which sequence run (counts from 0 since the last discard)
  Phase phase = Phase::Forward;
  std::int64_t begin_ns = 0, end_ns = 0;
  std::int64_t steps = 0;   // a sequence span: its length T (the report's per-step divisor)
};

// A device-side call: its time on the GPU, from CUDA events.
struct DeviceEvent {
  std::int32_t site = -1;
  std::int32_t step = -1;
  std::int32_t run = 0;
  Phase phase = Phase::Forward;
  std::int64_t begin_ns = 0, end_ns = 0;  // on the host clock: the run's start plus the GPU offsets
};

struct CompileEvent {
  std::string name;  // a pipeline stage, "LLVM JIT", "NVRTC", ...
  std::string what;  // the cell
  std::int64_t begin_ns = 0, end_ns = 0;
};

struct CacheEvent {
  std::string what;  // "CPU program lstm (batch 8)", "cubin lstm.cu", ...
  bool hit = false;
  std::int64_t at_ns = 0;
};

class Recorder {
 public:
  Recorder();
  static std::int64_t now_ns();
  // Unique per recorder: runners keep the site ids they registered with one generation.
  std::uint64_t generation() const { return generation_; }

  int add_site(CallSite site);
  int add_label(const std::string& label);
  void add_program(ProgramInfo info);
  // A call of a site on the host, in the current phase and step.
  void call(int site, std::int64_t begin_ns, std::int64_t end_ns);
  void span(int label, std::int64_t begin_ns, std::int64_t end_ns, int step = -1, std::int64_t steps = 0);
  void device(const DeviceEvent& event);
  // Every stage of a compile() log (their own start times), and `extra` events of the backend.
  void compile_log(const std::vector<StageLog>& log, const std::string& what);
  void compile_event(const std::string& name, const std::string& what, std::int64_t begin_ns, std::int64_t end_ns);
  void cache(const std::string& what, bool hit);

  // The training pass the runner is in (a BPTT run sets Backward around its backward half).
  void set_phase(Phase phase) { phase_ = phase; }
  Phase phase() const { return phase_; }
  // The time step the runner is in (-1: outside the loop); calls take it.
  void set_step(int step) { step_ = step; }
  int step() const { return step_; }
  int run() const { return run_ < 0 ? 0 : run_; }
  // A sequence run begins: later events belong to it.
  int begin_run();
  // Drops the runs recorded so far (warm-up), keeping compile and cache events.
  void discard_runs();

  // Snapshot of everything (under the mutex).
  struct Data {
    std::vector<CallSite> sites;
    std::vector<std::string> labels;
    std::vector<ProgramInfo> programs;
    std::vector<HostEvent> host;
    std::vector<DeviceEvent> device;
    std::vector<CompileEvent> compile;
    std::vector<CacheEvent> caches;
    int runs = 0;
    std::int64_t origin_ns = 0;  // when recording started
  };
  Data data() const;

 private:
  mutable std::mutex mutex_;
  std::uint64_t generation_;
  Phase phase_ = Phase::Forward;
  int step_ = -1;
  int run_ = -1;
  Data d_;
};

// The recorder of the Profiler that is on, or null (the default: profiling off).
extern std::atomic<Recorder*> g_active;
// Non-zero while this thread runs work that is not the caller's (Auto timing the loop plans on
// the first run of a length): none of it is recorded (PauseRecording).
inline thread_local int t_recording_paused = 0;
inline Recorder* active() {
  Recorder* rec = g_active.load(std::memory_order_relaxed);
  return rec && t_recording_paused == 0 ? rec : nullptr;  // the thread-local read only when on
}

// Nothing this thread runs is recorded while one lives.
class PauseRecording {
 public:
  PauseRecording() { ++t_recording_paused; }
  ~PauseRecording() { --t_recording_paused; }
  PauseRecording(const PauseRecording&) = delete;
  PauseRecording& operator=(const PauseRecording&) = delete;
};

// Sets the phase for a scope when recording (a BPTT run's backward half).
class PhaseScope {
 public:
  explicit PhaseScope(Phase phase) : rec_(active()) {
    if (rec_) previous_ = rec_->phase(), rec_->set_phase(phase);
  }
  ~PhaseScope() {
    if (rec_) rec_->set_phase(previous_);
  }
  PhaseScope(const PhaseScope&) = delete;
  PhaseScope& operator=(const PhaseScope&) = delete;

 private:
  Recorder* rec_;
  Phase previous_ = Phase::Forward;
};

// The call sites of one stage program (kernel names as print --fusion shows them, GEMMs as
// "gemm %out = %x x %W^T"), with FLOPs and bytes per call at `rows` rows of `elem`-byte values.
std::vector<CallSite> stage_sites(const Cell& stage, const std::vector<ProgramStep>& steps, std::int64_t rows,
                                  std::size_t elem);
// The static shape of a compiled program, for the report.
ProgramInfo program_info(const CompiledProgram& program, Phase phase, const std::string& target);
ProgramInfo program_info(const Cell& cell, const std::array<const StageProgram*, 3>& stages, Phase phase,
                         const std::string& target);

// A sequence run's spans while recording (the sequence, its pre/loop/post stages, each step);
// every member is a no-op when profiling is off.
class RunSpans {
 public:
  enum Stage { Pre = 0, Loop = 1, Post = 2 };
  RunSpans(const std::string& cell, std::int64_t steps) : rec_(active()), steps_(steps) {
    if (!rec_) return;
    rec_->begin_run();
    sequence_ = rec_->add_label(std::string(phase_name(rec_->phase())) + " " + cell);
    const char* names[3] = {"pre (all steps)", "loop", "post (all steps)"};
    for (int s = 0; s < 3; ++s) stage_label_[s] = rec_->add_label(names[s]);
    step_label_ = rec_->add_label("step");
    begin_ = Recorder::now_ns();
  }
  ~RunSpans() {
    if (!rec_) return;
    rec_->set_step(-1);
    rec_->span(sequence_, begin_, Recorder::now_ns(), -1, steps_);
  }
  RunSpans(const RunSpans&) = delete;
  RunSpans& operator=(const RunSpans&) = delete;

  void stage_begin() {
    if (rec_) stage_begin_ = Recorder::now_ns();
  }
  void stage_end(Stage s) {
    if (rec_) rec_->span(stage_label_[s], stage_begin_, Recorder::now_ns());
  }
  void step_begin(std::int64_t t) {
    if (!rec_) return;
    rec_->set_step(static_cast<int>(t));
    step_begin_ = Recorder::now_ns();
  }
  void step_end(std::int64_t t) {
    if (!rec_) return;
    rec_->span(step_label_, step_begin_, Recorder::now_ns(), static_cast<int>(t));
    rec_->set_step(-1);
  }
  Recorder* recorder() const { return rec_; }

 private:
  Recorder* rec_;
  std::int64_t steps_;
  int sequence_ = -1, stage_label_[3] = {-1, -1, -1}, step_label_ = -1;
  std::int64_t begin_ = 0, stage_begin_ = 0, step_begin_ = 0;
};

// Times a named span of host work when recording (a BPTT pass, the parameter gradients).
class SpanTimer {
 public:
  explicit SpanTimer(const std::string& label) : rec_(active()) {
    if (!rec_) return;
    label_ = rec_->add_label(label);
    begin_ = Recorder::now_ns();
  }
  ~SpanTimer() {
    if (rec_) rec_->span(label_, begin_, Recorder::now_ns());
  }
  SpanTimer(const SpanTimer&) = delete;
  SpanTimer& operator=(const SpanTimer&) = delete;

 private:
  Recorder* rec_;
  int label_ = -1;
  std::int64_t begin_ = 0;
};

// Registers a runner's call sites once per recorder: `ids` and `generation` are the runner's own.
inline const std::vector<int>& sites_for(Recorder& rec, std::uint64_t& generation, std::vector<int>& ids,
                                         const Cell& stage, const std::vector<ProgramStep>& steps, std::int64_t rows,
                                         std::size_t elem) {
  if (generation != rec.generation()) {
    ids.clear();
    for (auto& site : stage_sites(stage, steps, rows, elem)) ids.push_back(rec.add_site(std::move(site)));
    generation = rec.generation();
  }
  return ids;
}

}  // namespace cellfuse::profile
