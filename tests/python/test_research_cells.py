"""Cells as research code writes them, each against the same module run eagerly in float64:
outputs, final states and every gradient, at odd sizes. Styles covered: parameter views (SRU's
packed vectors v[0], v[1]), F.relu and other in-place forms, nested (h, c) states, one Linear on
cat([x, h]), torch.split, F.layer_norm with explicit weights, products of projections (mLSTM),
the exact GELU (erf)."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cellfuse
from cells import rel


class SRU(nn.Module):
    """Lei et al., "Simple Recurrent Units for Highly Parallelizable Recurrence" (2018)."""

    def __init__(self, n):
        super().__init__()
        self.W = nn.Linear(n, 3 * n, bias=False)
        self.v = nn.Parameter(torch.randn(2, n) * 0.5)  # read as v[0], v[1]: views of a parameter
        self.b = nn.Parameter(torch.randn(2, n) * 0.1)

    def forward(self, x, c):
        xt, fx, rx = self.W(x).chunk(3, dim=1)
        f = torch.sigmoid(fx + self.v[0] * c + self.b[0])
        r = torch.sigmoid(rx + self.v[1] * c + self.b[1])
        c = f * c + (1 - f) * xt
        h = r * torch.tanh(c) + (1 - r) * x
        return h, c


class IndRNN(nn.Module):
    """Li et al., "Independently Recurrent Neural Network" (2018): h' = relu(W x + u * h + b)."""

    def __init__(self, i, h):
        super().__init__()
        self.ih = nn.Linear(i, h)
        self.u = nn.Parameter(torch.rand(h))

    def forward(self, x, h):
        return F.relu(self.ih(x) + self.u * h)


class MultiplicativeLSTM(nn.Module):
    """Krause et al., "Multiplicative LSTM for sequence modelling" (2016)."""

    def __init__(self, i, h):
        super().__init__()
        self.wmx = nn.Linear(i, h, bias=False)
        self.wmh = nn.Linear(h, h, bias=False)
        self.wx = nn.Linear(i, 4 * h)
        self.wm = nn.Linear(h, 4 * h, bias=False)

    def forward(self, x, state):
        h, c = state
        m = self.wmx(x) * self.wmh(h)
        i, f, o, u = (self.wx(x) + self.wm(m)).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(u)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)


class Janet(nn.Module):
    """van der Westhuizen and Lasenby, "The unreasonable effectiveness of the forget gate" (2018)."""

    def __init__(self, i, h, beta=1.0):
        super().__init__()
        self.x2 = nn.Linear(i, 2 * h)
        self.h2 = nn.Linear(h, 2 * h, bias=False)
        self.beta = beta

    def forward(self, x, h):
        s, candidate = (self.x2(x) + self.h2(h)).split(h.shape[1], dim=1)
        return torch.sigmoid(s) * h + (1 - torch.sigmoid(s - self.beta)) * torch.tanh(candidate)


class LayerNormGRU(nn.Module):
    def __init__(self, i, h):
        super().__init__()
        self.x = nn.Linear(i, 3 * h)
        self.h = nn.Linear(h, 3 * h)
        self.ln_x, self.ln_h = nn.LayerNorm(3 * h), nn.LayerNorm(3 * h)

    def forward(self, x, h):
        xr, xz, xn = self.ln_x(self.x(x)).chunk(3, 1)
        hr, hz, hn = self.ln_h(self.h(h)).chunk(3, 1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        return (1 - z) * n + z * h


class CatLSTM(nn.Module):
    """The tutorial style: one Linear over cat([x, h]), gates by torch.split, in-place methods."""

    def __init__(self, i, h):
        super().__init__()
        self.lin = nn.Linear(i + h, 4 * h)

    def forward(self, x, state):
        h, c = state
        g = self.lin(torch.cat([x, h], dim=1))
        i, f, gg, o = torch.split(g, h.size(1), dim=1)
        c = f.sigmoid() * c
        c += i.sigmoid() * gg.tanh()
        h = o.sigmoid() * c.tanh()
        return h, (h, c)


class FunctionalLayerNormLSTM(nn.Module):
    """F.layer_norm with explicit weights on x @ W.t() over cat([x, h]), a forget bias, SiLU."""

    def __init__(self, i, h):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4 * h, i + h) / (i + h) ** 0.5)
        self.g = nn.Parameter(1 + 0.1 * torch.randn(4 * h))
        self.bb = nn.Parameter(0.1 * torch.randn(4 * h))

    def forward(self, x, hc):
        h, c = hc
        z = F.layer_norm(torch.cat((x, h), -1) @ self.w.t(), (self.w.shape[0],), self.g, self.bb, 1e-5)
        i, f, g, o = z.chunk(4, -1)
        c = torch.sigmoid(f + 1.0) * c + torch.sigmoid(i) * F.silu(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)


class GeluLSTM(nn.Module):
    """An LSTM whose candidate is the exact GELU, F.gelu(g) = g/2 (1 + erf(g/sqrt(2))), not tanh."""

    def __init__(self, i, h):
        super().__init__()
        self.ih = nn.Linear(i, 4 * h)
        self.hh = nn.Linear(h, 4 * h, bias=False)

    def forward(self, x, state):
        h, c = state
        i, f, g, o = (self.ih(x) + self.hh(h)).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * F.gelu(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)


# name: (module, input width, hidden width, state is (h, c), the step returns an output first)
CASES = {
    "sru": (lambda: SRU(13), 13, 13, False, True),
    "indrnn": (lambda: IndRNN(7, 33), 7, 33, False, False),
    "mlstm": (lambda: MultiplicativeLSTM(9, 17), 9, 17, True, True),
    "janet": (lambda: Janet(5, 21), 5, 21, False, False),
    "lngru": (lambda: LayerNormGRU(6, 19), 6, 19, False, False),
    "catlstm": (lambda: CatLSTM(11, 7), 11, 7, True, True),
    "flnlstm": (lambda: FunctionalLayerNormLSTM(10, 9), 10, 9, True, True),
    "gelulstm": (lambda: GeluLSTM(8, 15), 8, 15, True, True),
}


def eager(cell, X, state, has_output):
    outs = []
    for t in range(X.shape[0]):
        result = cell(X[t], state)
        out, state = result if has_output else (result, result)
        outs.append(out)
    return torch.stack(outs), state


def flat(state):
    return state if isinstance(state, tuple) else (state,)


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                 reason="needs a CUDA GPU"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("T,B", [(1, 1), (37, 3), (5, 64)])
def test_research_cell_matches_eager_float64(name, T, B, device):
    make, I, H, pair, has_output = CASES[name]
    torch.manual_seed(T * 100 + B)
    cell = make()
    ref = copy.deepcopy(cell).double()  # on the CPU, in float64
    cell = cell.to(device)
    X = torch.randn(T, B, I)
    state = (torch.randn(B, H), torch.randn(B, H)) if pair else torch.randn(B, H)
    example = tuple(s.to(device) for s in flat(state))
    rnn = cellfuse.compile(cell, (X[0].to(device), example if pair else example[0]), has_output=has_output)

    Xa, Xr = X.to(device, copy=True).requires_grad_(), X.double().clone().requires_grad_()
    sa = tuple(s.to(device, copy=True).requires_grad_() for s in flat(state))
    sr = tuple(s.double().clone().requires_grad_() for s in flat(state))
    out, fin = rnn(Xa, sa if pair else sa[0])
    assert out.device.type == device
    rout, rfin = eager(ref, Xr, sr if pair else sr[0], has_output)
    assert rel(out.cpu(), rout) <= 1e-5
    for a, b in zip(flat(fin), flat(rfin)):
        assert rel(a.cpu(), b) <= 1e-5

    w = torch.randn(out.shape, dtype=torch.float64)
    ((out.double().cpu() * w).sum() + sum(f.double().cpu().sum() for f in flat(fin))).backward()
    ((rout * w).sum() + sum(f.sum() for f in flat(rfin))).backward()
    assert rel(Xa.grad.cpu(), Xr.grad) <= 1e-4
    for a, b in zip(sa, sr):
        assert rel(a.grad.cpu(), b.grad) <= 1e-4
    for (pname, p), (_, q) in zip(cell.named_parameters(), ref.named_parameters()):
        assert p.grad is not None, pname
        assert rel(p.grad.cpu(), q.grad) <= 1e-4, (pname, rel(p.grad.cpu(), q.grad))


def test_parameter_views_follow_the_parameter():
    """SRU reads v[0] and v[1]: the views are taken again on every call, so an update of v (an
    optimizer step, load_state_dict) is seen, and the gradient of v has both rows."""
    cell = SRU(6)
    rnn = cellfuse.compile(cell, (torch.randn(2, 6), torch.randn(2, 6)), has_output=True)
    assert rnn.cell_text().count("= param") == 5  # W, and one param per row view of v and b
    X, c0 = torch.randn(4, 3, 6), torch.randn(3, 6)
    before, _ = rnn(X, c0)
    with torch.no_grad():
        cell.v[1].mul_(-3.0)
    after, _ = rnn(X, c0)
    ref, _ = eager(copy.deepcopy(cell).double(), X.double(), c0.double(), True)
    assert rel(after, before) > 1e-3
    assert rel(after, ref) <= 1e-5
    after.sum().backward()
    assert cell.v.grad is not None and cell.v.grad.shape == (2, 6)
    assert cell.v.grad[0].abs().sum() > 0 and cell.v.grad[1].abs().sum() > 0


def test_in_place_ops_change_the_value_they_are_applied_to():
    class Step(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(5, 12)
            self.rec = nn.Linear(6, 12)

        def forward(self, x, h):
            g = self.lin(x)
            g += self.rec(h)                 # __iadd__
            a = g[:, :6].clone()
            a.mul_(0.5)                      # a method's in-place form
            b = g[:, 6:]
            F.relu(b, inplace=True)          # the flag; g[:, :6] (a) is disjoint and stays valid
            a = a + g[:, :6]
            y = torch.tanh(a).add_(b)
            F.elu(y, inplace=True)
            return y

    cell = Step()
    X, h = torch.randn(4, 3, 5), torch.randn(3, 6)
    out, _ = cellfuse.compile(cell, (X[0], h))(X, h)
    ref, _ = eager(copy.deepcopy(cell).double(), X.double(), h.double(), False)
    assert rel(out, ref) <= 1e-5


def test_an_in_place_op_on_a_slice_changes_the_value_it_was_cut_from():
    class Step(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(5, 12)

        def forward(self, x, h):
            g = self.lin(x)
            g[:, 4:].relu_()                 # in PyTorch this changes g too
            return torch.tanh(g[:, :6] + h)  # features 4, 5 are the relu's

    cell = Step()
    X, h = torch.randn(4, 3, 5), torch.randn(3, 6)
    out, _ = cellfuse.compile(cell, (X[0], h))(X, h)
    ref, _ = eager(copy.deepcopy(cell).double(), X.double(), h.double(), False)
    assert rel(out, ref) <= 1e-5


def test_every_spelling_of_erf_and_gelu_traces():
    """torch.erf, torch.special.erf, x.erf(), x.erf_() and F.gelu in both forms, against eager
    float64, forward and backward."""
    class Step(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 9)

        def forward(self, x, h):
            z = self.lin(x) + h
            a = torch.erf(z) + torch.special.erf(0.5 * z) + (z * 0.25).erf()
            b = z * 1.5
            b.erf_()
            return torch.tanh(a + b + F.gelu(z) + F.gelu(z, approximate="tanh"))

    cell = Step()
    X, h = torch.randn(6, 3, 4) * 2, torch.randn(3, 9)
    Xa, Xr = X.clone().requires_grad_(), X.double().clone().requires_grad_()
    out, _ = cellfuse.compile(cell, (X[0], h))(Xa, h)
    ref = copy.deepcopy(cell).double()
    rout, _ = eager(ref, Xr, h.double(), False)
    assert rel(out, rout) <= 1e-5
    out.double().sum().backward()
    rout.sum().backward()
    assert rel(Xa.grad, Xr.grad) <= 1e-4
    assert rel(cell.lin.weight.grad, ref.lin.weight.grad) <= 1e-4


def test_gelu_with_an_unknown_approximation_names_it():
    class Step(nn.Module):
        def forward(self, x, h):
            return F.gelu(x + h, approximate="sigmoid")

    with pytest.raises(cellfuse.CellfuseError, match=r"gelu.*approximate"):
        cellfuse.compile(Step(), (torch.randn(2, 5), torch.randn(2, 5)))
