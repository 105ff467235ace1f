"""Every cell of corpus_cells.CORPUS compiled in its own step convention and checked against the
same module run eagerly in float64, step by step as the user's loop would: the output sequence,
the final states and every gradient (inputs, initial states, each parameter), at odd sizes with
fresh random inputs. On CUDA tensors too when a GPU is present (tests/gpu/run_python_gpu_tests.sh)."""
import copy

import pytest
import torch

import cellfuse
from cells import rel
from corpus_cells import CORPUS

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
T, B = 5, 3


def _shape(dims, batch):
    return tuple(batch if d == "B" else d for d in dims)


def _stacked(dims, steps, batch):
    return (steps, *_shape(dims, batch))


def _step_args(x, states, structure):
    return (x, tuple(states)) if structure == "tuple" else (x, *states)


def eager(cell, X, states, structure, has_output):
    """The user's loop: outputs stacked on a leading time axis, the final states."""
    outs = []
    for t in range(X.shape[0]):
        result = cell(*_step_args(X[t], states, structure))
        flat = []
        stack = [result]
        while stack:
            r = stack.pop(0)
            if isinstance(r, (tuple, list)):
                stack = list(r) + stack
            else:
                flat.append(r)
        new = flat[1:] if has_output else flat
        outs.append(flat[0])
        states = new
    return torch.stack(outs), states


def _has_output(cell, x, states, structure):
    with torch.no_grad():
        result = cell(*_step_args(x, states, structure))
    flat = torch.utils._pytree.tree_flatten(result)[0]
    return len(flat) == len(states) + 1


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_cell_matches_eager_float64(name, device):
    make, x_dims, state_dims, structure = CORPUS[name]
    cell = make().to(device)
    check_matches_eager(cell, copy.deepcopy(cell).double(), x_dims, state_dims, structure, device)


def check_matches_eager(cell, ref, x_dims, state_dims, structure, device):
    """Compiles `cell` on examples of the given per-step shapes ("B" at the batch axis) and checks
    it against `ref` (its float64 twin) run eagerly: outputs, final states, every gradient."""
    x0 = torch.randn(_shape(x_dims, B), device=device)
    s0 = [torch.randn(_shape(d, B), device=device) * 0.5 for d in state_dims]
    has_output = _has_output(cell, x0, s0, structure)
    rnn = cellfuse.compile(cell, _step_args(x0, s0, structure))

    X = torch.randn(_stacked(x_dims, T, B), device=device)
    Xa, Xr = X.clone().requires_grad_(), X.double().clone().requires_grad_()
    Sa = [s.clone().requires_grad_() for s in s0]
    Sr = [s.double().clone().requires_grad_() for s in s0]
    state_arg = tuple(Sa) if structure == "tuple" else (Sa[0] if len(Sa) == 1 else tuple(Sa))
    out, finals = rnn(Xa, state_arg)
    flat_finals = torch.utils._pytree.tree_flatten(finals)[0]
    rout, rfinals = eager(ref, Xr, Sr, structure, has_output)

    assert out.shape == rout.shape, (out.shape, rout.shape)
    assert rel(out, rout) <= 1e-5
    for a, b in zip(flat_finals, rfinals):
        assert a.shape == b.shape and rel(a, b) <= 1e-5

    # Every gradient, through a loss that weighs every output and final state differently.
    weights = [torch.randn(rout.shape, dtype=torch.float64, device=device)]
    weights += [torch.randn(f.shape, dtype=torch.float64, device=device) for f in rfinals]
    loss = (out.double() * weights[0]).sum() + sum((f.double() * w).sum() for f, w in zip(flat_finals, weights[1:]))
    rloss = (rout * weights[0]).sum() + sum((f * w).sum() for f, w in zip(rfinals, weights[1:]))
    loss.backward()
    rloss.backward()
    assert rel(Xa.grad, Xr.grad) <= 1e-4
    for a, b in zip(Sa, Sr):
        assert rel(a.grad, b.grad) <= 1e-4
    for (n, p), (_, q) in zip(cell.named_parameters(), ref.named_parameters()):
        assert p.grad is not None, f"no gradient reached {n}"
        assert rel(p.grad, q.grad) <= 1e-4, n
    return rnn


def test_corpus_is_large_enough():
    assert len(CORPUS) >= 30
