"""nn.LSTMCell and nn.GRUCell on CUDA tensors run aten._thnn_fused_lstm_cell and
aten._thnn_fused_gru_cell, kernels that exist only for CUDA; the capture decomposes them
(_fx_capture._fused_lstm_cell, _fused_gru_cell). The capture traces on fake tensors, so a step
that calls the fused ops directly compiles on the CPU too: here it is checked against nn.LSTMCell
and nn.GRUCell run eagerly in float64 (outputs, final states, every gradient), at odd sizes."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cellfuse
from cells import rel

T, B, I, H = 6, 3, 5, 7


class FusedKernelLSTM(nn.Module):
    """What nn.LSTMCell does on CUDA tensors: both products without bias, then the fused kernel."""

    def __init__(self, cell):
        super().__init__()
        self.cell = cell

    def forward(self, x, state):
        h, c = state
        k = self.cell
        hy, cy, _ = torch.ops.aten._thnn_fused_lstm_cell(F.linear(x, k.weight_ih), F.linear(h, k.weight_hh), c,
                                                         k.bias_ih, k.bias_hh)
        return hy, (hy, cy)


class FusedKernelGRU(nn.Module):
    """What nn.GRUCell does on CUDA tensors, with the biases left out (they are optional)."""

    def __init__(self, cell):
        super().__init__()
        self.cell = cell

    def forward(self, x, h):
        k = self.cell
        hy, _ = torch.ops.aten._thnn_fused_gru_cell(F.linear(x, k.weight_ih), F.linear(h, k.weight_hh), h)
        return hy, hy


def _reference(kind, cell, X, states):
    outs = []
    h, c = (states[0], states[1]) if kind == "lstm" else (states[0], None)
    for t in range(X.shape[0]):
        if kind == "lstm":
            h, c = cell(X[t], (h, c))
        else:
            h = cell(X[t], h)
        outs.append(h)
    return torch.stack(outs), ([h, c] if kind == "lstm" else [h])


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_fused_cuda_cell_op_matches_the_torch_cell(kind):
    torch.manual_seed(11 if kind == "lstm" else 12)
    if kind == "lstm":
        torch_cell = nn.LSTMCell(I, H)
        fused = FusedKernelLSTM(torch_cell)
        n_states = 2
    else:
        torch_cell = nn.GRUCell(I, H, bias=False)
        fused = FusedKernelGRU(torch_cell)
        n_states = 1
    ref_cell = copy.deepcopy(torch_cell).double()
    s0 = [torch.randn(B, H) * 0.5 for _ in range(n_states)]
    example = (torch.randn(B, I), tuple(s0)) if kind == "lstm" else (torch.randn(B, I), s0[0])
    rnn = cellfuse.compile(fused, example)

    X = torch.randn(T, B, I)
    Xa, Xr = X.clone().requires_grad_(), X.double().clone().requires_grad_()
    Sa = [s.clone().requires_grad_() for s in s0]
    Sr = [s.double().clone().requires_grad_() for s in s0]
    out, finals = rnn(Xa, tuple(Sa) if kind == "lstm" else Sa[0])
    finals = list(finals) if kind == "lstm" else [finals]
    rout, rfinals = _reference(kind, ref_cell, Xr, Sr)
    assert rel(out, rout) < 1e-5
    for got, want in zip(finals, rfinals):
        assert rel(got, want) < 1e-5

    seeds = [torch.randn_like(out)] + [torch.randn_like(f) for f in finals]
    torch.autograd.backward([out] + finals, seeds)
    torch.autograd.backward([rout] + rfinals, [s.double() for s in seeds])
    assert rel(Xa.grad, Xr.grad) < 1e-4
    for got, want in zip(Sa, Sr):
        assert rel(got.grad, want.grad) < 1e-4
    for (name, p), (_, q) in zip(torch_cell.named_parameters(), ref_cell.named_parameters()):
        assert p.grad is not None, name
        assert rel(p.grad, q.grad) < 1e-4, name
