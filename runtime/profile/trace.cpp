// The Chrome Trace Event JSON of a profile (the "JSON Object Format": {"traceEvents": [...]}),
// which Perfetto (ui.perfetto.dev) and chrome://tracing open.
//
// Process 1 is the host: thread 1 the compile phases and cache lookups, thread 2 the runner
// (sequence > stage > step > GEMM/kernel call, nested by time as complete "X" events). Process 2
// is the GPU: the same calls timed by CUDA events, on their own track. Timestamps are
// microseconds (with nanosecond decimals) since the first event.
#include <algorithm>
#include <climits>

#include "runtime/profile/json_text.h"
#include "runtime/profile/profiler.h"

namespace cellfuse {

namespace {

using profile::json_number;
using profile::json_string;
using profile::json_us;

constexpr int kHostPid = 1, kDevicePid = 2;
constexpr int kCompileTid = 1, kRunnerTid = 2, kStreamTid = 1;

struct Item {
  std::int64_t ts, dur;  // dur < 0: an instant event
  int pid, tid;
  std::string body;      // everything after "ts"/"dur"
};

std::string metadata(const char* what, int pid, int tid, const std::string& name) {
  return "{\"ph\": \"M\", \"name\": " + json_string(what) + ", \"pid\": " + std::to_string(pid) +
         ", \"tid\": " + std::to_string(tid) + ", \"args\": {\"name\": " + json_string(name) + "}}";
}

}  // namespace

std::string trace_json(const profile::Recorder::Data& d) {
  std::vector<Item> items;
  std::int64_t origin = d.origin_ns;
  for (const auto& e : d.compile) origin = std::min(origin, e.begin_ns);
  for (const auto& e : d.host) origin = std::min(origin, e.begin_ns);
  for (const auto& e : d.device) origin = std::min(origin, e.begin_ns);

  for (const auto& e : d.compile)
    items.push_back({e.begin_ns, e.end_ns - e.begin_ns, kHostPid, kCompileTid,
                     "\"name\": " + json_string(e.name) + ", \"cat\": \"compile\", \"args\": {\"cell\": " +
                         json_string(e.what) + "}"});
  for (const auto& c : d.caches)
    items.push_back({c.at_ns, -1, kHostPid, kCompileTid,
                     "\"name\": " + json_string(std::string(c.hit ? "cache hit: " : "cache miss: ") + c.what) +
                         ", \"cat\": \"cache\", \"s\": \"t\", \"args\": {\"hit\": " + (c.hit ? "true" : "false") + "}"});
  auto call_args = [&](const profile::CallSite& s, int step, profile::Phase phase, int run) {
    return ", \"args\": {\"step\": " + std::to_string(step) + ", \"phase\": " + json_string(profile::phase_name(phase)) +
           ", \"stage\": " + json_string(s.stage) + ", \"run\": " + std::to_string(run) +
           ", \"flops\": " + json_number(s.flops) + ", \"bytes\": " + json_number(s.bytes) + "}";
  };
  for (const auto& e : d.host) {
    if (e.site >= 0) {
      const auto& s = d.sites[static_cast<std::size_t>(e.site)];
      items.push_back({e.begin_ns, e.end_ns - e.begin_ns, kHostPid, kRunnerTid,
                       "\"name\": " + json_string(s.name) + ", \"cat\": " + json_string(profile::call_kind_name(s.kind)) +
                           call_args(s, e.step, e.phase, e.run)});
      continue;
    }
    const std::string& label = d.labels[static_cast<std::size_t>(e.label)];
    const bool is_step = label == "step";
    std::string name = is_step ? "step " + std::to_string(e.step) : label;
    std::string cat = is_step ? "step" : e.steps > 0 ? "sequence" : "span";
    std::string args = "\"phase\": " + json_string(profile::phase_name(e.phase)) + ", \"run\": " + std::to_string(e.run);
    if (is_step) args += ", \"step\": " + std::to_string(e.step);
    if (e.steps > 0) args += ", \"steps\": " + std::to_string(e.steps);
    items.push_back({e.begin_ns, e.end_ns - e.begin_ns, kHostPid, kRunnerTid,
                     "\"name\": " + json_string(name) + ", \"cat\": " + json_string(cat) + ", \"args\": {" + args + "}"});
  }
  for (const auto& e : d.device) {
    const auto& s = d.sites[static_cast<std::size_t>(e.site)];
    items.push_back({e.begin_ns, e.end_ns - e.begin_ns, kDevicePid, kStreamTid,
                     "\"name\": " + json_string(s.name) + ", \"cat\": " +
                         json_string(std::string("gpu ") + profile::call_kind_name(s.kind)) +
                         call_args(s, e.step, e.phase, e.run)});
  }
  // Parents before children: by start, then the longer first.
  std::stable_sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    if (a.pid != b.pid || a.tid != b.tid) return a.pid != b.pid ? a.pid < b.pid : a.tid < b.tid;
    return a.ts != b.ts ? a.ts < b.ts : a.dur > b.dur;
  });

  std::string out = "{\"displayTimeUnit\": \"ms\", \"otherData\": {\"producer\": \"cellfuse profiler\"}, \"traceEvents\": [\n";
  out += metadata("process_name", kHostPid, kCompileTid, "cellfuse host") + ",\n";
  out += metadata("thread_name", kHostPid, kCompileTid, "compile") + ",\n";
  out += metadata("thread_name", kHostPid, kRunnerTid, "runner (host)");
  if (!d.device.empty()) {
    out += ",\n" + metadata("process_name", kDevicePid, kStreamTid, "GPU (CUDA events)");
    out += ",\n" + metadata("thread_name", kDevicePid, kStreamTid, "stream");
  }
  for (const Item& it : items) {
    out += ",\n{\"ph\": \"";
    out += it.dur < 0 ? "i" : "X";
    out += "\", \"pid\": " + std::to_string(it.pid) + ", \"tid\": " + std::to_string(it.tid) +
           ", \"ts\": " + json_us(it.ts - origin);
    if (it.dur >= 0) out += ", \"dur\": " + json_us(it.dur);
    out += ", " + it.body + "}";
  }
  out += "\n]}\n";
  return out;
}

}  // namespace cellfuse
