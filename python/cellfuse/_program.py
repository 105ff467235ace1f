"""A traced cell as something PyTorch can call: the `cellfuse::sequence` operator.

One registered operator runs a whole sequence of one traced cell (looked up by an integer key) on
CPU or CUDA tensors; a second one runs its backward. Both have fake implementations, so that
torch.compile sees them as ordinary ops with known output shapes (no graph break), and the first
has an autograd formula backed by the generated backward. Tensors reach the native code as
pointers: no copy for contiguous tensors of the cell's dtype.

16-bit storage (CUDA only): an f32 cell also runs on torch.bfloat16 / torch.float16 tensors. The
math stays f32 (the native code widens the 16-bit inputs, states and parameters into f32 buffers
of its own, runs the sequence and rounds only what it writes back: outputs, final states and
gradients come back in the 16-bit dtype); the tape between forward and backward stays float32.
The storage follows the tensors' dtype (`storage_of`), so it is part of each compilation's key.
"""
from __future__ import annotations

import itertools
import threading
from typing import List

import torch

from . import _C
from ._errors import CellfuseError

_REGISTRY = {}
_KEYS = itertools.count(1)
_LOCK = threading.Lock()

# The 16-bit dtypes an f32 cell's tensors may have, as the native storage names them.
STORAGE_16 = {torch.bfloat16: "bf16", torch.float16: "f16"}


def storage_of(dtype) -> str:
    """The native storage of tensors of `dtype`: "bf16", "f16", or "native" (the cell's own)."""
    return STORAGE_16.get(dtype, "native")


def cell_dtype_of(dtype):
    """The dtype a cell computes in for tensors of `dtype`: float32 for the 16-bit ones."""
    return torch.float32 if dtype in STORAGE_16 else dtype


def sixteen_bit_on_cpu(dtype) -> CellfuseError:
    return CellfuseError(f"cellfuse: the tensors are {dtype} on cpu, but 16-bit storage (bfloat16/float16, "
                         "f32 math inside) runs on CUDA only: on CPU convert the module and the tensors with "
                         ".float(), or move them to a CUDA device")


class Program:
    """One captured cell (one layer, one direction) and its compilations per device, batch size,
    training or not, and storage. `dtype` is the dtype of the example tensors it was captured
    with (float32 for the cell itself when they were 16-bit). `prelude` computes the cell's
    parameter tensors from the module's lifted tensors (`lifted_names`, in order); `param_keys`
    names each cell parameter's module tensor when it is one as is (else None). `x_dims`,
    `state_dims` and `out_dims` are the user's per-step shapes, None at the batch axis."""

    def __init__(self, cell, *, prelude, lifted_names, param_keys, param_names, x_dims, state_dims, out_dims, structure,
                 state_names, dtype, masked):
        self.cell = cell
        self.prelude = prelude
        self.lifted_names = lifted_names
        self.param_keys = param_keys
        self.param_names = param_names
        self.x_dims = tuple(x_dims)
        self.state_dims = [tuple(d) for d in state_dims]
        self.out_dims = tuple(out_dims)
        self.input_width = _features(x_dims)
        self.state_widths = [_features(d) for d in state_dims]
        self.output_width = _features(out_dims)
        self.structure = structure
        self.state_names = state_names
        self.dtype = dtype
        self.masked = masked
        self._tape_widths = None
        self._compiled = {}
        with _LOCK:
            self.key = next(_KEYS)
            _REGISTRY[self.key] = self

    @property
    def tape_widths(self):
        if self._tape_widths is None:
            self._tape_widths = list(self.cell.tape_widths())
        return self._tape_widths

    def text(self) -> str:
        """The traced cell in cellfuse's text form."""
        return self.cell.text()

    def compiled(self, device: torch.device, batch: int, train: bool, storage: str = "native"):
        # The storage is in the key: a program compiled for f32 tensors misreads bf16 ones.
        key = (device.type, device.index, batch, train, storage)
        found = self._compiled.get(key)
        if found is not None:
            return found
        with _LOCK:
            found = self._compiled.get(key)
            if found is None:
                found = _compile(self.cell, device, batch, train, storage)
                self._compiled[key] = found
        return found


def _features(dims):
    out = 1
    for d in dims:
        if d is not None:
            out *= d
    return out


def _compile(cell, device, batch, train, storage):
    if device.type == "cpu":
        if storage != "native":
            raise sixteen_bit_on_cpu({s: d for d, s in STORAGE_16.items()}.get(storage, storage))
        if not _C.has_cpu_backend:
            raise CellfuseError("this cellfuse was built without the CPU backend (LLVM)")
        return _C.CpuTrainer(cell, batch) if train else _C.CpuProgram(cell, batch)
    if device.type == "cuda":
        ok, why = _C.cuda_available()
        if not ok:
            raise CellfuseError(f"cellfuse cannot run on {device}: {why}")
        index = device.index if device.index is not None else torch.cuda.current_device()
        if train:
            if not hasattr(_C, "CudaTrainer"):
                raise CellfuseError("training on CUDA needs the GPU backward, which this cellfuse build lacks")
            return _C.CudaTrainer(cell, batch, index, storage)
        return _C.CudaProgram(cell, batch, index, storage)
    raise CellfuseError(f"cellfuse runs on cpu and cuda tensors, not on {device}")


def _addresses(tensors):
    return [t.data_ptr() for t in tensors]


def _stream(device):
    return torch.cuda.current_stream(device).cuda_stream


def _tape(p, x, steps, batch):
    # The tape keeps the f32 values the backward reads, also when the tensors are 16-bit.
    return [x.new_empty((steps, batch, w), dtype=cell_dtype_of(x.dtype)) for w in p.tape_widths]


def _run_forward(p, inputs, states, params, train):
    x = inputs[0]
    steps, batch = x.shape[0], x.shape[1]
    outputs = [x.new_empty((steps, batch, p.output_width))]
    finals = [s.new_empty(s.shape) for s in states]
    tape = _tape(p, x, steps, batch) if train else []
    compiled = p.compiled(x.device, batch, train, storage_of(x.dtype))
    if train:
        views = dict(inputs=_addresses(inputs), states=_addresses(states), params=_addresses(params),
                     outputs=_addresses(outputs), final_states=_addresses(finals), tape=_addresses(tape))
        if x.is_cuda:
            compiled.forward(steps, views, _stream(x.device))
        else:
            compiled.forward(steps, views)
    elif x.is_cuda:
        compiled.forward(steps, _addresses(inputs), _addresses(states), _addresses(params),
                         _addresses(outputs), _addresses(finals), _stream(x.device))
    else:
        compiled.forward(steps, _addresses(inputs), _addresses(states), _addresses(params),
                         _addresses(outputs), _addresses(finals))
    return outputs + finals + tape


@torch.library.custom_op("cellfuse::sequence", mutates_args=())
def sequence(key: int, inputs: List[torch.Tensor], states: List[torch.Tensor], params: List[torch.Tensor],
             train: bool) -> List[torch.Tensor]:
    """Runs traced cell `key` over inputs [T,B,n]: returns its output [T,B,o], the final states,
    and, when `train`, the tape its backward reads. The tensors have the cell's dtype or, for an
    f32 cell on CUDA, all one 16-bit dtype (16-bit storage; the tape is then float32)."""
    return _run_forward(_REGISTRY[key], inputs, states, params, train)


@sequence.register_fake
def _sequence_fake(key, inputs, states, params, train):
    p = _REGISTRY[key]
    x = inputs[0]
    steps, batch = x.shape[0], x.shape[1]
    out = [x.new_empty((steps, batch, p.output_width))] + [s.new_empty(s.shape) for s in states]
    if train:
        out += _tape(p, x, steps, batch)
    return out


@torch.library.custom_op("cellfuse::sequence_backward", mutates_args=())
def sequence_backward(key: int, inputs: List[torch.Tensor], params: List[torch.Tensor],
                      outputs: List[torch.Tensor], tape: List[torch.Tensor], output_grads: List[torch.Tensor],
                      final_state_grads: List[torch.Tensor]) -> List[torch.Tensor]:
    """The gradients of inputs, initial states and params, given the forward's tape and the
    gradients of its output and final states."""
    p = _REGISTRY[key]
    x = inputs[0]
    steps, batch = x.shape[0], x.shape[1]
    input_grads = [t.new_empty(t.shape) for t in inputs]
    state_grads = [g.new_empty(g.shape) for g in final_state_grads]
    param_grads = [t.new_empty(t.shape) for t in params]
    compiled = p.compiled(x.device, batch, True, storage_of(x.dtype))
    views = dict(inputs=_addresses(inputs), params=_addresses(params), outputs=_addresses(outputs),
                 tape=_addresses(tape), output_grads=_addresses(output_grads),
                 final_state_grads=_addresses(final_state_grads), input_grads=_addresses(input_grads),
                 state_grads=_addresses(state_grads), param_grads=_addresses(param_grads))
    if x.is_cuda:
        compiled.backward(steps, views, _stream(x.device))
    else:
        compiled.backward(steps, views)
    return input_grads + state_grads + param_grads


@sequence_backward.register_fake
def _sequence_backward_fake(key, inputs, params, outputs, tape, output_grads, final_state_grads):
    return ([t.new_empty(t.shape) for t in inputs] + [g.new_empty(g.shape) for g in final_state_grads]
            + [t.new_empty(t.shape) for t in params])


def _setup_context(ctx, inputs, output):
    key, ins, states, params, train = inputs
    ctx.key, ctx.train = key, train
    ctx.counts = (len(ins), len(states), len(params))
    if train:
        ctx.save_for_backward(*ins, *params, *output)


def _backward(ctx, grads):
    if not ctx.train:
        raise CellfuseError("cellfuse: this sequence ran without its tape (train=False); run it with "
                            "gradients enabled to differentiate it")
    n_in, n_states, n_params = ctx.counts
    saved = ctx.saved_tensors
    ins, params = list(saved[:n_in]), list(saved[n_in:n_in + n_params])
    rest = saved[n_in + n_params:]
    outputs, finals, tape = [rest[0]], list(rest[1:1 + n_states]), list(rest[1 + n_states:])

    def seed(g, like):
        return torch.zeros_like(like) if g is None else g.contiguous()

    output_grads = [seed(grads[0], outputs[0])]
    final_grads = [seed(g, f) for g, f in zip(grads[1:1 + n_states], finals)]
    result = torch.ops.cellfuse.sequence_backward(ctx.key, ins, params, outputs, tape, output_grads, final_grads)
    return (None, list(result[:n_in]), list(result[n_in:n_in + n_states]),
            list(result[n_in + n_states:]), None)


torch.library.register_autograd("cellfuse::sequence", _backward, setup_context=_setup_context)
