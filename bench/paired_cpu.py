#!/usr/bin/env python3
"""CPU ratios against PyTorch, timed in alternation in one process.

    python3 bench/paired_cpu.py [--runs 9] [--only W2,W3] [--out FILE]

On a shared VM the machine's speed drifts by tens of percent within a minute, so a ratio of two
medians taken one after the other (compare_cpu.py) can be off by that much. Here each round times
cellfuse (the compiled cell called through the native module with buffers allocated once: the C++
API's cost, as in compare_python.py's "native") and then each PyTorch baseline, and the table gives
the median of the per-round ratios beside the medians of the times. Baselines: the cell in a Python
loop (eager) and, for the LSTM workloads, nn.LSTM. Forward without autograd, and forward+backward
with every output and final state seeded (as compare_cpu.py).
"""
import os
import platform
import statistics
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import Workload, argument_parser, alternating_ms, selected, step_of  # noqa: E402
from compare_python import native_step  # noqa: E402

import cellfuse  # noqa: E402


def baselines(kind, i, h, o, steps, batch, train):
    """cellfuse's step and the PyTorch steps it is compared with, all on the same tensors."""
    w = Workload(kind, i, h, o, steps, batch, train)
    xs, h0, c0, cell, seq, args, state0 = w.xs, w.h0, w.c0, w.cell, w.seq, w.args, w.state0
    rnn = cellfuse.compile(cell, w.example)
    with torch.no_grad():
        rnn(xs, state0)  # compiles the forward; the training pair compiles on its first run
    steps_ = {"cellfuse": native_step(rnn, xs, state0, "cpu", train), "eager": step_of(lambda: seq(cell)(*args), train)}
    if kind == "lstm":
        lstm = nn.LSTM(i, h)
        steps_["nn.LSTM"] = step_of(lambda: lstm(xs, (h0[None], c0[None])), train)
    return steps_


def paired(steps_, runs, settle_ms):
    """Per name: median ms; per baseline: the medians over rounds of baseline/cellfuse and (key
    "cellfuse/NAME") of cellfuse/baseline. Each timed call starts after `settle_ms` of sleep: after
    a PyTorch call its OpenMP workers keep spinning for some milliseconds (libgomp's default wait
    policy) and, on two cores, took one from whatever ran next (W5: 10.6 -> 14.0 ms)."""
    times = alternating_ms(steps_, runs, "cpu", settle_ms)
    ratios = {name: statistics.median(b / c for b, c in zip(times[name], times["cellfuse"]))
              for name in steps_ if name != "cellfuse"}
    ratios.update({"cellfuse/" + name: statistics.median(c / b for b, c in zip(times[name], times["cellfuse"]))
                   for name in steps_ if name != "cellfuse"})
    return {name: statistics.median(t) for name, t in times.items()}, ratios


def main():
    parser = argument_parser(__doc__, runs=9)
    parser.add_argument("--settle-ms", type=float, default=50.0,
                        help="idle time before each timed call, so that the previous contender's spinning "
                             "threads have gone to sleep (default 50)")
    args = parser.parse_args()
    lines = [f"Machine: {platform.machine()}, {os.cpu_count()} cores; PyTorch {torch.__version__} "
             f"({torch.get_num_threads()} threads); {args.runs} alternating rounds, medians; "
             f"{args.settle_ms:g} ms idle before each timed call.",
             "Command: python3 bench/paired_cpu.py " + " ".join(sys.argv[1:]), "",
             "| workload | pass | cellfuse ms | eager ms | nn.LSTM ms | eager / cellfuse | cellfuse / nn.LSTM |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    print("\n".join(lines), flush=True)
    for wid, kind, i, h, o, steps, batch in selected(args.only):
        for train in (False, True):
            ms, ratio = paired(baselines(kind, i, h, o, steps, batch, train), args.runs, args.settle_ms)
            lstm = f"{ms['nn.LSTM']:.1f}" if "nn.LSTM" in ms else "—"
            vs_lstm = f"{ratio['cellfuse/nn.LSTM']:.2f}" if "nn.LSTM" in ratio else "—"
            line = (f"| {wid} {kind} | {'fwd+bwd' if train else 'forward'} | {ms['cellfuse']:.1f} | {ms['eager']:.1f} "
                    f"| {lstm} | {ratio['eager']:.2f}× | {vs_lstm} |")
            print(line, flush=True)
            lines.append(line)
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
