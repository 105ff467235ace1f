// The overhead report: the recorded events summed per pass (forward, backward) and per call site,
// divided by the time steps profiled, set against the machine's ceilings.
//
// Time split of a pass: its wall time is the sum of its outermost spans (a sequence run, a BPTT
// backward pass with its parameter gradients); GEMM and pointwise time are the calls' times (on
// the GPU their CUDA-event times); host overhead is the rest: the runner's own work between calls
// (binding, state copies, launches), which is what fusion and the native loop remove.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>

#include "runtime/profile/json_text.h"
#include "runtime/profile/profiler.h"

namespace cellfuse {
namespace {

using profile::CallKind;
using profile::HostEvent;
using profile::Phase;

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

std::string percent(double fraction) { return fmt("%.0f%%", 100 * fraction); }

// Si-prefixed count: 1.23 M, 45.6 k.
std::string si(double v) {
  const char* units[] = {"", " k", " M", " G", " T"};
  int u = 0;
  while (std::abs(v) >= 1000 && u < 4) v /= 1000, ++u;
  return fmt(v < 10 ? "%.2f" : v < 100 ? "%.1f" : "%.0f", v) + units[u];
}

// Indices of the spans no other span contains (sorted by begin; the outer one first).
std::vector<const HostEvent*> outermost_spans(const std::vector<HostEvent>& host) {
  std::vector<const HostEvent*> spans;
  for (const HostEvent& e : host)
    if (e.site < 0) spans.push_back(&e);
  std::sort(spans.begin(), spans.end(), [](const HostEvent* a, const HostEvent* b) {
    return a->begin_ns != b->begin_ns ? a->begin_ns < b->begin_ns : a->end_ns > b->end_ns;
  });
  std::vector<const HostEvent*> out;
  std::int64_t end = INT64_MIN;
  for (const HostEvent* s : spans)
    if (s->begin_ns >= end) out.push_back(s), end = s->end_ns;
  return out;
}

}  // namespace

ProfileReport build_report(const profile::Recorder::Data& d, const MachineCeilings& ceilings) {
  ProfileReport r;
  r.ceilings = ceilings;
  r.target = d.programs.empty() ? "cpu" : d.programs.front().target;
  for (const auto& p : d.programs) {
    if (std::find(r.cells.begin(), r.cells.end(), p.name) == r.cells.end()) r.cells.push_back(p.name);
    for (const auto& b : p.boundaries) r.boundaries.push_back(p.name + " " + b);
  }
  // Compile: the outermost compile events (the graph passes nest inside "optimize").
  {
    std::vector<const profile::CompileEvent*> events;
    for (const auto& e : d.compile) events.push_back(&e);
    std::sort(events.begin(), events.end(), [](auto* a, auto* b) {
      return a->begin_ns != b->begin_ns ? a->begin_ns < b->begin_ns : a->end_ns > b->end_ns;
    });
    std::int64_t end = INT64_MIN;
    for (auto* e : events)
      if (e->begin_ns >= end) r.compile_ms += static_cast<double>(e->end_ns - e->begin_ns) / 1e6, end = e->end_ns;
  }
  for (const auto& c : d.caches) (c.hit ? r.cache_hits : r.cache_misses) += 1;

  const auto outer = outermost_spans(d.host);
  double total_wall = 0, total_gemm = 0, total_pointwise = 0, total_gemm_flops = 0, total_pw_ideal = 0;
  std::map<std::pair<int, Phase>, CallReport> per_site;
  for (Phase phase : {Phase::Forward, Phase::Backward}) {
    PhaseReport p;
    p.phase = profile::phase_name(phase);
    int programs = 0;
    for (const auto& info : d.programs) {
      if (info.phase != phase) continue;
      ++programs;
      p.ops += info.ops;
      p.loop_kernels += info.kernels[1];
      p.loop_gemms += info.gemms[1];
      p.batch_kernels += info.kernels[0] + info.kernels[2];
      p.batch_gemms += info.gemms[0] + info.gemms[2];
    }
    double wall_ns = 0;
    for (const HostEvent* s : outer)
      if (s->phase == phase) wall_ns += static_cast<double>(s->end_ns - s->begin_ns);
    std::int64_t cell_steps = 0;
    std::set<int> runs;
    for (const HostEvent& e : d.host)
      if (e.site < 0 && e.phase == phase && e.steps > 0) cell_steps += e.steps, runs.insert(e.run);
    if (wall_ns == 0 && cell_steps == 0) continue;
    // Per time step of the model: a stack of L layers runs L cell steps per time step.
    p.steps = programs > 0 ? cell_steps / programs : cell_steps;
    p.runs = static_cast<int>(runs.size());
    const double steps = std::max<double>(1, static_cast<double>(p.steps));

    double gemm_ns = 0, pointwise_ns = 0, gemm_flops = 0, pw_bytes = 0, pw_ideal_ns = 0, flops = 0, bytes = 0, launches = 0;
    bool device_times = false;
    for (const auto& e : d.device) device_times = device_times || e.phase == phase;
    auto account = [&](int site, std::int64_t ns, bool count_launch) {
      const profile::CallSite& cs = d.sites[static_cast<std::size_t>(site)];
      CallReport& row = per_site[{site, phase}];
      if (row.calls == 0 && row.name.empty()) {
        row = {cs.name, cs.stage, profile::call_kind_name(cs.kind), p.phase, 0, 0, cs.flops, cs.bytes};
      }
      row.calls += count_launch ? 1 : 0;
      row.total_us += static_cast<double>(ns) / 1e3;
      if (cs.kind == CallKind::Gemm) {
        gemm_ns += static_cast<double>(ns), gemm_flops += cs.flops;
      } else {
        pointwise_ns += static_cast<double>(ns), pw_bytes += cs.bytes;
        const double ceiling = cs.bytes <= kCacheResidentBytes ? ceilings.gbytes_cache : ceilings.gbytes;
        if (ceiling > 0) pw_ideal_ns += cs.bytes / ceiling;  // bytes / (GB/s) = ns
      }
    };
    for (const HostEvent& e : d.host) {
      if (e.site < 0 || e.phase != phase) continue;
      const profile::CallSite& cs = d.sites[static_cast<std::size_t>(e.site)];
      launches += 1;
      flops += cs.flops;
      bytes += cs.bytes;
      if (device_times) {  // the host time of a launch is overhead; the device's is the work
        CallReport& row = per_site[{e.site, phase}];
        if (row.name.empty()) row = {cs.name, cs.stage, profile::call_kind_name(cs.kind), p.phase, 0, 0, cs.flops, cs.bytes};
        row.calls += 1;
      } else {
        account(e.site, e.end_ns - e.begin_ns, true);
      }
    }
    if (device_times)
      for (const auto& e : d.device)
        if (e.phase == phase) account(e.site, e.end_ns - e.begin_ns, false);
    p.launches_per_step = launches / steps;
    p.host_us_per_step = wall_ns / 1e3 / steps;
    p.gemm_us_per_step = gemm_ns / 1e3 / steps;
    p.pointwise_us_per_step = pointwise_ns / 1e3 / steps;
    p.device_us_per_step = p.gemm_us_per_step + p.pointwise_us_per_step;
    p.overhead_us_per_step = std::max(0.0, p.host_us_per_step - p.device_us_per_step);
    p.flops_per_step = flops / steps;
    p.bytes_per_step = bytes / steps;
    p.gemm_flops_per_step = gemm_flops / steps;
    p.pointwise_bytes_per_step = pw_bytes / steps;
    if (gemm_ns > 0 && ceilings.gflops > 0) p.gemm_peak_fraction = gemm_flops / gemm_ns / ceilings.gflops;
    if (pointwise_ns > 0) p.pointwise_bw_fraction = pw_ideal_ns / pointwise_ns;
    total_wall += std::max(wall_ns, gemm_ns + pointwise_ns);
    total_gemm += gemm_ns;
    total_pointwise += pointwise_ns;
    total_gemm_flops += gemm_flops;
    total_pw_ideal += pw_ideal_ns;
    r.phases.push_back(p);
  }
  for (auto& [key, row] : per_site) r.calls.push_back(row);
  std::sort(r.calls.begin(), r.calls.end(), [](const CallReport& a, const CallReport& b) { return a.total_us > b.total_us; });

  if (total_wall > 0) {
    const double host = std::max(0.0, total_wall - total_gemm - total_pointwise);
    std::string s = "GEMMs " + percent(total_gemm / total_wall);
    if (total_gemm > 0 && ceilings.gflops > 0) s += " at " + percent(total_gemm_flops / total_gemm / ceilings.gflops) + " of peak";
    s += "; pointwise " + percent(total_pointwise / total_wall);
    if (total_pointwise > 0 && total_pw_ideal > 0) s += " at " + percent(total_pw_ideal / total_pointwise) + " of bandwidth";
    s += "; host " + percent(host / total_wall);
    r.summary = s;
  } else {
    r.summary = "nothing ran while the profiler was on";
  }
  return r;
}

std::string ProfileReport::text() const {
  std::string out = "cellfuse profile: ";
  for (std::size_t i = 0; i < cells.size(); ++i) out += (i ? ", " : "") + cells[i];
  out += " on " + target + "\n";
  auto row = [&](const std::string& label, auto value) {
    std::string line = label;
    line.resize(std::max<std::size_t>(line.size(), 34), ' ');
    for (const PhaseReport& p : phases) {
      std::string v = value(p);
      line += std::string(v.size() < 14 ? 14 - v.size() : 1, ' ') + v;
    }
    out += line + "\n";
  };
  row("", [](const PhaseReport& p) { return p.phase; });
  row("ops in the cell (after passes)", [](const PhaseReport& p) { return std::to_string(p.ops); });
  row("kernels per step (after fusion)", [](const PhaseReport& p) { return std::to_string(p.loop_kernels); });
  row("GEMMs per step (after fusion)", [](const PhaseReport& p) { return std::to_string(p.loop_gemms); });
  row("kernels + GEMMs per sequence", [](const PhaseReport& p) {
    return std::to_string(p.batch_kernels) + " + " + std::to_string(p.batch_gemms);
  });
  row("launches per step (measured)", [](const PhaseReport& p) { return fmt("%.2f", p.launches_per_step); });
  row("host us per step", [](const PhaseReport& p) { return fmt("%.2f", p.host_us_per_step); });
  row(target == "cuda" ? "device us per step (CUDA events)" : "us per step in GEMMs + kernels",
      [](const PhaseReport& p) { return fmt("%.2f", p.device_us_per_step); });
  row("  GEMM us per step", [](const PhaseReport& p) { return fmt("%.2f", p.gemm_us_per_step); });
  row("  pointwise us per step", [](const PhaseReport& p) { return fmt("%.2f", p.pointwise_us_per_step); });
  row("  host overhead us per step", [](const PhaseReport& p) { return fmt("%.2f", p.overhead_us_per_step); });
  row("FLOPs per step", [](const PhaseReport& p) { return si(p.flops_per_step); });
  row("bytes per step", [](const PhaseReport& p) { return si(p.bytes_per_step) + "B"; });
  row("GEMMs: fraction of peak FLOP/s", [](const PhaseReport& p) { return percent(p.gemm_peak_fraction); });
  row("pointwise: fraction of bandwidth", [](const PhaseReport& p) { return percent(p.pointwise_bw_fraction); });
  row("steps profiled (runs)", [](const PhaseReport& p) {
    return std::to_string(p.steps) + " (" + std::to_string(p.runs) + ")";
  });
  out += "compile: " + fmt("%.1f", compile_ms) + " ms; cache: " + std::to_string(cache_hits) + " hit(s), " +
         std::to_string(cache_misses) + " miss(es)\n";
  out += "machine: " + ceilings.device + ": " + fmt("%.1f", ceilings.gflops) + " GFLOP/s, " + fmt("%.1f", ceilings.gbytes) +
         " GB/s memory, " + fmt("%.1f", ceilings.gbytes_cache) + " GB/s in cache (measured" +
         (ceilings.cache_file.empty() ? "" : ", kept in " + ceilings.cache_file) + ")\n";
  if (!boundaries.empty()) {
    out += "fusion boundaries:\n";
    for (const auto& b : boundaries) out += "  " + b + "\n";
  }
  if (!calls.empty()) {
    out += "GEMMs and kernels (longest first):\n";
    char buf[512];
    std::snprintf(buf, sizeof buf, "  %-40s %-8s %-7s %8s %10s %10s %9s %9s\n", "name", "phase", "kind", "calls", "us/call",
                  "total ms", "GFLOP/s", "GB/s");
    out += buf;
    for (const CallReport& c : calls) {
      const double per = c.calls ? c.total_us / static_cast<double>(c.calls) : 0;
      const double secs = c.total_us / 1e6;
      const double gf = secs > 0 ? c.flops * static_cast<double>(c.calls) / secs / 1e9 : 0;
      const double gb = secs > 0 ? c.bytes * static_cast<double>(c.calls) / secs / 1e9 : 0;
      std::string name = c.name.size() > 40 ? c.name.substr(0, 37) + "..." : c.name;
      std::snprintf(buf, sizeof buf, "  %-40s %-8s %-7s %8lld %10.2f %10.3f %9.1f %9.1f\n", name.c_str(), c.phase.c_str(),
                    c.kind.c_str(), static_cast<long long>(c.calls), per, c.total_us / 1e3, gf, gb);
      out += buf;
    }
  }
  out += "summary: " + summary + "\n";
  return out;
}

std::string ProfileReport::json() const {
  using profile::json_number;
  using profile::json_string;
  std::string out = "{\n  \"target\": " + json_string(target) + ",\n  \"cells\": [";
  for (std::size_t i = 0; i < cells.size(); ++i) out += (i ? ", " : "") + json_string(cells[i]);
  out += "],\n  \"phases\": [";
  for (std::size_t i = 0; i < phases.size(); ++i) {
    const PhaseReport& p = phases[i];
    out += std::string(i ? "," : "") + "\n    {\"phase\": " + json_string(p.phase) +
           ", \"steps\": " + std::to_string(p.steps) + ", \"runs\": " + std::to_string(p.runs) +
           ", \"ops\": " + std::to_string(p.ops) + ", \"kernels_per_step\": " + std::to_string(p.loop_kernels) +
           ", \"gemms_per_step\": " + std::to_string(p.loop_gemms) +
           ", \"kernels_per_sequence\": " + std::to_string(p.batch_kernels) +
           ", \"gemms_per_sequence\": " + std::to_string(p.batch_gemms) +
           ", \"launches_per_step\": " + json_number(p.launches_per_step) +
           ", \"host_us_per_step\": " + json_number(p.host_us_per_step) +
           ", \"device_us_per_step\": " + json_number(p.device_us_per_step) +
           ", \"gemm_us_per_step\": " + json_number(p.gemm_us_per_step) +
           ", \"pointwise_us_per_step\": " + json_number(p.pointwise_us_per_step) +
           ", \"overhead_us_per_step\": " + json_number(p.overhead_us_per_step) +
           ", \"flops_per_step\": " + json_number(p.flops_per_step) + ", \"bytes_per_step\": " + json_number(p.bytes_per_step) +
           ", \"gemm_peak_fraction\": " + json_number(p.gemm_peak_fraction) +
           ", \"pointwise_bandwidth_fraction\": " + json_number(p.pointwise_bw_fraction) + "}";
  }
  out += "\n  ],\n  \"calls\": [";
  for (std::size_t i = 0; i < calls.size(); ++i) {
    const CallReport& c = calls[i];
    out += std::string(i ? "," : "") + "\n    {\"name\": " + json_string(c.name) + ", \"stage\": " + json_string(c.stage) +
           ", \"kind\": " + json_string(c.kind) + ", \"phase\": " + json_string(c.phase) +
           ", \"calls\": " + std::to_string(c.calls) + ", \"total_us\": " + json_number(c.total_us) +
           ", \"flops_per_call\": " + json_number(c.flops) + ", \"bytes_per_call\": " + json_number(c.bytes) + "}";
  }
  out += "\n  ],\n  \"compile_ms\": " + json_number(compile_ms) + ",\n  \"cache_hits\": " + std::to_string(cache_hits) +
         ",\n  \"cache_misses\": " + std::to_string(cache_misses) + ",\n  \"fusion_boundaries\": [";
  for (std::size_t i = 0; i < boundaries.size(); ++i) out += std::string(i ? ", " : "") + json_string(boundaries[i]);
  out += "],\n  \"machine\": {\"device\": " + json_string(ceilings.device) + ", \"gflops\": " + json_number(ceilings.gflops) +
         ", \"gbytes_per_s\": " + json_number(ceilings.gbytes) +
         ", \"cache_gbytes_per_s\": " + json_number(ceilings.gbytes_cache) + ", \"cache_file\": " + json_string(ceilings.cache_file) +
         "},\n  \"summary\": " + json_string(summary) + "\n}\n";
  return out;
}

}  // namespace cellfuse
