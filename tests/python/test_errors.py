"""Every error path of the Python API: a clear CellfuseError naming the op, the value, the shapes
or the user's line; never a crash or a wrong answer."""
import pytest
import torch
from torch import nn

import cellfuse
from cells import GRUCell, LSTMCell, rel

Err = cellfuse.CellfuseError


def lstm(I=3, H=4, B=2):
    cell = LSTMCell(I, H)
    return cell, cellfuse.compile(cell, (torch.randn(B, I), (torch.randn(B, H), torch.randn(B, H))))


def test_unsupported_op_names_op_and_user_line():
    def step(x, h):
        return torch.sin(x + h)  # the line the message must name

    with pytest.raises(Err) as e:
        cellfuse.compile(step, (torch.randn(2, 3), torch.randn(2, 3)))
    msg = str(e.value)
    assert "torch.sin" in msg and "test_errors.py" in msg and "return torch.sin(x + h)" in msg


def test_data_dependent_control_flow_is_rejected_with_line():
    def step(x, h):
        if (x.sum(-1, keepdim=True) > 0).all():
            return h
        return torch.tanh(x + h)

    with pytest.raises(Err) as e:
        cellfuse.compile(step, (torch.randn(2, 3), torch.randn(2, 3)))
    assert "all" in str(e.value) or "control flow" in str(e.value)
    assert "test_errors.py" in str(e.value)

    def step2(x, h):
        return torch.tanh(x) if x.mean(-1, keepdim=True) else h

    with pytest.raises(Err, match="control flow"):
        cellfuse.compile(step2, (torch.randn(2, 3), torch.randn(2, 3)))


def test_batch_size_used_as_a_number_is_rejected_with_line():
    # The batch is traced at a stand-in size: used as a number it would be baked into the step.
    def mean_over_batch(x, h):
        return torch.tanh(x + h) * (1.0 / x.size(0))

    def constant_from_batch(x, h):
        return h + torch.full((x.size(0), 3), float(x.size(0)))

    for step in (mean_over_batch, constant_from_batch):
        with pytest.raises(Err) as e:
            cellfuse.compile(step, (torch.randn(2, 3), torch.randn(2, 3)))
        assert "batch size as a number" in str(e.value)
        assert "test_errors.py" in str(e.value) and "x.size(0)" in str(e.value)

    # The batch size as a shape (a view, a zeros of its length) is fine, and runs at any batch.
    def shaped(x, h):
        z = torch.zeros(x.size(0), 3)
        return torch.tanh(x + h.view(1, h.size(0), -1)[0] + z)

    rnn = cellfuse.compile(shaped, (torch.randn(2, 3), torch.randn(2, 3)))
    X, h0 = torch.randn(4, 5, 3), torch.randn(5, 3)
    out, h = rnn(X, h0)
    ref = h0
    for x in X:
        ref = shaped(x, ref)
    assert rel(h, ref) < 1e-5


def test_shape_error_names_shapes():
    W = torch.randn(5, 4)

    def step(x, h):
        return torch.tanh(x @ W + h)  # x is (B, 3): 3 != 5

    with pytest.raises(Err) as e:
        cellfuse.compile(step, (torch.randn(2, 3), torch.randn(2, 4)))
    msg = str(e.value)
    assert "matmul" in msg and "[B, 3]" in msg and "[5, 4]" in msg and "return torch.tanh(x @ W + h)" in msg


def test_batch_axis_slicing_and_other_dims_are_rejected():
    def step(x, h):
        return torch.tanh(h[:1] + x)

    with pytest.raises(Err, match="batch axis"):
        cellfuse.compile(step, (torch.randn(2, 3), torch.randn(2, 3)))

    def step2(x, h):
        return torch.cat([x, h], dim=0)

    with pytest.raises(Err, match="dim=0"):
        cellfuse.compile(step2, (torch.randn(2, 3), torch.randn(2, 3)))


def test_wrong_return_count():
    def step(x, h):
        return h, h, h

    with pytest.raises(Err, match="returned 3"):
        cellfuse.compile(step, (torch.randn(2, 3), torch.randn(2, 3)))


def test_parameter_derived_tensor_is_computed_per_sequence_with_gradients():
    W = nn.Parameter(torch.randn(3, 6))

    def step(x, h):
        return torch.tanh(x @ (W * 2)[:, :3] + h)

    X, h0 = torch.randn(4, 2, 3), torch.randn(2, 3)
    out, _ = cellfuse.compile(step, (X[0], h0))(X, h0)
    out.sum().backward()
    got = W.grad.clone()
    W.grad = None
    h, ref = h0, []
    for t in range(4):
        h = step(X[t], h)
        ref.append(h)
    ref = torch.stack(ref)
    ref.sum().backward()
    assert (out - ref).abs().max() < 1e-5
    assert rel(got, W.grad) < 1e-4 and got[:, 3:].abs().sum() == 0

    # A view of the parameter (here not even contiguous) is computed on every call too.
    def view_step(x, h):
        return torch.tanh(x @ W[:, :3] + h)

    out, _ = cellfuse.compile(view_step, (X[0], h0))(X, h0)
    h, ref = h0, []
    for t in range(4):
        h = view_step(X[t], h)
        ref.append(h)
    assert (out - torch.stack(ref)).abs().max() < 1e-5


def test_dropout_inside_cell_in_training_is_rejected():
    def step(x, h):
        return torch.tanh(nn.functional.dropout(x, 0.3, training=True) + h)

    with pytest.raises(Err, match="dropout"):
        cellfuse.compile(step, (torch.randn(2, 3), torch.randn(2, 3)))


def test_integer_inputs_and_half_inputs_with_float_parameters_are_rejected():
    with pytest.raises(Err, match="float32 or float64"):
        cellfuse.compile(GRUCell(3, 4), (torch.ones(2, 3, dtype=torch.int64), torch.ones(2, 4, dtype=torch.int64)))
    # Half inputs are 16-bit storage (test_storage16.py), but not around float32 parameters.
    with pytest.raises(Err, match="parameter of dtype torch.float32 in a torch.float16 cell"):
        cellfuse.compile(GRUCell(3, 4), (torch.randn(2, 3).half(), torch.randn(2, 4).half()))


def test_run_time_errors():
    cell, rnn = lstm()
    with pytest.raises(Err, match="float64"):
        rnn(torch.randn(5, 2, 3, dtype=torch.float64))
    with pytest.raises(Err, match="3-D"):
        rnn(torch.randn(2, 3))
    with pytest.raises(Err, match="input features"):
        rnn(torch.randn(5, 2, 4))
    with pytest.raises(Err, match=r"expected \(1, 2, 4\)"):
        rnn(torch.randn(5, 2, 3), (torch.randn(1, 3, 4), torch.randn(1, 2, 4)))
    with pytest.raises(Err, match="state structure"):
        rnn(torch.randn(5, 2, 3), torch.randn(1, 2, 4))
    with pytest.raises(Err, match="lengths must be between"):
        rnn(torch.randn(5, 2, 3), lengths=torch.tensor([6, 2]))
    with pytest.raises(Err, match="lengths must be 2 integers"):
        rnn(torch.randn(5, 2, 3), lengths=torch.tensor([1.0, 2.0]))
    with pytest.raises(Err, match="batch of 0"):
        rnn(torch.randn(5, 0, 3))


def test_parameter_of_wrong_dtype_is_named():
    cell, rnn = lstm()
    cell.hh.double()
    with pytest.raises(Err, match="hh.weight"):
        rnn(torch.randn(5, 2, 3))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_without_gpu_is_a_clear_error():
    ok, why = cellfuse.cuda_available()
    assert not ok and why
    cell = GRUCell(3, 4)
    rnn = cellfuse.compile(cell, (torch.randn(2, 3), torch.randn(2, 4)))
    prog = rnn.programs[0]
    with pytest.raises(Err, match="cannot run on cuda"):
        prog.compiled(torch.device("cuda"), 2, False)


def test_non_contiguous_input_is_copied_not_misread():
    cell, rnn = lstm()
    X = torch.randn(3, 5, 2).permute(1, 2, 0)  # (5, 2, 3), not contiguous
    assert not X.is_contiguous()
    out, _ = rnn(X)
    out_ref, _ = rnn(X.contiguous())
    assert torch.equal(out, out_ref)


def test_state_error_after_layers():
    cells = [GRUCell(3, 4), GRUCell(4, 4)]
    rnn = cellfuse.compile(cells, (torch.randn(2, 3), torch.randn(2, 4)), num_layers=2)
    with pytest.raises(Err, match=r"\(2, 2, 4\)"):
        rnn(torch.randn(5, 2, 3), torch.randn(1, 2, 4))
    with pytest.raises(Err, match="2 cells given for 3 layer"):
        cellfuse.compile(cells, (torch.randn(2, 3), torch.randn(2, 4)), num_layers=3)


def test_single_cell_copied_for_layers_must_accept_the_width():
    with pytest.raises(Err, match="layer 1 takes inputs of width 8"):
        cellfuse.compile(GRUCell(3, 4), (torch.randn(2, 3), torch.randn(2, 4)), num_layers=2, bidirectional=True)
    # A cell whose input width equals its output width can be copied: fresh parameters each.
    rnn = cellfuse.compile(GRUCell(4, 4), (torch.randn(2, 4), torch.randn(2, 4)), num_layers=3)
    weights = [c.hh.weight for c in rnn.cells]
    assert rel(weights[0], weights[1]) > 0.1
    out, h = rnn(torch.randn(6, 2, 4))
    assert out.shape == (6, 2, 4) and h.shape == (3, 2, 4)
