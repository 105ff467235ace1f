"""Train a custom recurrent cell with cellfuse on a toy task, and compare it with the same cell
run eagerly.

The cell is a minimal gated unit (MGU, Zhou et al. 2016: one forget gate, no output gate) with a
LayerNorm on the candidate, written in ordinary PyTorch. The task: at every step, output the sum
of the inputs of the last three steps (a memory of a few steps). Run:

    python examples/train_custom_cell.py [--steps 300] [--device cpu|cuda]
"""
import argparse
import time

import torch
from torch import nn

import cellfuse


class MGUCell(nn.Module):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.f = nn.Linear(input_size + hidden_size, hidden_size)
        self.x = nn.Linear(input_size, hidden_size)
        self.h = nn.Linear(hidden_size, hidden_size, bias=False)
        self.norm = nn.LayerNorm(hidden_size)

    def forward(self, x, h):
        f = torch.sigmoid(self.f(torch.cat([x, h], dim=1)))
        candidate = torch.tanh(self.norm(self.x(x) + self.h(f * h)))
        return (1 - f) * h + f * candidate


def batch(T, B, device):
    x = torch.randn(T, B, 1, device=device)
    y = x.clone()
    y[1:] += x[:-1]
    y[2:] += x[:-2]
    return x, y


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    H, T, B = 64, 50, 32

    # The five lines: make the cell, give one step's example inputs, compile, run sequences.
    cell = MGUCell(1, H).to(args.device)
    example = (torch.zeros(B, 1, device=args.device), torch.zeros(B, H, device=args.device))
    rnn = cellfuse.compile(cell, example)          # traces one step, compiles on first use
    head = nn.Linear(H, 1).to(args.device)
    opt = torch.optim.Adam([*rnn.parameters(), *head.parameters()], lr=3e-3)

    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        x, y = batch(T, B, args.device)
        out, _ = rnn(x)                            # the whole sequence, forward and backward native
        loss = nn.functional.mse_loss(head(out), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == 1:
            print(f"step {step:4d}  loss {loss.item():.4f}")
    took = time.perf_counter() - start
    print(f"cellfuse: {args.steps} training steps in {took:.2f} s")

    # The same cell eagerly, a step at a time in Python, for a few steps: the time per step.
    x, y = batch(T, B, args.device)
    start = time.perf_counter()
    for _ in range(10):
        h = torch.zeros(B, H, device=args.device)
        outs = []
        for t in range(T):
            h = cell(x[t], h)
            outs.append(h)
        loss = nn.functional.mse_loss(head(torch.stack(outs)), y)
        loss.backward()
    eager = (time.perf_counter() - start) / 10
    print(f"per training step: cellfuse {took / args.steps * 1e3:.1f} ms, eager {eager * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
