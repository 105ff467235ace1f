"""From a user's step function and example inputs to a traced cell.

The step is `step(x, *states)`, where a state argument may be one tensor or a tuple of tensors
(`forward(x, (h, c))` as nn.LSTMCell). When it returns as many tensors as it takes states, they
are the new states and the first is the per-step output; when it returns one more, the first is
the output and the rest the new states. `has_output` overrides the guess. Examples of
torch.bfloat16 / torch.float16 give an f32 cell (16-bit storage, see _program.py).
"""
from __future__ import annotations

import inspect

import torch
from torch import nn

from . import _C
from ._errors import CellfuseError
from ._program import Program
from ._trace import Traced, Tracer


def _flatten(value, what):
    """Tensors of one argument (a tensor or a tuple/list of tensors) and its structure (None or n)."""
    if isinstance(value, (tuple, list)):
        if not value or not all(isinstance(v, (torch.Tensor, Traced)) for v in value):
            raise CellfuseError(f"{what}: a state argument is a tensor or a tuple of tensors")
        return list(value), len(value)
    if isinstance(value, (torch.Tensor, Traced)):
        return [value], None
    raise CellfuseError(f"{what}: expected a tensor or a tuple of tensors, got {type(value).__name__}")


def _flatten_result(result):
    if isinstance(result, (torch.Tensor, Traced)):
        return [result]
    if isinstance(result, (tuple, list)):
        out = []
        for r in result:
            out.extend(_flatten_result(r))
        return out
    raise CellfuseError(f"the step returned a {type(result).__name__}: it must return tensors "
                        "(the new states, optionally preceded by the output)")


def _argument_names(fn, count):
    try:
        params = list(inspect.signature(fn.forward if isinstance(fn, nn.Module) else fn).parameters.values())
    except (TypeError, ValueError):
        params = []
    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return names[:count] + [f"s{i}" for i in range(len(names), count)]


def capture(fn, example_inputs, *, has_output=None, masked=False):
    """Traces `fn` on `example_inputs` = (x, *states) into a Program (one layer, one direction)."""
    if not isinstance(example_inputs, (tuple, list)) or len(example_inputs) < 2:
        raise CellfuseError("example_inputs: expected (x, state, ...) with the input x of shape (B, I) and "
                            "at least one state")
    x, *state_args = example_inputs
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise CellfuseError(f"example_inputs: x must be a tensor of shape (B, I), got "
                            f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if x.dtype not in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        raise CellfuseError(f"example_inputs: cellfuse cells are float32 or float64 (or bfloat16/float16 "
                            f"tensors around a float32 cell, on CUDA), x is {x.dtype}")
    batch = x.shape[0]
    names = _argument_names(fn, 1 + len(state_args))
    structure, states, state_names = [], [], []
    for arg, name in zip(state_args, names[1:]):
        tensors, shape = _flatten(arg, f"example state '{name}'")
        structure.append(shape)
        for i, t in enumerate(tensors):
            state_names.append(name if shape is None else f"{name}_{i}")
            if t.dim() != 2 or t.shape[0] != batch:
                raise CellfuseError(f"example state '{state_names[-1]}' has shape {tuple(t.shape)}; "
                                    f"states are (B, n) with the input's batch B={batch}")
            if t.dtype != x.dtype or t.device != x.device:
                raise CellfuseError(f"example state '{state_names[-1]}' is {t.dtype} on {t.device}, the input "
                                    f"{x.dtype} on {x.device}: they must agree")
            states.append(t)

    param_names = {}
    if isinstance(fn, nn.Module):
        for n, p in fn.named_parameters():
            param_names.setdefault(id(p), n)
        for n, b in fn.named_buffers():
            param_names.setdefault(id(b), n)
    label = type(fn).__name__ if isinstance(fn, nn.Module) else getattr(fn, "__name__", "cell")
    tracer = Tracer(label, x.dtype, x.device, batch, param_names)
    tx = tracer.input(names[0], x.shape[1])
    traced_states = [tracer.state(n, t.shape[1]) for n, t in zip(state_names, states)]
    mask = tracer.input("step_mask", 1) if masked else None

    args, i = [], 0
    for shape in structure:
        if shape is None:
            args.append(traced_states[i])
            i += 1
        else:
            args.append(tuple(traced_states[i:i + shape]))
            i += shape
    result = _flatten_result(fn(tx, *args))

    n = len(traced_states)
    if has_output is None:
        if len(result) == n:
            has_output = False
        elif len(result) == n + 1:
            has_output = True
        else:
            raise CellfuseError(f"the step takes {n} state(s) but returned {len(result)} tensor(s): it must "
                                f"return the {n} new state(s), or an output and then the {n} new state(s) "
                                "(has_output=... says which)")
    expected = n + (1 if has_output else 0)
    if len(result) != expected:
        raise CellfuseError(f"the step returned {len(result)} tensor(s); with has_output={has_output} and "
                            f"{n} state(s) it must return {expected}")
    for k, r in enumerate(result):
        if not isinstance(r, Traced) or not r.val.batched:
            raise CellfuseError(f"returned value {k} does not depend on the step's input or states "
                                f"(a {type(r).__name__}); every returned value must be a per-step [B, n] value")
    new_states = result[1:] if has_output else result
    output = result[0]
    for k, (s, ns, name) in enumerate(zip(traced_states, new_states, state_names)):
        if ns.val.features != s.val.features:
            raise CellfuseError(f"new state {k} ('{name}') has {ns.val.features} features but the state has "
                                f"{s.val.features}")
    b = tracer.builder
    if masked:
        # Past a sequence's end its states stay as they were and its outputs are zero.
        out_val = _C.where(mask.val, output.val, _C.constant_like(output.val, 0.0))
        new_vals = [_C.where(mask.val, ns.val, s.val) for s, ns in zip(traced_states, new_states)]
    else:
        out_val = output.val
        new_vals = [ns.val for ns in new_states]
    b.output("out", out_val)
    for s, v in zip(traced_states, new_vals):
        b.next(s.val, v)
    cell = b.finish()
    return Program(cell, params=tracer.params, param_keys=tracer.param_keys, param_views=tracer.param_views,
                   trainable=tracer.param_trainable,
                   input_width=x.shape[1], state_widths=[t.shape[1] for t in states],
                   output_width=output.val.features, structure=structure, state_names=state_names,
                   dtype=x.dtype, masked=masked)
