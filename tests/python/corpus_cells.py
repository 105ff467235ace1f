"""A corpus of recurrent cells written the ways public research code writes them: step
conventions with singleton axes ((1, B, n) as one step of nn.LSTM, (B, 1, n)) and heads
((B, heads, d)); layout calls (view with size() arithmetic, reshape, flatten, unsqueeze/squeeze,
expand(_as), transposes); reductions spelled every way (mean(x, 1).unsqueeze(1), torch.var
unbiased, std(unbiased=False), amax/amin, logsumexp, norm, softmax); computations on parameters
(weight norm, masks, scaling, cat of per-gate weights, clamps); and the usual families (LSTM, GRU,
IndRNN, SRU, QRNN, mLSTM, LayerNorm variants). Each entry says how to build the cell and its
example per-step shapes; test_corpus.py checks every one against eager float64.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

th = torch  # research code often imports torch as th


def _uniform(*shape, scale=None):
    scale = scale if scale is not None else 1.0 / math.sqrt(shape[-1])
    return nn.Parameter(torch.empty(*shape).uniform_(-scale, scale))


# -- step conventions with singleton axes ------------------------------------------------------

class SeqStepLSTM(nn.Module):
    """One step of an nn.LSTM-style call: x (1, B, I), h and c (1, B, H), views by size()."""

    def __init__(self, i, h):
        super().__init__()
        self.weight_ih = _uniform(4 * h, i)
        self.weight_hh = _uniform(4 * h, h)
        self.bias_ih = _uniform(4 * h)
        self.bias_hh = _uniform(4 * h)

    def forward(self, x, hidden):
        h, c = hidden
        x = x.view(x.size(1), -1)
        gates = F.linear(x, self.weight_ih, self.bias_ih) + F.linear(h.view(h.size(1), -1), self.weight_hh,
                                                                     self.bias_hh)
        i, f, g, o = gates.chunk(4, 1)
        c2 = torch.sigmoid(f) * c.squeeze(0) + torch.sigmoid(i) * torch.tanh(g)
        h2 = torch.sigmoid(o) * torch.tanh(c2)
        return h2.view(1, h2.size(0), -1), (h2.unsqueeze(0), c2.unsqueeze(0))


class SeqStepGRU(nn.Module):
    """GRU step on (1, B, n) tensors, squeeze(0)/unsqueeze(0) and reshape."""

    def __init__(self, i, h):
        super().__init__()
        self.ih = nn.Linear(i, 3 * h)
        self.hh = nn.Linear(h, 3 * h)

    def forward(self, x, h):
        gi = self.ih(x.squeeze(0))
        gh = self.hh(h.reshape(-1, h.shape[-1]))
        ir, iz, in_ = gi.chunk(3, -1)
        hr, hz, hn = gh.chunk(3, -1)
        r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
        n = torch.tanh(in_ + r * hn)
        return ((1 - z) * n + z * h[0]).unsqueeze(0)


class ColumnStateIndRNN(nn.Module):
    """IndRNN with the state as (B, 1, n) and x (B, I) unsqueezed to meet it."""

    def __init__(self, i, h):
        super().__init__()
        self.ih = nn.Linear(i, h)
        self.u = nn.Parameter(torch.empty(h).uniform_(0, 1))

    def forward(self, x, h):
        return F.relu(self.ih(x).unsqueeze(1) + self.u * h)


class FlattenElman(nn.Module):
    """Elman cell on (B, 1, n) values: flatten(1), view back, a learnable scale, ReLU."""

    def __init__(self, i, h):
        super().__init__()
        self.W = nn.Linear(i, h)
        self.U = nn.Linear(h, h, bias=False)
        self.scale = nn.Parameter(torch.tensor(0.9))

    def forward(self, x, h):
        pre = self.W(x.flatten(1)) + self.scale * self.U(torch.flatten(h, start_dim=1))
        return torch.relu(pre).view(h.shape[0], 1, -1)


class TransposedBatchElman(nn.Module):
    """Batch as the last axis: states (H, B), products written W @ h."""

    def __init__(self, i, h):
        super().__init__()
        self.W = _uniform(h, i)
        self.U = _uniform(h, h)
        self.b = _uniform(h, 1)

    def forward(self, x, h):
        return torch.tanh(self.W @ x.t() + self.U @ h + self.b).t().t()


# -- reductions and normalizations spelled the usual ways --------------------------------------

class HandLayerNormLSTM(nn.Module):
    """LayerNorm-LSTM with a hand-written layer norm: th.mean(x, 1).unsqueeze(1), th.var(x, 1)
    (unbiased) on the gates, x.std(-1, unbiased=False) on the cell."""

    def __init__(self, i, h):
        super().__init__()
        self.ih = nn.Linear(i, 4 * h, bias=False)
        self.hh = nn.Linear(h, 4 * h, bias=False)
        self.g = nn.Parameter(1 + 0.1 * torch.randn(4 * h))
        self.b = nn.Parameter(0.1 * torch.randn(4 * h))
        self.gc = nn.Parameter(1 + 0.1 * torch.randn(h))

    def ln(self, x):
        mu = th.mean(x, 1).unsqueeze(1)
        var = th.var(x, 1).unsqueeze(1)
        return (x - mu) / th.sqrt(var + 1e-5) * self.g + self.b

    def forward(self, x, state):
        h, c = state
        i, f, g, o = self.ln(self.ih(x) + self.hh(h)).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        cn = (c - c.mean(-1, keepdim=True)) / (c.std(-1, unbiased=False, keepdim=True) + 1e-4)
        return torch.sigmoid(o) * torch.tanh(self.gc * cn), (torch.sigmoid(o) * torch.tanh(self.gc * cn), c)


class RMSNormGRU(nn.Module):
    """GRU whose candidate is RMS-normalized: x * rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)."""

    def __init__(self, i, h):
        super().__init__()
        self.x = nn.Linear(i, 3 * h)
        self.h = nn.Linear(h, 3 * h, bias=False)
        self.weight = nn.Parameter(1 + 0.1 * torch.randn(h))

    def forward(self, x, h):
        xr, xz, xn = self.x(x).split(h.size(-1), dim=-1)
        hr, hz, hn = self.h(h).split(h.size(-1), dim=-1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = xn + r * hn
        n = n * torch.rsqrt(n.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight
        return (1 - z) * torch.tanh(n) + z * h


class SoftmaxAttentionCell(nn.Module):
    """A state of slots mixed by softmax weights; log_softmax and logsumexp in the output."""

    def __init__(self, i, h):
        super().__init__()
        self.q = nn.Linear(i, h)
        self.k = nn.Linear(h, h)

    def forward(self, x, h):
        a = F.softmax(self.q(x) * self.k(h), dim=1)
        new_h = torch.tanh(a * h + self.q(x))
        out = F.log_softmax(new_h, dim=-1) + torch.logsumexp(new_h, dim=-1, keepdim=True)
        return out, new_h


class MinMaxScaledRNN(nn.Module):
    """Min-max scaling of the pre-activation with amax/amin, torch.max(x, dim) values and norm."""

    def __init__(self, i, h):
        super().__init__()
        self.W = nn.Linear(i + h, h)

    def forward(self, x, h):
        z = self.W(torch.cat([x, h], 1))
        lo, hi = z.amin(dim=1, keepdim=True), z.amax(-1, keepdim=True)
        peak = torch.max(z, dim=-1, keepdim=True)[0]
        s = (z - lo) / (hi - lo + 1.0) + 0.1 * peak
        return torch.tanh(s) / (1 + torch.norm(h, dim=1, keepdim=True)) + 0.5 * h


class VarianceGatedCell(nn.Module):
    """var_mean, std with correction=0 and torch.var(unbiased=False) spelled positionally."""

    def __init__(self, i, h):
        super().__init__()
        self.W = nn.Linear(i, h)
        self.U = nn.Linear(h, h)

    def forward(self, x, h):
        z = self.W(x) + self.U(h)
        var, mean = torch.var_mean(z, dim=-1, keepdim=True)
        spread = torch.std(z, -1, keepdim=True, correction=0) + torch.var(z, 1, False, True)
        return torch.tanh((z - mean) / torch.sqrt(var + 1e-5) + 0.1 * spread) * 0.5 + 0.5 * h


# -- computations on parameters ------------------------------------------------------------------

class WeightNormRNN(nn.Module):
    """Weight-normalized recurrence: U = g * V / ||V|| per row, computed in the step."""

    def __init__(self, i, h):
        super().__init__()
        self.W = nn.Linear(i, h)
        self.V = _uniform(h, h)
        self.g = nn.Parameter(torch.rand(h, 1) + 0.5)

    def forward(self, x, h):
        U = self.g * self.V / self.V.norm(dim=1, keepdim=True)
        return torch.tanh(self.W(x) + h @ U.t())


class MaskedRecurrentRNN(nn.Module):
    """A fixed sparsity mask (a buffer) times the recurrent weight; a diagonal from torch.eye."""

    def __init__(self, i, h):
        super().__init__()
        self.W = nn.Linear(i, h)
        self.U = _uniform(h, h)
        self.register_buffer("mask", (torch.rand(h, h) > 0.5).float())

    def forward(self, x, h):
        U = self.U * self.mask + 0.5 * torch.eye(self.U.shape[0], device=self.U.device)
        return torch.tanh(self.W(x) + F.linear(h, U))


class PerGateLSTM(nn.Module):
    """Separate parameters per gate joined with torch.cat (x @ W form), a scaled forget bias."""

    def __init__(self, i, h):
        super().__init__()
        self.W = nn.ParameterList([_uniform(i, h) for _ in range(4)])
        self.U = nn.ParameterList([_uniform(h, h) for _ in range(4)])
        self.b = nn.ParameterList([nn.Parameter(0.1 * torch.randn(h)) for _ in range(4)])

    def forward(self, x, state):
        h, c = state
        W = torch.cat(list(self.W), dim=1)
        U = torch.cat([u * 1.0 for u in self.U], dim=1)
        b = torch.cat([self.b[0], self.b[1] + 1.0, self.b[2], self.b[3]])
        i, f, g, o = (x @ W + h @ U + b).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)


class SkewRNN(nn.Module):
    """A recurrence through a skew-symmetric matrix A - A^T, scaled by a softplus of a parameter."""

    def __init__(self, i, h):
        super().__init__()
        self.W = nn.Linear(i, h)
        self.A = _uniform(h, h)
        self.s = nn.Parameter(torch.tensor(-0.5))

    def forward(self, x, h):
        K = (self.A - self.A.transpose(0, 1)) * F.softplus(self.s)
        return torch.tanh(self.W(x) + torch.matmul(h, K) + h)


class ClampedIndRNN(nn.Module):
    """IndRNN whose recurrent weights are clamped to |u| <= 1 in the step, hardtanh activation."""

    def __init__(self, i, h):
        super().__init__()
        self.ih = nn.Linear(i, h)
        self.u = nn.Parameter(torch.randn(h) * 1.5)

    def forward(self, x, h):
        return F.hardtanh(self.ih(x) + self.u.clamp(-1, 1) * h, -2.0, 2.0)


# -- heads: (B, heads, d) --------------------------------------------------------------------------

class MultiHeadIndRNN(nn.Module):
    """State (B, heads, d): x projected and viewed per head, a per-head layer norm over d (nn.LayerNorm),
    a per-head softmax, and a bias broadcast over heads."""

    def __init__(self, i, heads, d):
        super().__init__()
        self.heads, self.d = heads, d
        self.ih = nn.Linear(i, heads * d)
        self.u = nn.Parameter(torch.rand(heads, d))
        self.bias = nn.Parameter(0.1 * torch.randn(d))
        self.ln = nn.LayerNorm(d)

    def forward(self, x, h):
        z = self.ih(x).view(x.size(0), self.heads, self.d) + self.u * h + self.bias
        return torch.tanh(self.ln(z)) * F.softmax(z, dim=-1) * self.d


class HeadwiseGRU(nn.Module):
    """GRU gates per head with block-diagonal recurrent weights (torch.block_diag of per-head
    matrices), expand_as of a per-head gate, a mean over d, transpose(1, 2) and back."""

    def __init__(self, i, heads, d):
        super().__init__()
        self.heads, self.d = heads, d
        self.x = nn.Linear(i, heads * d * 2)
        self.U = nn.ParameterList([_uniform(d, d) for _ in range(heads)])
        self.gate = nn.Linear(i, heads)

    def forward(self, x, h):
        B = x.shape[0]
        xz, xn = self.x(x).reshape(B, self.heads, 2 * self.d).chunk(2, dim=-1)
        hn = (h.reshape(B, -1) @ torch.block_diag(*self.U)).view(B, self.heads, self.d)
        z = torch.sigmoid(xz + hn.mean(dim=2, keepdim=True))
        g = torch.sigmoid(self.gate(x)).unsqueeze(-1).expand_as(h)
        n = torch.tanh(xn + (hn.transpose(1, 2) * 0.5).transpose(1, 2))
        return g * ((1 - z) * n + z * h) + (1 - g) * h


class HeadwiseMLSTM(nn.Module):
    """An xLSTM-style matrix-free mLSTM head: exponential input gate stabilized by a running max
    state m, normalizer state n, all (B, heads, d); logsigmoid forget gate."""

    def __init__(self, i, heads, d):
        super().__init__()
        self.heads, self.d = heads, d
        self.proj = nn.Linear(i, 4 * heads * d)
        self.r = nn.Parameter(0.1 * torch.randn(heads, d))

    def forward(self, x, state):
        c, n, m = state
        B = x.size(0)
        i_t, f_t, z_t, o_t = self.proj(x).view(B, self.heads, 4 * self.d).split(self.d, dim=-1)
        f_log = F.logsigmoid(f_t + self.r * c)
        m_new = torch.maximum(f_log + m, i_t)
        i_g = torch.exp(i_t - m_new)
        f_g = torch.exp(f_log + m - m_new)
        c_new = f_g * c + i_g * torch.tanh(z_t)
        n_new = f_g * n + i_g
        h = torch.sigmoid(o_t) * c_new / torch.clamp(n_new.abs(), min=1.0)
        return h.reshape(B, -1), (c_new, n_new, m_new)


class SharedHeadRNN(nn.Module):
    """One recurrent weight shared by every head: nn.Linear and `@` applied to (B, heads, d)
    values (PyTorch folds the heads into the rows: h.view(B * heads, d) @ W)."""

    def __init__(self, i, heads, d):
        super().__init__()
        self.heads, self.d = heads, d
        self.ih = nn.Linear(i, heads * d)
        self.rec = nn.Linear(d, d)
        self.U = _uniform(d, d)

    def forward(self, x, h):
        z = self.ih(x).view(-1, self.heads, self.d) + self.rec(h) + torch.tanh(h) @ self.U
        return torch.tanh(z)


# -- the usual families -------------------------------------------------------------------------------

class GRUResetAfter(nn.Module):
    """nn.GRUCell's form: the reset gate multiplies the hidden product."""

    def __init__(self, i, h):
        super().__init__()
        self.ih, self.hh = nn.Linear(i, 3 * h), nn.Linear(h, 3 * h)

    def forward(self, x, h):
        xr, xz, xn = self.ih(x).chunk(3, 1)
        hr, hz, hn = self.hh(h).chunk(3, 1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        return (1 - z) * torch.tanh(xn + r * hn) + z * h


class GRUResetBefore(nn.Module):
    """The original GRU (Cho et al. 2014): the reset gate multiplies h before its product."""

    def __init__(self, i, h):
        super().__init__()
        self.W = nn.Linear(i, 3 * h)
        self.U_rz = nn.Linear(h, 2 * h, bias=False)
        self.U_n = nn.Linear(h, h, bias=False)

    def forward(self, x, h):
        xr, xz, xn = self.W(x).chunk(3, -1)
        r, z = torch.sigmoid(torch.cat([xr, xz], -1) + self.U_rz(h)).chunk(2, -1)
        n = torch.tanh(xn + self.U_n(r * h))
        return z * h + (1 - z) * n


class PeepholeCIFGLSTM(nn.Module):
    """Coupled input-forget gate LSTM with peepholes and an output projection (returns y, (h, c))."""

    def __init__(self, i, h, p):
        super().__init__()
        self.W = nn.Linear(i + p, 3 * h)
        self.peep = nn.Parameter(0.1 * torch.randn(2, h))
        self.proj = nn.Linear(h, p, bias=False)

    def forward(self, x, state):
        y, c = state
        f, g, o = self.W(torch.cat((x, y), dim=-1)).chunk(3, -1)
        f = torch.sigmoid(f + self.peep[0] * c)
        c = f * c + (1 - f) * torch.tanh(g)
        o = torch.sigmoid(o + self.peep[1] * c)
        y = self.proj(o * torch.tanh(c))
        return y, (y, c)


class ResidualLSTM(nn.Module):
    """LSTM with a residual connection from the input (I == H), in-place updates."""

    def __init__(self, h):
        super().__init__()
        self.lin = nn.Linear(2 * h, 4 * h)

    def forward(self, x, state):
        h, c = state
        gates = self.lin(torch.cat([x, h], dim=1))
        i, f, g, o = gates.chunk(4, 1)
        c = c * torch.sigmoid(f)
        c += torch.sigmoid(i) * torch.tanh(g)
        out = torch.sigmoid(o) * torch.tanh(c)
        out += x
        return out, (out, c)


class SRUCell(nn.Module):
    """SRU (Lei et al. 2018) with highway; packed vectors read as v[0], v[1]."""

    def __init__(self, n):
        super().__init__()
        self.W = nn.Linear(n, 3 * n, bias=False)
        self.v = nn.Parameter(torch.randn(2, n) * 0.5)
        self.b = nn.Parameter(torch.randn(2, n) * 0.1)

    def forward(self, x, c):
        xt, fx, rx = self.W(x).chunk(3, dim=1)
        f = torch.sigmoid(fx + self.v[0] * c + self.b[0])
        r = torch.sigmoid(rx + self.v[1] * c + self.b[1])
        c = f * c + (1 - f) * xt
        return r * torch.tanh(c) + (1 - r) * x, c


class QRNNCell(nn.Module):
    """QRNN fo-pooling (Bradbury et al. 2017) with a window of 1: gates from x alone."""

    def __init__(self, i, h):
        super().__init__()
        self.lin = nn.Linear(i, 3 * h)

    def forward(self, x, c):
        z, f, o = self.lin(x).chunk(3, dim=-1)
        z, f, o = z.tanh(), f.sigmoid(), o.sigmoid()
        c = f * c + (1 - f) * z
        return o * c, c


class MultiplicativeLSTM(nn.Module):
    """mLSTM (Krause et al. 2016)."""

    def __init__(self, i, h):
        super().__init__()
        self.wmx, self.wmh = nn.Linear(i, h, bias=False), nn.Linear(h, h, bias=False)
        self.wx, self.wm = nn.Linear(i, 4 * h), nn.Linear(h, 4 * h, bias=False)

    def forward(self, x, state):
        h, c = state
        m = self.wmx(x) * self.wmh(h)
        i, f, o, u = (self.wx(x) + self.wm(m)).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(u)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)


class LayerNormGRU(nn.Module):
    """LayerNorm GRU with nn.LayerNorm on both products."""

    def __init__(self, i, h):
        super().__init__()
        self.x, self.h = nn.Linear(i, 3 * h), nn.Linear(h, 3 * h)
        self.ln_x, self.ln_h = nn.LayerNorm(3 * h), nn.LayerNorm(3 * h)
        for ln in (self.ln_x, self.ln_h):
            nn.init.uniform_(ln.weight, 0.5, 1.5)
            nn.init.uniform_(ln.bias, -0.5, 0.5)

    def forward(self, x, h):
        xr, xz, xn = self.ln_x(self.x(x)).chunk(3, 1)
        hr, hz, hn = self.ln_h(self.h(h)).chunk(3, 1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        return (1 - z) * torch.tanh(xn + r * hn) + z * h


class MinGRU(nn.Module):
    """minGRU (Feng et al. 2024), sequential form: h = (1 - z) h + z g(h~), g = where(x>=0, x+0.5, sigmoid)."""

    def __init__(self, i, h):
        super().__init__()
        self.lin = nn.Linear(i, 2 * h)

    def forward(self, x, h):
        z, ht = self.lin(x).chunk(2, dim=-1)
        z = torch.sigmoid(z)
        g = torch.where(ht >= 0, ht + 0.5, torch.sigmoid(ht))
        return torch.lerp(h, g, z)


class UGRNN(nn.Module):
    """Update-gate RNN (Collins et al. 2017)."""

    def __init__(self, i, h):
        super().__init__()
        self.lin = nn.Linear(i + h, 2 * h)

    def forward(self, x, h):
        c, g = self.lin(torch.cat([x, h], -1)).chunk(2, -1)
        g = torch.sigmoid(g + 1.0)
        return g * h + (1 - g) * torch.tanh(c)


class JANET(nn.Module):
    """JANET (van der Westhuizen and Lasenby 2018): forget gate only, with a shift beta."""

    def __init__(self, i, h):
        super().__init__()
        self.x2, self.h2 = nn.Linear(i, 2 * h), nn.Linear(h, 2 * h, bias=False)

    def forward(self, x, h):
        s, cand = (self.x2(x) + self.h2(h)).split(h.shape[1], dim=1)
        return torch.sigmoid(s) * h + (1 - torch.sigmoid(s - 1.0)) * torch.tanh(cand)


class HighwayRHN(nn.Module):
    """A one-layer recurrent highway network (Zilly et al. 2017) with a coupled carry gate."""

    def __init__(self, i, h):
        super().__init__()
        self.W = nn.Linear(i, 2 * h)
        self.R = nn.Linear(h, 2 * h)

    def forward(self, x, s):
        hh, t = (self.W(x) + self.R(s)).chunk(2, 1)
        t = torch.sigmoid(t - 1.0)
        return torch.tanh(hh) * t + s * (1.0 - t)


class GeluSiluLSTM(nn.Module):
    """An LSTM with GELU candidate, SiLU output, elu/leaky_relu/softsign on the way."""

    def __init__(self, i, h):
        super().__init__()
        self.ih, self.hh = nn.Linear(i, 4 * h), nn.Linear(h, 4 * h, bias=False)

    def forward(self, x, state):
        h, c = state
        i, f, g, o = (self.ih(x) + self.hh(h)).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * F.gelu(g)
        h = torch.sigmoid(o) * F.silu(torch.tanh(c)) + 0.1 * F.elu(c) + 0.05 * F.leaky_relu(g, 0.2) \
            + 0.05 * F.softsign(i)
        return h, (h, c)


class TorchLSTMCell(nn.Module):
    """nn.LSTMCell itself inside a module (its ATen decomposition uses in-place ops)."""

    def __init__(self, i, h):
        super().__init__()
        self.cell = nn.LSTMCell(i, h)

    def forward(self, x, state):
        h, c = self.cell(x, state)
        return h, (h, c)


class TorchGRUCell(nn.Module):
    """nn.GRUCell with an output projection."""

    def __init__(self, i, h):
        super().__init__()
        self.cell = nn.GRUCell(i, h)
        self.out = nn.Linear(h, 3)

    def forward(self, x, h):
        h = self.cell(x, h)
        return self.out(h), h


class EinsumRNN(nn.Module):
    """Products spelled with torch.einsum, the recurrent weight weight-normalized by
    torch.nn.utils.parametrizations.weight_norm on a submodule."""

    def __init__(self, i, h):
        super().__init__()
        self.W = _uniform(i, h)
        self.rec = nn.utils.parametrizations.weight_norm(nn.Linear(h, h))

    def forward(self, x, h):
        return torch.tanh(torch.einsum("bi,ij->bj", x, self.W) + self.rec(h))


class ConstantsAndMasks(nn.Module):
    """Constants made in the step (torch.zeros(x.size(0), n, device=x.device), new_zeros, ones_like), masked_fill,
    torch.where with a boolean buffer, F.normalize, unbind of heads, nn.Dropout in eval()."""

    def __init__(self, i, h):
        super().__init__()
        self.lin = nn.Linear(i, h)
        self.register_buffer("mask", torch.rand(h) > 0.5)
        self.drop = nn.Dropout(0.3)

    def forward(self, x, h):
        n = h.shape[1]
        z = self.lin(self.drop(x)) + h + torch.zeros(x.size(0), n, device=x.device) + x.new_zeros(x.shape[0], n) + torch.ones_like(h)
        z = z.masked_fill(z < 0, 0.1) + torch.where(self.mask, z, -z)
        a, b = F.normalize(z, dim=-1).view(-1, 2, n // 2).unbind(1)
        return torch.tanh(torch.cat([b, a], 1)) * 0.9 + 0.1 * h


# name: (make the cell, example per-step shapes of x and each state (B where the batch goes), state
#        structure: "flat" (forward(x, *states)) or "tuple" (forward(x, (s1, s2, ...))))
I, H = 5, 7
CORPUS = {
    "seq_step_lstm": (lambda: SeqStepLSTM(I, H), (1, "B", I), [(1, "B", H), (1, "B", H)], "tuple"),
    "seq_step_gru": (lambda: SeqStepGRU(I, H), (1, "B", I), [(1, "B", H)], "flat"),
    "column_state_indrnn": (lambda: ColumnStateIndRNN(I, H), ("B", I), [("B", 1, H)], "flat"),
    "flatten_elman": (lambda: FlattenElman(I, H), ("B", 1, I), [("B", 1, H)], "flat"),
    "transposed_batch_elman": (lambda: TransposedBatchElman(I, H), ("B", I), [(H, "B")], "flat"),
    "hand_layer_norm_lstm": (lambda: HandLayerNormLSTM(I, H), ("B", I), [("B", H), ("B", H)], "tuple"),
    "rms_norm_gru": (lambda: RMSNormGRU(I, H), ("B", I), [("B", H)], "flat"),
    "softmax_attention": (lambda: SoftmaxAttentionCell(I, H), ("B", I), [("B", H)], "flat"),
    "min_max_scaled": (lambda: MinMaxScaledRNN(I, H), ("B", I), [("B", H)], "flat"),
    "variance_gated": (lambda: VarianceGatedCell(I, H), ("B", I), [("B", H)], "flat"),
    "weight_norm_rnn": (lambda: WeightNormRNN(I, H), ("B", I), [("B", H)], "flat"),
    "masked_recurrent": (lambda: MaskedRecurrentRNN(I, H), ("B", I), [("B", H)], "flat"),
    "per_gate_lstm": (lambda: PerGateLSTM(I, H), ("B", I), [("B", H), ("B", H)], "tuple"),
    "skew_rnn": (lambda: SkewRNN(I, H), ("B", I), [("B", H)], "flat"),
    "clamped_indrnn": (lambda: ClampedIndRNN(I, H), ("B", I), [("B", H)], "flat"),
    "multi_head_indrnn": (lambda: MultiHeadIndRNN(I, 3, 4), ("B", I), [("B", 3, 4)], "flat"),
    "headwise_gru": (lambda: HeadwiseGRU(I, 3, 4), ("B", I), [("B", 3, 4)], "flat"),
    "shared_head_rnn": (lambda: SharedHeadRNN(I, 3, 4), ("B", I), [("B", 3, 4)], "flat"),
    "headwise_mlstm": (lambda: HeadwiseMLSTM(I, 2, 5), ("B", I), [("B", 2, 5)] * 3, "tuple"),
    "gru_reset_after": (lambda: GRUResetAfter(I, H), ("B", I), [("B", H)], "flat"),
    "gru_reset_before": (lambda: GRUResetBefore(I, H), ("B", I), [("B", H)], "flat"),
    "peephole_cifg_lstm": (lambda: PeepholeCIFGLSTM(I, H, 4), ("B", I), [("B", 4), ("B", H)], "tuple"),
    "residual_lstm": (lambda: ResidualLSTM(H), ("B", H), [("B", H), ("B", H)], "tuple"),
    "sru": (lambda: SRUCell(H), ("B", H), [("B", H)], "flat"),
    "qrnn": (lambda: QRNNCell(I, H), ("B", I), [("B", H)], "flat"),
    "mlstm": (lambda: MultiplicativeLSTM(I, H), ("B", I), [("B", H), ("B", H)], "tuple"),
    "layer_norm_gru": (lambda: LayerNormGRU(I, H), ("B", I), [("B", H)], "flat"),
    "min_gru": (lambda: MinGRU(I, H), ("B", I), [("B", H)], "flat"),
    "ugrnn": (lambda: UGRNN(I, H), ("B", I), [("B", H)], "flat"),
    "janet": (lambda: JANET(I, H), ("B", I), [("B", H)], "flat"),
    "highway_rhn": (lambda: HighwayRHN(I, H), ("B", I), [("B", H)], "flat"),
    "torch_lstm_cell": (lambda: TorchLSTMCell(I, H), ("B", I), [("B", H), ("B", H)], "tuple"),
    "torch_gru_cell": (lambda: TorchGRUCell(I, H), ("B", I), [("B", H)], "flat"),
    "einsum_rnn": (lambda: EinsumRNN(I, H), ("B", I), [("B", H)], "flat"),
    "constants_and_masks": (lambda: ConstantsAndMasks(I, 8).eval(), ("B", I), [("B", 8)], "flat"),
    "gelu_silu_lstm": (lambda: GeluSiluLSTM(I, H), ("B", I), [("B", H), ("B", H)], "tuple"),
}
