"""cellfuse.compile and the sequence module it returns."""
from __future__ import annotations

import copy

import torch
from torch import nn

from ._capture import capture
from ._errors import CellfuseError
from ._program import STORAGE_16, _features, cell_dtype_of, sixteen_bit_on_cpu


def compile(cell, example_inputs, *, num_layers=1, bidirectional=False, dropout=0.0, batch_first=False,
            has_output=None, batch_dim=None):
    """Compiles a recurrent cell written in PyTorch into a module that runs whole sequences.

    cell: an nn.Module (a torch.jit.ScriptModule too) or a function whose step is
        `forward(x, *states)`: each state argument a tensor or a tuple of them (`forward(x, (h, c))`,
        as nn.LSTMCell). It returns the new states, or an output followed by the new states
        (`has_output` says which when the count does not). The step is captured once at the ATen
        level (make_fx, functionalized): any PyTorch code made of the ops in
        cellfuse.SUPPORTED_OPS on per-step values, with any computation on parameters and
        constants (run by PyTorch once per sequence). A list of cells gives one per layer and
        direction (num_layers * directions of them, layer-major as nn.LSTM orders them).
    example_inputs: (x, *states) for one step, as the cell takes them: they fix the per-step
        shapes, the dtype and the state structure (any batch size works later). x and each state
        may have any shape with one batch axis: (B, n), (1, B, n), (B, 1, n), (B, heads, d), ...
        The batch axis is axis 0 of a 2-D tensor, else the first axis of the batch size (for x: its
        first axis of size > 1), or `batch_dim` when given. float32 or float64; or
        torch.bfloat16 / torch.float16 (with the cell's parameters in that dtype, e.g. after
        `cell.to(torch.bfloat16)` or `cell.half()`) for 16-bit storage, on CUDA only: the cell
        is captured as a float32 cell and computes in f32 inside (states carried from step to step
        in f32 too); the tensors outside stay 16-bit (X, states, parameters, the output, the final
        states and every gradient), rounded once as they are written; the tape the backward
        reads is float32. A float32 cell also runs on 16-bit tensors later (and vice versa):
        the storage follows the dtype of the tensors of each call.
    num_layers, bidirectional, dropout, batch_first: as nn.LSTM. With one cell and more than one
        layer or direction, the other layers and directions get copies of it with freshly
        initialized parameters (reset_parameters()); layers after the first take inputs of the
        output width times the directions, so such a cell must accept that width (else pass a list).
    batch_dim: the batch axis of every example tensor, when the rule above guesses wrong.

    Returns an `RNN` module: `out, state = rnn(X, state0=None, lengths=None)`. X is the per-step
    inputs stacked on a new leading time axis, (T, *x.shape) (with batch_first, the time axis right
    after the batch axis); out is the per-step outputs stacked the same way.

    Example: a GRU-like cell with one gate, traced once and run over a whole sequence, forward
    and backward, against the same cell stepped eagerly.

    >>> import torch, cellfuse
    >>> class MGU(torch.nn.Module):
    ...     def __init__(self, n_in, n):
    ...         super().__init__()
    ...         self.f = torch.nn.Linear(n_in + n, n)
    ...         self.x = torch.nn.Linear(n_in, n)
    ...         self.h = torch.nn.Linear(n, n, bias=False)
    ...     def forward(self, x, h):
    ...         f = torch.sigmoid(self.f(torch.cat([x, h], dim=1)))
    ...         return (1 - f) * h + f * torch.tanh(self.x(x) + self.h(f * h))
    >>> cell = MGU(4, 8)
    >>> rnn = cellfuse.compile(cell, (torch.zeros(2, 4), torch.zeros(2, 8)))   # any batch later
    >>> X = torch.randn(20, 3, 4)                                              # (T, B, I)
    >>> out, h = rnn(X, torch.zeros(3, 8))                                     # h0: (B, n)
    >>> out.shape, h.shape
    (torch.Size([20, 3, 8]), torch.Size([3, 8]))
    >>> h_eager = torch.zeros(3, 8)
    >>> for x in X:
    ...     h_eager = cell(x, h_eager)
    >>> torch.allclose(h, h_eager, atol=1e-5)
    True
    >>> out.sum().backward()                      # gradients reach the cell's parameters
    >>> cell.f.weight.grad.shape
    torch.Size([8, 12])

    Example: a cell in nn.LSTM's one-step convention, tensors (1, B, n):

    >>> from torch import nn
    >>> class Step(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.lin = nn.Linear(3 + 4, 4)
    ...     def forward(self, x, h):
    ...         z = self.lin(torch.cat([x, h], dim=-1).view(x.size(1), -1))
    ...         return torch.tanh(z).unsqueeze(0)
    >>> rnn = cellfuse.compile(Step(), (torch.randn(1, 2, 3), torch.randn(1, 2, 4)))
    >>> out, h = rnn(torch.randn(5, 1, 2, 3), torch.zeros(1, 2, 4))
    >>> tuple(out.shape), tuple(h.shape)
    ((5, 1, 2, 4), (1, 2, 4))
    """
    return RNN(cell, example_inputs, num_layers=num_layers, bidirectional=bidirectional, dropout=dropout,
               batch_first=batch_first, has_output=has_output, batch_dim=batch_dim)


def _fresh_copy(cell):
    twin = copy.deepcopy(cell)
    for m in twin.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return twin


class RNN(nn.Module):
    """A traced cell run over whole sequences: layers, directions, dropout between layers and
    variable lengths, forward and backward in cellfuse's native code.

    forward(X, state0=None, lengths=None) -> (out, state)
      X: (T, B, I) (or (B, T, I) with batch_first), on CPU or CUDA, the cell's dtype; for a
         float32 cell also torch.bfloat16 or torch.float16 on CUDA (16-bit storage: f32 math
         inside, 16-bit tensors outside; the parameters and states in X's dtype too, the output
         and final state come back in it). A non-contiguous X is copied once.
      state0: the cell's state structure (a tensor per state argument, or a tuple of them) with
         each tensor (num_layers * directions, B, n), as nn.LSTM; (B, n) is accepted when there
         is one layer and one direction, and the final state then comes back in that form.
         None: zeros.
      lengths: optional (B,) sequence lengths (1 <= length <= T): each sequence's state freezes at
         its end and its outputs past the end are zero; the backward direction reads each
         sequence from its own end.
      out: (T, B, directions * O), O the cell's output width; state: like state0.

    cell_text(index=0) shows the traced cell of a layer and direction in cellfuse's text form.

    Example: an LSTM written by hand, two layers, both directions (one cell per layer and
    direction: the second layer's input is both directions' outputs), sequences of different
    lengths.

    >>> import torch, cellfuse
    >>> class LSTM(torch.nn.Module):
    ...     def __init__(self, n_in, n):
    ...         super().__init__()
    ...         self.x = torch.nn.Linear(n_in, 4 * n)
    ...         self.h = torch.nn.Linear(n, 4 * n, bias=False)
    ...     def forward(self, x, state):
    ...         h, c = state
    ...         i, f, g, o = (self.x(x) + self.h(h)).chunk(4, dim=1)
    ...         c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    ...         return torch.sigmoid(o) * torch.tanh(c), c
    >>> cells = [LSTM(5, 6), LSTM(5, 6), LSTM(12, 6), LSTM(12, 6)]
    >>> example = (torch.zeros(1, 5), (torch.zeros(1, 6), torch.zeros(1, 6)))
    >>> rnn = cellfuse.compile(cells, example, num_layers=2, bidirectional=True)
    >>> out, (h, c) = rnn(torch.randn(7, 3, 5), lengths=torch.tensor([7, 4, 2]))
    >>> out.shape, h.shape                       # h, c: (layers * directions, B, n) as nn.LSTM
    (torch.Size([7, 3, 12]), torch.Size([4, 3, 6]))
    >>> out[4:, 1].abs().max().item()            # past its length a sequence's outputs are zero
    0.0
    >>> rnn.cell_text(0).splitlines()[0]
    'cell LSTM f32 {'
    """

    def __init__(self, cell, example_inputs, *, num_layers=1, bidirectional=False, dropout=0.0,
                 batch_first=False, has_output=None, batch_dim=None):
        super().__init__()
        if num_layers < 1:
            raise CellfuseError(f"num_layers must be at least 1, got {num_layers}")
        if not 0.0 <= dropout < 1.0:
            raise CellfuseError(f"dropout must be in [0, 1), got {dropout}")
        self.num_layers = num_layers
        self.directions = 2 if bidirectional else 1
        self.dropout = float(dropout)
        self.batch_first = batch_first
        self.has_output = has_output
        count = num_layers * self.directions
        if isinstance(cell, (list, tuple, nn.ModuleList)):
            cells = list(cell)
            if len(cells) != count:
                raise CellfuseError(f"{len(cells)} cells given for {num_layers} layer(s) x {self.directions} "
                                    f"direction(s): give {count} (layer-major) or one")
        else:
            cells = [cell] + [_fresh_copy(cell) if isinstance(cell, nn.Module) else cell
                              for _ in range(count - 1)]
        modules = [c for c in cells if isinstance(c, nn.Module)]
        if modules and len(modules) != len(cells):
            raise CellfuseError("mix of nn.Module cells and plain functions: give one kind")
        self.cells = nn.ModuleList(modules) if modules else None
        self._functions = None if modules else cells

        x, *states = example_inputs
        self.programs = []
        self._masked = [None] * count
        layer_dims = None  # the per-step input shape of layers after the first
        for index, c in enumerate(cells):
            layer = index // self.directions
            try:
                if layer == 0:
                    program = capture(c, example_inputs, has_output=has_output, batch_dim=batch_dim)
                else:
                    first = self.programs[0]
                    example = _example(first, layer_dims, x.dtype, x.device)
                    program = capture(c, example, has_output=has_output, dims=(layer_dims, first.state_dims))
            except CellfuseError as e:
                if layer == 0:
                    raise
                raise CellfuseError(f"layer {layer} takes inputs of width {_features(layer_dims)} (the output width "
                                    f"times the directions), and capturing its cell on them failed: pass one cell per "
                                    f"layer and direction that accepts that width.\n{e}") from None
            self.programs.append(program)
            if layer == 0 and index == self.directions - 1:
                layer_dims = _with_directions(program.out_dims, self.directions)
        first = self.programs[0]
        self.output_width = first.output_width
        self.state_widths = first.state_widths
        self.structure = first.structure
        self.dtype = first.dtype

    # -- helpers -------------------------------------------------------------------------------
    def _cell(self, index):
        return self.cells[index] if self.cells is not None else self._functions[index]

    def _program(self, index, masked, dtype):
        if not masked:
            return self.programs[index]
        if self._masked[index] is None:
            # Captured on examples of the run's dtype (the parameters' dtype when the module was
            # converted after compile); every dtype with the same cell dtype shares the result.
            p = self.programs[index]
            example = _example(p, p.x_dims, dtype, None)
            self._masked[index] = capture(self._cell(index), example, has_output=self.has_output, masked=True,
                                          dims=(p.x_dims, p.state_dims))
        return self._masked[index]

    def _params(self, program, index, X=None):
        """The cell's parameter tensors for this call: the prelude run on the module's current
        parameters and buffers (so updates, load_state_dict and dtype changes are seen)."""
        cell = self._cell(index)
        lifted = []
        for name in program.lifted_names:
            try:
                t = cell.get_parameter(name)
            except AttributeError:
                t = cell.get_buffer(name)
            if X is not None:
                if t.device != X.device:
                    raise CellfuseError(f"cellfuse RNN: parameter '{name}' is on {t.device} but X is on {X.device}: "
                                        "move the module (rnn.to(device))")
                if t.is_floating_point() and t.dtype != X.dtype:
                    raise CellfuseError(f"cellfuse RNN: parameter '{name}' is {t.dtype} but X is {X.dtype}")
            lifted.append(t)
        params = program.prelude.run(lifted, X.dtype if X is not None else program.dtype)
        if X is not None:
            for t, name in zip(params, program.param_names):
                if t.device != X.device:
                    raise CellfuseError(f"cellfuse RNN: the cell's parameter '{name}' is on {t.device} but X is on "
                                        f"{X.device}: move the module (rnn.to(device))")
                if t.dtype != X.dtype:
                    raise CellfuseError(f"cellfuse RNN: the cell's parameter '{name}' is {t.dtype} but X is {X.dtype}")
        return params

    def extra_repr(self):
        return (f"output={self.output_width}, states={self.state_widths}, num_layers={self.num_layers}, "
                f"bidirectional={self.directions == 2}, dropout={self.dropout}, batch_first={self.batch_first}")

    def cell_text(self, index=0):
        """The traced cell of layer/direction `index` in cellfuse's text form.

        >>> import torch, cellfuse
        >>> rnn = cellfuse.compile(lambda x, h: torch.tanh(x + h), (torch.zeros(1, 3), torch.zeros(1, 3)))
        >>> print(rnn.cell_text())  # doctest: +ELLIPSIS
        cell ... f32 {
          %x = input : [B,3]
        ...
        """
        return self.programs[index].text()

    # -- forward -------------------------------------------------------------------------------
    def forward(self, X, state0=None, lengths=None):
        first = self.programs[0]
        x_dims = first.x_dims
        rank = len(x_dims) + 1
        if not isinstance(X, torch.Tensor) or X.dim() != rank:
            layout = _describe_dims(x_dims, "T", self.batch_first)
            raise CellfuseError(f"cellfuse RNN: X must be a {rank}-D tensor {layout}, got "
                                f"{tuple(X.shape) if isinstance(X, torch.Tensor) else type(X).__name__}")
        _check_dtype(X, self.dtype)
        bpos = x_dims.index(None)
        batch_axis, time_axis = (bpos, bpos + 1) if self.batch_first else (bpos + 1, 0)
        sizes = [n for i, n in enumerate(X.shape) if i not in (batch_axis, time_axis)]
        if sizes != [d for d in x_dims if d is not None]:
            raise CellfuseError(f"cellfuse RNN: X has {_features_of(sizes)} input features {tuple(X.shape)}, the "
                                f"cell takes {first.input_width} (X must be "
                                f"{_describe_dims(x_dims, 'T', self.batch_first)})")
        X = _to_rows(X, x_dims, self.batch_first)
        steps, batch, width = X.shape
        if batch == 0:
            raise CellfuseError("cellfuse RNN: X has a batch of 0")
        count = self.num_layers * self.directions
        flat0, squeeze = self._initial_states(state0, batch, count, X)
        mask = None
        if lengths is not None:
            lengths, mask = self._mask(lengths, steps, batch, X)

        finals = [[None] * count for _ in self.state_widths]
        layer_input = X
        for layer in range(self.num_layers):
            outs = []
            for d in range(self.directions):
                index = layer * self.directions + d
                program = self._program(index, mask is not None, X.dtype)
                x = layer_input if d == 0 else _reverse(layer_input, lengths)
                inputs = [x] if mask is None else [x, mask]
                states = [s[index] for s in flat0]
                params = self._params(program, index, X)
                train = torch.is_grad_enabled() and any(t.requires_grad for t in (*inputs, *states, *params))
                results = torch.ops.cellfuse.sequence(program.key, inputs, states, params, train)
                out = results[0]
                outs.append(out if d == 0 else _reverse(out, lengths))
                for k in range(len(self.state_widths)):
                    finals[k][index] = results[1 + k]
            layer_input = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_input = nn.functional.dropout(layer_input, self.dropout, training=True)
        out_dims = _with_directions(self.programs[-1].out_dims, self.directions)
        out = _from_rows(layer_input, out_dims, self.batch_first)
        stacked = []
        for f, dims in zip(finals, first.state_dims):
            per_step = [_state_from_rows(t, dims) for t in f]
            stacked.append(per_step[0] if squeeze else torch.stack(per_step, 0))
        return out, _restructure(stacked, self.structure)

    def _initial_states(self, state0, batch, count, X):
        if state0 is None:
            zeros = [X.new_zeros((count, batch, w)) for w in self.state_widths]
            return zeros, False
        flat = _flatten_states(state0, self.structure)
        squeeze = False
        out = []
        first = self.programs[0]
        for t, dims, name in zip(flat, first.state_dims, first.state_names):
            if not isinstance(t, torch.Tensor):
                raise CellfuseError(f"cellfuse RNN: state '{name}' is a {type(t).__name__}, not a tensor")
            expected = tuple(batch if d is None else d for d in dims)
            if t.dim() == len(dims) and count == 1:
                squeeze = True
                t = t.unsqueeze(0)
            if tuple(t.shape) != (count, *expected):
                raise CellfuseError(f"cellfuse RNN: state '{name}' has shape {tuple(t.shape)}, expected "
                                    f"{(count, *expected)} (layers*directions, then the step's state shape "
                                    f"{_describe_dims(dims)})")
            if t.dtype != X.dtype or t.device != X.device:
                raise CellfuseError(f"cellfuse RNN: state '{name}' is {t.dtype} on {t.device}, X is {X.dtype} "
                                    f"on {X.device}")
            out.append(_to_rows(t, dims, False))
        return out, squeeze

    def _mask(self, lengths, steps, batch, X):
        lengths = torch.as_tensor(lengths)
        if lengths.dim() != 1 or lengths.shape[0] != batch or lengths.dtype.is_floating_point:
            raise CellfuseError(f"cellfuse RNN: lengths must be {batch} integers (one per sequence), got "
                                f"shape {tuple(lengths.shape)} {lengths.dtype}")
        lengths = lengths.to(device=X.device, dtype=torch.long)
        if not torch.compiler.is_compiling():
            low, high = int(lengths.min()), int(lengths.max())
            if low < 1 or high > steps:
                raise CellfuseError(f"cellfuse RNN: lengths must be between 1 and T={steps}, got {low}..{high}")
        t = torch.arange(steps, device=X.device).unsqueeze(1)
        # The mask is an input of the cell: X's dtype, 16-bit storage included (0 and 1 are exact).
        mask = (t < lengths.unsqueeze(0)).to(X.dtype).unsqueeze(2).contiguous()
        return lengths, mask


def _flatten_states(state, structure):
    if len(structure) == 1:
        state = (state,)
    if not isinstance(state, (tuple, list)) or len(state) != len(structure):
        raise CellfuseError(f"cellfuse RNN: state0 must have the cell's state structure ({_describe(structure)})")
    flat = []
    for s, shape in zip(state, structure):
        if shape is None:
            flat.append(s)
        else:
            if not isinstance(s, (tuple, list)) or len(s) != shape:
                raise CellfuseError(f"cellfuse RNN: state0 must have the cell's state structure "
                                    f"({_describe(structure)})")
            flat.extend(s)
    return flat


def _restructure(flat, structure):
    out, i = [], 0
    for shape in structure:
        if shape is None:
            out.append(flat[i])
            i += 1
        else:
            out.append(tuple(flat[i:i + shape]))
            i += shape
    return out[0] if len(out) == 1 else tuple(out)


def _describe(structure):
    parts = ["tensor" if s is None else f"tuple of {s} tensors" for s in structure]
    return parts[0] if len(parts) == 1 else "(" + ", ".join(parts) + ")"


def _check_dtype(X, traced):
    """X must give the traced cell's compute dtype: its own, or a 16-bit one for a float32 cell,
    and 16-bit tensors only on CUDA."""
    if cell_dtype_of(X.dtype) != cell_dtype_of(traced):
        hint = ""
        if X.dtype in STORAGE_16:
            hint = " (16-bit tensors run a float32 cell: trace it with float32, bfloat16 or float16 examples)"
        raise CellfuseError(f"cellfuse RNN: X is {X.dtype} but the cell was traced in {traced}{hint}")
    if X.dtype in STORAGE_16 and not X.is_cuda:
        raise sixteen_bit_on_cpu(X.dtype)


def _features_of(sizes):
    out = 1
    for d in sizes:
        out *= d
    return out


def _describe_dims(dims, lead=None, batch_first=False):
    names = ["B" if d is None else str(d) for d in dims]
    if lead is not None:
        names.insert(dims.index(None) + 1 if batch_first else 0, lead)
    return "(" + ", ".join(names) + ")"


def _to_rows(X, dims, batch_first):
    """(T, *dims) (the time axis after the batch axis with batch_first) as [T, B, F]."""
    bpos = dims.index(None)
    if batch_first:
        X = X.movedim(bpos + 1, 0)
    if bpos != 0:
        X = X.movedim(bpos + 1, 1)
    return X.reshape(X.shape[0], X.shape[1], _features(dims)).contiguous()


def _from_rows(rows, dims, batch_first):
    """[T, B, F] as (T, *dims) in the user's per-step shape (a view)."""
    bpos = dims.index(None)
    features = [d for d in dims if d is not None]
    out = rows.reshape(rows.shape[0], rows.shape[1], *features)
    if bpos != 0:
        out = out.movedim(1, bpos + 1)
    return out.movedim(0, bpos + 1) if batch_first else out


def _state_from_rows(rows, dims):
    """[B, F] as the user's per-step state shape."""
    bpos = dims.index(None)
    out = rows.reshape(rows.shape[0], *[d for d in dims if d is not None])
    return out.movedim(0, bpos) if bpos else out


def _with_directions(dims, directions):
    """The per-step output shape of a layer of `directions` directions (joined on the last axis)."""
    if directions == 1:
        return tuple(dims)
    axis = max(i for i, d in enumerate(dims) if d is not None)
    if any(d not in (None, 1) for i, d in enumerate(dims) if i != axis):
        raise CellfuseError(f"bidirectional: the per-step output shape {_describe_dims(dims)} has more than one "
                            "feature axis; the directions are joined on the last axis of a (B, n)-like output")
    return tuple(d * directions if i == axis else d for i, d in enumerate(dims))


def _example(program, x_dims, dtype, device):
    """Example inputs of a captured program's shapes (batch 2) for capturing a variant of it."""
    def make(dims):
        return torch.zeros([2 if d is None else d for d in dims], dtype=dtype, device=device)
    states = [make(d) for d in program.state_dims]
    example = _restructure(states, program.structure)
    example = example if len(program.structure) > 1 else (example,)
    return (make(x_dims), *example)


def _reverse(x, lengths):
    """Each sequence reversed within its own length (the whole T without lengths)."""
    if lengths is None:
        return x.flip(0)
    steps = x.shape[0]
    t = torch.arange(steps, device=x.device).unsqueeze(1)
    index = torch.where(t < lengths.unsqueeze(0), lengths.unsqueeze(0) - 1 - t, t)
    return x.gather(0, index.unsqueeze(2).expand_as(x)).contiguous()
