"""Training through cellfuse: a small model's 50-step loop gives eager's losses; torch.compile
around a model with a cellfuse module needs no graph break at the cell."""
import copy

import pytest
import torch
from torch import nn

import cellfuse
from cells import LayerNormLSTM, LSTMCell, eager_sequence, rel


class Model(nn.Module):
    """Embedding-free sequence classifier: a recurrent layer, then a linear head on every step."""

    def __init__(self, rnn, hidden, classes):
        super().__init__()
        self.rnn = rnn
        self.head = nn.Linear(hidden, classes)

    def forward(self, X):
        out, _ = self.rnn(X)
        return self.head(out)


class EagerRNN(nn.Module):
    def __init__(self, cell, hidden):
        super().__init__()
        self.cell = cell
        self.hidden = hidden

    def forward(self, X):
        B = X.shape[1]
        zeros = X.new_zeros(B, self.hidden)
        out, _ = eager_sequence(self.cell, X, ((zeros, zeros),), has_output=False)
        return out, None


# The LayerNorm-LSTM in float64: its 50 Adam steps amplify float32 rounding so much that eager
# float32 itself drifts 2e-3 from eager float64 by the end (cellfuse float32 stays closer, 6e-4),
# so a float32 comparison would measure chaos, not correctness.
@pytest.mark.parametrize("Cell,dtype", [(LSTMCell, torch.float32), (LayerNormLSTM, torch.float64)])
def test_training_loop_matches_eager(Cell, dtype):
    I, H, C, T, B = 5, 12, 3, 9, 6
    cell = Cell(I, H).to(dtype)
    eager_cell = copy.deepcopy(cell)
    x0 = torch.randn(B, I, dtype=dtype)
    model = Model(cellfuse.compile(cell, (x0, (x0.new_zeros(B, H), x0.new_zeros(B, H)))), H, C).to(dtype)
    eager = Model(EagerRNN(eager_cell, H), H, C).to(dtype)
    eager.head.load_state_dict(model.head.state_dict())
    opt_a = torch.optim.Adam(model.parameters(), lr=1e-2)
    opt_b = torch.optim.Adam(eager.parameters(), lr=1e-2)
    X = torch.randn(T, B, I, dtype=dtype)
    y = torch.randint(0, C, (T, B))
    losses_a, losses_b = [], []
    for _ in range(50):
        for model_, opt, losses in ((model, opt_a, losses_a), (eager, opt_b, losses_b)):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model_(X).reshape(-1, C), y.reshape(-1))
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert losses_a[-1] < losses_a[0] * 0.8  # it learns
    for a, b in zip(losses_a, losses_b):
        assert abs(a - b) <= 1e-4 * max(1.0, abs(b)), (a, b)


def test_torch_compile_has_no_graph_break_at_the_cell():
    I, H, C, T, B = 4, 8, 3, 7, 5
    cell = LSTMCell(I, H)
    model = Model(cellfuse.compile(cell, (torch.randn(B, I), (torch.randn(B, H), torch.randn(B, H)))), H, C)
    X = torch.randn(T, B, I)
    expected = model(X)
    expected.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()

    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")  # fullgraph: a break raises
    got = compiled(X)
    got.sum().backward()
    assert rel(got, expected) <= 1e-6
    for g, p in zip(grads, model.parameters()):
        assert rel(p.grad, g) <= 1e-6
    # A new batch size reuses the graph through dynamic shapes or recompiles; either way it runs.
    assert compiled(torch.randn(T, 3, I)).shape == (T, 3, C)
