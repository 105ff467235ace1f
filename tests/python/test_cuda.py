"""The Python API on CUDA tensors (run on a GPU machine: tests/gpu/run_gpu_tests.sh runs this
file there; without a GPU every test here is reported as skipped, none passes).

Forward on the GPU against the float64 eager cell; the current PyTorch stream is the one used;
training on the GPU against the same on the CPU."""
import copy

import pytest
import torch

import cellfuse
from cells import ElmanProj, GRUCell, LayerNormLSTM, LSTMCell, eager_sequence, rel

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CELLS = {
    "lstm": (lambda: LSTMCell(13, 33), lambda B: ((torch.randn(B, 33), torch.randn(B, 33)),), False),
    "gru": (lambda: GRUCell(7, 40), lambda B: (torch.randn(B, 40),), False),
    "lnlstm": (lambda: LayerNormLSTM(16, 24), lambda B: ((torch.randn(B, 24), torch.randn(B, 24)),), False),
    "elman_proj": (lambda: ElmanProj(9, 17, 5), lambda B: (torch.randn(B, 17),), True),
}


def to(states, device, dtype=None):
    if isinstance(states, tuple):
        return tuple(to(s, device, dtype) for s in states)
    return states.to(device=device, dtype=dtype or states.dtype)


@pytest.mark.parametrize("name", sorted(CELLS))
@pytest.mark.parametrize("T,B", [(1, 1), (37, 3), (9, 64)])
def test_forward_matches_eager_float64(name, T, B):
    make, states, has_output = CELLS[name]
    cell = make()
    s0 = states(B)
    X = torch.randn(T, B, next(p for p in cell.parameters() if p.dim() == 2).shape[1] if name != "elman_proj" else 9)
    ref_cell = copy.deepcopy(cell).double()
    rout, rfin = eager_sequence(ref_cell, X.double(), to(s0, "cpu", torch.float64), has_output)
    cell = cell.cuda()
    rnn = cellfuse.compile(cell, (X[0].cuda(), *to(s0, "cuda")))
    with torch.no_grad():
        out, fin = rnn(X.cuda(), *to(s0, "cuda"))
    assert out.is_cuda
    assert rel(out.cpu(), rout) <= 1e-5


def test_runs_on_the_current_stream():
    cell = LSTMCell(8, 16).cuda()
    x0 = torch.randn(4, 8, device="cuda")
    rnn = cellfuse.compile(cell, (x0, (torch.randn(4, 16, device="cuda"), torch.randn(4, 16, device="cuda"))))
    X = torch.randn(50, 4, 8, device="cuda")
    with torch.no_grad():
        expected, _ = rnn(X)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            Y = X * 1.0  # produced on the side stream: cellfuse must run after it, on it
            got, _ = rnn(Y)
        torch.cuda.current_stream().wait_stream(stream)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("name", ["lstm", "lnlstm", "elman_proj"])
def test_training_on_gpu_matches_cpu(name):
    make, states, has_output = CELLS[name]
    cell = make().double()
    gpu_cell = copy.deepcopy(cell).cuda()
    s0 = to(states(5), "cpu", torch.float64)
    width = 9 if name == "elman_proj" else next(p for p in cell.parameters() if p.dim() == 2).shape[1]
    X = torch.randn(11, 5, width, dtype=torch.float64)
    cpu_rnn = cellfuse.compile(cell, (X[0], *s0))
    gpu_rnn = cellfuse.compile(gpu_cell, (X[0].cuda(), *to(s0, "cuda")))
    Xc, Xg = X.clone().requires_grad_(), X.cuda().requires_grad_()
    oc, _ = cpu_rnn(Xc, *s0)
    og, _ = gpu_rnn(Xg, *to(s0, "cuda"))
    w = torch.randn_like(oc)
    (oc * w).sum().backward()
    (og * w.cuda()).sum().backward()
    assert rel(og.cpu(), oc) <= 1e-10
    assert rel(Xg.grad.cpu(), Xc.grad) <= 1e-10
    for (n, p), q in zip(cell.named_parameters(), gpu_cell.parameters()):
        assert rel(q.grad.cpu(), p.grad) <= 1e-10, n
