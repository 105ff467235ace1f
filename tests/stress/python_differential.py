#!/usr/bin/env python3
"""The Python path of the random-cell differential test, and the Python-level fuzzer of the capture.

Each random cell of the C++ generator (cellfuse_differential --emit, tests/stress/random_cell.h) is
turned into an equivalent PyTorch module: its text is parsed and every node becomes the PyTorch
call a user would write (F.linear, torch.cat, slicing, torch.where, amax(-1, keepdim=True), ...;
a comparison as (a > b).to(dtype)). cellfuse.compile captures that module (make_fx, the ATen
lowering, the prelude for work on parameters) and runs whole sequences forward and backward; the
oracle is the same module stepped eagerly by PyTorch in float64 with autograd. Outputs, final
states and the gradients of the inputs, initial states and every parameter are compared with
tolerances from the cell's depth and its float32 conditioning (the module stepped in float32 is
the probe), as the C++ driver does.

    python tests/stress/python_differential.py --build build --minutes 10 [--seed 1]
    python tests/stress/python_differential.py --build build --check 1234      one seed, shrunk

A failure prints the seed, what differed and the cell shrunk to the smallest one that still fails
the same way (nodes replaced by an operand of the same shape or by a constant).
"""
import argparse
import copy
import math
import os
import re
import subprocess
import sys
import time
import traceback

import torch
import torch.nn.functional as F
from torch import nn

NODE = re.compile(r"^%(\S+) = (\w+)(?: ([^{:]*?))?(?: \{([^}]*)\})?(?: : \[([^\]]*)\])?$")

UNARY = {
    "neg": lambda a: -a, "abs": torch.abs, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
    "exp": torch.exp, "log": torch.log, "sqrt": torch.sqrt, "rsqrt": torch.rsqrt, "softplus": F.softplus,
    "erf": torch.erf, "log1p": torch.log1p, "expm1": torch.expm1, "hardsigmoid": F.hardsigmoid, "softsign": F.softsign,
}
BINARY = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b, "div": lambda a, b: a / b,
    "min": torch.minimum, "max": torch.maximum,
}
COMPARE = {"gt": torch.gt, "ge": torch.ge, "lt": torch.lt, "le": torch.le}
REDUCE = {
    "sum": lambda a: a.sum(-1, keepdim=True), "mean": lambda a: a.mean(-1, keepdim=True),
    "amax": lambda a: a.amax(-1, keepdim=True),
}


class ExactHardsigmoid(torch.autograd.Function):
    """F.hardsigmoid with its gradient dy / 6 in the tensor's own precision: the oracle's form.
    PyTorch's own hardsigmoid_backward multiplies by 1.0f / 6.0f, a float32 constant, also for
    float64 (torch 2.x, aten/src/ATen/native/cpu/Activation.cpp), so its float64 gradient is off
    by 3e-8 relative per hardsigmoid on the path: python_differential seeds 300034, 300037, 300091
    and 300128 failed against it by 1e-9 to 1e-7 where cellfuse's dy / 6 was right."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return F.hardsigmoid(x)

    @staticmethod
    def backward(ctx, dy):
        (x,) = ctx.saved_tensors
        return torch.where((x > -3) & (x < 3), dy / 6, torch.zeros_like(dy))


class Node:
    def __init__(self, name, op, operands, attrs, shape):
        self.name, self.op, self.operands, self.attrs, self.shape = name, op, operands, attrs, shape


class ParsedCell:
    """The text form of a cell (compiler/ir/text.h), enough of it for generated cells."""

    def __init__(self, text):
        self.nodes, self.outputs, self.nexts = [], [], []
        for raw in text.splitlines():
            line = raw.split("#", 1)[0].strip()
            if not line or line == "}":
                continue
            if line.startswith("cell "):
                self.name, self.dtype = line.split()[1:3]
                continue
            if line.startswith("output "):
                name, value = line[len("output "):].split(" = ")
                self.outputs.append((name, value.lstrip("%")))
                continue
            if line.startswith("next "):
                name, value = line[len("next "):].split(" = ")
                self.nexts.append((name, value.lstrip("%")))
                continue
            m = NODE.match(line)
            if not m:
                raise ValueError("cannot read line: " + line)
            name, op, operands, attrs, shape = m.groups()
            ops = [o.strip().lstrip("%") for o in operands.split(",")] if operands else []
            attr = {}
            for kv in (attrs or "").split(","):
                if kv.strip():
                    k, v = kv.split("=")
                    attr[k.strip()] = float(v) if k.strip() == "value" else int(v)
            dims = tuple(shape.split(",")) if shape else None
            self.nodes.append(Node(name, op, ops, attr, dims))
        self.by_name = {n.name: n for n in self.nodes}
        self.infer_shapes()

    def infer_shapes(self):
        for n in self.nodes:
            if n.shape is not None:
                continue
            ins = [self.by_name[o].shape for o in n.operands]
            if n.op in UNARY or n.op in BINARY or n.op in COMPARE or n.op == "where":
                n.shape = ins[-1] if n.op == "where" else ins[0]
            else:
                raise ValueError("no shape for %" + n.name + " (" + n.op + ")")

    def leaves(self, op):
        return [n for n in self.nodes if n.op == op]

    def width(self, n):
        return int(n.shape[-1])

    def depth(self):
        d = {}
        for n in self.nodes:
            base = max([d[o] for o in n.operands], default=0)
            d[n.name] = base + (0 if n.op in ("input", "state", "param", "constant", "broadcast", "expand", "cat", "slice") else 1)
        return max([d[v] for _, v in self.outputs + self.nexts], default=0)

    def text(self):
        lines = ["cell %s %s {" % (self.name, self.dtype)]
        for n in self.nodes:
            s = "  %%%s = %s" % (n.name, n.op)
            if n.operands:
                s += " " + ", ".join("%" + o for o in n.operands)
            if n.attrs:
                s += " {" + ", ".join("%s=%s" % (k, repr(v) if isinstance(v, float) else v) for k, v in n.attrs.items()) + "}"
            s += " : [" + ",".join(n.shape) + "]"
            lines.append(s)
        lines += ["  output %s = %%%s" % o for o in self.outputs]
        lines += ["  next %s = %%%s" % o for o in self.nexts]
        return "\n".join(lines + ["}"]) + "\n"


class TextCell(nn.Module):
    """The cell as a PyTorch module: forward(x, *states) -> (output, *next states); several inputs are
    the columns of one x, several outputs are concatenated."""

    def __init__(self, cell, seed):
        super().__init__()
        self.cell = cell
        # The eager oracle (eager()) sets it: ops whose PyTorch gradient is not computed in the
        # tensor's precision take an exact form there; the module cellfuse captures keeps F.*.
        self.oracle = False
        dtype = torch.float32 if cell.dtype == "f32" else torch.float64
        g = torch.Generator().manual_seed(seed)
        for n in cell.leaves("param"):
            dims = [int(d) for d in n.shape]
            bound = 1.0 / math.sqrt(dims[-1])
            values = (torch.rand(dims, generator=g, dtype=torch.float64) * 2 - 1) * bound
            self.register_parameter(n.name, nn.Parameter(values.to(dtype)))

    def forward(self, x, *states):
        cell, env = self.cell, {}
        B = x.shape[0]
        col = 0
        for n in cell.leaves("input"):
            w = cell.width(n)
            env[n.name] = x[:, col:col + w]
            col += w
        for n, s in zip(cell.leaves("state"), states):
            env[n.name] = s
        for n in cell.nodes:
            if n.op in ("input", "state"):
                continue
            a = [env[o] for o in n.operands]
            if n.op == "param":
                v = getattr(self, n.name)
            elif n.op == "constant":
                shape = (B, cell.width(n)) if n.shape[0] == "B" else tuple(int(d) for d in n.shape)
                v = torch.full(shape, n.attrs["value"], dtype=x.dtype, device=x.device)
            elif n.op == "linear":
                v = F.linear(*a)
            elif n.op == "matmul":
                v = a[0] @ a[1]
            elif n.op == "hardsigmoid" and self.oracle:
                v = ExactHardsigmoid.apply(a[0])
            elif n.op in UNARY:
                v = UNARY[n.op](a[0])
            elif n.op in BINARY:
                v = BINARY[n.op](a[0], a[1])
            elif n.op in COMPARE:
                v = COMPARE[n.op](a[0], a[1]).to(x.dtype)
            elif n.op == "where":
                v = torch.where(a[0] != 0, a[1], a[2])
            elif n.op == "broadcast":
                v = a[0].expand(B, a[0].shape[-1])
            elif n.op == "expand":
                v = a[0].expand(a[0].shape[0], n.attrs["n"])
            elif n.op == "cat":
                v = torch.cat(a, dim=-1)
            elif n.op == "slice":
                v = a[0][..., n.attrs["start"]:n.attrs["start"] + n.attrs["len"]]
            elif n.op in REDUCE:
                v = REDUCE[n.op](a[0])
            else:
                raise ValueError("python_differential: no PyTorch form for op " + n.op)
            env[n.name] = v
        outs = [env[v] for _, v in cell.outputs]
        y = outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)
        return (y, *[env[v] for _, v in cell.nexts])


def eager(module, X, h0, dtype):
    """Steps `module` (a copy in `dtype`) over X with autograd: outputs, final states, and the module."""
    m = copy.deepcopy(module).to(dtype)
    m.oracle = True
    X = X.detach().to(dtype).requires_grad_(True)
    hs = [h.detach().to(dtype).requires_grad_(True) for h in h0]
    states, ys = list(hs), []
    for t in range(X.shape[0]):
        y, *states = m(X[t], *states)
        ys.append(y)
    return m, X, hs, torch.stack(ys), states


def grad(t):
    """A tensor's gradient; zeros where nothing reached it (an unused input or parameter)."""
    return t.grad if t.grad is not None else torch.zeros_like(t)


def rel_err(got, want):
    got, want = got.double(), want.double()
    if not torch.isfinite(got).all() or not torch.isfinite(want).all():
        return 0.0 if torch.equal(torch.isnan(got), torch.isnan(want)) and torch.allclose(got.nan_to_num(), want.nan_to_num()) else math.inf
    # As the C++ driver (tests/stress/differential.cpp): a tensor whose root mean square is below
    # 1e-2 is measured against that floor, an absolute error. A value that cancels to about 0 is
    # all rounding in relative terms: seed 300146, x - mean(x) over three equal columns, is exactly 0
    # in eager PyTorch and +-1 ulp of x in cellfuse's float32 (relative error 39 against 1e-9).
    floor = 1e-2 * math.sqrt(want.numel())
    return ((got - want).norm() / max(want.norm().item(), floor, 1e-300)).item()


def check(cellfuse, text, seed, steps, batch):
    """None when cellfuse agrees with eager PyTorch, else (kind, detail)."""
    cell = ParsedCell(text)
    dtype = torch.float32 if cell.dtype == "f32" else torch.float64
    module = TextCell(cell, seed)
    g = torch.Generator().manual_seed(seed + 1)
    in_width = sum(cell.width(n) for n in cell.leaves("input"))
    state_widths = [cell.width(n) for n in cell.leaves("state")]
    X = (torch.rand(steps, batch, in_width, generator=g, dtype=torch.float64) * 2 - 1).to(dtype)
    h0 = [(torch.rand(batch, w, generator=g, dtype=torch.float64) * 2 - 1).to(dtype) for w in state_widths]
    try:
        rnn = cellfuse.compile(module, (X[0], *h0), has_output=True)
        Xc = X.clone().requires_grad_(True)
        hc = [h.clone().requires_grad_(True) for h in h0]
        out, final = rnn(Xc, hc[0] if len(hc) == 1 else tuple(hc))
        finals = [final] if len(hc) == 1 else list(final)
    except Exception as e:  # noqa: BLE001 - any failure of the capture is what we look for
        return ("capture or run: " + type(e).__name__, str(e).splitlines()[0][:300] if str(e) else repr(e))
    gy = torch.rand(out.shape, generator=g, dtype=torch.float64) * 2 - 1
    gh = [torch.rand(f.shape, generator=g, dtype=torch.float64) * 2 - 1 for f in finals]
    loss = (out.double() * gy).sum() + sum((f.double() * s).sum() for f, s in zip(finals, gh))
    try:
        loss.backward()
    except Exception as e:  # noqa: BLE001
        return ("backward: " + type(e).__name__, str(e).splitlines()[0][:300])
    results = {}
    for name, want_dtype in (("ref", torch.float64), ("probe", torch.float32)):
        m, Xr, hr, ys, states = eager(module, X, h0, want_dtype)
        l = (ys.double() * gy).sum() + sum((s.double() * w).sum() for s, w in zip(states, gh))
        l.backward()
        results[name] = [ys, *states, grad(Xr), *[grad(h) for h in hr], *[grad(p) for p in m.parameters()]]
    got = [out, *finals, grad(Xc), *[grad(h) for h in hc], *[grad(p) for p in module.parameters()]]
    names = ["output"] + ["final state %d" % i for i in range(len(finals))] + ["d x"] + \
        ["d h0 %d" % i for i in range(len(hc))] + ["d " + n for n, _ in module.named_parameters()]
    u = 6e-8 if dtype == torch.float32 else 1.2e-16
    base = u * 64 * (cell.depth() + 2) * math.sqrt(steps + 1)
    scale = 1.0 if dtype == torch.float32 else 1.2e-16 / 6e-8
    for name, g_, w, p in zip(names, got, results["ref"], results["probe"]):
        if not torch.isfinite(w).all():
            return None  # the generator's bounded cells never get here
        probe = rel_err(p, w)
        if not math.isfinite(probe):
            continue
        tol = max(base, 4 * probe * scale)
        err = rel_err(g_, w)
        if not err <= tol:
            return ("mismatch", "%s: relative error %.3g > tolerance %.3g (f32 probe %.3g)" % (name, err, tol, probe))
    return None


def shrink(cellfuse, text, seed, steps, batch, kind, budget=300):
    """Replaces nodes by an operand of their shape or a constant while the failure keeps its kind."""
    best = ParsedCell(text)
    tries = 0
    progress = True
    while progress and tries < budget:
        progress = False
        for i in range(len(best.nodes) - 1, -1, -1):
            if i >= len(best.nodes) or tries >= budget:
                continue
            n = best.nodes[i]
            if n.op in ("input", "state", "param", "constant"):
                continue
            options = [o for o in n.operands if best.by_name[o].shape == n.shape] + [None]
            for with_ in options:
                cand = copy.deepcopy(best)
                victim = cand.nodes[i]
                if with_ is None:
                    victim.op, victim.operands, victim.attrs = "constant", [], {"value": 0.5}
                else:
                    for m in cand.nodes[i + 1:]:
                        m.operands = [with_ if o == victim.name else o for o in m.operands]
                    cand.outputs = [(a, with_ if v == victim.name else v) for a, v in cand.outputs]
                    cand.nexts = [(a, with_ if v == victim.name else v) for a, v in cand.nexts]
                    del cand.nodes[i]
                cand = drop_dead(cand)
                tries += 1
                try:
                    r = check(cellfuse, cand.text(), seed, steps, batch)
                except Exception:  # noqa: BLE001
                    r = None
                if r is not None and r[0] == kind:
                    best, progress = cand, True
                    break
    return best.text()


def drop_dead(cell):
    live = {v for _, v in cell.outputs + cell.nexts}
    for n in reversed(cell.nodes):
        if n.op in ("input", "state", "param"):
            live.add(n.name)
        if n.name in live:
            live.update(n.operands)
    cell.nodes = [n for n in cell.nodes if n.name in live]
    cell.by_name = {n.name: n for n in cell.nodes}
    return cell


def package_dir(root, build):
    """A directory holding the package `cellfuse` of this tree (python/cellfuse) with the extension
    built in `build` beside it, as links: what `pip install .` would install, without installing."""
    import glob
    pkg = os.path.join(build, "stress_pkg", "cellfuse")
    os.makedirs(pkg, exist_ok=True)
    for f in glob.glob(os.path.join(root, "python", "cellfuse", "*.py")) + \
            glob.glob(os.path.join(build, "python", "cellfuse", "_C*.so")):
        link = os.path.join(pkg, os.path.basename(f))
        if os.path.lexists(link):
            os.remove(link)
        os.symlink(f, link)
    if not glob.glob(os.path.join(pkg, "_C*.so")):
        sys.exit("python_differential: no extension in %s/python/cellfuse (configure the build with "
                 "-Dpybind11_DIR=$(python -m pybind11 --cmakedir) -DPython_EXECUTABLE=$(which python))" % build)
    return os.path.dirname(pkg)


def cells_from(driver, seed, count, max_width):
    out = subprocess.run([driver, "--emit", str(count), "--seed", str(seed), "--max-width", str(max_width), "--computed-weights"],
                         check=True, capture_output=True, text=True).stdout
    for chunk in out.split("#### seed ")[1:]:
        number, text = chunk.split("\n", 1)
        yield int(number), text


def shapes_for(seed):
    r = (seed * 2654435761) % 1000003
    return 1 + r % 4, (1, 2, 3, 5)[(r // 7) % 4]  # steps, batch


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build", help="the CMake build directory (cellfuse_differential, python/)")
    ap.add_argument("--minutes", type=float, default=0)
    ap.add_argument("--cells", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--check", type=int, default=None)
    ap.add_argument("--max-width", type=int, default=64)
    ap.add_argument("--keep-going", action="store_true")
    args = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    build = os.path.abspath(args.build)
    sys.path.insert(0, package_dir(root, build))
    torch.set_num_threads(1)
    import cellfuse  # noqa: E402

    driver = os.path.join(build, "tests", "stress", "cellfuse_differential")
    start, done, failures = time.time(), 0, 0
    seed = args.check if args.check is not None else args.seed
    deadline = start + args.minutes * 60 if args.minutes else None
    while True:
        batch_cells = list(cells_from(driver, seed, 1 if args.check is not None else 50, args.max_width))
        for number, text in batch_cells:
            if args.cells and done >= args.cells or deadline and time.time() > deadline:
                break
            steps, batch = shapes_for(number)
            try:
                failure = check(cellfuse, text, number, steps, batch)
            except Exception:  # noqa: BLE001 - a bug of this script or of the oracle: report, go on
                failure = ("driver", traceback.format_exc().splitlines()[-1])
            done += 1
            if failure:
                failures += 1
                print("\nFAIL seed %d (T=%d B=%d): %s: %s" % (number, steps, batch, *failure), flush=True)
                if failure[0] != "driver":
                    print("minimized:\n" + shrink(cellfuse, text, number, steps, batch, failure[0]), flush=True)
                if not args.keep_going:
                    break
        seed += len(batch_cells)
        if args.check is not None or (failures and not args.keep_going) or args.cells and done >= args.cells \
                or deadline and time.time() > deadline:
            break
    elapsed = time.time() - start
    print("python_differential: %d cells from seed %d through cellfuse.compile, forward and backward against "
          "eager PyTorch (float64): %d failures, %.0f s (%.2f cells/s)" %
          (done, args.check if args.check is not None else args.seed, failures, elapsed, done / max(elapsed, 1e-9)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
