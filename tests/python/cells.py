"""User-style recurrent cells, written as people write them in research code."""
import torch
import torch.nn.functional as F
from torch import nn


class LSTMCell(nn.Module):
    """nn.LSTMCell's computation (gate order i, f, g, o), forward(x, (h, c))."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.ih = nn.Linear(input_size, 4 * hidden_size)
        self.hh = nn.Linear(hidden_size, 4 * hidden_size)

    def forward(self, x, state):
        h, c = state
        i, f, g, o = (self.ih(x) + self.hh(h)).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class GRUCell(nn.Module):
    """nn.GRUCell's computation (r, z, n; the reset gate inside the hidden product)."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.ih = nn.Linear(input_size, 3 * hidden_size)
        self.hh = nn.Linear(hidden_size, 3 * hidden_size)

    def forward(self, x, h):
        xr, xz, xn = self.ih(x).chunk(3, -1)
        hr, hz, hn = self.hh(h).chunk(3, -1)
        r = torch.sigmoid(xr + hr)
        z = torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        return (1 - z) * n + z * h


class ElmanProj(nn.Module):
    """An Elman cell with an output projection: returns (y, h)."""

    def __init__(self, input_size, hidden_size, output_size):
        super().__init__()
        self.W = nn.Linear(input_size, hidden_size)
        self.U = nn.Linear(hidden_size, hidden_size, bias=False)
        self.out = nn.Linear(hidden_size, output_size)

    def forward(self, x, h):
        h = torch.tanh(self.W(x) + self.U(h))
        return self.out(h), h


class LayerNormLSTM(nn.Module):
    """LayerNorm-LSTM (Ba et al. 2016) with nn.LayerNorm on the gates and on the cell."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.ih = nn.Linear(input_size, 4 * hidden_size, bias=False)
        self.hh = nn.Linear(hidden_size, 4 * hidden_size, bias=False)
        self.ln_ih = nn.LayerNorm(4 * hidden_size)
        self.ln_hh = nn.LayerNorm(4 * hidden_size)
        self.ln_c = nn.LayerNorm(hidden_size)
        for ln in (self.ln_ih, self.ln_hh, self.ln_c):  # not the identity init, so they matter
            nn.init.uniform_(ln.weight, 0.5, 1.5)
            nn.init.uniform_(ln.bias, -0.5, 0.5)

    def forward(self, x, state):
        h, c = state
        gates = self.ln_ih(self.ih(x)) + self.ln_hh(self.hh(h))
        i, f, g, o = gates.chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(self.ln_c(c))
        return h, c


class PeepholeLSTM(nn.Module):
    """Peephole LSTM (Gers & Schmidhuber): forward(x, h, c) with separate state arguments."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.W = nn.Parameter(torch.randn(input_size, 4 * hidden_size) / input_size**0.5)
        self.U = nn.Parameter(torch.randn(hidden_size, 4 * hidden_size) / hidden_size**0.5)
        self.b = nn.Parameter(torch.randn(4 * hidden_size) * 0.1)
        self.p_i = nn.Parameter(torch.randn(hidden_size) * 0.3)
        self.p_f = nn.Parameter(torch.randn(hidden_size) * 0.3)
        self.p_o = nn.Parameter(torch.randn(hidden_size) * 0.3)
        self.hidden = hidden_size

    def forward(self, x, h, c):
        H = self.hidden
        g = x @ self.W + h @ self.U + self.b
        i = torch.sigmoid(g[:, :H] + self.p_i * c)
        f = torch.sigmoid(g[:, H:2 * H] + self.p_f * c)
        cand = torch.tanh(g[:, 2 * H:3 * H])
        c = f * c + i * cand
        o = torch.sigmoid(g[:, 3 * H:] + self.p_o * c)
        return o * torch.tanh(c), c


class ExoticCell(nn.Module):
    """A cell that uses the rest of the supported surface: F.linear with a transposed weight,
    narrow, split, clamp, where, softplus, erf, relu, exp, scalars, mean/sum and layer_norm without
    affine parameters, a constant buffer, and a learnable scalar."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.Wx = nn.Parameter(torch.randn(input_size, 2 * hidden_size) / input_size**0.5)
        self.Wh = nn.Parameter(torch.randn(2 * hidden_size, hidden_size) / hidden_size**0.5)
        self.temperature = nn.Parameter(torch.tensor(0.7))
        self.register_buffer("offset", torch.randn(hidden_size) * 0.1)

    def forward(self, x, h):
        z = x @ self.Wx + F.linear(h, self.Wh)  # [B, 2H]
        a, b = torch.split(z, z.shape[1] // 2, dim=1)
        gate = torch.sigmoid(a.narrow(1, 0, a.shape[1]) * self.temperature)
        cand = torch.where(b > 0, torch.tanh(b), F.softplus(b) - 0.5) + 0.25 * torch.erf(a)
        cand = torch.clamp(cand, -0.9, 0.9) + self.offset
        centred = cand - cand.mean(dim=-1, keepdim=True)
        scale = torch.exp(-0.5 * (centred * centred).sum(-1, keepdim=True) / cand.shape[1])
        new_h = (1.0 - gate) * h + gate * F.layer_norm(centred * scale, (cand.shape[1],))
        return torch.relu(new_h) - 0.1 * new_h, new_h


def eager_sequence(cell, X, states, has_output):
    """The cell run step by step in Python: the reference. `states` in the cell's structure."""
    outs = []
    for t in range(X.shape[0]):
        result = cell(X[t], *states) if isinstance(states, tuple) else cell(X[t], states)
        flat = list(result) if isinstance(result, tuple) else [result]
        if has_output:
            out, new = flat[0], flat[1:]
        else:
            out, new = flat[0], flat
        states = _like(states, new)
        outs.append(out)
    return torch.stack(outs), states


def _like(states, new):
    """new (flat) in the structure of `states` (a tensor, a tuple of tensors and tuples)."""
    if not isinstance(states, tuple):
        return new[0]
    out, i = [], 0
    for s in states:
        if isinstance(s, tuple):
            out.append(tuple(new[i:i + len(s)]))
            i += len(s)
        else:
            out.append(new[i])
            i += 1
    return tuple(out)


def rel(a, b):
    """Norm-wise relative difference ||a - b|| / ||b|| (in float64)."""
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()
