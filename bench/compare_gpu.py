#!/usr/bin/env python3
"""Side-by-side GPU benchmark: cellfuse's CUDA backend against PyTorch, cuDNN and FlashRNN on the same workloads, in one run.

    python3 bench/compare_gpu.py --build build-gpu [--runs 11] [--out bench/results/gpu_h100.md]
                                 [--storage bf16|f16] [--no-torch-compile] [--no-flashrnn]

Runs BUILD/bench/bench_gpu (CUDA events, medians of --runs runs after warm-up) and the same cells
in PyTorch on the same GPU: the cell written with torch ops in a Python loop (eager), the same
loop under TorchScript, the loop in Python over torch.compile of the cell; and the fastest layers
a user would pick (bench/gpu_peers.py): cuDNN (nn.LSTM for the LSTMs, for W3 the plain LSTM at the
same shape; nn.RNN(tanh) + nn.Linear for W1's Elman cell with its output layer; nn.GRU for W2g, a
GRU at W2's shape) and FlashRNN's fused kernel (cuda_fused; its "f32" multiplies in TF32). The best
peer is the fastest of cuDNN and FlashRNN in the row (JAX is not measured); cellfuse / best below 1
means cellfuse is faster. TF32 off for PyTorch and cellfuse. Forward runs under no_grad; forward +
backward is loss = sum(outputs * seeds) + sum(final states * seeds), backward() into every
gradient (inputs, initial states, parameters), as bench_gpu does. Prints a markdown table of
medians (ms) and ratios, and writes it with --out.

--storage bf16|f16: every tensor of both sides in that dtype (cellfuse: CudaOptions::storage,
16-bit tensors with f32 math inside; PyTorch: the module and tensors converted with .to();
FlashRNN: bfloat16, none for f16).

FlashRNN on the GPU machine (offline): its wheel and dependencies for Python 3.12, downloaded on a
connected machine with

    pip download flashrnn==1.0.8 einops packaging ninja --only-binary=:all: --no-deps --python-version 3.12 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform any -d build-wheels

and installed there with `pip install --no-index --no-deps --target /tmp/site build-wheels/*.whl`,
PYTHONPATH=/tmp/site. It needs nvcc of torch's CUDA major, ninja and g++: its first call builds
its kernels (minutes), reported apart from the timings. Without it the FlashRNN column is "—".
"""
import json
import os
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import (Workload, argument_parser, event_median_ms, flatten, loss_of,  # noqa: E402
                          selected, table_start, write_report)
from gpu_peers import cudnn_layer, flashrnn_layer  # noqa: E402

# Rows beyond bench_common.WORKLOADS, measured here only: (id, kind, I, H, O, T, B, bench_gpu spec).
EXTRA = [("W2g", "gru", 512, 512, None, 100, 64, "gru:512,512")]


def runs_for(ms_guess, runs):
    """Fewer repetitions for the slow baselines (W1 eager is ~1 s a run)."""
    return max(3, min(runs, int(8000 / max(ms_guess, 1.0))))


DTYPES = {"native": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


def torch_times(kind, i, h, o, steps, batch, runs, train, log, dtype=torch.float32, with_compile=True, with_flashrnn=True):
    dev = torch.device("cuda")
    out = {}

    def measure(name, fn, params):
        t0 = time.perf_counter()
        if not train:
            with torch.no_grad():
                fn()  # first call: compiles where anything compiles
                first = (time.perf_counter() - t0) * 1e3
                guess = event_median_ms(fn, 1, warmup=1)
                ms = event_median_ms(fn, runs_for(guess, runs))
        else:
            seeds = [torch.randn_like(r) for r in flatten(fn())]
            first = (time.perf_counter() - t0) * 1e3

            def step():
                for p in params:
                    p.grad = None
                for a in args:
                    a.grad = None
                loss_of(fn(), seeds).backward()
            guess = event_median_ms(step, 1, warmup=1)
            ms = event_median_ms(step, runs_for(guess, runs))
        log(f"  {name:12s} {'train' if train else 'forward':8s} {ms:10.3f} ms  (first call {first:.0f} ms)")
        out[name] = ms

    if kind == "gru":  # a peers-only row: no PyTorch cell of ours
        torch.manual_seed(0)
        xs = torch.randn(steps, batch, i, device=dev, dtype=dtype, requires_grad=train)
        h0 = torch.randn(batch, h, device=dev, dtype=dtype, requires_grad=train)
        c0 = torch.randn(batch, h, device=dev, dtype=dtype, requires_grad=train)
        args = (xs, h0, c0)
    else:
        w = Workload(kind, i, h, o, steps, batch, train, "cuda", dtype)
        xs, h0, c0, cell, seq, args = w.xs, w.h0, w.c0, w.cell, w.seq, w.args
        params = list(cell.parameters())
        measure("eager", lambda: seq(cell)(*args), params)
        scripted = torch.jit.script(seq(cell))
        for _ in range(3):  # the profiling executor optimizes after a few calls
            if train:
                loss_of(scripted(*args), [torch.ones(1, device=dev, dtype=dtype)] * 4).backward()
            else:
                with torch.no_grad():
                    scripted(*args)
        measure("torchscript", lambda: scripted(*args), params)
        if with_compile:
            compiled_cell = torch.compile(cell)
            measure("torch.compile", lambda: seq(compiled_cell)(*args), params)
    name, run, params = cudnn_layer(kind, i, h, o, dtype)
    measure("cuDNN", lambda: run(xs, h0, c0), params)
    out["cuDNN name"] = name
    peer = flashrnn_layer(kind, i, h, o, dtype) if with_flashrnn and dtype != torch.float16 else None
    if peer is not None:
        name, run, params = peer
        try:
            measure("FlashRNN", lambda: run(xs, h0, c0), params)
            out["FlashRNN name"] = name
        except Exception as e:  # its kernels build at the first call: say why, keep the row
            log(f"  FlashRNN failed: {type(e).__name__}: {str(e)[:300]}")
    return out


def cellfuse_times(build, runs, only, storage):
    exe = os.path.join(build, "bench", "bench_gpu")
    cmd = [exe, "--runs", str(runs), "--json", "--storage", storage]
    if only:
        cmd += ["--only", ",".join(sorted(only))]
    for wid, _, _, _, _, steps, batch, spec in EXTRA:
        if not only or wid in only:
            cmd += ["--add", f"{wid}={spec}@{steps}x{batch}"]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def main():
    parser = argument_parser(__doc__, runs=11, build="build-gpu")
    parser.add_argument("--storage", choices=sorted(DTYPES), default="native",
                        help="tensor dtype of both sides: native (f32), bf16 or f16")
    parser.add_argument("--no-torch-compile", action="store_true", help="skip the torch.compile baseline")
    parser.add_argument("--no-flashrnn", action="store_true", help="skip FlashRNN (its first call builds for minutes)")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    def log(line):
        print(line, file=sys.stderr, flush=True)

    ours = cellfuse_times(args.build, args.runs, only, args.storage)
    times = {(r["mode"], r["id"]): r for r in ours["results"]}
    log(f"cellfuse: {json.dumps(ours)}")
    baselines = ["eager", "torchscript", "torch.compile", "cuDNN", "FlashRNN"]
    rows = [w for w in selected(args.only)] + [e[:7] for e in EXTRA if only is None or e[0] in only]
    sections = []
    for mode, title in (("forward", "Forward"), ("train", "Forward + backward (BPTT, every gradient)")):
        lines = table_start(title, ["workload", "shape", "cellfuse ms", "eager ms", "TorchScript ms",
                                    "torch.compile ms", "cuDNN ms", "FlashRNN ms", "best peer", "eager / cellfuse",
                                    "TorchScript / cellfuse", "torch.compile / cellfuse", "cellfuse / best peer"])
        for wid, kind, i, h, o, steps, batch in rows:
            log(f"{wid} {kind} T={steps} B={batch} ({mode})")
            ms = times[(mode, wid)]["ms"]
            t = torch_times(kind, i, h, o, steps, batch, args.runs, mode == "train", log, DTYPES[args.storage],
                            not args.no_torch_compile, not args.no_flashrnn)
            cells = [f"{t[b]:.2f}" if b in t else "—" for b in baselines]
            ratios = [f"{t[b] / ms:.1f}×" if b in t else "—" for b in baselines[:3]]
            peers = {t[b + " name"]: t[b] for b in ("cuDNN", "FlashRNN") if b in t}
            best_name = min(peers, key=peers.get) if peers else None
            best = f"{peers[best_name]:.2f} ({best_name})" if best_name else "—"
            ratios.append(f"{ms / peers[best_name]:.2f}" if best_name else "—")
            shape = f"T={steps} B={batch} I={i} H={h}" + (f" O={o}" if o else "")
            lines.append(f"| {wid} {kind} | {shape} | {ms:.2f} | " + " | ".join(cells) + f" | {best} | " +
                         " | ".join(ratios) + " |")
        sections.append("\n".join(lines) + "\n")
    c = ours["compile"]
    header = [
        f"Device: {ours['device']} (PyTorch sees {torch.cuda.get_device_name(0)}); PyTorch {torch.__version__}, "
        f"cuDNN {torch.backends.cudnn.version()}; "
        + ("f32" if args.storage == "native" else f"{args.storage} tensors (cellfuse: f32 math inside)")
        + f", TF32 off; medians of up to {args.runs} runs (CUDA events), warm-up first; cellfuse with CUDA graphs.",
        f"Command: python3 bench/compare_gpu.py --build {args.build} --runs {args.runs}"
        + (f" --only {args.only}" if args.only else "")
        + (f" --storage {args.storage}" if args.storage != "native" else "")
        + (" --no-torch-compile" if args.no_torch_compile else "")
        + (" --no-flashrnn" if args.no_flashrnn else ""),
        "",
        f"Compile of an LSTM's forward+backward kernels ({c['cell']}, B={c['batch']}): first {c['first_ms']:.0f} ms "
        f"({'NVRTC' if c['first_from_nvrtc'] else 'cache'}), cache hit {c['cache_hit_ms']:.1f} ms "
        f"({'disk cache' if c['hit_from_cache'] else 'NVRTC'}).",
        "",
        "cellfuse / best peer below 1 means cellfuse is faster than the fastest of cuDNN and FlashRNN in the row "
        "(FlashRNN's f32 is TF32: not the same precision); the other ratios are how many times faster cellfuse is.",
        "",
    ]
    write_report(header, sections, args.out)


if __name__ == "__main__":
    sys.exit(main())
