#!/usr/bin/env python3
"""Side-by-side CPU benchmark: cellfuse against PyTorch on the same workloads, in one run.

    python3 bench/compare_cpu.py --build build [--runs 7] [--out bench/results/cpu.md]

Runs build/bench/bench_cpu (Google Benchmark, medians over --runs repetitions) and the same cells
in PyTorch: the cell written with torch ops in a Python loop (eager), the same loop under
TorchScript, and nn.LSTM where the cell is an LSTM. Prints a table of medians (ms) and ratios.
"""
import json
import os
import subprocess
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import (Workload, argument_parser, cpu_description, flatten, loss_of,  # noqa: E402
                          median_ms, selected, table_start, write_report)


def torch_times(kind, i, h, o, steps, batch, runs, train):
    w = Workload(kind, i, h, o, steps, batch, train)
    xs, h0, c0, cell, seq, args = w.xs, w.h0, w.c0, w.cell, w.seq, w.args
    out = {}
    eager = seq(cell)
    scripted = torch.jit.script(seq(cell))
    lstm = nn.LSTM(i, h) if kind == "lstm" else None

    def measure(fn):
        if not train:
            with torch.no_grad():
                return median_ms(fn, runs)
        seeds = [torch.randn_like(r) for r in flatten(fn())]

        def step():
            loss_of(fn(), seeds).backward()
        return median_ms(step, runs)

    out["eager"] = measure(lambda: eager(*args))
    for _ in range(2):  # the profiling executor optimizes after a few calls
        if train:
            loss_of(scripted(*args), [torch.ones(1)] * 4).backward()
        else:
            with torch.no_grad():
                scripted(*args)
    out["torchscript"] = measure(lambda: scripted(*args))
    if lstm is not None:
        out["nn.LSTM"] = measure(lambda: lstm(xs, (h0[None], c0[None])))
    return out


def cellfuse_times(build, runs):
    exe = os.path.join(build, "bench", "bench_cpu")
    cmd = [exe, f"--benchmark_repetitions={runs}", "--benchmark_report_aggregates_only=true",
           "--benchmark_format=json"]
    result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    times, compile_ms = {}, {}
    for b in result["benchmarks"]:
        if b.get("aggregate_name") == "median":
            mode, wid = b["run_name"].split("/")[:2]
            times[(mode, wid)] = b["real_time"]
            compile_ms[(mode, wid)] = b.get("compile_ms")
    return times, compile_ms


def main():
    args = argument_parser(__doc__, runs=7, build="build").parse_args()

    ours, compile_ms = cellfuse_times(args.build, args.runs)
    sections = []
    for mode, title in (("forward", "Forward"), ("train", "Forward + backward (BPTT, every gradient)")):
        lines = table_start(title, ["workload", "shape", "cellfuse ms", "eager ms", "TorchScript ms", "nn.LSTM ms",
                                    "eager / cellfuse", "TorchScript / cellfuse", "cellfuse / nn.LSTM"])
        compiles = []
        for wid, kind, i, h, o, steps, batch in selected(args.only):
            ms = ours[(mode, wid)]
            t = torch_times(kind, i, h, o, steps, batch, args.runs, mode == "train")
            lstm = t.get("nn.LSTM")
            lines.append(
                f"| {wid} {kind} | T={steps} B={batch} I={i} H={h} | {ms:.2f} | {t['eager']:.2f} | "
                f"{t['torchscript']:.2f} | " + (f"{lstm:.2f}" if lstm else "—") +
                f" | {t['eager'] / ms:.1f}× | {t['torchscript'] / ms:.1f}× | " +
                (f"{ms / lstm:.2f} |" if lstm else "— |"))
            compiles.append(f"{wid} {compile_ms[(mode, wid)]:.0f}")
        lines += ["", "Compile times (ms): " + ", ".join(compiles), ""]
        sections.append("\n".join(lines))
    header = [
        f"Machine: {cpu_description()}; "
        f"PyTorch {torch.__version__} ({torch.get_num_threads()} threads); "
        f"medians of {args.runs} runs.",
        f"Command: python3 bench/compare_cpu.py --build {args.build} --runs {args.runs}",
        "",
    ]
    write_report(header, sections, args.out)


if __name__ == "__main__":
    sys.exit(main())
