"""cellfuse's LSTM and GRU (user-written cells) against nn.LSTM / nn.GRU with copied weights:
outputs within 1e-5 and every gradient within 1e-4 (norm-wise relative)."""
import pytest
import torch
from torch import nn

import cellfuse
from cells import GRUCell, LSTMCell, rel


def copy_into(ref, cells, directions, num_layers):
    with torch.no_grad():
        for layer in range(num_layers):
            for d in range(directions):
                c = cells[layer * directions + d]
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                getattr(ref, "weight_ih" + sfx).copy_(c.ih.weight)
                getattr(ref, "weight_hh" + sfx).copy_(c.hh.weight)
                getattr(ref, "bias_ih" + sfx).copy_(c.ih.bias)
                getattr(ref, "bias_hh" + sfx).copy_(c.hh.bias)


def check_grads(pairs, tol=1e-4):
    for name, a, b in pairs:
        assert a is not None and b is not None, name
        assert rel(a, b) <= tol, f"{name}: {rel(a, b)}"


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("T,B,I,H", [(1, 1, 3, 5), (2, 3, 7, 33), (37, 3, 11, 7), (9, 64, 16, 40)])
def test_single_layer_matches(kind, T, B, I, H):
    Cell, Ref = (LSTMCell, nn.LSTM) if kind == "lstm" else (GRUCell, nn.GRU)
    cell = Cell(I, H)
    ref = Ref(I, H)
    copy_into(ref, [cell], 1, 1)
    X = torch.randn(T, B, I)
    h0, c0 = torch.randn(B, H), torch.randn(B, H)
    example = (X[0], (h0, c0)) if kind == "lstm" else (X[0], h0)
    rnn = cellfuse.compile(cell, example)

    Xa = X.clone().requires_grad_()
    Xb = X.clone().requires_grad_()
    h0a, h0b = h0.clone().requires_grad_(), h0.clone()[None].requires_grad_()
    c0a, c0b = c0.clone().requires_grad_(), c0.clone()[None].requires_grad_()
    if kind == "lstm":
        out, (h, c) = rnn(Xa, (h0a, c0a))
        rout, (rh, rc) = ref(Xb, (h0b, c0b))
        finals = [(h, rh[0]), (c, rc[0])]
    else:
        out, h = rnn(Xa, h0a)
        rout, rh = ref(Xb, h0b)
        finals = [(h, rh[0])]
    assert out.shape == rout.shape
    assert rel(out, rout) <= 1e-5
    for a, b in finals:
        assert rel(a, b) <= 1e-5

    w_out = torch.randn_like(out)
    w_fin = [torch.randn_like(a) for a, _ in finals]
    loss_a = (out * w_out).sum() + sum((a * w).sum() for (a, _), w in zip(finals, w_fin))
    loss_b = (rout * w_out).sum() + sum((b * w).sum() for (_, b), w in zip(finals, w_fin))
    loss_a.backward()
    loss_b.backward()
    pairs = [("X", Xa.grad, Xb.grad), ("h0", h0a.grad, h0b.grad[0]),
             ("W_ih", cell.ih.weight.grad, ref.weight_ih_l0.grad), ("W_hh", cell.hh.weight.grad, ref.weight_hh_l0.grad),
             ("b_ih", cell.ih.bias.grad, ref.bias_ih_l0.grad), ("b_hh", cell.hh.bias.grad, ref.bias_hh_l0.grad)]
    if kind == "lstm":
        pairs.append(("c0", c0a.grad, c0b.grad[0]))
    check_grads(pairs)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_stacked_bidirectional_batch_first_matches(kind):
    I, H, T, B, L = 6, 9, 13, 4, 2
    Cell, Ref = (LSTMCell, nn.LSTM) if kind == "lstm" else (GRUCell, nn.GRU)
    cells = [Cell(I if layer == 0 else 2 * H, H) for layer in range(L) for _ in range(2)]
    ref = Ref(I, H, num_layers=L, bidirectional=True, batch_first=True)
    copy_into(ref, cells, 2, L)
    h0 = torch.randn(B, H)
    example_state = (h0, h0) if kind == "lstm" else h0
    rnn = cellfuse.compile(cells, (torch.randn(B, I), example_state), num_layers=L, bidirectional=True,
                           batch_first=True)
    X = torch.randn(B, T, I)
    Xa, Xb = X.clone().requires_grad_(), X.clone().requires_grad_()
    s0 = [torch.randn(2 * L, B, H) for _ in range(2 if kind == "lstm" else 1)]
    out, st = rnn(Xa, tuple(s0) if kind == "lstm" else s0[0])
    rout, rst = ref(Xb, tuple(s0) if kind == "lstm" else s0[0])
    assert out.shape == rout.shape == (B, T, 2 * H)
    assert rel(out, rout) <= 1e-5
    for a, b in zip(st if kind == "lstm" else (st,), rst if kind == "lstm" else (rst,)):
        assert rel(a, b) <= 1e-5
    w = torch.randn_like(out)
    (out * w).sum().backward()
    (rout * w).sum().backward()
    check_grads([("X", Xa.grad, Xb.grad)] +
                [(f"l{layer}d{d} W_hh", cells[layer * 2 + d].hh.weight.grad,
                  getattr(ref, f"weight_hh_l{layer}" + ("_reverse" if d else "")).grad)
                 for layer in range(L) for d in range(2)])


def test_variable_lengths_match_packed_lstm():
    I, H, T, B = 5, 8, 10, 4
    cells = [LSTMCell(I, H), LSTMCell(I, H)]
    ref = nn.LSTM(I, H, bidirectional=True)
    copy_into(ref, cells, 2, 1)
    rnn = cellfuse.compile(cells, (torch.randn(B, I), (torch.randn(B, H), torch.randn(B, H))), bidirectional=True)
    lengths = torch.tensor([10, 3, 7, 1])
    X = torch.randn(T, B, I)
    Xa, Xb = X.clone().requires_grad_(), X.clone().requires_grad_()
    out, (h, c) = rnn(Xa, lengths=lengths)
    packed = nn.utils.rnn.pack_padded_sequence(Xb, lengths, enforce_sorted=False)
    rpacked, (rh, rc) = ref(packed)
    rout, _ = nn.utils.rnn.pad_packed_sequence(rpacked, total_length=T)
    assert rel(out, rout) <= 1e-5
    assert rel(h, rh) <= 1e-5 and rel(c, rc) <= 1e-5
    assert torch.all(out[3:, 1] == 0) and torch.all(out[1:, 3] == 0)
    w = torch.randn_like(out)
    ((out * w).sum() + h.sum()).backward()
    ((rout * w).sum() + rh.sum()).backward()
    check_grads([("X", Xa.grad, Xb.grad), ("W_ih", cells[0].ih.weight.grad, ref.weight_ih_l0.grad),
                 ("W_hh reverse", cells[1].hh.weight.grad, ref.weight_hh_l0_reverse.grad)])


def test_dropout_between_layers():
    I, H, T, B = 4, 6, 5, 3
    cells = [GRUCell(I, H), GRUCell(H, H), GRUCell(H, H)]
    x0, h0 = torch.randn(B, I), torch.randn(B, H)
    rnn = cellfuse.compile(cells, (x0, h0), num_layers=3, dropout=0.5)
    single = [cellfuse.compile(c, (x0 if k == 0 else h0, h0)) for k, c in enumerate(cells)]
    X = torch.randn(T, B, I)

    def by_hand(training):
        y = X
        for k, layer in enumerate(single):
            y, _ = layer(y)
            if k < 2:
                y = nn.functional.dropout(y, 0.5, training=training)
        return y

    rnn.eval()
    out, _ = rnn(X)
    assert torch.equal(out, by_hand(False))  # no dropout in eval mode
    rnn.train()
    torch.manual_seed(7)
    out_train, _ = rnn(X)
    torch.manual_seed(7)
    assert torch.equal(out_train, by_hand(True))  # the same masks, between layers only
    assert rel(out_train, out) > 1e-3
