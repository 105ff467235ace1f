"""The op table (compiler/ir/ops.def) as Python sees it, cellfuse._C.op_table(): every unary op is a
builder function of the native module, SUPPORTED_OPS lists every torch name of the table, and ops
that reach Python only through the table (amax, hardsigmoid, softsign) capture, run and
differentiate like PyTorch (against eager float64, at odd sizes, on the CPU and, where there is
one, the GPU)."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cellfuse
from cellfuse import _C
from cells import eager_sequence, rel

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="needs a CUDA GPU"))]


def test_op_table_rows():
    rows = _C.op_table()
    names = [r["name"] for r in rows]
    assert len(names) == len(set(names))
    kinds = {"leaf", "pointwise", "contraction", "reduction", "layout"}
    for r in rows:
        assert set(r) == {"name", "min_arity", "max_arity", "kind", "pointwise", "unary", "torch"}
        assert r["kind"] in kinds
        assert r["pointwise"] == (r["kind"] == "pointwise")
        assert r["max_arity"] == -1 or r["max_arity"] >= r["min_arity"]
        if r["unary"]:
            assert callable(getattr(_C, r["name"])), r["name"]
    by_name = {r["name"]: r for r in rows}
    assert by_name["amax"]["kind"] == "reduction" and by_name["amax"]["unary"]
    assert by_name["erf"]["torch"] == ["erf", "special_erf"]
    assert not by_name["add"]["unary"] and not by_name["expand"]["unary"]


def test_supported_ops_lists_every_torch_name_of_the_table():
    table_names = {n for r in _C.op_table() for n in r["torch"]}
    assert table_names <= set(cellfuse.SUPPORTED_OPS)
    assert {"amax", "sigmoid", "expit", "special_erf", "sum", "mean"} <= table_names
    assert "gelu" in cellfuse.SUPPORTED_OPS  # the front end's own handlers stay listed
    assert cellfuse.SUPPORTED_OPS == sorted(set(cellfuse.SUPPORTED_OPS))


class Recurrent(nn.Module):
    """z = lin(x) + rec(h), what the steps below build on."""

    def __init__(self, i, h):
        super().__init__()
        self.lin = nn.Linear(i, h)
        self.rec = nn.Linear(h, h, bias=False)


class SoftmaxStep(Recurrent):
    """A stable softmax over the features through amax, every spelling of it."""

    def forward(self, x, h):
        z = self.lin(x) + self.rec(h)
        m = z.amax(-1, keepdim=True)
        e = torch.exp(z - m)
        p = e / e.sum(-1, keepdim=True)
        top = torch.amax(z * h, dim=(-1,), keepdim=True) + torch.amax(x, dim=1, keepdim=True)
        return torch.tanh(p * top + 0.5 * h)


def check_against_eager_float64(cell, device, T, B, I, H, op):
    """The cell compiled (its IR must hold `op`, the native op) against itself run eagerly in
    float64: outputs, final state, and the gradients of the input and every parameter."""
    ref = copy.deepcopy(cell).double()
    cell = cell.to(device)
    X, h0 = torch.randn(T, B, I) * 2, torch.randn(B, H)
    rnn = cellfuse.compile(cell, (X[0].to(device), h0.to(device)))
    assert f"= {op} " in rnn.cell_text()
    Xa, Xr = X.to(device, copy=True).requires_grad_(), X.double().clone().requires_grad_()
    out, fin = rnn(Xa, h0.to(device))
    rout, rfin = eager_sequence(ref, Xr, h0.double(), False)
    assert rel(out.cpu(), rout) <= 1e-5
    assert rel(fin.cpu(), rfin) <= 1e-5
    w = torch.randn(out.shape, dtype=torch.float64)
    (out.double().cpu() * w).sum().backward()
    (rout * w).sum().backward()
    assert rel(Xa.grad.cpu(), Xr.grad) <= 1e-4
    for (pname, p), (_, q) in zip(cell.named_parameters(), ref.named_parameters()):
        assert rel(p.grad.cpu(), q.grad) <= 1e-4, pname


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("T,B,I,H", [(1, 1, 3, 1), (6, 3, 5, 33), (4, 17, 7, 9)])
def test_amax_traces_runs_and_differentiates_as_pytorch(device, T, B, I, H):
    torch.manual_seed(T * 100 + B)
    check_against_eager_float64(SoftmaxStep(I, H), device, T, B, I, H, "amax")


def test_amax_over_the_batch_axis_is_refused_with_its_name():
    class Step(nn.Module):
        def forward(self, x, h):
            return h + x.amax(0, keepdim=True)

    with pytest.raises(cellfuse.CellfuseError, match=r"amax"):
        cellfuse.compile(Step(), (torch.randn(2, 5), torch.randn(2, 5)))


class ActivationStep(Recurrent):
    """hardsigmoid (every spelling: F., in place, the module) and softsign (F. and the module)."""

    def __init__(self, i, h):
        super().__init__(i, h)
        self.hs, self.ss = nn.Hardsigmoid(), nn.Softsign()

    def forward(self, x, h):
        z = (self.lin(x) + self.rec(h)) * 3.0  # wide enough to reach both flat parts of hardsigmoid
        a = F.hardsigmoid(z) + self.hs(z * 0.5)
        b = z * 0.25
        F.hardsigmoid(b, inplace=True)
        return torch.tanh(a * F.softsign(z) + b + self.ss(h))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("T,B,I,H", [(1, 1, 3, 1), (5, 3, 4, 33), (3, 17, 6, 9)])
def test_hardsigmoid_and_softsign_trace_run_and_differentiate_as_pytorch(device, T, B, I, H):
    torch.manual_seed(T * 10 + B)
    check_against_eager_float64(ActivationStep(I, H), device, T, B, I, H, "hardsigmoid")


def test_builder_functions_of_the_new_ops_match_pytorch():
    """_C.hardsigmoid and _C.softsign (bound from the op table) in a hand-built cell, against
    torch.nn.functional on fresh values, special values included."""
    x = torch.cat([torch.randn(40, dtype=torch.float64) * 5,
                   torch.tensor([-3.0, 3.0, -0.0, 1e30, -1e30], dtype=torch.float64)])
    b = _C.Builder("acts", "f64")
    v = b.input("x", x.numel())
    b.output("hs", _C.hardsigmoid(v))
    b.output("ss", _C.softsign(v))
    cell = b.finish()
    program = _C.CpuProgram(cell, 1)
    hs, ss = torch.empty(1, 1, x.numel(), dtype=torch.float64), torch.empty(1, 1, x.numel(), dtype=torch.float64)
    xs = x.reshape(1, 1, -1).contiguous()
    program.forward(1, [xs.data_ptr()], [], [], [hs.data_ptr(), ss.data_ptr()], [])
    assert (hs.flatten() - F.hardsigmoid(x)).abs().max().item() <= 1e-15
    assert rel(ss.flatten(), F.softsign(x)) <= 1e-15


class SmallLogStep(Recurrent):
    """torch.log1p / torch.expm1 / Tensor.log1p_ of small values, where log(1 + x) loses digits."""

    def forward(self, x, h):
        z = torch.tanh(self.lin(x) + self.rec(h)) * 1e-4
        y = z.clone()
        y.log1p_()
        return torch.expm1(z) * 1e3 + torch.log1p(h * 1e-3) * 1e3 + y * 1e3


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("T,B,I,H", [(1, 1, 3, 1), (4, 5, 6, 19)])
def test_log1p_and_expm1_keep_the_digits_of_small_values(device, T, B, I, H):
    torch.manual_seed(T * 7 + B)
    check_against_eager_float64(SmallLogStep(I, H), device, T, B, I, H, "log1p")
    rnn = cellfuse.compile(SmallLogStep(I, H), (torch.randn(B, I), torch.randn(B, H)))
    assert "= expm1 " in rnn.cell_text()
