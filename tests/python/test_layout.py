"""Layout calls lower to nothing: a cell written with views, reshapes, squeezes, expands,
transposes of non-batch axes, contiguous/clone and size() arithmetic captures to the same IR ops as
the same cell written on plain (B, n) values (so the compiled kernels are the same: no copies)."""
import re

import torch
import torch.nn.functional as F
from torch import nn

import cellfuse
from corpus_cells import SeqStepLSTM


def ops(rnn):
    """The cell's op names in order, leaves (input/state/param) left out."""
    found = re.findall(r"^\s*%\S+ = (\w+)", rnn.cell_text(), flags=re.M)
    return [op for op in found if op not in ("input", "state", "param")]


class PlainLSTM(nn.Module):
    def __init__(self, twin):
        super().__init__()
        for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            setattr(self, n, getattr(twin, n))

    def forward(self, x, hidden):
        h, c = hidden
        gates = F.linear(x, self.weight_ih, self.bias_ih) + F.linear(h, self.weight_hh, self.bias_hh)
        i, f, g, o = gates.chunk(4, 1)
        c2 = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h2 = torch.sigmoid(o) * torch.tanh(c2)
        return h2, (h2, c2)


def test_singleton_axis_convention_adds_no_ops():
    seq = SeqStepLSTM(5, 6)
    a = cellfuse.compile(seq, (torch.randn(1, 3, 5), (torch.randn(1, 3, 6), torch.randn(1, 3, 6))))
    b = cellfuse.compile(PlainLSTM(seq), (torch.randn(3, 5), (torch.randn(3, 6), torch.randn(3, 6))))
    assert ops(a) == ops(b)
    assert a.programs[0].out_dims == (1, None, 6) and b.programs[0].out_dims == (None, 6)


def test_layout_chain_is_free():
    W = nn.Linear(4, 6)

    def plain(x, h):
        return torch.tanh(W(x) + h)

    def dressed(x, h):
        B = x.size(0)
        x = x.unsqueeze(1).expand(-1, 1, -1).squeeze(1).contiguous().clone().reshape(B, -1)
        h3 = h.view(B, 2, 3).transpose(1, 2).contiguous().transpose(1, 2).flatten(1)
        y = W(x.view(1, B, 4).squeeze(0)) + h3.expand_as(h).reshape(h.shape[0], h.shape[1])
        return torch.tanh(y).view(x.shape[0], -1)

    ex = (torch.randn(3, 4), torch.randn(3, 6))
    assert ops(cellfuse.compile(dressed, ex)) == ops(cellfuse.compile(plain, ex))


def test_a_transpose_of_feature_axes_is_an_index_map_and_computes_right():
    def step(x, h):  # (B, 2, 3) -> (B, 3, 2): features reordered, no arithmetic
        return torch.tanh(h.transpose(1, 2).reshape(h.shape) + x)

    x0, h0 = torch.randn(3, 2, 3), torch.randn(3, 2, 3)
    rnn = cellfuse.compile(step, (x0, h0))
    assert set(ops(rnn)) <= {"slice", "cat", "add", "tanh"}
    X = torch.randn(4, 3, 2, 3)
    out, h = rnn(X, h0)
    ref, s = [], h0
    for t in range(4):
        s = step(X[t], s)
        ref.append(s)
    assert (out - torch.stack(ref)).abs().max() < 1e-5 and (h - s).abs().max() < 1e-5


def test_a_reshape_that_mixes_the_batch_axis_is_an_error():
    def step(x, h):  # (n, B) read back as (B, n): rows of the result mix batch rows
        return torch.tanh(h.t().reshape(h.shape) + x)

    try:
        cellfuse.compile(step, (torch.randn(3, 4), torch.randn(3, 4)))
    except cellfuse.CellfuseError as e:
        assert "batch axis" in str(e) and "test_layout.py" in str(e)
    else:
        raise AssertionError("no error")


def test_whole_sequence_rule_for_a_singleton_axis_convention():
    """X is the per-step inputs stacked on a leading time axis ((T, 1, B, I) for (1, B, I) steps;
    with batch_first the time axis follows the batch axis: (1, B, T, I)); out likewise; states in
    the step's shape or with a leading layers*directions axis; lengths and bidirectional work."""
    torch.manual_seed(3)
    cells = [SeqStepLSTM(5, 6), SeqStepLSTM(5, 6)]
    ex = (torch.randn(1, 3, 5), (torch.randn(1, 3, 6), torch.randn(1, 3, 6)))
    rnn = cellfuse.compile(cells, ex, bidirectional=True, batch_first=True)
    X = torch.randn(1, 3, 4, 5)  # (1, B, T, I)
    lengths = torch.tensor([4, 2, 3])
    h0, c0 = torch.randn(2, 1, 3, 6), torch.randn(2, 1, 3, 6)
    out, (h, c) = rnn(X, (h0, c0), lengths=lengths)
    assert out.shape == (1, 3, 4, 12) and h.shape == (2, 1, 3, 6) and c.shape == (2, 1, 3, 6)
    for b in range(3):
        n = int(lengths[b])
        for d, cell in enumerate(cells):
            hh, cc = h0[d, :, b:b + 1], c0[d, :, b:b + 1]
            steps = range(n) if d == 0 else reversed(range(n))
            for t in steps:
                y, (hh, cc) = cell(X[:, b:b + 1, t], (hh, cc))
                assert (out[:, b:b + 1, t, 6 * d:6 * d + 6] - y).abs().max() < 1e-5
            assert (h[d, :, b:b + 1] - hh).abs().max() < 1e-5 and (c[d, :, b:b + 1] - cc).abs().max() < 1e-5
        assert out[:, b, n:].abs().max() == 0 if n < 4 else True
