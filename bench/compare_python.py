#!/usr/bin/env python3
"""Side-by-side benchmark of the Python API: the workloads of the CPU and CUDA issues (W1, W2, W3,
W5) through `cellfuse.compile`, against PyTorch in the same run.

    python3 bench/compare_python.py [--device cpu|cuda] [--runs 7] [--build build] [--out FILE]
                                    [--no-torch-compile] [--only W1,W5]

For each workload, forward (no grad) and forward+backward (every gradient seeded, as
compare_cpu.py does): the cell in a Python loop (eager), the loop under TorchScript, the loop
around torch.compile(cell), nn.LSTM where the cell is an LSTM, and cellfuse through Python. The
same compiled cell is also called directly through the native module with buffers allocated once
("native": the C++ API's cost on exactly the traced cell), so the table shows what the Python
layer costs (the issue's bound: at most 10% on W1 and W5). On the CPU, when --build has
bench/bench_cpu, its time for the built-in cell of the workload is shown as well.
Medians of --runs timed runs after a warm-up (cellfuse and native: 2 * runs + 1, alternating);
CUDA timings synchronize the device.
"""
import os
import statistics
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import (Workload, alternating_ms, argument_parser, cpu_description,  # noqa: E402
                          loss_of, median_ms, selected, step_of, table_start, write_report)
from compare_cpu import cellfuse_times  # noqa: E402

import cellfuse  # noqa: E402


def measure(fn, runs, device, train):
    return median_ms(step_of(fn, train), runs, device)


def paired_ms(a, b, runs, device):
    """Medians of two steps timed alternately, so that the machine's drift (large on a shared VM)
    falls on both alike: the ratio of the two is what this is for."""
    times = alternating_ms({"a": a, "b": b}, runs, device)
    return statistics.median(times["a"]), statistics.median(times["b"])


def native_step(rnn, xs, state0, device, train):
    """The same compiled cell called directly through the native module with buffers allocated
    once: the C++ API's cost on exactly the traced cell, what the Python layer is measured against."""
    program = rnn.programs[0]
    steps, batch = xs.shape[0], xs.shape[1]
    states = [s.detach().contiguous() for s in (state0 if isinstance(state0, tuple) else (state0,))]
    params = [p.detach().reshape(1) if p.dim() == 0 else p.detach() for p in rnn._params(program, 0)]
    x = xs.detach().contiguous()
    out = [x.new_empty((steps, batch, program.output_width))]
    fin = [s.new_empty(s.shape) for s in states]
    ptr = lambda ts: [t.data_ptr() for t in ts]  # noqa: E731
    compiled = program.compiled(x.device, batch, train)
    extra = [torch.cuda.current_stream().cuda_stream] if device == "cuda" else []
    if not train:
        keep = (x, states, params, out, fin)  # the pointers passed must stay valid

        def forward():
            compiled.forward(steps, ptr([x]), ptr(states), ptr(params), ptr(out), ptr(fin), *extra)
            return keep
        return forward
    tape = [x.new_empty((steps, batch, w)) for w in program.tape_widths]
    seeds = [torch.randn_like(out[0])] + [torch.randn_like(f) for f in fin]
    grads = [torch.empty_like(x)] + [torch.empty_like(s) for s in states] + [torch.empty_like(p) for p in params]
    views = dict(inputs=ptr([x]), states=ptr(states), params=ptr(params), outputs=ptr(out), final_states=ptr(fin),
                 tape=ptr(tape), output_grads=ptr(seeds[:1]), final_state_grads=ptr(seeds[1:]),
                 input_grads=ptr(grads[:1]), state_grads=ptr(grads[1:1 + len(states)]),
                 param_grads=ptr(grads[1 + len(states):]))
    keep = (x, states, params, out, fin, tape, seeds, grads)  # the pointers above must stay valid

    def step():
        compiled.forward(steps, views, *extra)
        compiled.backward(steps, views, *extra)
        return keep
    return step


def workload_times(kind, i, h, o, steps, batch, runs, train, device, use_torch_compile):
    w = Workload(kind, i, h, o, steps, batch, train, device)
    dev, xs, h0, c0, cell, seq, args = torch.device(device), w.xs, w.h0, w.c0, w.cell, w.seq, w.args
    example, state0 = w.example, w.state0
    out = {}
    rnn = cellfuse.compile(cell, example)
    start = time.perf_counter()
    with torch.no_grad():
        rnn(xs, state0)  # first run compiles (forward; the training pair compiles on its first run)
    out["compile"] = (time.perf_counter() - start) * 1e3
    out["cellfuse"], out["native"] = paired_ms(step_of(lambda: rnn(xs, state0), train),
                                               native_step(rnn, xs, state0, device, train), 2 * runs + 1, device)
    out["eager"] = measure(lambda: seq(cell)(*args), runs, device, train)
    scripted = torch.jit.script(seq(cell))
    for _ in range(2):  # the profiling executor optimizes after a few calls
        if train:
            loss_of(scripted(*args), [torch.ones(1, device=dev)] * 4).backward()
        else:
            with torch.no_grad():
                scripted(*args)
    out["torchscript"] = measure(lambda: scripted(*args), runs, device, train)
    if use_torch_compile:
        torch._dynamo.reset()
        compiled = seq(torch.compile(cell))
        out["torch.compile"] = measure(lambda: compiled(*args), runs, device, train)
    if kind == "lstm":
        lstm = nn.LSTM(i, h).to(dev)
        out["nn.LSTM"] = measure(lambda: lstm(xs, (h0[None], c0[None])), runs, device, train)
    return out


def fmt(x):
    return "—" if x is None else f"{x:.2f}"


def main():
    parser = argument_parser(__doc__, runs=7)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--build", default="build", help="CMake build with bench/bench_cpu (CPU only)")
    parser.add_argument("--no-torch-compile", action="store_true", help="skip torch.compile (slow to compile)")
    args = parser.parse_args()
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

    cxx = None
    if args.device == "cpu" and os.path.exists(os.path.join(args.build, "bench", "bench_cpu")):
        cxx, _ = cellfuse_times(args.build, args.runs)

    sections = []
    for mode, title in (("forward", "Forward"), ("train", "Forward + backward (every gradient)")):
        lines = table_start(title, ["workload", "shape", "cellfuse (Python) ms", "native ms", "Python / native",
                                    "bench_cpu ms", "eager ms", "TorchScript ms", "torch.compile ms", "nn.LSTM ms",
                                    "eager / cellfuse", "TorchScript / cellfuse", "torch.compile / cellfuse",
                                    "cellfuse / nn.LSTM"])
        compiles = []
        for wid, kind, i, h, o, steps, batch in selected(args.only):
            t = workload_times(kind, i, h, o, steps, batch, args.runs, mode == "train", args.device,
                               not args.no_torch_compile)
            ours = t["cellfuse"]
            c = cxx.get((mode, wid)) if cxx else None
            tc, lstm = t.get("torch.compile"), t.get("nn.LSTM")
            lines.append(
                f"| {wid} {kind} | T={steps} B={batch} I={i} H={h} | {ours:.2f} | {t['native']:.2f} | "
                f"{ours / t['native']:.2f} | {fmt(c)} | {t['eager']:.2f} | {t['torchscript']:.2f} | {fmt(tc)} | "
                f"{fmt(lstm)} | {t['eager'] / ours:.1f}× | {t['torchscript'] / ours:.1f}× | "
                f"{(f'{tc / ours:.1f}×' if tc else '—')} | {fmt(ours / lstm if lstm else None)} |")
            compiles.append(f"{wid} {t['compile']:.0f}")
            print(lines[-1], file=sys.stderr, flush=True)
        lines += ["", "First call (trace done, compiles the forward) ms: " + ", ".join(compiles), ""]
        sections.append("\n".join(lines))
    device = torch.cuda.get_device_name() if args.device == "cuda" else cpu_description()
    header = [f"Device: {device}; PyTorch {torch.__version__} ({torch.get_num_threads()} threads); "
              f"medians of {args.runs} runs.",
              "Command: python3 bench/compare_python.py " + " ".join(sys.argv[1:]), ""]
    write_report(header, sections, args.out)


if __name__ == "__main__":
    sys.exit(main())
