#!/usr/bin/env python3
"""Where the time of a custom cell goes, before and after cellfuse: the profiler's side-by-side
report, its Chrome trace and the picture of the per-step split.

    python examples/profile_cell.py [--hidden 512] [--batch 64] [--seq 100] [--out DIR] [--backward]

The cell is the LayerNorm-LSTM of the benchmarks (W3 at the defaults): written in plain PyTorch,
compiled by cellfuse and run beside itself in an eager Python loop under torch.profiler. Open
DIR/trace.json in https://ui.perfetto.dev (or chrome://tracing) to see the compile phases and
every GEMM and fused kernel of every step; DIR/split.png is the README's picture.
"""
import argparse
import os

import torch
from torch import nn

import cellfuse


class LayerNormLSTM(nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.w_ih = nn.Parameter(torch.randn(4 * hidden_size, input_size) / input_size ** 0.5)
        self.w_hh = nn.Parameter(torch.randn(4 * hidden_size, hidden_size) / hidden_size ** 0.5)
        self.ln_i, self.ln_h = nn.LayerNorm(4 * hidden_size), nn.LayerNorm(4 * hidden_size)
        self.ln_c = nn.LayerNorm(hidden_size)

    def forward(self, x, h, c):
        gates = self.ln_i(x @ self.w_ih.t()) + self.ln_h(h @ self.w_hh.t())
        i, f, g, o = gates.chunk(4, 1)
        c = self.ln_c(torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g))
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, h, c


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", default="profile-out")
    parser.add_argument("--backward", action="store_true", help="profile forward and backward")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    device = torch.device(args.device)
    n = args.hidden
    cell = LayerNormLSTM(n, n).to(device)
    x0, h0, c0 = (torch.randn(args.batch, n, device=device) for _ in range(3))
    X = torch.randn(args.seq, args.batch, n, device=device)
    report = cellfuse.profile(cell, (x0, h0, c0), X, compare="eager", backward=args.backward, runs=args.runs,
                              trace=os.path.join(args.out, "trace.json"), json=os.path.join(args.out, "report.json"))
    print(report)
    try:
        report.save_png(os.path.join(args.out, "split.png"))
        print(f"picture: {os.path.join(args.out, 'split.png')}")
    except cellfuse.CellfuseError as e:  # matplotlib is optional
        print(f"no picture: {e}")
    print(f"trace: {os.path.join(args.out, 'trace.json')} (open in https://ui.perfetto.dev)")


if __name__ == "__main__":
    main()
