// The CUDA backend's forward pass on a real GPU against the f64 reference interpreter: every
// standard cell at odd sizes, f32 (<= 1e-5 relative) and f64 (<= 1e-12), B = 1, 3, 64,
// T = 1, 2, 37, through fused small products and through cuBLAS, launched directly and replayed
// from a CUDA graph; random cells; the device-pointer API on a stream of the caller's; NaN
// propagation; the disk cache; a few timings. Prints one line a check and a summary; exits 0
// only when everything passed. Run it with tests/gpu/run_gpu_tests.sh.
//
// Without a GPU it stops at once: "gpu_forward: no CUDA driver: ...", exit status 2.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "../cpp/cell_conversion.h"
#include "../cpp/cuda_device_args.h"
#include "../cpp/storage_rounding.h"
#include "../cpp/random_cells.h"
#include "compiler/ir/error.h"
#include "frontend/builder.h"
#include "frontend/cells.h"
#include "runtime/cuda/cuda_cell.h"
#include "runtime/cuda/driver.h"
#include "runtime/cuda/kernel_cache.h"
#include "runtime/cuda/nvrtc.h"
#include "runtime/random_args.h"
#include "runtime/reference/interpreter.h"

namespace cellfuse {
namespace {

int g_passed = 0, g_failed = 0;
std::vector<std::string> g_failures;

void report(bool ok, const std::string& what, const std::string& detail) {
  (ok ? g_passed : g_failed)++;
  if (!ok) g_failures.push_back(what + ": " + detail);
  std::printf("%s  %-64s %s\n", ok ? "ok  " : "FAIL", what.c_str(), detail.c_str());
  std::fflush(stdout);
}

using testing_support::as_f64;
using testing_support::convert;
using testing_support::DeviceScratch;
using testing_support::device_sequence_args;
using testing_support::download;
using testing_support::fuse_name;
using testing_support::same_bits;

// Worst relative error ||got - want|| / ||want|| over every output and final state; -1 when a
// shape differs or NaNs are not where the reference has them.
template <class T>
double relative_error(const SequenceResult<T>& got, const SequenceResult<double>& want, std::string& why) {
  double worst = 0;
  auto one = [&](const HostTensor<T>& g, const HostTensor<double>& w, const std::string& name) {
    if (g.shape != w.shape || g.data.size() != w.data.size()) {
      why = name + ": shape " + shape_string(g.shape) + " vs " + shape_string(w.shape);
      return false;
    }
    double diff = 0, norm = 0;
    for (std::size_t i = 0; i < w.data.size(); ++i) {
      const double gv = static_cast<double>(g.data[i]), wv = w.data[i];
      if (std::isnan(gv) != std::isnan(wv)) {
        why = name + " element " + std::to_string(i) + ": " + std::to_string(gv) + " vs " + std::to_string(wv);
        return false;
      }
      if (std::isnan(wv) || std::isinf(wv)) continue;
      diff += (gv - wv) * (gv - wv);
      norm += wv * wv;
    }
    worst = std::max(worst, std::sqrt(diff) / std::max(std::sqrt(norm), 1e-30));
    return true;
  };
  if (got.outputs.size() != want.outputs.size() || got.final_states.size() != want.final_states.size()) {
    why = "wrong number of results";
    return -1;
  }
  for (std::size_t o = 0; o < want.outputs.size(); ++o)
    if (!one(got.outputs[o], want.outputs[o], "output " + std::to_string(o))) return -1;
  for (std::size_t s = 0; s < want.final_states.size(); ++s)
    if (!one(got.final_states[s], want.final_states[s], "state " + std::to_string(s))) return -1;
  return worst;
}

// Runs `cell` three times (a direct launch, a graph capture, a graph replay) and checks each
// against the interpreter, and that the three agree bit for bit.
template <class T>
void check_runs(const Cell& cell, std::int64_t steps, std::int64_t batch, std::uint64_t seed, const CudaOptions& options,
                const std::string& what) {
  // 16-bit storage: the oracle runs on the rounded arguments; the outputs are rounded too.
  const bool stored = options.storage != Storage::Native;
  const double tolerance = stored ? 1e-2 : std::is_same_v<T, float> ? 1e-5 : 1e-12;
  try {
    auto compiled = compile_cuda(cell, batch, options);
    auto args = random_sequence_args<T>(cell, steps, batch, seed);
    if constexpr (std::is_same_v<T, float>)
      if (stored) args = testing_support::rounded(args, options.storage);
    SequenceResult<double> want;
    if constexpr (std::is_same_v<T, float>) want = interpret_sequence(as_f64(cell), convert<float, double>(args));
    else want = interpret_sequence(cell, args);
    std::vector<SequenceResult<T>> runs;
    double worst = 0;
    std::string why;
    for (int r = 0; r < 3; ++r) {
      runs.push_back(compiled->run(args));
      double e = relative_error(runs.back(), want, why);
      if (e < 0) {
        report(false, what, "run " + std::to_string(r) + ": " + why);
        return;
      }
      worst = std::max(worst, e);
    }
    const bool agree = same_bits(runs[0], runs[1]) && same_bits(runs[1], runs[2]);
    const bool no_graph = compiled->graphs() && compiled->loop_plan() == LoopStrategy::Graph && steps > 0 && compiled->graph_captures() == 0;
    const bool not_persistent = (options.loop == LoopStrategy::Persistent || options.loop == LoopStrategy::Resident) &&
                                compiled->loop_plan() != options.loop;
    char detail[400];
    std::snprintf(detail, sizeof detail, "rel err %.2e (tol %.0e)%s%s%s%s", worst, tolerance,
                  agree ? "" : ", graph replay differs from direct launch", no_graph ? ", no graph captured" : "",
                  not_persistent ? ", not the plan asked for: " : "", not_persistent ? compiled->loop_strategy_reason().c_str() : "");
    report(worst <= tolerance && agree && !no_graph && !not_persistent, what, detail);
  } catch (const std::exception& e) {
    report(false, what, std::string("threw: ") + e.what());
  }
}

void standard_cells() {
  struct Case {
    const char* name;
    std::int64_t input, hidden;
  };
  const Case cases[] = {{"elman", 5, 1},  {"elman", 3, 33},  {"elman_proj", 5, 7}, {"lstm", 1, 1},
                        {"lstm", 5, 7},   {"lstm", 33, 33},  {"gru", 7, 1},        {"gru", 4, 33},
                        {"lnlstm", 5, 7}, {"lnlstm", 33, 1}, {"peephole", 3, 7},   {"peephole", 7, 33}};
  for (const Case& c : cases)
    for (DType dtype : {DType::f32, DType::f64}) {
      const std::string spec = std::string(c.name) + ":" + std::to_string(c.input) + "," + std::to_string(c.hidden);
      Cell cell = cells::by_spec(spec, dtype);
      for (std::int64_t batch : {1, 3, 8, 64}) {
        // The graph path with products fused and through cuBLAS (B = 1, 3), the persistent loop
        // kernel forced (B = 1, 3, 8), Auto at B = 64.
        std::vector<std::pair<cuda_codegen::FuseProducts, LoopStrategy>> modes = {{cuda_codegen::FuseProducts::Auto, LoopStrategy::Auto}};
        if (batch <= TargetOptions{}.fusion_limit) {
          modes = {{cuda_codegen::FuseProducts::Auto, LoopStrategy::Persistent}};
          if (batch != 8)
            modes.insert(modes.begin(), {{cuda_codegen::FuseProducts::Always, LoopStrategy::Graph},
                                         {cuda_codegen::FuseProducts::Never, LoopStrategy::Graph}});
        }
        for (auto [mode, loop] : modes)
          for (std::int64_t steps : {1, 2, 37}) {
            CudaOptions options;
            options.program.fuse = mode;
            options.loop = loop;
            const std::string what = spec + " " + std::string(dtype_name(dtype)) + " B=" + std::to_string(batch) +
                                     " T=" + std::to_string(steps) + " " +
                                     (loop == LoopStrategy::Persistent ? "persistent" : fuse_name(mode));
            const auto seed = 7 * static_cast<std::uint64_t>(batch + steps);
            if (dtype == DType::f32) check_runs<float>(cell, steps, batch, seed, options, what);
            else check_runs<double>(cell, steps, batch, seed, options, what);
          }
      }
    }
}

// The block-resident loop kernel (one block, weights in shared memory) forced on every standard
// cell at B = 1, 3, 64 and T = 1, 2, 37, on the workload shapes it fits (W1's recurrence) and a
// few more; then Auto, which times the plans on the first run, on the same shapes.
void resident_cells() {
  const char* specs[] = {"elman:5,1", "elman:3,33", "elman_proj:5,7,3", "lstm:1,1", "lstm:5,7", "lstm:33,33", "gru:7,1",
                         "gru:4,33", "lnlstm:5,7", "lnlstm:33,1", "peephole:3,7", "peephole:7,33"};
  for (const char* spec : specs)
    for (DType dtype : {DType::f32, DType::f64})
      for (std::int64_t batch : {1, 3, 64})
        for (std::int64_t steps : {1, 2, 37}) {
          CudaOptions options;
          options.loop = LoopStrategy::Resident;
          const std::string what = std::string(spec) + " " + std::string(dtype_name(dtype)) + " B=" + std::to_string(batch) +
                                   " T=" + std::to_string(steps) + " resident";
          const auto seed = 17 * static_cast<std::uint64_t>(batch + steps);
          if (dtype == DType::f32) check_runs<float>(cells::by_spec(spec, dtype), steps, batch, seed, options, what);
          else check_runs<double>(cells::by_spec(spec, dtype), steps, batch, seed, options, what);
        }
  struct Shape {
    const char* spec;
    std::int64_t batch, steps;
  };
  const Shape shapes[] = {{"elman_proj:256,128,128", 2, 300}, {"elman:128,128", 1, 300}, {"gru:64,64", 16, 100},
                          {"lstm:64,64", 4, 100},            {"lnlstm:64,64", 8, 50},   {"gru:128,128", 2, 100}};
  for (const Shape& s : shapes)
    for (LoopStrategy loop : {LoopStrategy::Resident, LoopStrategy::Auto}) {
      CudaOptions options;
      options.loop = loop;
      const std::string what = std::string(s.spec) + " f32 B=" + std::to_string(s.batch) + " T=" + std::to_string(s.steps) + " " +
                               loop_strategy_name(loop);
      check_runs<float>(cells::by_spec(s.spec), s.steps, s.batch, 23, options, what);
    }
  for (Storage storage : {Storage::BF16, Storage::F16}) {
    CudaOptions options;
    options.loop = LoopStrategy::Resident;
    options.storage = storage;
    check_runs<float>(cells::by_spec("gru:33,64"), 37, 3, 29, options, "gru:33,64 " + std::string(storage_name(storage)) + " B=3 T=37 resident");
  }
}

// Every standard cell with bf16 and f16 tensors (f32 math inside): within 1e-2 of the f64
// reference on the same rounded arguments, on the graph path and the persistent kernel.
void storage_cells() {
  testing_support::for_each_storage_case(
      [](const char* spec, Storage storage, std::int64_t batch, std::int64_t steps, const std::string& name) {
        CudaOptions options;
        options.storage = storage;
        if (batch == 3) options.loop = LoopStrategy::Persistent;
        check_runs<float>(cells::by_spec(spec), steps, batch, 5 + static_cast<std::uint64_t>(batch * steps), options,
                          name + (batch == 3 ? " persistent" : ""));
      });
}

void wide_cells() {
  CudaOptions fused, cublas;
  fused.program.fuse = cuda_codegen::FuseProducts::Always;
  cublas.program.fuse = cuda_codegen::FuseProducts::Never;
  for (std::int64_t batch : {1, 3, 64}) {
    check_runs<float>(cells::lstm(13, 1000), 2, batch, 11, {}, "lstm:13,1000 f32 B=" + std::to_string(batch) + " T=2 auto");
    if (batch <= 8) check_runs<float>(cells::lstm(13, 1000), 2, batch, 11, fused, "lstm:13,1000 f32 B=" + std::to_string(batch) + " T=2 fused");
  }
  check_runs<float>(cells::elman_proj(9, 1000, 17), 3, 2, 5, cublas, "elman_proj:9,1000,17 f32 B=2 T=3 cublas");
  check_runs<float>(cells::lnlstm(8, 1000), 2, 3, 5, {}, "lnlstm:8,1000 f32 B=3 T=2 auto");
  check_runs<float>(cells::lnlstm(8, 1000), 2, 3, 5, fused, "lnlstm:8,1000 f32 B=3 T=2 fused");
  check_runs<float>(cells::lnlstm(8, 4000), 2, 3, 5, fused, "lnlstm:8,4000 f32 B=3 T=2 fused (global scratch)");
  check_runs<float>(cells::gru(33, 200), 7, 130, 3, {}, "gru:33,200 f32 B=130 T=7 auto");
  CudaOptions no_graphs;
  no_graphs.graphs = false;
  check_runs<float>(cells::lstm(33, 65), 37, 5, 9, no_graphs, "lstm:33,65 f32 B=5 T=37 no graphs");
  // The persistent loop kernel at the widths that matter (weights spread over many blocks).
  CudaOptions persistent;
  persistent.loop = LoopStrategy::Persistent;
  for (std::int64_t batch : {1, 8}) {
    const std::string b = " f32 B=" + std::to_string(batch) + " T=20 persistent";
    check_runs<float>(cells::lstm(256, 256), 20, batch, 3, persistent, "lstm:256,256" + b);
    check_runs<float>(cells::lstm(64, 1024), 20, batch, 3, persistent, "lstm:64,1024" + b);
    check_runs<float>(cells::gru(64, 1024), 20, batch, 3, persistent, "gru:64,1024" + b);
    check_runs<float>(cells::elman(64, 1024), 20, batch, 3, persistent, "elman:64,1024" + b);
    check_runs<float>(cells::lnlstm(64, 512), 20, batch, 3, persistent, "lnlstm:64,512" + b);
  }
}

void random_cells() {
  for (std::uint64_t seed = 1; seed <= 40; ++seed)
    for (DType dtype : {DType::f32, DType::f64}) {
      Cell cell = testing_support::random_cell(seed, dtype, 12);
      const std::int64_t batch = seed % 3 == 0 ? 1 : seed % 3 == 1 ? 3 : 17;
      const std::string what = "random seed " + std::to_string(seed) + " " + std::string(dtype_name(dtype)) + " B=" +
                               std::to_string(batch) + " T=5";
      if (dtype == DType::f32) check_runs<float>(cell, 5, batch, seed, {}, what);
      else check_runs<double>(cell, 5, batch, seed, {}, what);
    }
}

// NaN in, NaN out, where pointwise_math.h says so: min/max/relu/where/sigmoid/softplus/erf.
void nan_propagation() {
  CellBuilder b("nan_ops");
  Val x = b.input("x", 6);
  Val h = b.state("h", 6);
  Val y = minimum(x, h) + maximum(h, x) + relu(x) + where(x, h, x) + sigmoid(x) + softplus(x) + erf(x);
  b.next(h, tanh(y) * 0.5);
  b.output("y", y);
  Cell cell = std::move(b).finish();
  try {
    auto compiled = compile_cuda(cell, 2);
    auto args = random_sequence_args<float>(cell, 3, 2, 1);
    args.inputs[0].data[1] = std::nanf("");
    args.inputs[0].data[8] = -std::numeric_limits<float>::infinity();
    args.inputs[0].data[9] = -200.0f;  // sigmoid, softplus and erf far out
    args.inputs[0].data[10] = 200.0f;
    auto want = interpret_sequence(as_f64(cell), convert<float, double>(args));
    std::string why;
    double e = relative_error(compiled->run(args), want, why);
    report(e >= 0 && e <= 1e-5, "NaN and infinities follow pointwise_math.h", e < 0 ? why : "rel err " + std::to_string(e));
  } catch (const std::exception& e) {
    report(false, "NaN and infinities follow pointwise_math.h", std::string("threw: ") + e.what());
  }
}

// run_device on the caller's stream gives the host API's results bit for bit.
void device_pointers() {
  const std::string what = "run_device on a caller's stream == run";
  try {
    Cell cell = cells::lstm(9, 21);
    const std::int64_t B = 4, T = 6;
    auto compiled = compile_cuda(cell, B);
    auto args = random_sequence_args<float>(cell, T, B, 5);
    auto host = compiled->run(args);
    cuda::make_current(cuda::device(0));
    DeviceScratch scratch;
    DeviceSequenceArgs dev = device_sequence_args(scratch, args, host, T);
    for (int r = 0; r < 3; ++r) {  // direct, capture, replay
      compiled->run_device(dev, scratch.stream());
      if (!same_bits(download(scratch, dev, host), host)) {
        report(false, what, "run " + std::to_string(r) + " differs");
        return;
      }
    }
    report(true, what, "3 runs, same bits");
  } catch (const std::exception& e) {
    report(false, what, std::string("threw: ") + e.what());
  }
}

void errors() {
  const std::string what = "wrong argument shapes give an Error";
  try {
    auto compiled = compile_cuda(cells::lstm(5, 7), 3);
    auto args = random_sequence_args<float>(cells::lstm(5, 7), 4, 2, 1);
    compiled->run(args);
    report(false, what, "no error");
  } catch (const Error& e) {
    report(std::string(e.what()).find("[4,3,5]") != std::string::npos, what, e.what());
  }
}

template <class F>
double median_ms(F&& f, int reps) {
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    auto start = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Timings for information (host API: they include the copies in and out), not checks.
void timings() {
  std::printf("\n-- timings (host API, copies included; median of 5) on %s\n", cuda::device(0).name.c_str());
  struct Shape {
    const char* spec;
    std::int64_t steps, batch;
  };
  for (Shape s : {Shape{"lstm:512,512", 100, 64}, Shape{"lnlstm:512,512", 100, 64}, Shape{"lstm:256,256", 1000, 1},
                  Shape{"elman_proj:256,128,128", 4096, 2}}) {
    Cell cell = cells::by_spec(s.spec);
    auto args = random_sequence_args<float>(cell, s.steps, s.batch, 1);
    for (bool graphs : {false, true}) {
      CudaOptions options;
      options.graphs = graphs;
      auto start = std::chrono::steady_clock::now();
      auto compiled = compile_cuda(cell, s.batch, options);
      double build = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
      compiled->run(args);
      compiled->run(args);
      double ms = median_ms([&] { compiled->run(args); }, 5);
      std::printf("   %-24s T=%-5lld B=%-3lld graphs=%-3s compile %8.1f ms%s  run %9.3f ms\n", s.spec,
                  static_cast<long long>(s.steps), static_cast<long long>(s.batch), graphs ? "on" : "off", build,
                  compiled->cubin_from_cache() ? " (cached)" : "         ", ms);
    }
  }
}

void cache() {
  const std::string what = "a second compilation of a cell hits the disk cache";
  try {
    const auto before = cuda::nvrtc_compile_count();
    CudaOptions options;
    options.program.emit.max_threads = 128;  // a source no earlier check compiled
    auto first = std::make_shared<CudaCell>(cells::lstm(77, 39), 5, options);
    auto second = std::make_shared<CudaCell>(cells::lstm(77, 39), 5, options);
    char detail[160];
    std::snprintf(detail, sizeof detail, "first %.1f ms (%s), second %.1f ms (%s), dir %s", first->compile_ms(),
                  first->cubin_from_cache() ? "cache" : "NVRTC", second->compile_ms(), second->cubin_from_cache() ? "cache" : "NVRTC",
                  cuda::default_kernel_cache().directory().c_str());
    const bool enabled = cuda::default_kernel_cache().enabled();
    report(!enabled || (second->cubin_from_cache() && cuda::nvrtc_compile_count() <= before + 1), what, detail);
  } catch (const std::exception& e) {
    report(false, what, std::string("threw: ") + e.what());
  }
}

}  // namespace
}  // namespace cellfuse

int main(int argc, char** argv) {
  using namespace cellfuse;
  std::string why;
  if (!cuda::cuda_available(&why)) {
    std::fprintf(stderr, "gpu_forward: %s\n", why.c_str());
    return 2;
  }
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  // --plans: only the loop plans' checks (the resident kernel forced, Auto's timing).
  const bool plans_only = argc > 1 && std::strcmp(argv[1], "--plans") == 0;
  int driver_version = 0;
  cuda::check(cuda::driver().driver_get_version(&driver_version), "cuDriverGetVersion");
  const cuda::Device& dev = cuda::device(0);
  std::printf("device: %s, compute capability %d.%d, %d SMs; driver API %d; NVRTC %s (compiling for %s)\n", dev.name.c_str(),
              dev.major, dev.minor, dev.multiprocessors, driver_version, cuda::nvrtc_version().c_str(),
              cuda::architecture_for(dev.major, dev.minor).c_str());
  std::printf("kernel cache: %s (%s)\n\n", cuda::default_kernel_cache().directory().c_str(),
              cuda::default_kernel_cache().enabled() ? "on" : "off");
  auto start = std::chrono::steady_clock::now();
  if (plans_only) {
    resident_cells();
  } else {
    errors();
    nan_propagation();
    device_pointers();
    cache();
    standard_cells();
    storage_cells();
    resident_cells();
  }
  if (!quick && !plans_only) {
    wide_cells();
    random_cells();
    timings();
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("\n==================== gpu_forward summary (%.1f s) ====================\n", seconds);
  std::printf("%d passed, %d failed on %s\n", g_passed, g_failed, dev.name.c_str());
  for (const auto& f : g_failures) std::printf("  FAILED: %s\n", f.c_str());
  return g_failed == 0 ? 0 : 1;
}
