"""16-bit storage (bfloat16 / float16 tensors around an f32 cell) on the CPU side: what runs
without a GPU. Tracing 16-bit cells, the errors on CPU tensors and for mixed dtypes, the storage
in the compilation key, and the float32 tape the fake kernel announces to torch.compile. The
runs themselves are in test_cuda.py."""
import pytest
import torch

import cellfuse
from cellfuse import _C, _program
from cells import GRUCell, LSTMCell

Err = cellfuse.CellfuseError
HALF = [pytest.param(torch.bfloat16, id="bf16"), pytest.param(torch.float16, id="f16")]


def gru16(dtype, I=3, H=5, B=2):
    cell = GRUCell(I, H).to(dtype)
    return cell, cellfuse.compile(cell, (torch.randn(B, I, dtype=dtype), torch.randn(B, H, dtype=dtype)))


@pytest.mark.parametrize("dtype", HALF)
def test_16bit_examples_trace_an_f32_cell(dtype):
    cell, rnn = gru16(dtype)
    assert rnn.cell_text().startswith("cell GRUCell f32 {")
    assert rnn.programs[0].dtype == dtype
    # The parameters fed at run time are the module's own 16-bit tensors, not f32 copies.
    assert [p.dtype for p in rnn._params(rnn.programs[0], 0)] == [dtype] * 4


@pytest.mark.parametrize("dtype", HALF)
def test_16bit_on_cpu_is_a_clear_error(dtype):
    cell, rnn = gru16(dtype)
    with pytest.raises(Err) as e:
        rnn(torch.randn(4, 2, 3, dtype=dtype))
    msg = str(e.value)
    assert str(dtype) in msg and "CUDA only" in msg and ".float()" in msg
    # A float32 cell given 16-bit tensors on CPU says the same.
    _, rnn32 = gru16(torch.float32)
    with pytest.raises(Err, match="CUDA only"):
        rnn32(torch.randn(4, 2, 3, dtype=dtype))
    # And so does asking the program for a CPU compilation with 16-bit storage.
    storage = _program.storage_of(dtype)
    with pytest.raises(Err, match=f"{dtype}.*CUDA only"):
        rnn.programs[0].compiled(torch.device("cpu"), 2, False, storage)


def test_bfloat16_on_cpu_message_names_bfloat16_and_cuda():
    _, rnn = gru16(torch.bfloat16)
    with pytest.raises(Err, match=r"bfloat16.*CUDA"):
        rnn(torch.randn(4, 2, 3, dtype=torch.bfloat16))


def test_mixed_dtypes_keep_their_errors():
    # 16-bit examples with float32 parameters: the parameter's dtype is named at trace time.
    with pytest.raises(Err, match=r"parameter of dtype torch.float32 in a torch.bfloat16 cell"):
        cellfuse.compile(GRUCell(3, 4), (torch.randn(2, 3).bfloat16(), torch.randn(2, 4).bfloat16()))
    # States of another dtype than x.
    with pytest.raises(Err, match="must agree"):
        cellfuse.compile(GRUCell(3, 4).half(), (torch.randn(2, 3).half(), torch.randn(2, 4)))
    # A float64 cell does not run on 16-bit tensors (they go with float32 cells).
    cell = GRUCell(3, 4).double()
    rnn = cellfuse.compile(cell, (torch.randn(2, 3, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)))
    with pytest.raises(Err, match=r"X is torch.bfloat16 but the cell was traced in torch.float64.*float32"):
        rnn(torch.randn(5, 2, 3, dtype=torch.bfloat16))
    # Other dtypes are still refused at compile time.
    with pytest.raises(Err, match="float32 or float64"):
        cellfuse.compile(GRUCell(3, 4), (torch.ones(2, 3, dtype=torch.int32), torch.ones(2, 4, dtype=torch.int32)))


def test_storage_is_part_of_the_compilation_key(monkeypatch):
    calls = []

    def fake_compile(cell, device, batch, train, storage):
        calls.append((device.type, batch, train, storage))
        return object()

    monkeypatch.setattr(_program, "_compile", fake_compile)
    _, rnn = gru16(torch.float32)
    p = rnn.programs[0]
    cuda = torch.device("cuda", 0)
    native, bf16, f16 = (p.compiled(cuda, 3, False, s) for s in ("native", "bf16", "f16"))
    assert len({id(native), id(bf16), id(f16)}) == 3
    assert p.compiled(cuda, 3, False, "bf16") is bf16 and p.compiled(cuda, 3, False) is native
    assert calls == [("cuda", 3, False, "native"), ("cuda", 3, False, "bf16"), ("cuda", 3, False, "f16")]


@pytest.mark.parametrize("dtype", HALF)
def test_fake_kernel_gives_16bit_results_and_a_float32_tape(dtype):
    _, rnn = gru16(dtype)
    p = rnn.programs[0]
    X = torch.empty(6, 2, 3, dtype=dtype, device="meta")
    h = torch.empty(2, 5, dtype=dtype, device="meta")
    params = [t.to("meta") for t in rnn._params(p, 0)]
    out = _program._sequence_fake(p.key, [X], [h], params, True)
    assert [t.dtype for t in out[:2]] == [dtype, dtype]
    assert len(out) == 2 + len(p.tape_widths)
    assert all(t.dtype == torch.float32 for t in out[2:])
    assert [t.shape[2] for t in out[2:]] == p.tape_widths


@pytest.mark.skipif(not hasattr(_C, "CudaProgram"), reason="built without the CUDA backend")
def test_unknown_storage_name_is_rejected_by_the_native_module():
    _, rnn = gru16(torch.float32)
    with pytest.raises(Err, match="unknown storage 'fp8'.*native, bf16 or f16"):
        _C.CudaProgram(rnn.programs[0].cell, 2, 0, "fp8")
    with pytest.raises(Err, match="unknown storage"):
        _C.CudaTrainer(rnn.programs[0].cell, 2, 0, "half")


def test_conversions_inside_a_16bit_cell():
    def up_and_down(x, h):  # a mixed-precision habit: f32 math, back to the tensors' dtype
        return torch.tanh(x.float() + h.to(torch.float32)).to(x.dtype)

    ex = (torch.randn(2, 3, dtype=torch.bfloat16), torch.randn(2, 3, dtype=torch.bfloat16))
    rnn = cellfuse.compile(up_and_down, ex)
    assert "tanh" in rnn.cell_text()

    def to_double(x, h):
        return torch.tanh(x.double() + h)

    with pytest.raises(Err, match="conversion to torch.float64 inside a torch.bfloat16 cell"):
        cellfuse.compile(to_double, ex)

    def to_half(x, h):
        return torch.tanh(x.bfloat16() + h)

    # In a float32 cell a 16-bit conversion would round, which the f32 cell does not do.
    with pytest.raises(Err, match="conversion to torch.bfloat16 inside a torch.float32 cell"):
        cellfuse.compile(to_half, (torch.randn(2, 3), torch.randn(2, 3)))


@pytest.mark.skipif(not _C.has_cpu_backend, reason="built without the CPU backend")
def test_float32_cells_still_run_on_cpu():
    cell = LSTMCell(3, 4)
    rnn = cellfuse.compile(cell, (torch.randn(2, 3), (torch.randn(2, 4), torch.randn(2, 4))))
    with torch.no_grad():
        out, (h, c) = rnn(torch.randn(5, 2, 3))
    assert out.dtype == torch.float32 and h.dtype == torch.float32
    assert ("cpu", None, 2, False, "native") in rnn.programs[0]._compiled
