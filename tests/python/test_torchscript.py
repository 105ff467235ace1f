"""TorchScript cells compile: torch.jit.ScriptModule subclasses with @jit.script_method forward,
written as PyTorch's own custom-LSTM benchmark code writes them (benchmarks/fastrnns), and
torch.jit.script of an ordinary module. The capture traces what the TorchScript interpreter
dispatches, so the scripted forward runs as is. Checked against the same module in float64."""
from typing import Tuple

import pytest
import torch
from torch import Tensor, jit, nn
from torch.nn import Parameter

from cells import GRUCell
from test_corpus import DEVICES, check_matches_eager


class ScriptLSTMCell(jit.ScriptModule):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.weight_ih = Parameter(torch.randn(4 * hidden_size, input_size) * 0.4)
        self.weight_hh = Parameter(torch.randn(4 * hidden_size, hidden_size) * 0.4)
        self.bias_ih = Parameter(torch.randn(4 * hidden_size) * 0.1)
        self.bias_hh = Parameter(torch.randn(4 * hidden_size) * 0.1)

    @jit.script_method
    def forward(self, input: Tensor, state: Tuple[Tensor, Tensor]) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        hx, cx = state
        gates = (torch.mm(input, self.weight_ih.t()) + self.bias_ih + torch.mm(hx, self.weight_hh.t()) + self.bias_hh)
        ingate, forgetgate, cellgate, outgate = gates.chunk(4, 1)
        ingate = torch.sigmoid(ingate)
        forgetgate = torch.sigmoid(forgetgate)
        cellgate = torch.tanh(cellgate)
        outgate = torch.sigmoid(outgate)
        cy = (forgetgate * cx) + (ingate * cellgate)
        hy = outgate * torch.tanh(cy)
        return hy, (hy, cy)


class ScriptLayerNorm(jit.ScriptModule):
    def __init__(self, normalized_shape: int):
        super().__init__()
        self.weight = Parameter(1 + 0.1 * torch.randn(normalized_shape))
        self.bias = Parameter(0.1 * torch.randn(normalized_shape))

    @jit.script_method
    def compute_layernorm_stats(self, input: Tensor) -> Tuple[Tensor, Tensor]:
        mu = input.mean(-1, keepdim=True)
        sigma = input.std(-1, keepdim=True, unbiased=False)
        return mu, sigma

    @jit.script_method
    def forward(self, input: Tensor) -> Tensor:
        mu, sigma = self.compute_layernorm_stats(input)
        return (input - mu) / sigma * self.weight + self.bias


class ScriptLayerNormLSTMCell(jit.ScriptModule):
    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.weight_ih = Parameter(torch.randn(4 * hidden_size, input_size) * 0.4)
        self.weight_hh = Parameter(torch.randn(4 * hidden_size, hidden_size) * 0.4)
        self.layernorm_i = ScriptLayerNorm(4 * hidden_size)
        self.layernorm_h = ScriptLayerNorm(4 * hidden_size)
        self.layernorm_c = ScriptLayerNorm(hidden_size)

    @jit.script_method
    def forward(self, input: Tensor, state: Tuple[Tensor, Tensor]) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        hx, cx = state
        igates = self.layernorm_i(torch.mm(input, self.weight_ih.t()))
        hgates = self.layernorm_h(torch.mm(hx, self.weight_hh.t()))
        gates = igates + hgates
        ingate, forgetgate, cellgate, outgate = gates.chunk(4, 1)
        ingate = torch.sigmoid(ingate)
        forgetgate = torch.sigmoid(forgetgate)
        cellgate = torch.tanh(cellgate)
        outgate = torch.sigmoid(outgate)
        cy = self.layernorm_c((forgetgate * cx) + (ingate * cellgate))
        hy = outgate * torch.tanh(cy)
        return hy, (hy, cy)


def _scripted_gru():
    return jit.script(GRUCell(5, 7))


CASES = {
    "script_lstm": (lambda: ScriptLSTMCell(5, 7), ("B", 5), [("B", 7), ("B", 7)], "tuple"),
    "script_layer_norm_lstm": (lambda: ScriptLayerNormLSTMCell(5, 7), ("B", 5), [("B", 7), ("B", 7)], "tuple"),
    "jit_script_of_a_module": (_scripted_gru, ("B", 5), [("B", 7)], "flat"),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(CASES))
def test_torchscript_cell_matches_eager_float64(name, device):
    make, x_dims, state_dims, structure = CASES[name]
    cell = make().to(device)
    # A twin in float64 with the same parameters (copy.deepcopy of a ScriptModule with submodules
    # gives one whose parameters receive no gradients).
    ref = make().to(device).double()
    ref.load_state_dict({k: v.double() for k, v in cell.state_dict().items()})
    check_matches_eager(cell, ref, x_dims, state_dims, structure, device)


def test_torchscript_parameters_are_read_at_every_call():
    cell = ScriptLSTMCell(3, 4)
    x0, h0, c0 = torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 4)
    rnn = __import__("cellfuse").compile(cell, (x0, (h0, c0)))
    X = torch.randn(4, 2, 3)
    before, _ = rnn(X, (h0, c0))
    with torch.no_grad():
        cell.weight_hh.mul_(0.5)
    after, _ = rnn(X, (h0, c0))
    h, c, ref = h0, c0, []
    for t in range(4):
        h, (h, c) = cell(X[t], (h, c))
        ref.append(h)
    assert (after - torch.stack(ref)).abs().max() < 1e-5 and (after - before).abs().max() > 1e-3
