"""From a user's step function and example inputs to a Program (one layer, one direction).

The step is `step(x, *states)`, where a state argument may be one tensor or a tuple of tensors
(`forward(x, (h, c))` as nn.LSTMCell). When it returns as many tensors as it takes states, they
are the new states and the first is the per-step output; when it returns one more, the first is
the output and the rest the new states. `has_output` overrides the guess.

Step conventions: x and every state may have any rank with one batch axis, e.g. (B, n),
(1, B, n) (one step of an nn.LSTM-style call), (B, 1, n) or (B, heads, d). The batch axis of a
tensor is `batch_dim` when given, else axis 0 of a 2-D tensor and, for higher ranks, the first
axis whose size is the batch size (the first axis of size > 1 of x): examples of rank > 2 need a
batch size > 1 or `batch_dim`. A new state must have its state's shape. The cell itself sees
each value as [B, F] (F the product of the other axes): see _values.py.

Examples of torch.bfloat16 / torch.float16 give an f32 cell (16-bit storage, see _program.py).
"""
from __future__ import annotations

import inspect
import math

import torch
from torch import nn

from . import _C
from ._errors import CellfuseError
from ._fx_capture import trace_step
from ._lower import Lowerer, lower_graph
from ._prelude import Prelude
from ._program import Program
from ._values import Batched, describe


def _flatten(value, what):
    """Tensors of one argument (a tensor or a tuple/list of tensors) and its structure (None or n)."""
    if isinstance(value, (tuple, list)):
        if not value or not all(isinstance(v, torch.Tensor) for v in value):
            raise CellfuseError(f"{what}: a state argument is a tensor or a tuple of tensors")
        return list(value), len(value)
    if isinstance(value, torch.Tensor):
        return [value], None
    raise CellfuseError(f"{what}: expected a tensor or a tuple of tensors, got {type(value).__name__}")


def _argument_names(fn, count):
    try:
        target = fn.forward if isinstance(fn, nn.Module) else fn
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError, AttributeError):
        params = []
    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"]
    return names[:count] + [f"s{i}" for i in range(len(names), count)]


def identifier(name: str, taken: set) -> str:
    """`name` as a cell leaf name (letters, digits, _), unique among `taken`."""
    out = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name) or "p"
    if not (out[0].isalpha() or out[0] == "_"):
        out = "p_" + out
    base, n = out, 1
    while out in taken:
        n += 1
        out = f"{base}_{n}"
    taken.add(out)
    return out


def batch_axis(t: torch.Tensor, batch, batch_dim, what):
    """The batch axis of example tensor `t` (see the module docstring)."""
    if batch_dim is not None:
        axis = batch_dim % t.dim() if t.dim() else None
        if axis is None or (batch is not None and t.shape[axis] != batch):
            raise CellfuseError(f"{what} has shape {tuple(t.shape)}: its batch_dim={batch_dim} does not have the "
                                f"batch size {batch}")
        return axis
    if t.dim() == 2 and (batch is None or t.shape[0] == batch):
        return 0
    if t.dim() < 2:
        raise CellfuseError(f"{what} has shape {tuple(t.shape)}: per-step tensors have a batch axis and at least "
                            "one feature axis, e.g. (B, n)")
    if batch is None:
        for axis, size in enumerate(t.shape):
            if size > 1:
                return axis
        raise CellfuseError(f"{what} has shape {tuple(t.shape)}: with every axis of size 1 the batch axis is "
                            "ambiguous; give an example batch > 1 or batch_dim=")
    for axis, size in enumerate(t.shape):
        if size == batch and (batch > 1 or t.dim() == 2):
            return axis
    raise CellfuseError(f"{what} has shape {tuple(t.shape)}, which has no axis of the batch size {batch} (or the "
                        "batch axis is ambiguous with a batch of 1: give an example batch > 1 or batch_dim=)")


def dims_of(t: torch.Tensor, axis) -> tuple:
    return tuple(None if i == axis else int(s) for i, s in enumerate(t.shape))


def _module_tensors(fn):
    if not isinstance(fn, nn.Module) or isinstance(fn, torch.jit.ScriptModule):
        return [], []
    names, tensors = [], []
    for n, p in fn.named_parameters():
        names.append(n)
        tensors.append(p)
    for n, b in fn.named_buffers():
        names.append(n)
        tensors.append(b)
    return names, tensors


def capture(fn, example_inputs, *, has_output=None, masked=False, batch_dim=None, dims=None):
    """Captures `fn` on `example_inputs` = (x, *states) into a Program (one layer, one direction).
    `dims` = (x_dims, state_dims) gives the per-step shapes (None at the batch axis) instead of
    inferring them from the examples."""
    if not isinstance(example_inputs, (tuple, list)) or len(example_inputs) < 2:
        raise CellfuseError("example_inputs: expected (x, state, ...) with the input x of shape (B, I) (or any "
                            "per-step shape with one batch axis) and at least one state")
    x, *state_args = example_inputs
    if not isinstance(x, torch.Tensor):
        raise CellfuseError(f"example_inputs: x must be a tensor, got {type(x).__name__}")
    if x.dtype not in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        raise CellfuseError(f"example_inputs: cellfuse cells are float32 or float64 (or bfloat16/float16 "
                            f"tensors around a float32 cell, on CUDA), x is {x.dtype}")
    x_axis = dims[0].index(None) if dims else batch_axis(x, None, batch_dim, "example input x")
    batch = x.shape[x_axis]
    names = _argument_names(fn, 1 + len(state_args))
    structure, states, state_names, state_dims = [], [], [], []
    for arg, name in zip(state_args, names[1:]):
        tensors, shape = _flatten(arg, f"example state '{name}'")
        structure.append(shape)
        for i, t in enumerate(tensors):
            state_names.append(name if shape is None else f"{name}_{i}")
            axis = (dims[1][len(states)].index(None) if dims else
                    batch_axis(t, batch, batch_dim, f"example state '{state_names[-1]}'"))
            if t.dtype != x.dtype or t.device != x.device:
                raise CellfuseError(f"example state '{state_names[-1]}' is {t.dtype} on {t.device}, the input "
                                    f"{x.dtype} on {x.device}: they must agree")
            states.append(t)
            state_dims.append(dims_of(t, axis))
    x_dims = dims_of(x, x_axis)

    lifted_names, lifted = _module_tensors(fn)
    for n, t in zip(lifted_names, lifted):
        if t.is_floating_point() and t.dtype != x.dtype:
            raise CellfuseError(f"a parameter of dtype {t.dtype} in a {x.dtype} cell ('{n}'): convert the module "
                                f"(module.to({x.dtype})) or the inputs")

    def make_args(batch):
        def traced(dims):
            return torch.empty([batch if d is None else d for d in dims], dtype=x.dtype, device=x.device)

        args, i = [traced(x_dims)], 0
        for shape in structure:
            if shape is None:
                args.append(traced(state_dims[i]))
                i += 1
            else:
                args.append(tuple(traced(d) for d in state_dims[i:i + shape]))
                i += shape
        return tuple(args)

    module = fn if lifted_names else None
    gm = trace_step(fn, module, lifted_names, lifted, make_args)

    cell_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    label = type(fn).__name__ if isinstance(fn, nn.Module) else getattr(fn, "__name__", "cell")
    taken = set()
    builder = _C.Builder(identifier(label, set()), "f64" if cell_dtype == torch.float64 else "f32")
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    lifted_ph = placeholders[:len(lifted_names)]
    prelude = Prelude(gm, lifted_ph, lifted_names)
    lowerer = Lowerer(builder, prelude, cell_dtype, x.dtype, identifier)
    if isinstance(fn, nn.Module):
        lowerer.tensor_names = {id(t): n for n, t in list(fn.named_parameters()) + list(fn.named_buffers())}
    leaves = {}
    for ph, t in zip(lifted_ph, lifted):
        from ._values import Unbatched
        leaves[ph] = Unbatched(ph, t.shape, t.dtype)
    x_val = builder.input(identifier(names[0], taken), math.prod(d for d in x_dims if d is not None))
    step_leaves = [Batched(x_val, x_dims)]
    for n, d in zip(state_names, state_dims):
        step_leaves.append(Batched(builder.state(identifier(n, taken), math.prod(s for s in d if s is not None)), d))
    lowerer._taken = taken
    lowerer.anchor = x_val
    for ph, leaf in zip(placeholders[len(lifted_names):], step_leaves):
        leaves[ph] = leaf
    results = lower_graph(lowerer, gm, leaves)

    values = [v for v, _ in results]
    n = len(states)
    if has_output is None:
        if len(values) == n:
            has_output = False
        elif len(values) == n + 1:
            has_output = True
        else:
            raise CellfuseError(f"the step takes {n} state(s) but returned {len(values)} tensor(s): it must "
                                f"return the {n} new state(s), or an output and then the {n} new state(s) "
                                "(has_output=... says which)")
    expected = n + (1 if has_output else 0)
    if len(values) != expected:
        raise CellfuseError(f"the step returned {len(values)} tensor(s); with has_output={has_output} and "
                            f"{n} state(s) it must return {expected}")
    for k, v in enumerate(values):
        if not isinstance(v, Batched):
            raise CellfuseError(f"returned value {k} does not depend on the step's input or states "
                                f"(a {type(v).__name__}); every returned value must be a per-step value")
    new_states = values[1:] if has_output else values
    output = values[0]
    for k, (d, ns, name) in enumerate(zip(state_dims, new_states, state_names)):
        if ns.dims != d:
            raise CellfuseError(f"new state {k} ('{name}') has shape {describe(ns.dims)} but the state has "
                                f"{describe(d)}: a step returns each state in its own shape")
    state_vals = step_leaves[1:]
    if masked:
        # Past a sequence's end its states stay as they were and its outputs are zero.
        mask = builder.input(identifier("step_mask", taken), 1)
        out_val = _C.where(mask, output.val, _C.constant_like(output.val, 0.0))
        new_vals = [_C.where(mask, ns.val, s.val) for s, ns in zip(state_vals, new_states)]
    else:
        out_val = output.val
        new_vals = [ns.val for ns in new_states]
    builder.output("out", out_val)
    for s, v in zip(state_vals, new_vals):
        builder.next(s.val, v)
    cell = builder.finish()
    prelude.finish()
    _check_prelude_dtypes(prelude, cell_dtype, x.dtype)
    return Program(cell, prelude=prelude, lifted_names=lifted_names, param_keys=lowerer.param_keys,
                   param_names=lowerer.param_names,
                   x_dims=x_dims, state_dims=state_dims, out_dims=output.dims, structure=structure,
                   state_names=state_names, dtype=x.dtype, masked=masked)


def _check_prelude_dtypes(prelude, cell_dtype, example_dtype):
    for node, transform in prelude.results:
        meta = node.meta.get("val") if hasattr(node, "meta") else None
        if meta is None or meta.dtype == torch.bool or transform is not None and meta.dtype == torch.bool:
            continue
        if meta.dtype != example_dtype and meta.dtype != cell_dtype:
            raise CellfuseError(f"a tensor of dtype {meta.dtype} ({node.name}, shape {list(meta.shape)}) used in a "
                                f"{example_dtype} cell: convert it (or the module) to {example_dtype}")
