"""The built-in demo: a custom cell in PyTorch, eager against cellfuse, side by side.

    python -m cellfuse.demo [--seq 100] [--batch 16] [--hidden 128] [--runs 5]

The cell is a coupled-gate LSTM (CIFG: the input gate is one minus the forget gate) with a
LayerNorm on the cell state, written as an ordinary ``nn.Module``; no library cell does that. The
demo compiles it with ``cellfuse.compile``, runs the same sequence eagerly (a Python loop over the
cell) and compiled, on the CPU and on the GPU when PyTorch and cellfuse both see one, and prints
whether the outputs and gradients agree and the speedup (median of paired runs: eager and
cellfuse timed in alternation). It exits with status 1 when they do not agree.

>>> from cellfuse.demo import CoupledLSTMCell
>>> cell = CoupledLSTMCell(4, 8)
>>> x, h, c = torch.randn(3, 4), torch.zeros(3, 8), torch.zeros(3, 8)
>>> [tuple(t.shape) for t in cell(x, (h, c))]
[(3, 8), (3, 8)]
"""
import argparse
import statistics
import sys
import time

import torch
from torch import nn

import cellfuse


class CoupledLSTMCell(nn.Module):
    """An LSTM whose input gate is ``1 - forget`` and whose cell state is layer-normalized.

    ``forward(x, (h, c))`` returns ``(h', c')``: one step, as ``cellfuse.compile`` expects.

    >>> cell = CoupledLSTMCell(2, 3)
    >>> h, c = cell(torch.ones(1, 2), (torch.zeros(1, 3), torch.zeros(1, 3)))
    >>> h.shape
    torch.Size([1, 3])
    """

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.x2g = nn.Linear(input_size, 3 * hidden_size)
        self.h2g = nn.Linear(hidden_size, 3 * hidden_size, bias=False)
        self.norm = nn.LayerNorm(hidden_size)

    def forward(self, x, state):
        h, c = state
        forget, candidate, out = (self.x2g(x) + self.h2g(h)).chunk(3, dim=1)
        f = torch.sigmoid(forget)
        c = self.norm(f * c + (1 - f) * torch.tanh(candidate))
        h = torch.sigmoid(out) * torch.tanh(c)
        return h, c


def _eager(cell, X, state):
    """The reference: the cell called once per step in a Python loop, as PyTorch runs it."""
    outs = []
    for x in X:
        state = cell(x, state)
        outs.append(state[0])
    return torch.stack(outs), state


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _paired_ms(a, b, device, runs):
    """Medians of `runs` timings of a() and b(), called in alternation so drift hits both."""
    ta, tb = [], []
    for _ in range(runs):
        for fn, times in ((a, ta), (b, tb)):
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(ta), statistics.median(tb)


def _max_diff(xs, ys):
    return max((x - y).abs().max().item() for x, y in zip(xs, ys))


def _compare(device, seq, batch, input_size, hidden, runs):
    """Runs the demo on one device; returns True when cellfuse agrees with eager PyTorch."""
    torch.manual_seed(0)
    cell = CoupledLSTMCell(input_size, hidden).to(device)
    X = torch.randn(seq, batch, input_size, device=device)
    h0 = torch.randn(batch, hidden, device=device)
    c0 = torch.randn(batch, hidden, device=device)
    start = time.perf_counter()
    rnn = cellfuse.compile(cell, (X[0], (h0, c0)))
    with torch.no_grad():
        out, (h, c) = rnn(X, (h0, c0))  # the first call compiles the forward
    _sync(device)
    compile_ms = (time.perf_counter() - start) * 1e3
    with torch.no_grad():
        ref_out, (ref_h, ref_c) = _eager(cell, X, (h0, c0))
    fwd_diff = _max_diff((out, h, c), (ref_out, ref_h, ref_c))

    # Training: the same loss through both, gradients of every parameter compared.
    def grads(run):
        cell.zero_grad()
        o, (hn, cn) = run()
        (o.square().mean() + hn.sum() + cn.mean()).backward()
        return [p.grad.clone() for p in cell.parameters()]

    g_ours = grads(lambda: rnn(X, (h0, c0)))
    g_ref = grads(lambda: _eager(cell, X, (h0, c0)))
    grad_diff = max(_max_diff([a], [b]) / max(1.0, b.abs().max().item()) for a, b in zip(g_ours, g_ref))

    def forward_eager():
        with torch.no_grad():
            _eager(cell, X, (h0, c0))

    def forward_ours():
        with torch.no_grad():
            rnn(X, (h0, c0))

    def train_eager():
        o, _ = _eager(cell, X, (h0, c0))
        o.sum().backward()

    def train_ours():
        o, _ = rnn(X, (h0, c0))
        o.sum().backward()

    fe, fo = _paired_ms(forward_eager, forward_ours, device, runs)
    te, to = _paired_ms(train_eager, train_ours, device, runs)
    ok = fwd_diff < 1e-4 and grad_diff < 1e-3
    print(f"device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"T={seq}, B={batch}, input {input_size}, hidden {hidden}")
    print(f"  compile (trace + first forward): {compile_ms:.0f} ms")
    print(f"  outputs agree with eager PyTorch: {'yes' if fwd_diff < 1e-4 else 'NO'} "
          f"(max abs difference {fwd_diff:.1e})")
    print(f"  gradients agree:                  {'yes' if grad_diff < 1e-3 else 'NO'} "
          f"(max relative difference {grad_diff:.1e})")
    print(f"  forward:            eager {fe:8.2f} ms   cellfuse {fo:8.2f} ms   speedup {fe / fo:5.2f}x")
    print(f"  forward + backward: eager {te:8.2f} ms   cellfuse {to:8.2f} ms   speedup {te / to:5.2f}x")
    return ok


def main(argv=None):
    """Runs the demo with command-line arguments `argv` (default: sys.argv[1:]); returns 0 when
    every device agrees with eager PyTorch, else 1.

    >>> from cellfuse.demo import main
    >>> main(["--seq", "8", "--batch", "2", "--hidden", "16", "--runs", "1", "--device", "cpu"])  # doctest: +ELLIPSIS
    device: cpu (CPU), T=8, B=2, input 64, hidden 16
    ...
    cellfuse agrees with eager PyTorch
    0
    """
    parser = argparse.ArgumentParser(prog="python -m cellfuse.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--seq", type=int, default=100, help="steps per sequence (default 100)")
    parser.add_argument("--batch", type=int, default=16, help="batch size (default 16)")
    parser.add_argument("--input", type=int, default=64, help="input width (default 64)")
    parser.add_argument("--hidden", type=int, default=128, help="hidden width (default 128)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each (default 5; medians)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: the CPU, and the GPU too when there is one")
    args = parser.parse_args(argv)
    devices = [torch.device("cpu")] if args.device != "cuda" else []
    gpu_ok, why = cellfuse.cuda_available()
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        if not (torch.cuda.is_available() and gpu_ok):
            print(f"no GPU for cellfuse: {why if not gpu_ok else 'PyTorch sees no CUDA device'}")
            if args.device == "cuda":
                return 1
        else:
            devices.append(torch.device("cuda"))
    elif args.device == "auto":
        print("(no GPU here: the CPU only)")
    ok = True
    for device in devices:
        ok = _compare(device, args.seq, args.batch, args.input, args.hidden, args.runs) and ok
    print("cellfuse agrees with eager PyTorch" if ok else "cellfuse: MISMATCH against eager PyTorch")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
