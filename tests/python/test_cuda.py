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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["lstm", "lnlstm", "elman_proj", "gru"])
def test_training_on_gpu_matches_eager_float64(name, dtype):
    make, states, has_output = CELLS[name]
    cell = make().to(dtype)
    ref_cell = copy.deepcopy(cell).double()
    gpu_cell = cell.cuda()
    s0 = to(states(5), "cpu", dtype)
    width = 9 if name == "elman_proj" else next(p for p in ref_cell.parameters() if p.dim() == 2).shape[1]
    X = torch.randn(11, 5, width, dtype=dtype)
    rnn = cellfuse.compile(gpu_cell, (X[0].cuda(), *to(s0, "cuda")))
    Xr, Xg = X.double().clone().requires_grad_(), X.cuda().detach().requires_grad_()
    og, fg = rnn(Xg, *to(s0, "cuda"))
    orf, frf = eager_sequence(ref_cell, Xr, to(s0, "cpu", torch.float64), has_output)
    w = torch.randn(og.shape, dtype=torch.float64)
    (og.double() * w.cuda()).sum().backward()
    (orf * w).sum().backward()
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    assert rel(og.cpu(), orf) <= tol
    assert rel(Xg.grad.cpu(), Xr.grad) <= 10 * tol
    for (n, q), p in zip(ref_cell.named_parameters(), gpu_cell.parameters()):
        assert rel(p.grad.cpu(), q.grad) <= 10 * tol, n


def test_torch_compile_on_gpu_has_no_graph_break():
    cell = LSTMCell(8, 16).cuda()
    x0 = torch.randn(4, 8, device="cuda")
    rnn = cellfuse.compile(cell, (x0, (torch.randn(4, 16, device="cuda"), torch.randn(4, 16, device="cuda"))))
    X = torch.randn(20, 4, 8, device="cuda")
    expected, _ = rnn(X)
    compiled = torch.compile(lambda X: rnn(X)[0], fullgraph=True, backend="aot_eager")
    got = compiled(X)
    assert rel(got, expected) <= 1e-6
