"""User-style cells against the same Python code run eagerly in float64: outputs and every
gradient (inputs, initial states, parameters), at odd sizes."""
import copy

import pytest
import torch

import cellfuse
from cells import ElmanProj, ExoticCell, GRUCell, LayerNormLSTM, LSTMCell, PeepholeLSTM, eager_sequence, rel

CASES = {
    "elman_proj": (lambda: ElmanProj(7, 13, 5), lambda B: torch.randn(B, 13), True),
    "lnlstm": (lambda: LayerNormLSTM(6, 11), lambda B: (torch.randn(B, 11), torch.randn(B, 11)), False),
    "peephole": (lambda: PeepholeLSTM(5, 9), lambda B: (torch.randn(B, 9), torch.randn(B, 9)), False),
    "gru": (lambda: GRUCell(4, 17), lambda B: torch.randn(B, 17), False),
    "exotic": (lambda: ExoticCell(6, 10), lambda B: torch.randn(B, 10), True),
}


def as_args(states):
    return states if isinstance(states, tuple) else (states,)


def run_case(name, T, B, dtype=torch.float32):
    make, make_states, has_output = CASES[name]
    cell = make().to(dtype)
    states = make_states(B)
    states = tuple(s.to(dtype) for s in states) if isinstance(states, tuple) else states.to(dtype)
    I = next(p for p in cell.parameters() if p.dim() == 2)
    X = torch.randn(T, B, cell_input_width(cell), dtype=dtype)
    # Separate state arguments (peephole: forward(x, h, c)) versus one tuple (lnlstm: (h, c)).
    separate = name == "peephole"
    if separate:
        example = (X[0], *states)
    else:
        example = (X[0], states)
    rnn = cellfuse.compile(cell, example)
    del I

    ref_cell = copy.deepcopy(cell).double()
    Xa = X.clone().requires_grad_()
    Xr = X.double().clone().requires_grad_()
    sa = tuple(s.clone().requires_grad_() for s in as_args(states))
    sr = tuple(s.double().clone().requires_grad_() for s in as_args(states))
    if separate:
        out, fin = rnn(Xa, sa)
        rout, rfin = eager_sequence(ref_cell, Xr, sr, has_output)
    elif isinstance(states, tuple):
        out, fin = rnn(Xa, sa)
        rout, rfin = eager_sequence(ref_cell, Xr, (sr,), has_output)
        rfin = rfin[0]
    else:
        out, fin = rnn(Xa, sa[0])
        rout, rfin = eager_sequence(ref_cell, Xr, sr[0], has_output)
    tol = 1e-5 if dtype == torch.float32 else 1e-11
    assert out.dtype == dtype and out.shape == rout.shape
    assert rel(out, rout) <= tol, rel(out, rout)
    fin, rfin = as_args(fin), as_args(rfin)
    for a, b in zip(fin, rfin):
        assert rel(a, b) <= tol

    w = torch.randn(out.shape, dtype=torch.float64)
    wf = [torch.randn(f.shape, dtype=torch.float64) for f in fin]
    ((out.double() * w).sum() + sum((f.double() * v).sum() for f, v in zip(fin, wf))).backward()
    ((rout * w).sum() + sum((f * v).sum() for f, v in zip(rfin, wf))).backward()
    gtol = 1e-4 if dtype == torch.float32 else 1e-10
    assert rel(Xa.grad, Xr.grad) <= gtol, ("X", rel(Xa.grad, Xr.grad))
    for a, b in zip(sa, sr):
        assert rel(a.grad, b.grad) <= gtol, ("state", rel(a.grad, b.grad))
    for (pname, p), (_, q) in zip(cell.named_parameters(), ref_cell.named_parameters()):
        assert p.grad is not None, pname
        assert rel(p.grad, q.grad) <= gtol, (pname, rel(p.grad, q.grad))


def cell_input_width(cell):
    for name, width in (("W", None), ("ih", None), ("Wx", None)):
        m = getattr(cell, name, None)
        if isinstance(m, torch.nn.Linear):
            return m.in_features
        if isinstance(m, torch.nn.Parameter):
            return m.shape[0]
    raise AssertionError("unknown cell")


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("T,B", [(1, 1), (2, 3), (37, 5)])
def test_cell_matches_eager(name, T, B):
    run_case(name, T, B)


@pytest.mark.parametrize("name", ["lnlstm", "exotic"])
def test_cell_matches_eager_float64(name):
    run_case(name, 7, 3, dtype=torch.float64)


def test_function_cell_with_closure_parameters():
    W = torch.randn(4, 6, requires_grad=True)
    U = torch.randn(6, 6, requires_grad=True)

    def step(x, h):
        return torch.tanh(x @ W + h @ U)

    rnn = cellfuse.compile(step, (torch.randn(2, 4), torch.randn(2, 6)))
    X = torch.randn(5, 3, 4)
    h0 = torch.randn(3, 6)
    out, h = rnn(X, h0)
    ref_h, ref_out = h0, []
    for t in range(5):
        ref_h = torch.tanh(X[t] @ W + ref_h @ U)
        ref_out.append(ref_h)
    assert rel(out, torch.stack(ref_out)) <= 1e-5
    out.sum().backward()
    gW = W.grad.clone()
    W.grad = None
    torch.stack(ref_out).sum().backward()
    assert rel(gW, W.grad) <= 1e-4


def test_parameters_and_state_dict_are_the_users():
    cell = LSTMCell(3, 4)
    rnn = cellfuse.compile(cell, (torch.randn(2, 3), (torch.randn(2, 4), torch.randn(2, 4))))
    assert set(map(id, rnn.parameters())) == set(map(id, cell.parameters()))
    sd = rnn.state_dict()
    assert "cells.0.ih.weight" in sd
    # An update of the user's parameter is seen by the next run (no stale copy).
    X = torch.randn(4, 2, 3)
    before, _ = rnn(X)
    with torch.no_grad():
        cell.hh.weight.mul_(-1.0)
    after, _ = rnn(X)
    assert rel(after, before) > 1e-3


def test_zero_length_sequence_passes_states_through():
    cell = GRUCell(3, 5)
    rnn = cellfuse.compile(cell, (torch.randn(2, 3), torch.randn(2, 5)))
    h0 = torch.randn(2, 5)
    out, h = rnn(torch.randn(0, 2, 3), h0)
    assert out.shape == (0, 2, 5)
    assert torch.equal(h, h0)


def test_batch_sizes_compile_once_each():
    cell = GRUCell(3, 5)
    rnn = cellfuse.compile(cell, (torch.randn(2, 3), torch.randn(2, 5)))
    for B in (1, 7, 1, 7):
        out, h = rnn(torch.randn(4, B, 3))
        assert out.shape == (4, B, 5)
    assert len(rnn.programs[0]._compiled) == 2
