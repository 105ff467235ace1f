// The cellfuse command line: print a cell's IR at any stage of the pipeline, run it over a random
// sequence. Each subcommand is its own file; this one parses the command and dispatches.
#include <cstdio>
#include <cstring>
#include <iostream>

#include "compiler/ir/error.h"
#include "frontend/cli/cli.h"
#include "frontend/cli/generate_command.h"

namespace cellfuse::cli {

const char* const kUsage = R"(usage:
  cellfuse print CELL [--dtype f32|f64]
      the cell's IR before and after the graph passes
  cellfuse print --stages CELL [--target cpu|cuda] [--backward] [--batch B] [--dtype f32|f64]
      every stage of the compile pipeline as the backends run it, with its wall time: verify,
      the graph passes, (--backward: autodiff and the forward with its tape, then both
      programs:) hoisting, fusion, kernel IR, the target's kernel rewrites, and the generated
      LLVM IR (cpu, the default) or CUDA C (cuda)
  cellfuse print --backward CELL [--dtype f32|f64]
      the generated backward step (BPTT), what the forward saves for it with the bytes saved
      per step per batch row, and how the parameter gradients are formed after the loop
  cellfuse print --fusion CELL [--batch B] [--target cpu|cuda]
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
  cellfuse profile CELL --seq T --batch B [--target cpu|cuda] [--backward] [--runs N] [--seed S]
                   [--trace FILE] [--json FILE] [--png FILE]
      runs CELL with the profiler on (a warm-up run, then N profiled runs, default 3) and
      prints the overhead report: ops, kernels and GEMMs per step after fusion, launches,
      host and device time per step split into GEMMs / pointwise / host overhead, FLOPs and
      bytes against the machine's measured ceilings, compile time, cache hits, fusion
      boundaries; --trace writes a Chrome trace (Perfetto, chrome://tracing) of the compile
      phases and every GEMM and kernel call, --json the report as JSON, --png (pip's
      command, needs matplotlib) a chart of the per-step time split

  cellfuse generate MODEL --prime TEXT --length N [--temperature T] [--top-k K] [--seed S]
      samples text from a generator file (cellfuse.Generator.save); see `cellfuse generate --help`

CELL is a .cell file or a built-in cell with optional sizes:
  elman, elman_proj, lstm, gru, lnlstm, peephole
  lstm:512 (input = hidden = 512), lstm:256,512 (input 256, hidden 512),
  elman_proj:256,128,64 (input 256, hidden 128, output 64)
)";

namespace {

int main_checked(int argc, char** argv) {
  if (argc >= 2 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "help") == 0 ||
                    std::strcmp(argv[1], "-h") == 0)) {
    std::cout << kUsage;
    return 0;
  }
  if (argc >= 2 && std::strcmp(argv[1], "generate") == 0) return generate_command(argc - 1, argv + 1);
  Options o = parse_args(argc, argv);
  if (o.command == "print") return print_command(o);
  if (o.command == "run") return run_command(o);
  if (o.command == "profile") return profile_command(o);
  throw Error("unknown command '" + o.command + "'\n" + kUsage);
}

}  // namespace
}  // namespace cellfuse::cli

int main(int argc, char** argv) {
  try {
    return cellfuse::cli::main_checked(argc, argv);
  } catch (const cellfuse::Error& e) {
    std::fprintf(stderr, "cellfuse: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cellfuse: internal error: %s\n", e.what());
    return 3;
  }
}
