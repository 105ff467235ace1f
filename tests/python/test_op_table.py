"""The op table (compiler/ir/ops.def) as Python sees it, cellfuse._C.op_table(): every unary op is a
builder function of the native module, SUPPORTED_OPS lists every torch name of the table, and ops
that reach Python only through the table (amax) trace, run and differentiate like PyTorch
(against eager float64, at odd sizes, on the CPU and, where there is one, the GPU)."""
import copy

import pytest
import torch
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


class SoftmaxStep(nn.Module):
    """A stable softmax over the features through amax, every spelling of it."""

    def __init__(self, i, h):
        super().__init__()
        self.lin = nn.Linear(i, h)
        self.rec = nn.Linear(h, h, bias=False)

    def forward(self, x, h):
        z = self.lin(x) + self.rec(h)
        m = z.amax(-1, keepdim=True)
        e = torch.exp(z - m)
        p = e / e.sum(-1, keepdim=True)
        top = torch.amax(z * h, dim=(-1,), keepdim=True) + torch.amax(x, dim=1, keepdim=True)
        return torch.tanh(p * top + 0.5 * h)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("T,B,I,H", [(1, 1, 3, 1), (6, 3, 5, 33), (4, 17, 7, 9)])
def test_amax_traces_runs_and_differentiates_as_pytorch(device, T, B, I, H):
    torch.manual_seed(T * 100 + B)
    cell = SoftmaxStep(I, H)
    ref = copy.deepcopy(cell).double()
    cell = cell.to(device)
    X, h0 = torch.randn(T, B, I) * 2, torch.randn(B, H)
    rnn = cellfuse.compile(cell, (X[0].to(device), h0.to(device)))
    assert "amax" in rnn.cell_text()
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


def test_amax_over_the_batch_axis_is_refused_with_its_name():
    class Step(nn.Module):
        def forward(self, x, h):
            return h + x.amax(0, keepdim=True)

    with pytest.raises(cellfuse.CellfuseError, match=r"amax"):
        cellfuse.compile(Step(), (torch.randn(2, 5), torch.randn(2, 5)))
