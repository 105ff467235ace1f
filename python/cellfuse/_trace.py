"""Tracing a PyTorch step function into a cellfuse cell.

The user's step runs once on stand-in values (`Traced`) that record every torch operation into the
C++ cell builder through `__torch_function__`. Real tensors that meet a traced value become
parameters of the cell: leaf tensors that require grad are trainable parameters (the user's
nn.Parameters, gradients flow back to them), other tensors are constant inputs fed at run time.
Anything the IR cannot express raises CellfuseError naming the op and the user's source line.

A step traced on torch.bfloat16 / torch.float16 values builds an f32 cell (16-bit storage: the
tensors stay 16-bit, the math is f32), so conversions among float32 and the 16-bit dtypes inside
such a step are no-ops: intermediate values are never rounded to 16 bits.
"""
from __future__ import annotations

import math
import numbers
import os
import traceback

import torch

from . import _C
from ._errors import CellfuseError

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_TORCH_DIR = os.path.dirname(os.path.abspath(torch.__file__))


def user_line() -> str:
    """The innermost frame of the user's code (outside cellfuse and torch), as file:line: text."""
    for frame in reversed(traceback.extract_stack()):
        name = os.path.abspath(frame.filename)
        if name.startswith(_PACKAGE_DIR) or name.startswith(_TORCH_DIR) or name.startswith("<"):
            continue
        return f"{frame.filename}:{frame.lineno}: {(frame.line or '').strip()}"
    return "<unknown location>"


def fail(message: str) -> CellfuseError:
    return CellfuseError(f"{message}\n  at {user_line()}")


class Traced:
    """A [B, n] value (or a parameter-derived [n] / [m, n] value) of the cell being traced."""

    # aliases: the values that share memory with this one in PyTorch (a value and the slices taken
    # from it), or None; span: (first feature, count) of this one within the first of them;
    # stale: set when an in-place op changed an overlapping alias, which the trace cannot carry
    # over to this one: a later use is an error (see _in_place).
    __slots__ = ("val", "tracer", "aliases", "span", "stale")

    def __init__(self, tracer: "Tracer", val):
        self.val = val
        self.tracer = tracer
        self.aliases = None
        self.span = None
        self.stale = []  # (op, first, count) per in-place change of an overlapping alias

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        tracer = _find_tracer(args) or _find_tracer(tuple((kwargs or {}).values()))
        return tracer.call(func, args, kwargs or {})

    # What user code may ask of a tensor's metadata while tracing.
    @property
    def shape(self):
        rows, feats = self.val.shape if len(self.val.shape) == 2 else (None, self.val.shape[0])
        if rows is None:
            return torch.Size([feats])
        return torch.Size([self.tracer.example_batch if rows < 0 else rows, feats])

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def dim(self):
        return len(self.shape)

    ndim = property(dim)

    @property
    def dtype(self):
        return self.tracer.dtype

    @property
    def device(self):
        return self.tracer.device

    @property
    def requires_grad(self):
        return True

    def __bool__(self):
        raise fail("data-dependent control flow: the truth value of a traced tensor is only known when "
                   "the cell runs (use torch.where instead of `if`)")

    def _data_dependent(self, *args, **kwargs):
        raise fail("data-dependent value: a traced tensor cannot become a Python number while tracing")

    __float__ = __int__ = __index__ = item = tolist = numpy = _data_dependent

    def __iter__(self):
        raise fail("iterating over a traced tensor (over its batch) is not supported in a cell")

    def __len__(self):
        return self.shape[0]

    def __repr__(self):
        return f"<cellfuse traced value {list(self.val.shape)}>"

    def __getattr__(self, name):
        # Tensor methods (x.sigmoid(), x.chunk(4, 1), ...) go through the same dispatch.
        method = getattr(torch.Tensor, name, None)
        if method is None or not callable(method):
            raise AttributeError(name)
        return lambda *args, **kwargs: self.tracer.call(method, (self,) + args, kwargs)


def _operator(name):
    method = getattr(torch.Tensor, name)
    return lambda self, *args: self.tracer.call(method, (self,) + args, {})


for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__",
              "__rtruediv__", "__neg__", "__pos__", "__matmul__", "__rmatmul__", "__pow__", "__rpow__",
              "__getitem__", "__gt__", "__ge__", "__lt__", "__le__", "__eq__", "__ne__", "__abs__",
              "__and__", "__or__", "__invert__", "__mod__", "__floordiv__", "__iadd__", "__isub__", "__imul__",
              "__itruediv__"):
    setattr(Traced, _name, _operator(_name))
Traced.__hash__ = object.__hash__


def _find_tracer(items):
    for item in items:
        if isinstance(item, Traced):
            return item.tracer
        if isinstance(item, (list, tuple)):
            found = _find_tracer(item)
            if found is not None:
                return found
    return None


def _identifier(name: str, taken: set) -> str:
    out = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name) or "p"
    if not (out[0].isalpha() or out[0] == "_"):
        out = "p_" + out
    base, n = out, 1
    while out in taken:
        n += 1
        out = f"{base}_{n}"
    taken.add(out)
    return out


_SIXTEEN_BIT = (torch.bfloat16, torch.float16)


class Tracer:
    """Records one cell: leaves, the parameters met on the way, and every op. `dtype` is the
    tensors' dtype (what traced values report); the cell is f64 for float64, else f32."""

    def __init__(self, name, dtype, device, example_batch, param_names):
        self.dtype = dtype
        self.device = device
        self.example_batch = example_batch
        self.builder = _C.Builder(_identifier(name, set()), "f64" if dtype == torch.float64 else "f32")
        self.param_names = param_names  # id(tensor) -> qualified name in the user's module
        self.taken = set()
        self.params = []  # tensors fed to the cell's param leaves, in declaration order
        self.param_keys = []  # each one's name in the user's module (None when it has none)
        self.param_trainable = []
        # For a param that is a view of a contiguous parameter (W[0], b[:n]): (size, stride,
        # offset) within it, replayed on every call (see parameter_view_of); else None.
        self.param_views = []
        self._param_vals = {}  # id(tensor), or ("view", id(base), view) -> Val

    # -- leaves --------------------------------------------------------------------------------
    def input(self, name, features):
        return Traced(self, self.builder.input(_identifier(name, self.taken), features))

    def state(self, name, features):
        return Traced(self, self.builder.state(_identifier(name, self.taken), features))

    def param(self, tensor: torch.Tensor):
        view = _parameter_view(tensor)
        base = tensor if view is None else tensor._base
        key = id(tensor) if view is None else ("view", id(base), view)
        if key in self._param_vals:
            return self._param_vals[key]
        if tensor.dim() > 2:
            raise fail(f"a tensor of shape {list(tensor.shape)} used in the cell: cellfuse parameters "
                       "are scalars, vectors or matrices")
        if tensor.dtype != self.dtype:
            raise fail(f"a parameter of dtype {tensor.dtype} in a {self.dtype} cell: convert the module "
                       f"(module.to({self.dtype})) or the inputs")
        trainable = base.requires_grad
        if trainable and not base.is_leaf:
            raise fail(f"a tensor of shape {list(tensor.shape)} computed from parameters outside the traced "
                       "values (for example W * 2 on a parameter): the tracer cannot replay it. Apply the "
                       "operation to the traced values, or make the tensor a parameter (views such as W[0] "
                       "or b[:n] of a contiguous parameter are fine)")
        default = "w" if trainable else "const"
        name = self.param_names.get(id(base), f"{default}{len(self.params)}")
        if view is not None:
            name += "_view"
        # A scalar parameter is a [1] vector in the cell (the module passes it reshaped).
        val = self.builder.param(_identifier(name, self.taken), list(tensor.shape) or [1])
        self._param_vals[key] = val
        self.params.append(base)
        self.param_keys.append(self.param_names.get(id(base)))
        self.param_views.append(view)
        self.param_trainable.append(trainable)
        return val

    # -- operands ------------------------------------------------------------------------------
    def val(self, x, op):
        if isinstance(x, Traced):
            if x.stale:
                raise fail(f"{op}: this value shares memory with one that '{x.stale[0][0]}' changed in place "
                           "(a slice and the value it was taken from), and the trace cannot follow that; "
                           "use the out-of-place form of the op")
            return x.val
        if isinstance(x, torch.Tensor):
            if x.dim() == 0 and not x.requires_grad:
                return float(x.item())
            transposed = _transposed_parameter(x)
            if transposed is not None:
                raise fail(f"{op}: a transposed parameter is only supported as the right operand of "
                           "x @ W.t() (it becomes nn.Linear's product)")
            return self.param(x)
        if isinstance(x, bool):
            return float(x)
        if isinstance(x, numbers.Real):
            return float(x)
        raise fail(f"{op}: an operand of type {type(x).__name__} ({x!r}) cannot be traced")

    def call(self, func, args, kwargs):
        name = getattr(func, "__name__", str(func))
        handler = _HANDLERS.get(name)
        if handler is None:
            raise fail(f"cellfuse cannot trace torch op '{_qualified(func)}' (not supported in a cell; "
                       "the supported ops are listed in cellfuse.SUPPORTED_OPS)")
        try:
            out = handler(self, *args, **kwargs)
        except CellfuseError as e:
            if "\n  at " in str(e):
                raise
            raise fail(f"{name}: {e}") from None
        except TypeError as e:
            raise fail(f"{name}: unsupported arguments ({e})") from None
        return out

    def wrap(self, val):
        return Traced(self, val)


def _qualified(func):
    module = getattr(func, "__module__", None) or ""
    qual = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
    qual = qual.replace("TensorBase.", "Tensor.").replace("_VariableFunctionsClass.", "")
    if module.startswith("torch._C") or not module:
        module = "torch"
    return f"{module}.{qual}"


def _parameter_view(t: torch.Tensor):
    """(size, stride, offset) when `t` is a view of a contiguous leaf tensor (a parameter or
    buffer) taken outside the traced values, as W[0] or b[:n] (SRU's packed vectors), else None.
    The view is replayed on the current parameter at every call, so training updates and
    load_state_dict are seen, and gradients flow back into the parameter."""
    base = getattr(t, "_base", None)
    if base is None or not base.is_leaf or not base.is_contiguous() or t.dim() > 2:
        return None
    return tuple(t.shape), tuple(t.stride()), t.storage_offset() - base.storage_offset()


def parameter_view_of(base: torch.Tensor, view):
    """The tensor a cell's param reads: `base` itself, or the recorded view of it, contiguous."""
    if view is None:
        return base
    size, stride, offset = view
    base = base.contiguous()
    return base.as_strided(size, stride, base.storage_offset() + offset).contiguous()


def _transposed_parameter(t: torch.Tensor):
    """The parameter W when `t` is W.t() / W.T (a transposed view of a 2-D leaf), else None."""
    base = getattr(t, "_base", None)
    if base is None or t.dim() != 2 or base.dim() != 2:
        return None
    if (tuple(t.shape) == tuple(base.shape)[::-1] and tuple(t.stride()) == tuple(base.stride())[::-1]
            and t.storage_offset() == base.storage_offset()):
        return base
    return None


# ---------------------------------------------------------------------------------------------
# Handlers: one per torch function / method name. Each takes the tracer and the call's arguments.

_HANDLERS = {}


def handles(*names):
    def register(fn):
        for n in names:
            _HANDLERS[n] = fn
        return fn
    return register


def _is_number(x):
    return isinstance(x, numbers.Real) and not isinstance(x, bool) or isinstance(x, bool)


def _binary(tr, op, a, b):
    va, vb = tr.val(a, op.__name__), tr.val(b, op.__name__)
    if isinstance(va, float) and isinstance(vb, float):
        raise fail(f"{op.__name__}: both operands are numbers")
    return tr.wrap(op(va, vb))


@handles("add", "__add__", "__radd__")
def _add(tr, a, b, *, alpha=1, out=None):
    _no_out(out)
    if alpha != 1:
        b = b * alpha if isinstance(b, Traced) else tr.wrap(_C.mul(tr.val(b, "add"), float(alpha)))
    return _binary(tr, _C.add, a, b)


@handles("sub", "__sub__", "subtract")
def _sub(tr, a, b, *, alpha=1, out=None):
    _no_out(out)
    if alpha != 1:
        b = tr.wrap(_C.mul(tr.val(b, "sub"), float(alpha)))
    return _binary(tr, _C.sub, a, b)


@handles("__rsub__", "rsub")
def _rsub(tr, a, b, *, alpha=1):
    return _sub(tr, b, a if alpha == 1 else tr.wrap(_C.mul(tr.val(a, "rsub"), float(alpha))))


@handles("mul", "__mul__", "__rmul__", "multiply")
def _mul(tr, a, b, *, out=None):
    _no_out(out)
    return _binary(tr, _C.mul, a, b)


@handles("div", "__truediv__", "true_divide", "divide")
def _div(tr, a, b, *, rounding_mode=None, out=None):
    _no_out(out)
    if rounding_mode is not None:
        raise fail(f"div: rounding_mode={rounding_mode!r} is not supported in a cell")
    return _binary(tr, _C.div, a, b)


@handles("__rtruediv__")
def _rdiv(tr, a, b):
    return _binary(tr, _C.div, b, a)


@handles("neg", "__neg__", "negative")
def _neg(tr, x):
    return tr.wrap(_C.neg(tr.val(x, "neg")))


@handles("__pos__", "contiguous", "positive")
def _identity(tr, x, *args, memory_format=None, **kwargs):
    return x  # the same object, as PyTorch returns the same tensor (or a view of all of it)


@handles("clone")
def _clone(tr, x, *args, memory_format=None, **kwargs):
    return tr.wrap(tr.val(x, "clone"))  # a value of its own: an in-place op on it leaves x alone


def _in_place(tr, x, result, op):
    """An in-place op (x.mul_(y), x += y, F.relu(x, inplace=True)): x takes the result's value, so
    that every later use of x (also under another name, as from view() or contiguous(), the same
    object) sees it, as in PyTorch. Values overlapping x in memory (slices of it, the value it is
    a slice of) would change too in PyTorch; they become stale instead: using one later is an
    error, never a silently different result. Disjoint slices stay valid."""
    if not isinstance(x, Traced):
        raise fail(f"{op}: an in-place op on a parameter or constant is not supported in a cell")
    tr.val(x, op)
    if x.aliases is not None:
        first, count = x.span
        for other in x.aliases:
            o_first, o_count = other.span
            if other is not x and o_first < first + count and first < o_first + o_count:
                other.stale.append((op, first, count))
        x.aliases[:] = [m for m in x.aliases if m is not x]  # by identity: == is traced
        x.aliases = x.span = None
    x.val = result.val
    return x


def _activation(op, make):
    """A handler for an activation with PyTorch's `inplace` flag; make(tr, value) builds it."""
    def handler(tr, x, *args, inplace=False, **kwargs):
        result = tr.wrap(make(tr, tr.val(x, op), *args, **kwargs))
        return _in_place(tr, x, result, op) if inplace else result
    return handler


def _unary(name):
    fn = getattr(_C, name)
    return lambda tr, x, *, out=None: (_no_out(out), tr.wrap(fn(tr.val(x, name))))[1]


for _n in ("sigmoid", "tanh", "exp", "log", "sqrt", "rsqrt", "abs", "erf"):
    _HANDLERS[_n] = _unary(_n)
# F.relu(x, inplace=...) reaches the handler with the flag; torch.relu(x) without it.
_HANDLERS["relu"] = _activation("relu", lambda tr, v, *, out=None: (_no_out(out), _C.relu(v))[1])
_HANDLERS["__abs__"] = _HANDLERS["absolute"] = _unary("abs")
_HANDLERS["expit"] = _unary("sigmoid")
_HANDLERS["special_erf"] = _unary("erf")  # torch.special.erf reaches __torch_function__ so named


@handles("square")
def _square(tr, x):
    v = tr.val(x, "square")
    return tr.wrap(_C.mul(v, v))


@handles("reciprocal")
def _reciprocal(tr, x):
    return tr.wrap(_C.div(1.0, tr.val(x, "reciprocal")))


@handles("pow", "__pow__", "float_power")
def _pow(tr, x, exponent):
    v = tr.val(x, "pow")
    if not _is_number(exponent):
        raise fail("pow: only a number exponent is supported (2, 3, 0.5, -0.5, -1, 1)")
    e = float(exponent)
    table = {1.0: lambda: v, 2.0: lambda: _C.mul(v, v), 3.0: lambda: _C.mul(_C.mul(v, v), v),
             0.5: lambda: _C.sqrt(v), -0.5: lambda: _C.rsqrt(v), -1.0: lambda: _C.div(1.0, v),
             -2.0: lambda: _C.div(1.0, _C.mul(v, v))}
    if e not in table:
        raise fail(f"pow: exponent {exponent} is not supported (2, 3, 0.5, -0.5, -1, -2, 1 are)")
    return tr.wrap(table[e]())


@handles("softplus")
def _softplus(tr, x, beta=1.0, threshold=20.0):
    # log(1 + exp(beta x)) / beta; PyTorch returns x itself past the threshold, where the two
    # differ by less than exp(-threshold) relative.
    v = tr.val(x, "softplus")
    if beta == 1:
        return tr.wrap(_C.softplus(v))
    return tr.wrap(_C.div(_C.softplus(_C.mul(v, float(beta))), float(beta)))


_HANDLERS["silu"] = _activation("silu", lambda tr, v: _C.mul(v, _C.sigmoid(v)))


@handles("logsigmoid")
def _logsigmoid(tr, x):
    return tr.wrap(_C.neg(_C.softplus(_C.neg(tr.val(x, "logsigmoid")))))


def _leaky_relu(tr, v, negative_slope=0.01):
    return _C.sub(_C.relu(v), _C.mul(_C.relu(_C.neg(v)), float(negative_slope)))


def _elu(tr, v, alpha=1.0):
    neg = _C.mul(_C.sub(_C.exp(_C.minimum(v, _C.constant_like(v, 0.0))), 1.0), float(alpha))
    return _C.add(_C.relu(v), neg)


_HANDLERS["leaky_relu"] = _activation("leaky_relu", _leaky_relu)
_HANDLERS["elu"] = _activation("elu", _elu)


@handles("gelu")
def _gelu(tr, x, approximate="none"):
    if approximate not in ("none", "tanh"):
        raise fail(f"gelu: approximate={approximate!r} is not supported ('none' and 'tanh' are)")
    v = tr.val(x, "gelu")
    if approximate == "none":  # the exact form: x/2 (1 + erf(x/sqrt(2)))
        return tr.wrap(_C.mul(_C.mul(v, 0.5), _C.add(_C.erf(_C.mul(v, 0.7071067811865476)), 1.0)))
    inner = _C.mul(_C.add(v, _C.mul(_C.mul(_C.mul(v, v), v), 0.044715)), math.sqrt(2.0 / math.pi))
    return tr.wrap(_C.mul(_C.mul(v, 0.5), _C.add(_C.tanh(inner), 1.0)))


_HANDLERS["hardtanh"] = _activation(
    "hardtanh", lambda tr, v, min_val=-1.0, max_val=1.0: _clamp_value(tr, v, min_val, max_val))
_HANDLERS["relu6"] = _activation("relu6", lambda tr, v: _clamp_value(tr, v, 0.0, 6.0))


@handles("clamp", "clip")
def _clamp(tr, x, min=None, max=None, *, out=None):
    _no_out(out)
    return tr.wrap(_clamp_value(tr, tr.val(x, "clamp"), min, max))


def _clamp_value(tr, v, min, max):
    if min is None and max is None:
        raise fail("clamp: needs min or max")
    if min is not None:
        v = _C.maximum(v, _bound(tr, v, min))
    if max is not None:
        v = _C.minimum(v, _bound(tr, v, max))
    return v


@handles("clamp_min")
def _clamp_min(tr, x, min):
    return _clamp(tr, x, min=min)


@handles("clamp_max")
def _clamp_max(tr, x, max):
    return _clamp(tr, x, max=max)


def _bound(tr, like, b):
    v = tr.val(b, "clamp")
    return _C.constant_like(like, v) if isinstance(v, float) else v


@handles("minimum", "fmin")
def _minimum(tr, a, b, *, out=None):
    return _pair(tr, _C.minimum, a, b, "minimum")


@handles("maximum", "fmax")
def _maximum(tr, a, b, *, out=None):
    return _pair(tr, _C.maximum, a, b, "maximum")


def _max_min(name, fn):
    # torch.max(a, b) of two tensors is element-wise; torch.max(x, dim) reduces, which a cell
    # does not support.
    def handler(tr, a, b=None, *args, **kwargs):
        if isinstance(b, (Traced, torch.Tensor)) and not args and not kwargs:
            return _pair(tr, fn, a, b, name)
        raise fail(f"{name} over a dimension is not supported in a cell (only the element-wise form "
                   "of two tensors, torch.maximum / torch.minimum)")
    return handler


_HANDLERS["max"] = _max_min("max", _C.maximum)
_HANDLERS["min"] = _max_min("min", _C.minimum)


def _pair(tr, fn, a, b, name):
    va, vb = tr.val(a, name), tr.val(b, name)
    if isinstance(va, float):
        va = _C.constant_like(vb, va)
    if isinstance(vb, float):
        vb = _C.constant_like(va, vb)
    return tr.wrap(fn(va, vb))


for _n, _fn in (("gt", _C.greater), ("ge", _C.greater_equal), ("lt", _C.less), ("le", _C.less_equal)):
    _HANDLERS[_n] = _HANDLERS[f"__{_n}__"] = _HANDLERS[{"gt": "greater", "ge": "greater_equal",
                                                        "lt": "less", "le": "less_equal"}[_n]] = (
        lambda fn, n: (lambda tr, a, b: _pair(tr, fn, a, b, n)))(_fn, _n)


@handles("where")
def _where(tr, cond, a=None, b=None):
    if a is None or b is None:
        raise fail("where: the one-argument form (indices) is not supported in a cell")
    vc, va, vb = (tr.val(t, "where") for t in (cond, a, b))
    like = next(v for v in (vc, va, vb) if not isinstance(v, float))
    vc, va, vb = (_C.constant_like(like, v) if isinstance(v, float) else v for v in (vc, va, vb))
    return tr.wrap(_C.where(vc, va, vb))


@handles("linear")
def _linear(tr, x, weight, bias=None):
    if not isinstance(x, Traced):
        raise fail("linear: the input must be a traced value")
    return tr.wrap(_C.linear(tr.val(x, "linear"), tr.val(weight, "linear"),
                             None if bias is None else tr.val(bias, "linear")))


@handles("matmul", "__matmul__", "mm")
def _matmul(tr, a, b, *, out=None):
    _no_out(out)
    if not isinstance(a, Traced) or isinstance(b, Traced):
        raise fail("matmul: cellfuse supports value @ weight (the weight a parameter or constant), "
                   "not weight @ value or value @ value")
    if isinstance(b, torch.Tensor):
        base = _transposed_parameter(b)
        if base is not None:
            return tr.wrap(_C.linear(a.val, tr.param(base)))
    return tr.wrap(_C.matmul(a.val, tr.val(b, "matmul")))


@handles("__rmatmul__")
def _rmatmul(tr, a, b):
    raise fail("matmul: weight @ value is not supported; write value @ weight (or nn.Linear)")


@handles("addmm")
def _addmm(tr, bias, a, b, *, beta=1, alpha=1):
    prod = _matmul(tr, a, b)
    if alpha != 1:
        prod = tr.wrap(_C.mul(prod.val, float(alpha)))
    bv = tr.val(bias, "addmm")
    if beta != 1:
        bv = _C.mul(bv, float(beta))
    return tr.wrap(_C.add(prod.val, bv))


def _feature_dim(x, dim, op):
    rank = len(x.val.shape) if isinstance(x, Traced) else x.dim()
    if dim not in (rank - 1, -1):
        raise fail(f"{op}: dim={dim} is not supported: a cell slices, splits and joins along the feature "
                   f"axis only (dim=-1 or dim={rank - 1})")


@handles("cat", "concat", "concatenate")
def _cat(tr, tensors, dim=0, *, out=None):
    _no_out(out)
    parts = [tr.val(t, "cat") for t in tensors]
    if any(isinstance(p, float) for p in parts):
        raise fail("cat: numbers cannot be joined")
    if not parts:
        raise fail("cat: nothing to join")
    like = next((t for t in tensors if isinstance(t, Traced)), None)
    _feature_dim(like if like is not None else tensors[0], dim, "cat")
    return tr.wrap(_C.cat(parts))


def _slice_of(tr, x, start, length, op):
    """A slice of x's features, which shares memory with x and x's other aliases: see _in_place."""
    if x.aliases is None:
        x.aliases, x.span = [x], (0, x.val.features)
    first = x.span[0] + start
    for op, o_first, o_count in x.stale:  # a part that no in-place op touched is still good
        if o_first < first + length and first < o_first + o_count:
            tr.val(x, op)  # the error
    piece = tr.wrap(_C.slice(x.val, start, length))
    x.aliases.append(piece)
    piece.aliases, piece.span = x.aliases, (first, length)
    return piece


def _pieces(tr, x, sizes, op):
    out, start = [], 0
    for s in sizes:
        out.append(_slice_of(tr, x, start, s, op))
        start += s
    return tuple(out)


@handles("chunk")
def _chunk(tr, x, chunks, dim=0):
    _feature_dim(x, dim, "chunk")
    n = x.val.features
    size = -(-n // chunks)  # torch.chunk: pieces of ceil(n / chunks), the last one smaller
    sizes = [min(size, n - i) for i in range(0, n, size)]
    return _pieces(tr, x, sizes, "chunk")


@handles("split", "split_with_sizes")
def _split(tr, x, split_size_or_sections, dim=0):
    _feature_dim(x, dim, "split")
    n = x.val.features
    if isinstance(split_size_or_sections, int):
        s = split_size_or_sections
        sizes = [min(s, n - i) for i in range(0, n, s)]
    else:
        sizes = list(split_size_or_sections)
        if sum(sizes) != n:
            raise fail(f"split: sizes {sizes} add up to {sum(sizes)}, but the value has {n} features")
    return _pieces(tr, x, sizes, "split")


@handles("tensor_split")
def _tensor_split(tr, x, sections, dim=0):
    _feature_dim(x, dim, "tensor_split")
    n = x.val.features
    if not isinstance(sections, int):
        raise fail("tensor_split: only a number of sections is supported")
    base, extra = divmod(n, sections)
    return _pieces(tr, x, [base + (1 if i < extra else 0) for i in range(sections)], "tensor_split")


@handles("narrow")
def _narrow(tr, x, dim, start, length):
    _feature_dim(x, dim, "narrow")
    return _slice_of(tr, x, int(start), int(length), "narrow")


@handles("__getitem__")
def _getitem(tr, x, key):
    if not isinstance(key, tuple):
        key = (key,)
    n = x.val.features
    rank = len(x.val.shape)
    if Ellipsis in key:
        i = key.index(Ellipsis)
        key = key[:i] + (slice(None),) * (rank - len(key) + 1) + key[i + 1:]
    key = key + (slice(None),) * (rank - len(key))
    if len(key) != rank or any(not isinstance(k, slice) for k in key):
        raise fail(f"indexing with {key!r}: a cell supports slices of the feature axis only "
                   "(x[:, a:b] or x[..., a:b])")
    for k in key[:-1]:
        if k != slice(None):
            raise fail("indexing: only the feature (last) axis can be sliced in a cell; "
                       "the batch axis must stay whole")
    start, stop, step = key[-1].indices(n)
    if step != 1:
        raise fail(f"indexing: slice step {step} is not supported (only contiguous feature ranges)")
    if stop <= start:
        raise fail(f"indexing: the slice {key[-1]} of {n} features is empty")
    if start == 0 and stop == n:
        return x
    return _slice_of(tr, x, start, stop - start, "indexing")


def _reduction(name, fn):
    def handler(tr, x, dim=None, keepdim=False, *, dtype=None, out=None):
        _no_out(out)
        if not isinstance(dim, int) and not (isinstance(dim, (tuple, list)) and len(dim) == 1):
            raise fail(f"{name}: only a reduction over the feature axis (dim=-1, keepdim=True) is "
                       "supported in a cell")
        d = dim if isinstance(dim, int) else dim[0]
        _feature_dim(x, d, name)
        if not keepdim:
            raise fail(f"{name}: use keepdim=True (a cell's values keep their [B, n] shape)")
        return tr.wrap(fn(tr.val(x, name)))
    return handler


_HANDLERS["sum"] = _reduction("sum", _C.sum)
_HANDLERS["mean"] = _reduction("mean", _C.mean)


@handles("layer_norm")
def _layer_norm(tr, x, normalized_shape, weight=None, bias=None, eps=1e-5):
    shape = list(normalized_shape) if not isinstance(normalized_shape, int) else [normalized_shape]
    n = x.val.features
    if shape != [n]:
        raise fail(f"layer_norm: normalized_shape {shape} on a value of {n} features: a cell normalizes "
                   "over the feature axis only")
    g = None if weight is None else tr.val(weight, "layer_norm")
    b = None if bias is None else tr.val(bias, "layer_norm")
    return tr.wrap(_C.layer_norm(tr.val(x, "layer_norm"), g, b, float(eps)))


@handles("dropout", "dropout1d", "alpha_dropout", "feature_alpha_dropout")
def _dropout(tr, x, p=0.5, training=True, inplace=False):  # in eval: x itself, in place or not
    if training and p > 0:
        raise fail("dropout inside the cell is not supported in training mode: use the dropout "
                   "between layers (cellfuse.compile(..., dropout=p)) or put the module in eval()")
    return x


def _constant_like(value):
    def handler(tr, x, *args, dtype=None, layout=None, device=None, requires_grad=False,
                memory_format=None, pin_memory=False):
        if args:
            raise fail("full_like: only full_like(x, number) is supported")
        return tr.wrap(_C.constant_like(tr.val(x, "zeros_like"), value))
    return handler


_HANDLERS["zeros_like"] = _constant_like(0.0)
_HANDLERS["ones_like"] = _constant_like(1.0)


@handles("full_like")
def _full_like(tr, x, fill_value, **kwargs):
    return tr.wrap(_C.constant_like(tr.val(x, "full_like"), float(fill_value)))


def _conversion_allowed(tr, dtype):
    # In a 16-bit cell the math is f32 throughout: float32 and either 16-bit dtype are all f32.
    if tr.dtype in _SIXTEEN_BIT:
        return dtype in (torch.float32, *_SIXTEEN_BIT)
    return dtype == tr.dtype


@handles("to", "type", "type_as")
def _to(tr, x, *args, **kwargs):
    wanted = [a for a in list(args) + list(kwargs.values())
              if isinstance(a, torch.dtype) or isinstance(a, torch.Tensor) or isinstance(a, Traced)]
    for w in wanted:
        dtype = w if isinstance(w, torch.dtype) else w.dtype
        if not _conversion_allowed(tr, dtype):
            raise fail(f"conversion to {dtype} inside a {tr.dtype} cell is not supported")
    return x


def _method_conversion(dtype):
    def handler(tr, x, *args, **kwargs):
        if not _conversion_allowed(tr, dtype):
            raise fail(f"conversion to {dtype} inside a {tr.dtype} cell is not supported")
        return x
    return handler


for _n, _d in (("float", torch.float32), ("double", torch.float64), ("half", torch.float16),
               ("bfloat16", torch.bfloat16)):
    _HANDLERS[_n] = _method_conversion(_d)


@handles("view", "reshape")
def _view(tr, x, *shape):
    dims = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)) else shape
    current = tuple(x.shape)
    if len(dims) == len(current) and all(d == c or d == -1 for d, c in zip(dims, current)):
        return x
    raise fail(f"view/reshape to {list(dims)}: a cell's values keep their [B, n] shape")


def _no_out(out):
    if out is not None:
        raise fail("out= arguments are not supported in a cell")


def _in_place_of(name, base):
    def handler(tr, x, *args, **kwargs):
        return _in_place(tr, x, _HANDLERS[base](tr, x, *args, **kwargs), name)
    return handler


# x.op_(...) and x op= y: the out-of-place handler, then x takes the result (see _in_place).
for _base, _names in {"add": ("add_", "__iadd__"), "sub": ("sub_", "__isub__"), "mul": ("mul_", "__imul__"),
                      "div": ("div_", "__itruediv__"), "neg": ("neg_",), "relu": ("relu_",),
                      "sigmoid": ("sigmoid_",), "tanh": ("tanh_",), "exp": ("exp_",), "log": ("log_",),
                      "sqrt": ("sqrt_",), "abs": ("abs_",), "erf": ("erf_",), "clamp": ("clamp_", "clip_"),
                      "clamp_min": ("clamp_min_",), "clamp_max": ("clamp_max_",)}.items():
    for _n in _names:
        _HANDLERS[_n] = _in_place_of(_n, _base)

# The names users see in error messages and the docs.
SUPPORTED_OPS = sorted(n for n in _HANDLERS if not n.startswith("__"))
