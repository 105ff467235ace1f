"""What capturing and compiling a PyTorch LSTM cell costs on the CPU, for the current Python
front end and (optionally) the package at an older git revision, timed in alternating fresh
processes (A B A B ...; the machine may be shared) and reported as medians.

    PYTHONPATH=python python bench/capture_cost.py --runs 5 [--old 77dc952] [--out FILE]

Per process: `import cellfuse`; then, for hidden sizes 512, 513, 514, 515 (distinct cells, so the
JIT cache never answers): capture = `cellfuse.compile(cell, example)`, jit = compiling the forward
program for the CPU (LLVM), train = compiling the training pair (forward with tape + backward).
The first capture in a process also pays PyTorch's lazy imports (fake tensors, decompositions):
reported apart as `first`.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
from torch import nn
t1 = time.perf_counter()
import cellfuse
t2 = time.perf_counter()
torch.set_num_threads(1)

class LSTMCell(nn.Module):
    def __init__(self, i, h):
        super().__init__()
        self.ih = nn.Linear(i, 4 * h)
        self.hh = nn.Linear(h, 4 * h)
    def forward(self, x, state):
        h, c = state
        i, f, g, o = (self.ih(x) + self.hh(h)).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c

rows = []
for k, H in enumerate((512, 513, 514, 515)):
    cell = LSTMCell(256, H)
    ex = (torch.randn(8, 256), (torch.randn(8, H), torch.randn(8, H)))
    a = time.perf_counter()
    rnn = cellfuse.compile(cell, ex)
    b = time.perf_counter()
    rnn.programs[0].compiled(torch.device("cpu"), 8, False)
    c = time.perf_counter()
    rnn.programs[0].compiled(torch.device("cpu"), 8, True)
    d = time.perf_counter()
    rows.append(dict(capture=b - a, jit=c - b, train=d - c))
print(json.dumps(dict(import_torch=t1 - t0, import_cellfuse=t2 - t1, rows=rows)))
"""


def old_package(rev: str, current: str) -> str:
    """The python/cellfuse package at `rev` in a temporary directory, with the current _C."""
    root = tempfile.mkdtemp(prefix="cellfuse-old-")
    pkg = os.path.join(root, "cellfuse")
    os.makedirs(pkg)
    names = subprocess.check_output(["git", "ls-tree", "--name-only", rev, "python/cellfuse/"], text=True).split()
    for name in names:
        if name.endswith(".py"):
            with open(os.path.join(pkg, os.path.basename(name)), "w") as f:
                f.write(subprocess.check_output(["git", "show", f"{rev}:{name}"], text=True))
    for entry in os.listdir(current):
        if entry.startswith("_C") and (entry.endswith(".so") or entry.endswith(".pyd")):
            os.symlink(os.path.realpath(os.path.join(current, entry)), os.path.join(pkg, entry))
    return root


def run(path: str) -> dict:
    env = dict(os.environ, PYTHONPATH=path + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.check_output([sys.executable, "-c", CHILD], env=env, text=True)
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--old", help="a git revision whose python/cellfuse is timed against the current one")
    ap.add_argument("--out")
    args = ap.parse_args()
    import cellfuse
    current_pkg = os.path.dirname(os.path.abspath(cellfuse.__file__))
    variants = {"current": os.path.dirname(current_pkg)}
    if args.old:
        variants[f"old ({args.old})"] = old_package(args.old, current_pkg)
    results = {name: [] for name in variants}
    for _ in range(args.runs):
        for name, path in variants.items():  # alternating
            results[name].append(run(path))
    lines = [f"`{' '.join(sys.argv)}`: medians over {args.runs} fresh processes per front end, run "
             "alternately; seconds. LSTM cell, input 256, hidden 512..515, batch 8, float32, one thread.", "",
             "| front end | import cellfuse | first capture | capture | capture + forward JIT | "
             "training JIT |", "|---|---|---|---|---|---|"]
    for name, rs in results.items():
        med = statistics.median
        first = med(r["rows"][0]["capture"] for r in rs)
        warm = med(x["capture"] for r in rs for x in r["rows"][1:])
        both = med(x["capture"] + x["jit"] for r in rs for x in r["rows"][1:])
        train = med(x["train"] for r in rs for x in r["rows"][1:])
        imp = med(r["import_cellfuse"] for r in rs)
        lines.append(f"| {name} | {imp:.3f} | {first:.3f} | {warm:.3f} | {both:.3f} | {train:.3f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
