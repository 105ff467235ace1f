"""What the side-by-side benchmark scripts share: the workloads and their PyTorch cells, one
workload's tensors, the timers, and the report writer. One copy each, so that every script times
and seeds the same way (compare_cpu.py, compare_gpu.py, compare_python.py, paired_cpu.py,
gemm_ceiling.py)."""
import argparse
import os
import platform
import statistics
import time

import torch
import torch.nn as nn

WORKLOADS = [  # mirrors bench/workloads.h
    ("W1", "elman_proj", 256, 128, 128, 4096, 2),
    ("W2", "lstm", 512, 512, None, 100, 64),
    ("W3", "lnlstm", 512, 512, None, 100, 64),
    ("W5", "lstm", 256, 256, None, 1000, 1),
]




def selected(only):
    """The WORKLOADS whose ids a --only value lists (comma-separated), or all of them."""
    ids = set(only.split(",")) if only else None
    return [w for w in WORKLOADS if ids is None or w[0] in ids]


def table_start(title, columns):
    """A report section's first lines: its title and the header of its markdown table."""
    return [f"### {title}", "", "| " + " | ".join(columns) + " |", "| --- " * len(columns) + "|"]


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


class Workload:
    """One workload's tensors and PyTorch cell, seeded alike in every script: xs [T,B,I], the
    initial states, the cell (moved to the device and dtype), its time loop `seq` (Sequence1 or
    Sequence2), the loop's arguments `args`, one step's `example` inputs (for cellfuse.compile)
    and the initial state as cellfuse's RNN takes it (`state0`)."""

    def __init__(self, kind, i, h, o, steps, batch, train, device="cpu", dtype=torch.float32):
        torch.manual_seed(0)
        dev = torch.device(device)
        self.xs = torch.randn(steps, batch, i, device=dev, dtype=dtype, requires_grad=train)
        self.h0 = torch.randn(batch, h, device=dev, dtype=dtype, requires_grad=train)
        self.c0 = torch.randn(batch, h, device=dev, dtype=dtype, requires_grad=train)
        xs, h0, c0 = self.xs, self.h0, self.c0
        if kind == "elman_proj":
            cell, self.seq, self.args, self.state0 = ElmanProj(i, h, o), Sequence1, (xs, h0), h0
            self.example = (xs[0].detach(), h0.detach())
        else:
            cell = Lstm(i, h) if kind == "lstm" else LnLstm(i, h)
            self.seq, self.args, self.state0 = Sequence2, (xs, h0, c0), (h0, c0)
            self.example = (xs[0].detach(), h0.detach(), c0.detach())
        self.cell = cell.to(dev, dtype)


def flatten(results):
    if isinstance(results, (tuple, list)):
        return [t for r in results for t in flatten(r)]
    return [results]


def loss_of(results, seeds):
    """sum(result * seed) over every output and final state: seeds every gradient, as
    bench_cpu's train/ benchmarks do."""
    return sum((r * g).sum() for r, g in zip(flatten(results), seeds))


def step_of(fn, train):
    """One timed unit: a forward without autograd, or a forward and a backward from fixed seeds."""
    if not train:
        def forward():
            with torch.no_grad():
                fn()
        return forward
    seeds = [torch.randn_like(r) for r in flatten(fn())]
    return lambda: loss_of(fn(), seeds).backward()


def timed_ms(fn, device="cpu"):
    """One call of fn in ms of wall time; on CUDA the device is synchronized before and after."""
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e3


def median_ms(fn, runs, device="cpu"):
    """Median of `runs` timed calls after one warm-up call."""
    timed_ms(fn, device)  # warm up (and compile)
    return statistics.median(timed_ms(fn, device) for _ in range(runs))


def best_ms(fn, runs):
    """Fastest of `runs` timed calls after one warm-up call."""
    fn()
    return min(timed_ms(fn) for _ in range(runs))


def event_median_ms(fn, runs, warmup=2):
    """Median of `runs` calls of fn, each timed with CUDA events around it."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def alternating_ms(steps, runs, device="cpu", settle_ms=None):
    """Each of `steps` (name -> fn) called once, then `runs` rounds that time every step in
    order, so that the machine's drift (large on a shared VM) falls on all alike. With settle_ms,
    each timed call starts after that much sleep. Returns name -> list of ms, one per round."""
    for fn in steps.values():
        fn()  # warm-up
    times = {name: [] for name in steps}
    for _ in range(runs):
        for name, fn in steps.items():
            if settle_ms is not None:
                time.sleep(settle_ms / 1e3)
            times[name].append(timed_ms(fn, device))
    return times


def argument_parser(doc, runs, build=None):
    """The options every script takes: --runs, --out, --only, and --build where it reads a build
    (its default `build`)."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    if build:
        parser.add_argument("--build", default=build)
    parser.add_argument("--runs", type=int, default=runs)
    parser.add_argument("--out", help="also write the table (markdown) to this file")
    parser.add_argument("--only", help="comma-separated workload ids")
    return parser


def cpu_description():
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def write_report(header, sections, out):
    """Prints the header lines and the sections (markdown), and writes the same to `out` if given."""
    text = "\n".join(header) + "\n" + "\n".join(sections)
    print(text)
    if out:
        with open(out, "w") as f:
            f.write(text)
