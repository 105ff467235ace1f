// GPU timings of the CUDA backend on the benchmark workloads (bench/workloads.h), for
// bench/compare_gpu.py to set beside PyTorch's: forward (CudaCell::run_device) and forward +
// backward (CudaBptt::forward_device + backward_device, every gradient), on device memory of
// random values, timed with CUDA events on a stream of our own: warm-up first (a direct run, a
// graph capture, a replay, two more), then the median of --runs timed runs. Also the compile
// times of an LSTM's forward+backward kernels: first (NVRTC, an empty disk cache) and a cache hit.
//
//   bench_gpu [--runs N] [--only W1,W2] [--add ID=SPEC@TxB] [--fuse auto|always|never]
//             [--strategy auto|persistent|graph|resident] [--storage native|bf16|f16] [--json]
//   bench_gpu --sweep [--runs N] [--sweep-kinds lstm,gru,elman] [--sweep-h 64,...,1024]
//             [--sweep-b 1,...,64] [--sweep-modes forward,train] [--sweep-steps T] [--sweep-grid]
//
// --fuse overrides how small products of the loop stage run (cuda_program.h's FuseProducts), to
// measure the rule Auto follows. --strategy overrides how the loop stage runs (CudaOptions::loop:
// one persistent cooperative kernel, one block-resident kernel, or CUDA graphs of its steps; also
// sets CELLFUSE_CUDA_LOOP). --storage bf16|f16 gives the cells 16-bit tensors
// (CudaOptions::storage; the tape stays f32). --sweep times LSTM/GRU/Elman cells over H x B,
// forward and forward+backward, with the automatic plan (timed by the runtime) against each plan
// forced; --sweep-grid adds the persistent kernel's grid on W5 (bench/results/gpu_persistent.md).
//
// A plain program (no Google Benchmark): the GPU machine need not have it. Prints a table, or
// with --json one JSON object.
#include <dlfcn.h>
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "bench/workloads.h"
#include "compiler/ir/error.h"
#include "runtime/cuda/cuda_bptt.h"
#include "runtime/cuda/cuda_cell.h"
#include "runtime/cuda/driver.h"
#include "runtime/random_args.h"

namespace cellfuse {
namespace {

// cuEventElapsedTime from the driver the runtime loaded (not in driver.h's table: only timing
// code needs it, and its name changed in CUDA 12.8).
using ElapsedFn = CUresult (*)(float*, CUevent, CUevent);
ElapsedFn elapsed_fn() {
  static ElapsedFn fn = [] {
    const char* path = std::getenv("CELLFUSE_CUDA_DRIVER");
    void* lib = ::dlopen(path && *path ? path : "libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
    if (!lib) throw Error("bench_gpu: the CUDA driver is not loaded");
    void* p = ::dlsym(lib, "cuEventElapsedTime_v2");
    if (!p) p = ::dlsym(lib, "cuEventElapsedTime");
    if (!p) throw Error("bench_gpu: the driver has no cuEventElapsedTime");
    return reinterpret_cast<ElapsedFn>(p);
  }();
  return fn;
}

class Timer {
 public:
  explicit Timer(CUstream stream) : stream_(stream) {
    const cuda::Driver& d = cuda::driver();
    cuda::check(d.event_create(&start_, CU_EVENT_DEFAULT), "cuEventCreate");
    cuda::check(d.event_create(&stop_, CU_EVENT_DEFAULT), "cuEventCreate");
  }
  ~Timer() {
    (void)cuda::driver().event_destroy(start_);
    (void)cuda::driver().event_destroy(stop_);
  }
  // Median ms of `runs` timed calls of `work` (enqueued on the stream), after `warmup` untimed.
  double median_ms(const std::function<void()>& work, int warmup, int runs) {
    const cuda::Driver& d = cuda::driver();
    for (int i = 0; i < warmup; ++i) work();
    cuda::check(d.stream_synchronize(stream_), "cuStreamSynchronize");
    std::vector<double> t;
    for (int i = 0; i < runs; ++i) {
      cuda::check(d.event_record(start_, stream_), "cuEventRecord");
      work();
      cuda::check(d.event_record(stop_, stream_), "cuEventRecord");
      cuda::check(d.event_synchronize(stop_), "cuEventSynchronize");
      float ms = 0;
      cuda::check(elapsed_fn()(&ms, start_, stop_), "cuEventElapsedTime");
      t.push_back(ms);
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  }

 private:
  CUstream stream_;
  CUevent start_ = nullptr, stop_ = nullptr;
};

// Device buffers of random values (uniform in [-1, 1): never zeros), freed at the end.
// Device tensors of random values, in the storage the options ask for (--storage: 16-bit
// elements; the tape is always f32).
class Buffers {
 public:
  Buffers(CUstream stream, Storage storage) : stream_(stream), storage_(storage) {}
  DevicePointer random(std::int64_t elements, std::uint64_t seed) {
    std::vector<float> host(static_cast<std::size_t>(elements));
    std::uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (float& v : host) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      v = static_cast<float>(static_cast<double>(x >> 11) / 9007199254740992.0 * 2 - 1);
    }
    std::vector<std::uint16_t> bits;
    const void* data = host.data();
    if (storage_ != Storage::Native) {
      for (float v : host) bits.push_back(to_storage_bits(v, storage_));
      data = bits.data();
    }
    const std::size_t bytes = host.size() * element_size(false);
    memory_.emplace_back(bytes);
    cuda::check(cuda::driver().memcpy_htod_async(memory_.back().get(), data, bytes, stream_), "cuMemcpyHtoDAsync");
    cuda::check(cuda::driver().stream_synchronize(stream_), "cuStreamSynchronize");
    return memory_.back().get();
  }
  DevicePointer empty(std::int64_t elements, bool f32 = false) {
    memory_.emplace_back(static_cast<std::size_t>(elements) * element_size(f32));
    return memory_.back().get();
  }

 private:
  std::size_t element_size(bool f32) const { return f32 || storage_ == Storage::Native ? sizeof(float) : 2; }
  CUstream stream_;
  Storage storage_;
  std::vector<cuda::DeviceMemory> memory_;
};

struct Result {
  std::string id, spec, mode;
  std::int64_t steps, batch;
  double ms, compile_ms;
};

std::int64_t features(const Cell& c, ValueId v) { return c.graph.node(v).shape.features(); }

CudaOptions g_options;  // --fuse, --strategy, --storage

std::optional<LoopStrategy> strategy_named(const std::string& name) {
  for (LoopStrategy s : {LoopStrategy::Auto, LoopStrategy::Persistent, LoopStrategy::Graph, LoopStrategy::Resident})
    if (name == loop_strategy_name(s)) return s;
  return std::nullopt;
}

// A forward's device arguments for `cell` over (T, B), random inputs, states and parameters in
// `buf`. Parameters scaled like nn.Linear's init would not change the time; uniform [-1, 1) keeps
// every value away from zero.
DeviceSequenceArgs forward_args(const Cell& cell, std::int64_t T, std::int64_t B, Buffers& buf) {
  DeviceSequenceArgs a;
  a.steps = T;
  std::uint64_t seed = 1;
  for (ValueId x : cell.inputs) a.inputs.push_back(buf.random(T * B * features(cell, x), seed++));
  for (ValueId s : cell.states) a.states.push_back(buf.random(B * features(cell, s), seed++));
  for (ValueId p : cell.params) a.params.push_back(buf.random(cell.graph.node(p).shape.elements(B), seed++));
  for (const auto& o : cell.outputs) a.outputs.push_back(buf.empty(T * B * features(cell, o.value)));
  for (ValueId s : cell.states) a.final_states.push_back(buf.empty(B * features(cell, s)));
  return a;
}

Result time_forward(const bench::Workload& w, CUstream stream, int runs) {
  Cell cell = cells::by_spec(w.cell);
  const std::int64_t T = w.steps, B = w.batch;
  auto compiled = compile_cuda(cell, B, g_options);
  Buffers buf(stream, g_options.storage);
  DeviceSequenceArgs a = forward_args(cell, T, B, buf);
  Timer timer(stream);
  double ms = timer.median_ms([&] { compiled->run_device(a, stream); }, 5, runs);
  return {w.id, w.cell, "forward", T, B, ms, compiled->compile_ms()};
}

double time_train_cell(const CudaBptt& compiled, const Cell& cell, std::int64_t T, std::int64_t B, CUstream stream, int runs);

Result time_train(const bench::Workload& w, CUstream stream, int runs) {
  Cell cell = cells::by_spec(w.cell);
  auto compiled = compile_cuda_bptt(cell, w.batch, g_options);
  return {w.id, w.cell, "train", w.steps, w.batch, time_train_cell(*compiled, cell, w.steps, w.batch, stream, runs),
          compiled->compile_ms()};
}

// Median ms of forward_device + backward_device of `compiled` over (T, B), random arguments.
double time_train_cell(const CudaBptt& compiled, const Cell& cell, std::int64_t T, std::int64_t B, CUstream stream, int runs) {
  Buffers buf(stream, g_options.storage);
  DeviceTrainingArgs a;
  a.steps = T;
  std::uint64_t seed = 100;
  for (ValueId x : cell.inputs) {
    a.inputs.push_back(buf.random(T * B * features(cell, x), seed++));
    a.input_grads.push_back(buf.empty(T * B * features(cell, x)));
  }
  for (ValueId s : cell.states) {
    a.states.push_back(buf.random(B * features(cell, s), seed++));
    a.final_states.push_back(buf.empty(B * features(cell, s)));
    a.final_state_grads.push_back(buf.random(B * features(cell, s), seed++));
    a.state_grads.push_back(buf.empty(B * features(cell, s)));
  }
  for (ValueId p : cell.params) {
    a.params.push_back(buf.random(cell.graph.node(p).shape.elements(B), seed++));
    a.param_grads.push_back(buf.empty(cell.graph.node(p).shape.elements(B)));
  }
  for (const auto& o : cell.outputs) {
    a.outputs.push_back(buf.empty(T * B * features(cell, o.value)));
    a.output_grads.push_back(buf.random(T * B * features(cell, o.value), seed++));
  }
  for (std::int64_t width : compiled.tape_widths()) a.tape.push_back(buf.empty(T * B * width, /*f32=*/true));
  Timer timer(stream);
  return timer.median_ms(
      [&] {
        compiled.forward_device(a, stream);
        compiled.backward_device(a, stream);
      },
      5, runs);
}

// Forward of `spec` at (T, B) with `options`, on a CudaCell of its own (so that the environment's
// CELLFUSE_CUDA_PERSISTENT_BLOCKS is read afresh); `blocks` gets the persistent grid (0: graph).
double time_forward_spec(const std::string& spec, std::int64_t T, std::int64_t B, const CudaOptions& options, CUstream stream,
                         int runs, int* blocks) {
  Cell cell = cells::by_spec(spec);
  CudaCell compiled(cell, B, options);
  *blocks = compiled.persistent_blocks();
  Buffers buf(stream, g_options.storage);
  DeviceSequenceArgs a = forward_args(cell, T, B, buf);
  Timer timer(stream);
  return timer.median_ms([&] { compiled.run_device(a, stream); }, 5, runs);
}

// What --sweep covers; every list can be narrowed on the command line to fit a time budget.
struct SweepSpace {
  std::vector<std::string> kinds = {"lstm", "gru", "elman"};
  std::vector<std::int64_t> hidden = {64, 128, 256, 512, 1024};
  std::vector<std::int64_t> batches = {1, 2, 4, 8, 16, 32, 64};
  std::vector<std::string> modes = {"forward", "train"};
  std::int64_t steps = 200;
  bool grid = false;  // also the persistent grid on W5
};

// One point of the sweep: `mode` of `spec` at (T, B) with the loop plan `loop` (Auto: timed by
// the runtime on the first run, which the warm-up absorbs), on cells of its own (freed after).
// The plan(s) that ran go to `plan` (training: the forward's, then the backward step's); a
// forced plan that does not fit (the runtime then runs the graph path) returns -1, untimed.
double time_point(const std::string& spec, const std::string& mode, std::int64_t T, std::int64_t B, LoopStrategy loop,
                  CUstream stream, int runs, std::string* plan) {
  CudaOptions options = g_options;
  options.loop = loop;
  Cell cell = cells::by_spec(spec);
  if (mode == "forward") {
    CudaCell compiled(cell, B, options);
    if (loop != LoopStrategy::Auto && compiled.loop_plan() != loop) return -1;
    Buffers buf(stream, g_options.storage);
    DeviceSequenceArgs a = forward_args(cell, T, B, buf);
    Timer timer(stream);
    const double ms = timer.median_ms([&] { compiled.run_device(a, stream); }, 5, runs);
    *plan = loop_strategy_name(compiled.loop_plan());
    return ms;
  }
  CudaBptt compiled(cell, B, options);
  if (loop != LoopStrategy::Auto &&
      (compiled.forward_cell().loop_plan() != loop || compiled.backward_step().loop_plan() != loop))
    return -1;
  const double ms = time_train_cell(compiled, cell, T, B, stream, runs);
  *plan = std::string(loop_strategy_name(compiled.forward_cell().loop_plan())) + "/" +
          loop_strategy_name(compiled.backward_step().loop_plan());
  return ms;
}

// Every point of `space`, automatic plan against every forced one: the ratio auto / best forced
// (the automatic plan's goal: within 5%) and the time a step against the next larger batch's at
// the same H and mode (the goal: never more than 1.1x, no cliff). One line a point, then JSON
// lines ("sweep-json ...") for bench/results.
void sweep(CUstream stream, int runs, const SweepSpace& space) {
  const LoopStrategy forced[] = {LoopStrategy::Graph, LoopStrategy::Persistent, LoopStrategy::Resident};
  std::printf("sweep: ms a sequence of T=%lld, medians of %d runs; auto = the runtime's own choice (timed), then each plan "
              "forced (n/a: the plan does not fit; the runtime then runs the graph path)\n",
              static_cast<long long>(space.steps), runs);
  std::printf("%-7s %-12s %4s %9s %-10s %9s %9s %9s %8s %8s\n", "mode", "cell", "B", "auto", "(plan)", "graph", "persistent",
              "resident", "auto/best", "us/step");
  for (const auto& mode : space.modes)
    for (const auto& kind : space.kinds)
      for (std::int64_t H : space.hidden) {
        for (std::int64_t B : space.batches) {
          const std::string spec = kind + ":" + std::to_string(H) + "," + std::to_string(H);
          try {
            std::string plan;
            const double auto_ms = time_point(spec, mode, space.steps, B, LoopStrategy::Auto, stream, runs, &plan);
            double best = 1e300;
            std::string cols;
            for (LoopStrategy f : forced) {
              std::string ran;
              const double ms = time_point(spec, mode, space.steps, B, f, stream, runs, &ran);
              if (ms < 0) {  // does not fit: n/a, not a second graph path
                cols += "      n/a ";
                continue;
              }
              best = std::min(best, ms);
              char text[32];
              std::snprintf(text, sizeof text, "%9.3f ", ms);
              cols += text;
            }
            const double per_step_us = auto_ms * 1000.0 / static_cast<double>(space.steps);
            std::printf("%-7s %-12s %4lld %9.3f %-10s %s %8.3f %8.2f\n", mode.c_str(), spec.c_str(), static_cast<long long>(B), auto_ms,
                        ("(" + plan + ")").c_str(), cols.c_str(), auto_ms / best, per_step_us);
            std::printf("sweep-json {\"mode\": \"%s\", \"cell\": \"%s\", \"batch\": %lld, \"steps\": %lld, \"auto_ms\": %.4f, "
                        "\"plan\": \"%s\", \"best_forced_ms\": %.4f}\n",
                        mode.c_str(), spec.c_str(), static_cast<long long>(B), static_cast<long long>(space.steps), auto_ms, plan.c_str(),
                        best);
          } catch (const std::exception& e) {
            std::printf("%-7s %-12s %4lld: %s\n", mode.c_str(), spec.c_str(), static_cast<long long>(B), e.what());
          }
          std::fflush(stdout);
        }
      }
  if (!space.grid) return;
  CudaOptions persistent;
  persistent.loop = LoopStrategy::Persistent;
  std::printf("W5 lstm:256,256 T=1000 B=1, persistent grid (CELLFUSE_CUDA_PERSISTENT_BLOCKS):\n");
  for (int blocks : {8, 16, 32, 48, 66, 132}) {
    ::setenv("CELLFUSE_CUDA_PERSISTENT_BLOCKS", std::to_string(blocks).c_str(), 1);
    int got = 0;
    const double p = time_forward_spec("lstm:256,256", 1000, 1, persistent, stream, runs, &got);
    std::printf("  %3d blocks asked, %3d run: %8.3f ms\n", blocks, got, p);
    std::fflush(stdout);
  }
  ::unsetenv("CELLFUSE_CUDA_PERSISTENT_BLOCKS");
}

template <class T>
std::vector<T> parse_list(const std::string& text) {
  std::vector<T> out;
  std::stringstream list(text);
  for (std::string item; std::getline(list, item, ',');) {
    if constexpr (std::is_same_v<T, std::string>) out.push_back(item);
    else out.push_back(std::atoll(item.c_str()));
  }
  return out;
}

}  // namespace
}  // namespace cellfuse

int main(int argc, char** argv) {
  using namespace cellfuse;
  int runs = 21;
  bool json = false, do_sweep = false;
  SweepSpace space;
  std::set<std::string> only;
  std::vector<bench::Workload> work = bench::workloads();
  std::vector<std::string> added;  // --add: run even when --only names others
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--runs" && i + 1 < argc) runs = std::max(1, std::atoi(argv[++i]));
    else if (a == "--json") json = true;
    else if (a == "--sweep") do_sweep = true;
    else if (a == "--add" && i + 1 < argc) {  // ID=SPEC@TxB: one more workload (compare_gpu.py's peers-only rows)
      const std::string text = argv[++i];
      const auto eq = text.find('='), at = text.find('@'), x = text.find('x', at == std::string::npos ? 0 : at);
      if (eq == std::string::npos || at == std::string::npos || x == std::string::npos || eq > at) {
        std::fprintf(stderr, "bench_gpu: --add takes ID=SPEC@TxB, not '%s'\n", text.c_str());
        return 2;
      }
      work.push_back({text.substr(0, eq), text.substr(eq + 1, at - eq - 1), std::atoll(text.substr(at + 1, x - at - 1).c_str()),
                      std::atoll(text.substr(x + 1).c_str())});
      added.push_back(work.back().id);
    }
    else if (a == "--sweep-kinds" && i + 1 < argc) space.kinds = parse_list<std::string>(argv[++i]);
    else if (a == "--sweep-h" && i + 1 < argc) space.hidden = parse_list<std::int64_t>(argv[++i]);
    else if (a == "--sweep-b" && i + 1 < argc) space.batches = parse_list<std::int64_t>(argv[++i]);
    else if (a == "--sweep-modes" && i + 1 < argc) space.modes = parse_list<std::string>(argv[++i]);
    else if (a == "--sweep-steps" && i + 1 < argc) space.steps = std::max<std::int64_t>(1, std::atoll(argv[++i]));
    else if (a == "--sweep-grid") space.grid = true;
    else if (a == "--strategy" && i + 1 < argc) {
      const auto strategy = strategy_named(argv[++i]);
      if (!strategy) {
        std::fprintf(stderr, "bench_gpu: --strategy takes auto, persistent, graph or resident\n");
        return 2;
      }
      g_options.loop = *strategy;
    }
    else if (a == "--storage" && i + 1 < argc) {
      auto storage = parse_storage(argv[++i]);
      if (!storage) {
        std::fprintf(stderr, "bench_gpu: --storage takes native, bf16 or f16\n");
        return 2;
      }
      g_options.storage = *storage;
    }
    else if (a == "--fuse" && i + 1 < argc) {
      const std::string f = argv[++i];
      g_options.program.fuse = f == "always" ? cuda_codegen::FuseProducts::Always
                               : f == "never" ? cuda_codegen::FuseProducts::Never
                                              : cuda_codegen::FuseProducts::Auto;
    }
    else if (a == "--only" && i + 1 < argc) {
      std::stringstream list(argv[++i]);
      for (std::string id; std::getline(list, id, ',');) only.insert(id);
    } else {
      std::fprintf(stderr,
                   "usage: bench_gpu [--runs N] [--only W1,W2] [--fuse auto|always|never] [--strategy auto|persistent|graph|resident] "
                   "[--storage native|bf16|f16] [--json] | --sweep [--runs N] [--sweep-kinds lstm,gru,elman] [--sweep-h 64,128] "
                   "[--sweep-b 1,2,4] [--sweep-modes forward,train] [--sweep-steps T] [--sweep-grid]\n");
      return 2;
    }
  }
  if (!only.empty()) only.insert(added.begin(), added.end());
  // An empty kernel cache of our own, so that the first compile below is NVRTC's.
  char dir[] = "/tmp/cellfuse_bench_gpu.XXXXXX";
  if (!::mkdtemp(dir)) return 3;
  ::setenv("CELLFUSE_CACHE_DIR", dir, 1);
  ::unsetenv("CELLFUSE_CACHE");
  std::string why;
  if (!cuda::cuda_available(&why)) {
    std::fprintf(stderr, "bench_gpu: %s\n", why.c_str());
    return 2;
  }
  try {
    const cuda::Device& dev = cuda::device(0);
    cuda::make_current(dev);
    CUstream stream = nullptr;
    cuda::check(cuda::driver().stream_create(&stream, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
    if (do_sweep) {
      sweep(stream, runs, space);
      return 0;
    }

    // Compile times of an LSTM's training kernels (lstm:512 at batch 64, forward with saves and
    // backward step), after the driver and cuBLAS are loaded by a small unrelated cell.
    compile_cuda(cells::elman(3, 5), 64);
    CudaBptt first(cells::lstm(512, 512), 64);
    CudaBptt again(cells::lstm(512, 512), 64);
    const double first_ms = first.compile_ms(), hit_ms = again.compile_ms();
    const bool first_nvrtc = !first.cubins_from_cache(), hit_cached = again.cubins_from_cache();

    std::vector<Result> results;
    for (const auto& w : work) {
      if (!only.empty() && !only.count(w.id)) continue;
      results.push_back(time_forward(w, stream, runs));
      results.push_back(time_train(w, stream, runs));
      if (!json)
        std::fprintf(stderr, "%s %s: forward %.3f ms, forward+backward %.3f ms\n", w.id.c_str(), w.cell.c_str(),
                     results[results.size() - 2].ms, results.back().ms);
    }
    cuda::check(cuda::driver().stream_destroy(stream), "cuStreamDestroy");
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);

    if (json) {
      std::printf("{\"device\": \"%s\", \"storage\": \"%s\", \"runs\": %d, \"compile\": {\"cell\": \"lstm:512,512\", \"batch\": 64, "
                  "\"first_ms\": %.3f, \"first_from_nvrtc\": %s, \"cache_hit_ms\": %.3f, \"hit_from_cache\": %s}, \"results\": [",
                  dev.name.c_str(), std::string(storage_name(g_options.storage)).c_str(), runs, first_ms, first_nvrtc ? "true" : "false", hit_ms, hit_cached ? "true" : "false");
      for (std::size_t i = 0; i < results.size(); ++i) {
        const Result& r = results[i];
        std::printf("%s{\"id\": \"%s\", \"cell\": \"%s\", \"mode\": \"%s\", \"steps\": %lld, \"batch\": %lld, \"ms\": %.4f, "
                    "\"compile_ms\": %.3f}",
                    i ? ", " : "", r.id.c_str(), r.spec.c_str(), r.mode.c_str(), static_cast<long long>(r.steps),
                    static_cast<long long>(r.batch), r.ms, r.compile_ms);
      }
      std::printf("]}\n");
    } else {
      std::printf("device: %s; storage %s; medians of %d runs (CUDA events)\n", dev.name.c_str(),
                  std::string(storage_name(g_options.storage)).c_str(), runs);
      std::printf("compile lstm:512,512 B=64 forward+backward: first %.1f ms (%s), cache hit %.1f ms (%s)\n", first_ms,
                  first_nvrtc ? "NVRTC" : "cache?", hit_ms, hit_cached ? "disk cache" : "NVRTC?");
      for (const Result& r : results)
        std::printf("%-3s %-24s T=%-5lld B=%-3lld %-8s %9.3f ms  (compile %.0f ms)\n", r.id.c_str(), r.spec.c_str(),
                    static_cast<long long>(r.steps), static_cast<long long>(r.batch), r.mode.c_str(), r.ms, r.compile_ms);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_gpu: %s\n", e.what());
    return 1;
  }
  return 0;
}
