"""cellfuse.profile: where a compiled cell's time goes, beside the same cell in eager PyTorch.

The engine is the C++ profiler (runtime/profile, through ``_C.Profiler``): every GEMM and kernel
call of the native runner, the compile phases and cache lookups, turned into a Chrome trace and an
overhead report. This module runs the module under it, times the same calls without it, and for
``compare="eager"`` (or ``"torch.compile"``) runs the user's cell in a Python loop under
``torch.profiler`` on the same inputs, so the report shows both columns side by side.
"""
import json as _json
import statistics
import time

import torch

from . import _C
from ._errors import CellfuseError
from ._rnn import RNN, compile as _compile

# ATen ops that are matrix products (their time is the GEMM share of an eager step).
_GEMM_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::addmv", "aten::mv",
             "aten::baddbmm", "aten::_addmm_activation"}


def profile(target, *args, compare=None, backward=False, runs=3, trace=None, json=None, png=None):
    """Profiles a compiled module or a cell of your own; returns a ProfileReport.

    ``profile(rnn, X)``: ``rnn`` from :func:`cellfuse.compile`, run on ``X``.
    ``profile(cell, example, X, compare="eager")``: compiles ``cell`` on ``example`` (as
    ``cellfuse.compile``), and with ``compare`` also runs ``cell`` in an eager Python loop
    (``"eager"``) or that loop's step under ``torch.compile`` (``"torch.compile"``) under
    torch.profiler on the same inputs and zero initial states. ``backward=True`` profiles
    forward and backward (``out.sum().backward()``). One warm-up call (compiles; its compile
    phases are kept), then ``runs`` profiled calls, then ``runs`` unprofiled timed calls.
    ``trace=`` writes the Chrome trace (Perfetto, chrome://tracing), ``json=`` the report as
    JSON, ``png=`` a chart of the per-step time split (needs matplotlib).

    ``str(report)`` is the table, ``report.to_json()`` the same as JSON.

    >>> import torch, cellfuse
    >>> step = lambda x, h: torch.tanh(x + h)
    >>> report = cellfuse.profile(step, (torch.zeros(2, 3), torch.zeros(2, 3)), torch.randn(5, 2, 3), runs=1)
    >>> report.cellfuse["phases"][0]["steps"], report.cellfuse["phases"][0]["kernels_per_step"]
    (5, 1)
    >>> "summary:" in str(report)
    True
    """
    if isinstance(target, RNN):
        if len(args) != 1:
            raise CellfuseError("cellfuse.profile(rnn, X): give the compiled module and X")
        rnn, (X,), cell = target, args, None
    else:
        if len(args) != 2:
            raise CellfuseError("cellfuse.profile(cell, example, X): give your cell, one step's example inputs "
                                "(as for cellfuse.compile) and X, or a module from cellfuse.compile and X")
        cell, (example, X) = target, args
        rnn = _compile(cell, example)
    if compare not in (None, "eager", "torch.compile"):
        raise CellfuseError(f"cellfuse.profile: compare must be 'eager' or 'torch.compile', not {compare!r}")
    if compare is not None and cell is None:
        raise CellfuseError("cellfuse.profile: compare= needs your own cell: cellfuse.profile(cell, example, X, "
                            f"compare={compare!r}) (a compiled module's cell may be one of several layers)")
    if runs < 1:
        raise CellfuseError(f"cellfuse.profile: runs must be at least 1, got {runs}")
    if not isinstance(X, torch.Tensor) or X.dim() < 2:
        raise CellfuseError("cellfuse.profile: X must be a tensor (T, ...) of the whole sequence")

    def call():
        out, _ = rnn(X)
        if backward:
            out.sum().backward()

    profiler = _C.Profiler()
    try:
        call()
        _sync(X)
        profiler.discard_runs()
        for _ in range(runs):
            call()
            _sync(X)
    finally:
        profiler.stop()
    report = _json.loads(profiler.report_json())
    text = profiler.report_text()
    trace_text = profiler.trace_json()
    ms = _time_calls(call, X, runs)
    steps = X.shape[1] if rnn.batch_first else X.shape[0]
    calls = rnn.num_layers * rnn.directions * (2 if backward else 1)
    columns = {"cellfuse": _cellfuse_column(report, ms, steps, calls)}
    if compare is not None:
        columns[compare] = _torch_column(cell, rnn, X, backward, runs, compare)
    result = ProfileReport(report, text, trace_text, columns, steps)
    if trace:
        result.write_trace(trace)
    if json:
        with open(json, "w") as f:
            f.write(result.to_json())
    if png:
        result.save_png(png)
    return result


class ProfileReport:
    """What :func:`cellfuse.profile` found. ``str()`` is the table; ``to_json()`` the same as JSON;
    ``cellfuse`` the native profiler's report (a dict); ``columns`` the side-by-side figures per
    runner ("cellfuse", and "eager" / "torch.compile" when compared); ``trace`` the Chrome trace.

    >>> import json, torch, cellfuse
    >>> report = cellfuse.profile(lambda x, h: torch.tanh(x + h), (torch.zeros(1, 4), torch.zeros(1, 4)),
    ...                           torch.randn(3, 1, 4), compare="eager", runs=1)
    >>> sorted(report.columns)
    ['cellfuse', 'eager']
    >>> report.columns["eager"]["ops_per_step"] > 0 and "traceEvents" in json.loads(report.trace)
    True
    """

    def __init__(self, cellfuse, text, trace, columns, steps):
        self.cellfuse = cellfuse
        self.text = text
        self.trace = trace
        self.columns = columns
        self.steps = steps

    def __str__(self):
        out = self.text
        if len(self.columns) > 1:
            out += "\n" + _side_by_side(self.columns)
        return out

    def __repr__(self):
        return f"<cellfuse.ProfileReport {self.cellfuse.get('summary', '')!r}>"

    def to_json(self):
        return _json.dumps({"cellfuse": self.cellfuse, "columns": self.columns, "steps": self.steps}, indent=2)

    def write_trace(self, path):
        with open(path, "w") as f:
            f.write(self.trace)

    def save_png(self, path):
        from .plot_profile import plot
        plot(_json.loads(self.to_json()), path)


# -- the cellfuse column -------------------------------------------------------------------------
def _cellfuse_column(report, ms, steps, calls):
    phases = report["phases"]
    per_step = {k: sum(p[k] for p in phases) for k in ("launches_per_step", "host_us_per_step", "device_us_per_step",
                                                         "gemm_us_per_step", "pointwise_us_per_step")}
    step_us = ms * 1e3 / steps
    # The profiled run's proportions applied to the unprofiled time per step.
    profiled = per_step["host_us_per_step"] or 1.0
    gemm = step_us * per_step["gemm_us_per_step"] / profiled
    pointwise = step_us * per_step["pointwise_us_per_step"] / profiled
    return {
        # What PyTorch dispatches for cellfuse: one cellfuse::sequence op per layer and direction
        # (and one cellfuse::sequence_backward with backward=True) for the whole sequence.
        "ops_per_step": calls / steps,
        "launches_per_step": per_step["launches_per_step"],
        "host_us_per_step": step_us,
        "device_us_per_step": per_step["device_us_per_step"],
        "gemm_us_per_step": min(gemm, step_us),
        "pointwise_us_per_step": min(pointwise, step_us),
        "overhead_us_per_step": max(0.0, step_us - gemm - pointwise),
        "total_ms": ms,
    }


# -- the PyTorch columns ---------------------------------------------------------------------------
def _eager_inputs(rnn, X):
    """Zero initial states in the step's own shapes and structure (what rnn(X) starts from)."""
    program = rnn.programs[0]
    bpos = program.x_dims.index(None)
    batch = X.shape[bpos + 1]
    flat = [X.new_zeros(tuple(batch if d is None else d for d in dims)) for dims in program.state_dims]
    return _step_args(flat, program.structure), len(flat)


def _step_args(flat, structure):
    """The step's state arguments from flat tensors: a tensor, or a tuple, per argument."""
    out, i = [], 0
    for shape in structure:
        if shape is None:
            out.append(flat[i])
            i += 1
        else:
            out.append(tuple(flat[i:i + shape]))
            i += shape
    return out


def _flatten(value):
    if isinstance(value, torch.Tensor):
        return [value]
    out = []
    for v in value:
        out.extend(_flatten(v))
    return out


def _eager_loop(step, X, states, count, structure):
    """The cell called once per step in a Python loop, as PyTorch runs it; returns the outputs."""
    outs = []
    for x in X:
        flat = _flatten(step(x, *states))
        new = flat[1:] if len(flat) == count + 1 else flat
        outs.append(flat[0])
        states = _step_args(new, structure)
    return torch.stack(outs)


def _torch_column(cell, rnn, X, backward, runs, kind):
    if rnn.num_layers != 1 or rnn.directions != 1 or rnn.batch_first:
        raise CellfuseError("cellfuse.profile: compare= runs one layer, one direction, time-major X")
    states, count = _eager_inputs(rnn, X)
    structure = rnn.programs[0].structure
    step = cell
    if kind == "torch.compile":
        try:
            step = torch.compile(cell)
            _eager_loop(step, X[:2], states, count, structure)
        except Exception as e:  # noqa: BLE001 - reported in the column, not raised
            return {"error": f"torch.compile did not run here: {type(e).__name__}: {str(e).splitlines()[0]}"}

    def call():
        out = _eager_loop(step, X, states, count, structure)
        if backward:
            out.sum().backward()

    call()
    _sync(X)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if X.is_cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    start = time.perf_counter()
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(runs):
            call()
            _sync(X)
    profiled_ms = (time.perf_counter() - start) * 1e3 / runs
    counts = torch_op_counts(prof.events(), cuda=X.is_cuda)
    ms = _time_calls(call, X, runs)
    steps = X.shape[0] * runs
    step_us = ms * 1e3 / X.shape[0]
    profiled_step_us = profiled_ms * 1e3 / X.shape[0]
    gemm = counts["gemm_us"] / steps
    pointwise = counts["pointwise_us"] / steps
    # On the CPU the ops' own time is inflated by the profiler like the rest: take its shares.
    scale = step_us / profiled_step_us if not X.is_cuda and profiled_step_us > 0 else 1.0
    return {
        "ops_per_step": counts["ops"] / steps,
        "launches_per_step": counts["launches"] / steps,
        "host_us_per_step": step_us,
        "device_us_per_step": counts["device_us"] / steps * scale,
        "gemm_us_per_step": min(gemm * scale, step_us),
        "pointwise_us_per_step": min(pointwise * scale, step_us),
        "overhead_us_per_step": max(0.0, step_us - (gemm + pointwise) * scale),
        "total_ms": ms,
    }


def torch_op_counts(events, cuda=False):
    """What torch.profiler's events say about a loop: ``ops`` (ATen ops dispatched from Python or
    autograd, i.e. ``aten::`` events with no ``aten::`` parent), ``launches`` (kernels: CUDA kernel
    events on the GPU; on the CPU the ATen ops that call no other, each one kernel), ``gemm_us`` /
    ``pointwise_us`` (own time of the matrix-product ops / the other kernels) and ``device_us``."""
    ops = launches = 0
    gemm_us = pointwise_us = device_us = 0.0
    aten_children = set()
    for e in events:
        if e.name.startswith("aten::") and e.cpu_parent is not None:
            aten_children.add(id(e.cpu_parent))
    for e in events:
        if e.device_type == torch.autograd.DeviceType.CUDA:
            continue
        if not e.name.startswith("aten::"):
            continue
        parent = e.cpu_parent
        if parent is None or not parent.name.startswith("aten::"):
            ops += 1
        if cuda:
            for k in e.kernels:
                launches += 1
                device_us += k.duration
                if _is_gemm(e):
                    gemm_us += k.duration
                else:
                    pointwise_us += k.duration
            continue
        launches += 0 if id(e) in aten_children else 1  # a leaf: its own kernel
        # Every op's own time, charged to GEMMs when it runs inside one (aten::mm under
        # aten::matmul, its resolve_conj, ...), else to pointwise work.
        own = e.self_cpu_time_total
        device_us += own
        if _is_gemm(e):
            gemm_us += own
        else:
            pointwise_us += own
    return {"ops": ops, "launches": launches, "gemm_us": gemm_us, "pointwise_us": pointwise_us, "device_us": device_us}


def _is_gemm(event):
    e = event
    while e is not None:
        if e.name in _GEMM_OPS:
            return True
        e = e.cpu_parent
    return False


def _side_by_side(columns):
    names = list(columns)
    rows = [("ops dispatched per step", "ops_per_step", "{:.2f}"),
            ("kernel launches per step", "launches_per_step", "{:.1f}"),
            ("host us per step", "host_us_per_step", "{:.1f}"),
            ("device us per step", "device_us_per_step", "{:.1f}"),
            ("  GEMM us per step", "gemm_us_per_step", "{:.1f}"),
            ("  pointwise us per step", "pointwise_us_per_step", "{:.1f}"),
            ("  host overhead us per step", "overhead_us_per_step", "{:.1f}"),
            ("total ms", "total_ms", "{:.2f}")]
    out = ["side by side (unprofiled totals; splits from the profiled runs)",
           " " * 30 + "".join(f"{n:>16}" for n in names)]
    for label, key, form in rows:
        cells = []
        for n in names:
            c = columns[n]
            cells.append(f"{form.format(c[key]):>16}" if key in c else f"{'-':>16}")
        out.append(f"{label:<30}" + "".join(cells))
    base = columns["cellfuse"]["total_ms"]
    cells = []
    for n in names:
        c = columns[n]
        cells.append(f"{(c['total_ms'] / base if 'total_ms' in c and base > 0 else 0):>15.2f}x")
    out.append(f"{'cellfuse is this much faster':<30}" + "".join(cells))
    for n in names:
        if "error" in columns[n]:
            out.append(f"{n}: {columns[n]['error']}")
    return "\n".join(out) + "\n"


# -- timing ------------------------------------------------------------------------------------
def _sync(X):
    if X.is_cuda:
        torch.cuda.synchronize(X.device)


def _time_calls(call, X, runs):
    """Median wall time of `runs` calls, in ms (each synchronized on the GPU)."""
    times = []
    for _ in range(max(runs, 3)):
        _sync(X)
        start = time.perf_counter()
        call()
        _sync(X)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)
