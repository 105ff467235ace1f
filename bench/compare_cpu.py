#!/usr/bin/env python3
"""Side-by-side CPU benchmark: cellfuse against PyTorch on the same workloads, in one run.

    python3 bench/compare_cpu.py --build build [--runs 7] [--out bench/results/cpu.md]

Runs build/bench/bench_cpu (Google Benchmark, medians over --runs repetitions) and the same cells
in PyTorch: the cell written with torch ops in a Python loop (eager), the same loop under
TorchScript, and nn.LSTM where the cell is an LSTM. Prints a table of medians (ms) and ratios.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

WORKLOADS = [  # mirrors bench/workloads.h
    ("W1", "elman_proj", 256, 128, 128, 4096, 2),
    ("W2", "lstm", 512, 512, None, 100, 64),
    ("W3", "lnlstm", 512, 512, None, 100, 64),
    ("W5", "lstm", 256, 256, None, 1000, 1),
]


class ElmanProj(nn.Module):
    def __init__(self, i, h, o):
        super().__init__()
        self.ih, self.hh, self.ho = nn.Linear(i, h), nn.Linear(h, h), nn.Linear(h, o)

    def forward(self, x, h):
        h = torch.tanh(self.ih(x) + self.hh(h))
        return self.ho(h), h


class Lstm(nn.Module):
    def __init__(self, i, h):
        super().__init__()
        self.ih, self.hh = nn.Linear(i, 4 * h), nn.Linear(h, 4 * h)

    def forward(self, x, h, c):
        i, f, g, o = (self.ih(x) + self.hh(h)).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, h, c


class LnLstm(nn.Module):
    """The LayerNorm-LSTM of pytorch/benchmarks/fastrnns (affine, eps 1e-5)."""

    def __init__(self, i, h):
        super().__init__()
        self.w_ih = nn.Parameter(torch.randn(4 * h, i) / i ** 0.5)
        self.w_hh = nn.Parameter(torch.randn(4 * h, h) / h ** 0.5)
        self.ln_i, self.ln_h, self.ln_c = nn.LayerNorm(4 * h), nn.LayerNorm(4 * h), nn.LayerNorm(h)

    def forward(self, x, h, c):
        gates = self.ln_i(x @ self.w_ih.t()) + self.ln_h(h @ self.w_hh.t())
        i, f, g, o = gates.chunk(4, 1)
        c = self.ln_c(torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g))
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, h, c


class Sequence(nn.Module):
    """The time loop in Python (eager) or, scripted, in TorchScript."""

    def __init__(self, cell):
        super().__init__()
        self.cell = cell

    def forward(self, xs, state):
        outs = []
        for t in range(xs.size(0)):
            out = self.cell(xs[t], *state)
            outs.append(out[0])
            state = out[1:]
        return torch.stack(outs), state


class Sequence1(Sequence):
    def forward(self, xs, h):  # one state: TorchScript needs fixed arity
        outs = []
        for t in range(xs.size(0)):
            y, h = self.cell(xs[t], h)
            outs.append(y)
        return torch.stack(outs), h


class Sequence2(Sequence):
    def forward(self, xs, h, c):
        outs = []
        for t in range(xs.size(0)):
            y, h, c = self.cell(xs[t], h, c)
            outs.append(y)
        return torch.stack(outs), h, c


def median_ms(fn, runs):
    fn()  # warm up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def flatten(results):
    if isinstance(results, (tuple, list)):
        return [t for r in results for t in flatten(r)]
    return [results]


def loss_of(results, seeds):
    """sum(result * seed) over every output and final state: seeds every gradient, as
    bench_cpu's train/ benchmarks do."""
    return sum((r * g).sum() for r, g in zip(flatten(results), seeds))


def torch_times(kind, i, h, o, steps, batch, runs, train):
    torch.manual_seed(0)
    xs = torch.randn(steps, batch, i, requires_grad=train)
    h0 = torch.randn(batch, h, requires_grad=train)
    c0 = torch.randn(batch, h, requires_grad=train)
    if kind == "elman_proj":
        cell, seq = ElmanProj(i, h, o), Sequence1
        args = (xs, h0)
    else:
        cell = Lstm(i, h) if kind == "lstm" else LnLstm(i, h)
        seq = Sequence2
        args = (xs, h0, c0)
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build", default="build")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--out", help="also write the table (markdown) to this file")
    parser.add_argument("--only", help="comma-separated workload ids")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None

    ours, compile_ms = cellfuse_times(args.build, args.runs)
    sections = []
    for mode, title in (("forward", "Forward"), ("train", "Forward + backward (BPTT, every gradient)")):
        lines = [
            f"### {title}",
            "",
            "| workload | shape | cellfuse ms | eager ms | TorchScript ms | nn.LSTM ms | eager / cellfuse "
            "| TorchScript / cellfuse | cellfuse / nn.LSTM |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        compiles = []
        for wid, kind, i, h, o, steps, batch in WORKLOADS:
            if only and wid not in only:
                continue
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
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"PyTorch {torch.__version__} ({torch.get_num_threads()} threads); "
        f"medians of {args.runs} runs.",
        f"Command: python3 bench/compare_cpu.py --build {args.build} --runs {args.runs}",
        "",
    ]
    text = "\n".join(header) + "\n" + "\n".join(sections)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    sys.exit(main())
