// The cellfuse command line: print a cell's IR, run it over a random sequence.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "compiler/ir/error.h"
#include "compiler/ir/text.h"
#include "compiler/kernel/stage_program.h"
#include "compiler/lower.h"
#include "compiler/passes/autodiff.h"
#include "compiler/passes/hoist.h"
#include "frontend/cells.h"
#include "runtime/random_args.h"
#include "runtime/reference/bptt.h"
#include "runtime/reference/interpreter.h"
#if CELLFUSE_HAVE_LLVM
#include "runtime/cpu/cpu_bptt.h"
#include "runtime/cpu/cpu_cell.h"
#endif
#if CELLFUSE_HAVE_CUDA
#include "compiler/codegen/cuda/cuda_program.h"
#include "runtime/cuda/cuda_bptt.h"
#include "runtime/cuda/cuda_cell.h"
#include "runtime/cuda/driver.h"
#endif

#include "frontend/cli/generate_command.h"

namespace cellfuse {
namespace {

constexpr const char* kUsage = R"(usage:
  cellfuse print CELL [--stages] [--dtype f32|f64]
      the cell's IR before and after the graph passes (--stages: after every pass)
  cellfuse print --backward CELL [--dtype f32|f64]
      the generated backward step (BPTT), what the forward saves for it with the bytes saved
      per step per batch row, and how the parameter gradients are formed after the loop
  cellfuse print --fusion CELL [--batch B]
      how the cell runs: the stages before, in and after the time loop, the GEMMs and fused
      kernels of each, and why anything is not fused (batch B, default 1, decides whether
      small matrix products are fused into the kernels)
  cellfuse print --cuda CELL [--batch B]
      the CUDA C source of every kernel of every stage, as NVRTC compiles it (needs no GPU)
  cellfuse run CELL --seq T --batch B [--seed S] [--target ref|cpu|cuda] [--dtype f32|f64]
      runs CELL over T steps of random inputs (from seed S, default 0) and prints
      `checksum: <sum of every output and final state>` and `time: <ms>`; the same seed
      gives the same inputs on every target, so the checksums compare
      --target: default the fastest this build and machine have (cuda when a GPU is there,
      else cpu); ref is the reference interpreter (slow; the oracle)
      --backward: forward and backward (BPTT), the loss gradients seeded from the same seed;
      adds `grad checksum: <sum of every gradient: inputs, initial states, parameters>`
      --storage bf16|f16 (--target cuda, f32 cells): the GPU tensors hold 16-bit values, the
      math stays f32; arguments are rounded to the format, so the checksums agree with
      --target ref only to the format's precision (~1e-2 relative for bf16)

  cellfuse generate MODEL --prime TEXT --length N [--temperature T] [--top-k K] [--seed S]
      samples text from a generator file (cellfuse.Generator.save); see `cellfuse generate --help`

CELL is a .cell file or a built-in cell with optional sizes:
  elman, elman_proj, lstm, gru, lnlstm, peephole
  lstm:512 (input = hidden = 512), lstm:256,512 (input 256, hidden 512),
  elman_proj:256,128,64 (input 256, hidden 128, output 64)
)";

struct Options {
  std::string command, cell;
  std::map<std::string, std::string> values;
  bool stages = false;
  bool fusion = false;
  bool backward = false;
  bool cuda = false;
};

Options parse_args(int argc, char** argv) {
  if (argc < 2) throw Error("missing command\n" + std::string(kUsage));
  Options o;
  o.command = argv[1];
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--stages") {
      o.stages = true;
    } else if (a == "--fusion") {
      o.fusion = true;
    } else if (a == "--cuda") {
      o.cuda = true;
    } else if (a == "--backward") {
      o.backward = true;
    } else if (a == "--seq" || a == "--batch" || a == "--seed" || a == "--target" ||
               a == "--dtype" || a == "--storage") {
      if (i + 1 >= argc) throw Error(a + " needs a value");
      o.values[a.substr(2)] = argv[++i];
    } else if (a.rfind("--", 0) == 0) {
      throw Error("unknown option " + a + "\n" + kUsage);
    } else if (o.cell.empty()) {
      o.cell = a;
    } else {
      throw Error("unexpected argument '" + a + "'");
    }
  }
  if (o.cell.empty()) throw Error(o.command + ": which cell? (a .cell file or a built-in name)");
  return o;
}

std::int64_t int_option(const Options& o, const std::string& name, std::optional<std::int64_t> def) {
  auto it = o.values.find(name);
  if (it == o.values.end()) {
    if (!def) throw Error("run: --" + name + " is required");
    return *def;
  }
  try {
    std::size_t used = 0;
    long long v = std::stoll(it->second, &used);
    if (used != it->second.size() || v < 0) throw std::invalid_argument("");
    return v;
  } catch (const std::exception&) {
    throw Error("--" + name + ": '" + it->second + "' is not a non-negative whole number");
  }
}

DType dtype_option(const Options& o) {
  auto it = o.values.find("dtype");
  if (it == o.values.end()) return DType::f32;
  auto d = parse_dtype(it->second);
  if (!d) throw Error("--dtype: '" + it->second + "' is not f32 or f64");
  return *d;
}

Cell load(const Options& o) {
  if (cells::is_builtin(o.cell)) return cells::by_spec(o.cell, dtype_option(o));
  if (o.cell.find('/') != std::string::npos || o.cell.find(".cell") != std::string::npos) {
    Cell c = load_cell_file(o.cell);
    if (o.values.count("dtype") && c.graph.dtype() != dtype_option(o))
      throw Error(o.cell + ": the file declares " + std::string(dtype_name(c.graph.dtype())) +
                  "; edit its header to change the dtype");
    return c;
  }
  throw Error("unknown cell '" + o.cell + "' (built-in cells: " + cells::builtin_names() +
              "; or give a path to a .cell file)");
}

int print_fusion(const Options& o) {
  Cell cell = optimize(load(o));
  std::int64_t batch = int_option(o, "batch", 1);
  // As the CPU backend plans it (print --cuda shows the GPU's kernels).
  SequencePlan plan = hoist(cell, HoistOptions{.recompute_pointwise = true});
  std::cout << print_plan(plan);
  const std::pair<const char*, const SequenceStage*> stages[] = {
      {"pre", &plan.pre}, {"loop", &plan.loop}, {"post", &plan.post}};
  for (const auto& [name, stage] : stages) {
    if (!stage->cell) continue;
    bool fuse = std::string(name) == "loop" && batch <= 8;
    std::cout << "# fusion of stage " << name << " (batch " << batch << ")\n"
              << print_program(*stage->cell, compile_stage(*stage->cell, fuse, name)) << "\n";
  }
  return 0;
}

int print_cuda(const Options& o) {
#if CELLFUSE_HAVE_CUDA
  Cell cell = optimize(load(o));
  std::cout << cuda_codegen::print_cuda_program(
      cuda_codegen::compile_cuda_program(cell, int_option(o, "batch", 1), cell.name));
  return 0;
#else
  (void)o;
  throw Error("print --cuda: this build has no CUDA backend (configured without the CUDA toolkit)");
#endif
}

int print_command(const Options& o) {
  if (o.cuda) return print_cuda(o);
  if (o.fusion && o.backward) throw Error("print: --fusion and --backward are separate views; give one");
  if (o.fusion) return print_fusion(o);
  if (o.backward) {
    std::cout << print_backward(differentiate(load(o)));
    return 0;
  }
  Cell cell = load(o);
  std::vector<Stage> log;
  optimize(cell, &log);
  if (o.stages) {
    for (const Stage& s : log) std::cout << "# after " << s.name << "\n" << s.text << "\n";
  } else {
    std::cout << "# before passes\n" << log.front().text << "\n# after passes\n" << log.back().text;
  }
  return 0;
}

template <class T>
double checksum(const SequenceResult<T>& r) {
  double sum = 0;
  for (const auto& t : r.outputs)
    for (T v : t.data) sum += static_cast<double>(v);
  for (const auto& t : r.final_states)
    for (T v : t.data) sum += static_cast<double>(v);
  return sum;
}

#if CELLFUSE_HAVE_CUDA
Storage storage_option(const Options& o, const std::string& target) {
  auto it = o.values.find("storage");
  if (it == o.values.end()) return Storage::Native;
  auto parsed = parse_storage(it->second);
  if (!parsed) throw Error("--storage: '" + it->second + "' is none of native, bf16, f16");
  if (*parsed != Storage::Native && target != "cuda")
    throw Error("--storage " + it->second + ": 16-bit storage is for --target cuda only (the target is " + target + ")");
  return *parsed;
}

CudaOptions cuda_options(Storage storage) {
  CudaOptions options;
  options.storage = storage;
  if (storage != Storage::Native) std::printf("storage: %s (f32 math)\n", std::string(storage_name(storage)).c_str());
  return options;
}
#else
enum class Storage { Native };
Storage storage_option(const Options& o, const std::string&) {
  if (o.values.count("storage")) throw Error("--storage: this build has no CUDA backend, the only one with 16-bit storage");
  return Storage::Native;
}
#endif

template <class T>
int run_typed(const Cell& cell, std::int64_t steps, std::int64_t batch, std::uint64_t seed,
              const std::string& target, Storage storage) {
  (void)storage;  // used by the CUDA target only
  SequenceArgs<T> args = random_sequence_args<T>(cell, steps, batch, seed);
  std::printf("cell: %s %s, T=%lld, B=%lld, seed=%llu, target=%s\n", cell.name.c_str(),
              std::string(dtype_name(cell.graph.dtype())).c_str(), static_cast<long long>(steps),
              static_cast<long long>(batch), static_cast<unsigned long long>(seed), target.c_str());
  auto start = std::chrono::steady_clock::now();
  SequenceResult<T> result;
  if (target == "cpu") {
#if CELLFUSE_HAVE_LLVM
    auto compiled = compile_cpu(cell, batch);
    std::printf("compile: %.3f ms\n", compiled->compile_ms());
    start = std::chrono::steady_clock::now();
    result = compiled->run(args);
#endif
  } else if (target == "cuda") {
#if CELLFUSE_HAVE_CUDA
    auto compiled = compile_cuda(cell, batch, cuda_options(storage));
    std::printf("device: %s (%s)\n", compiled->device_name().c_str(), compiled->architecture().c_str());
    std::printf("compile: %.3f ms%s\n", compiled->compile_ms(), compiled->cubin_from_cache() ? " (cubin from the disk cache)" : "");
    start = std::chrono::steady_clock::now();
    result = compiled->run(args);
#endif
  } else {
    result = interpret_sequence(cell, args);
  }
  auto stop = std::chrono::steady_clock::now();
  double ms = std::chrono::duration<double, std::milli>(stop - start).count();
  std::printf("checksum: %.10g\n", checksum(result));
  std::printf("time: %.3f ms\n", ms);
  return 0;
}

// Forward and backward over the sequence: the loss gradients of every output and final state
// come from the same seed, so the gradient checksums of every target compare.
template <class T>
int run_backward_typed(const Cell& cell, std::int64_t steps, std::int64_t batch, std::uint64_t seed,
                       const std::string& target, Storage storage) {
  (void)storage;  // used by the CUDA target only
  (void)storage;  // used by the CUDA target only
  SequenceArgs<T> args = random_sequence_args<T>(cell, steps, batch, seed);
  LossGradients<T> seeds = random_loss_gradients<T>(cell, steps, batch, seed);
  std::printf("cell: %s %s, T=%lld, B=%lld, seed=%llu, target=%s, forward+backward\n", cell.name.c_str(),
              std::string(dtype_name(cell.graph.dtype())).c_str(), static_cast<long long>(steps),
              static_cast<long long>(batch), static_cast<unsigned long long>(seed), target.c_str());
  auto start = std::chrono::steady_clock::now();
  BpttResult<T> result;
  if (target == "cpu") {
#if CELLFUSE_HAVE_LLVM
    auto compiled = compile_cpu_bptt(cell, batch);
    std::printf("compile: %.3f ms\n", compiled->compile_ms());
    start = std::chrono::steady_clock::now();
    result = compiled->run(args, seeds);
#endif
  } else if (target == "cuda") {
#if CELLFUSE_HAVE_CUDA
    auto compiled = compile_cuda_bptt(cell, batch, cuda_options(storage));
    std::printf("device: %s (%s)\n", compiled->forward_cell().device_name().c_str(),
                compiled->forward_cell().architecture().c_str());
    std::printf("compile: %.3f ms%s\n", compiled->compile_ms(),
                compiled->cubins_from_cache() ? " (cubins from the disk cache)" : "");
    start = std::chrono::steady_clock::now();
    result = compiled->run(args, seeds);
#endif
  } else {
    result = reference_bptt(differentiate(cell), args, seeds);
  }
  auto stop = std::chrono::steady_clock::now();
  std::printf("checksum: %.10g\n", checksum(result.forward));
  std::printf("grad checksum: %.10g\n", gradient_checksum(result.grads));
  std::printf("time: %.3f ms\n", std::chrono::duration<double, std::milli>(stop - start).count());
  return 0;
}

// The fastest target this build has on this machine: cuda with a working GPU, else cpu (the
// LLVM backend), else the reference interpreter.
std::string default_target() {
#if CELLFUSE_HAVE_CUDA
  if (cuda::cuda_available()) return "cuda";
#endif
#if CELLFUSE_HAVE_LLVM
  return "cpu";
#else
  return "ref";
#endif
}

int run_command(const Options& o) {
  std::string target = o.values.count("target") ? o.values.at("target") : default_target();
#if !CELLFUSE_HAVE_LLVM
  if (target == "cpu")
    throw Error("--target cpu: this build has no CPU backend (configured without LLVM); use --target ref");
#endif
#if !CELLFUSE_HAVE_CUDA
  if (target == "cuda")
    throw Error("--target cuda: this build has no CUDA backend (configured without the CUDA toolkit); use --target ref");
#endif
  if (target != "ref" && target != "cpu" && target != "cuda")
    throw Error("--target: unknown target '" + target + "' (ref, cpu, cuda)");
  std::int64_t steps = int_option(o, "seq", std::nullopt);
  std::int64_t batch = int_option(o, "batch", std::nullopt);
  auto seed = static_cast<std::uint64_t>(int_option(o, "seed", 0));
  Cell cell = optimize(load(o));
  const Storage storage = storage_option(o, target);
  if (o.backward) {
    if (cell.graph.dtype() == DType::f64) return run_backward_typed<double>(cell, steps, batch, seed, target, storage);
    return run_backward_typed<float>(cell, steps, batch, seed, target, storage);
  }
  if (cell.graph.dtype() == DType::f64) return run_typed<double>(cell, steps, batch, seed, target, storage);
  return run_typed<float>(cell, steps, batch, seed, target, storage);
}

int main_checked(int argc, char** argv) {
  if (argc >= 2 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "help") == 0 ||
                    std::strcmp(argv[1], "-h") == 0)) {
    std::cout << kUsage;
    return 0;
  }
  if (argc >= 2 && std::strcmp(argv[1], "generate") == 0) return cli::generate_command(argc - 1, argv + 1);
  Options o = parse_args(argc, argv);
  if (o.command == "print") return print_command(o);
  if (o.command == "run") return run_command(o);
  throw Error("unknown command '" + o.command + "'\n" + kUsage);
}

}  // namespace
}  // namespace cellfuse

int main(int argc, char** argv) {
  try {
    return cellfuse::main_checked(argc, argv);
  } catch (const cellfuse::Error& e) {
    std::fprintf(stderr, "cellfuse: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cellfuse: internal error: %s\n", e.what());
    return 3;
  }
}
