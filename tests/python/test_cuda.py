"""The Python API on CUDA tensors (run on a GPU machine: tests/gpu/run_gpu_tests.sh runs this
file there; without a GPU every test here is reported as skipped, none passes).

Forward on the GPU against the float64 eager cell; the current PyTorch stream is the one used;
training on the GPU against the same on the CPU; 16-bit storage (bfloat16 / float16 tensors,
f32 math inside) forward and training against the float64 eager cell on the rounded values."""
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


# -- 16-bit storage: bfloat16 / float16 tensors around an f32 cell ------------------------------
# The reference is the eager cell in float64 on the very values the 16-bit tensors hold (the
# parameters and inputs rounded once), so what is left is f32 math plus one rounding of each
# result: norm-wise within 1e-2, also for bf16's 8 significant bits; f16's 11 bits round 8 times
# closer, so it gets 1e-3 (measured on an H200: about 2e-3 for bf16, 2.5e-4 for f16).

HALF = [pytest.param(torch.bfloat16, id="bf16"), pytest.param(torch.float16, id="f16")]
TOL16 = {torch.bfloat16: 1e-2, torch.float16: 1e-3}
CELLS16 = {  # odd sizes
    "lstm": (lambda: LSTMCell(13, 33), 13, lambda B: ((torch.randn(B, 33), torch.randn(B, 33)),)),
    "gru": (lambda: GRUCell(7, 41), 7, lambda B: (torch.randn(B, 41),)),
    "lnlstm": (lambda: LayerNormLSTM(15, 23), 15, lambda B: ((torch.randn(B, 23), torch.randn(B, 23)),)),
}


def flat(states):
    if isinstance(states, (tuple, list)):
        return [t for s in states for t in flat(s)]
    return [states]


def setup16(name, B, T, dtype):
    """The 16-bit cell on the GPU, its float64 twin on the CPU, 16-bit X and initial states."""
    make, width, states = CELLS16[name]
    cell = make().to(dtype)
    ref_cell = copy.deepcopy(cell).double()  # exactly the rounded parameters
    X = torch.randn(T, B, width).to(dtype)
    s0 = to(states(B), "cpu", dtype)
    return cell.cuda(), ref_cell, X, s0


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("name", sorted(CELLS16))
def test_16bit_forward_matches_eager_float64(name, B, dtype):
    cell, ref_cell, X, s0 = setup16(name, B, 23, dtype)
    rout, rfin = eager_sequence(ref_cell, X.double(), to(s0, "cpu", torch.float64), False)
    rnn = cellfuse.compile(cell, (X[0].cuda(), *to(s0, "cuda")))
    with torch.no_grad():
        out, fin = rnn(X.cuda(), *to(s0, "cuda"))
    assert out.is_cuda and out.dtype == dtype
    assert all(f.dtype == dtype for f in flat(fin))
    tol = TOL16[dtype]
    assert rel(out.cpu(), rout) <= tol
    for f, r in zip(flat(fin), flat(rfin)):
        assert rel(f.cpu(), r) <= tol
    storage = "bf16" if dtype == torch.bfloat16 else "f16"
    device = torch.device("cuda", torch.cuda.current_device())
    assert rnn.programs[0].compiled(device, B, False, storage).storage == storage


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("name", sorted(CELLS16))
def test_16bit_training_matches_eager_float64(name, dtype):
    cell, ref_cell, X, s0 = setup16(name, 3, 7, dtype)
    rnn = cellfuse.compile(cell, (X[0].cuda(), *to(s0, "cuda")))
    Xg, Xr = X.cuda().requires_grad_(), X.double().requires_grad_()
    sg = [t.cuda().requires_grad_() for t in flat(s0)]
    sr = [t.double().requires_grad_() for t in flat(s0)]
    og, fg = rnn(Xg, *_like_states(s0, sg))
    orf, frf = eager_sequence(ref_cell, Xr, _like_states(s0, sr), False)
    # Loss weights of the 16-bit dtype, so that both sides seed the same values.
    w = torch.randn(og.shape).to(dtype)
    v = [torch.randn(f.shape).to(dtype) for f in flat(fg)]
    ((og * w.cuda()).sum() + sum((f * u.cuda()).sum() for f, u in zip(flat(fg), v))).backward()
    ((orf * w.double()).sum() + sum((f * u.double()).sum() for f, u in zip(flat(frf), v))).backward()
    assert Xg.grad.dtype == dtype and all(p.grad.dtype == dtype for p in cell.parameters())
    tol = TOL16[dtype]
    assert rel(og.detach().cpu(), orf) <= tol
    assert rel(Xg.grad.cpu(), Xr.grad) <= tol
    for a, b in zip(sg, sr):
        assert a.grad.dtype == dtype and rel(a.grad.cpu(), b.grad) <= tol
    for (n, q), p in zip(ref_cell.named_parameters(), cell.parameters()):
        assert rel(p.grad.cpu(), q.grad) <= tol, n


def _like_states(example, flat_states):
    """flat_states in the structure of `example` (the tuple given to rnn(X, *example))."""
    out, i = [], 0
    for s in example:
        if isinstance(s, tuple):
            out.append(tuple(flat_states[i:i + len(s)]))
            i += len(s)
        else:
            out.append(flat_states[i])
            i += 1
    return tuple(out)


@pytest.mark.parametrize("dtype", HALF)
def test_16bit_op_returns_a_float32_tape(dtype):
    cell, _, X, s0 = setup16("lstm", 3, 5, dtype)
    rnn = cellfuse.compile(cell, (X[0].cuda(), *to(s0, "cuda")))
    p = rnn.programs[0]
    results = torch.ops.cellfuse.sequence(p.key, [X.cuda()], [t.cuda() for t in flat(s0)], rnn._params(p, 0), True)
    assert [t.dtype for t in results[:3]] == [dtype] * 3
    assert len(results) == 3 + len(p.tape_widths)
    assert all(t.dtype == torch.float32 and t.is_cuda for t in results[3:])


def test_one_program_serves_float32_and_bf16_tensors():
    # Compiled in float32, then the module converted: the storage follows the tensors, and the
    # float32 compilation is not handed the bf16 tensors.
    cell = GRUCell(7, 41).cuda()
    X = torch.randn(9, 3, 7)
    rnn = cellfuse.compile(cell, (X[0].cuda(), torch.zeros(3, 41, device="cuda")))
    with torch.no_grad():
        out32, _ = rnn(X.cuda())
        rnn.to(torch.bfloat16)
        out16, h16 = rnn(X.cuda().bfloat16())
    assert out32.dtype == torch.float32 and out16.dtype == torch.bfloat16 and h16.dtype == torch.bfloat16
    ref, _ = eager_sequence(copy.deepcopy(cell).cpu().double(), X.bfloat16().double(),
                            torch.zeros(3, 41, dtype=torch.float64), False)
    assert rel(out16.cpu(), ref) <= 1e-2
    storages = sorted(k[-1] for k in rnn.programs[0]._compiled)
    assert storages == ["bf16", "native"]


@pytest.mark.parametrize("dtype", HALF)
def test_16bit_lengths_layers_and_directions(dtype):
    # The step mask is a 16-bit input too; the reference is the same module in float32 (the
    # float32 path is checked against PyTorch elsewhere) on the same rounded values.
    cells = [GRUCell(5, 11).to(dtype), GRUCell(5, 11).to(dtype), GRUCell(22, 11).to(dtype), GRUCell(22, 11).to(dtype)]
    cells32 = [copy.deepcopy(c).float() for c in cells]
    X = torch.randn(8, 4, 5).to(dtype)
    h0 = torch.zeros(4, 11)
    rnn = cellfuse.compile(cells, (X[0], h0.to(dtype)), num_layers=2, bidirectional=True).cuda()
    rnn32 = cellfuse.compile(cells32, (X[0].float(), h0), num_layers=2, bidirectional=True).cuda()
    lengths = torch.tensor([8, 3, 1, 6])
    with torch.no_grad():
        out, h = rnn(X.cuda(), lengths=lengths)
        ref, href = rnn32(X.cuda().float(), lengths=lengths)
    assert out.dtype == dtype and h.dtype == dtype
    assert rel(out.float(), ref) <= 1e-2 and rel(h.float(), href) <= 1e-2
    assert torch.all(out[3:, 1] == 0) and torch.all(out[1:, 2] == 0)


def test_16bit_torch_compile_trains_without_graph_break():
    cell = LSTMCell(8, 16).cuda().to(torch.bfloat16)
    x0 = torch.randn(4, 8, device="cuda", dtype=torch.bfloat16)
    zeros = torch.zeros(4, 16, device="cuda", dtype=torch.bfloat16)
    rnn = cellfuse.compile(cell, (x0, (zeros, zeros)))
    X = torch.randn(6, 4, 8, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    expected = rnn(X)[0]
    (gx,) = torch.autograd.grad(expected.float().sum(), X)
    compiled = torch.compile(lambda X: rnn(X)[0], fullgraph=True, backend="aot_eager")
    got = compiled(X)
    (gx_got,) = torch.autograd.grad(got.float().sum(), X)
    assert got.dtype == torch.bfloat16 and gx_got.dtype == torch.bfloat16
    assert rel(got, expected) <= 1e-6 and rel(gx_got, gx) <= 1e-6
