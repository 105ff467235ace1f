"""cellfuse.Generator: sampling from a recurrent language model in native code.

    gen = cellfuse.Generator.from_torch(model, vocab=chars, weights="int8")
    print(gen.generate("The ", 1000, temperature=0.8, seed=1))
    for ch in gen.stream("The ", 200): print(ch, end="", flush=True)
    gen.save("model.cfgen"); gen = cellfuse.Generator.load("model.cfgen")

The whole loop (embedding -> the layers' cells -> decoder -> temperature softmax -> top-k / top-p
-> sampling -> next input) runs natively, one call per sequence; weights are held as fp32,
bf16, int8 or int4 (quantized once, when the generator is made).
"""
from __future__ import annotations

import inspect
import os
import queue
import threading

import torch
from torch import nn
from torch.nn import functional as F

from . import _C
from ._capture import capture
from ._errors import CellfuseError

_FORMATS = ("fp32", "bf16", "int8", "int4")


def _floats(t, what):
    if not isinstance(t, torch.Tensor):
        raise CellfuseError(f"{what}: expected a tensor, got {type(t).__name__}")
    if t.is_complex() or not t.is_floating_point():
        raise CellfuseError(f"{what}: expected a floating-point tensor, got {t.dtype}")
    t = t.detach().to(device="cpu", dtype=torch.float32).contiguous()
    if not torch.isfinite(t).all():
        raise CellfuseError(f"{what}: holds non-finite values")
    return t


class _LSTMStep(nn.Module):
    """One layer of nn.LSTM as a step (gate order i, f, g, o; two biases)."""

    def __init__(self, w_ih, w_hh, b_ih, b_hh):
        super().__init__()
        self.w_ih, self.w_hh = nn.Parameter(w_ih), nn.Parameter(w_hh)
        self.hidden_size = w_hh.shape[1]
        self.b_ih = nn.Parameter(b_ih) if b_ih is not None else None
        self.b_hh = nn.Parameter(b_hh) if b_hh is not None else None

    def forward(self, x, h, c):
        gates = F.linear(x, self.w_ih, self.b_ih) + F.linear(h, self.w_hh, self.b_hh)
        i, f, g, o = gates.chunk(4, 1)
        c2 = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h2 = torch.sigmoid(o) * torch.tanh(c2)
        return h2, h2, c2


class _GRUStep(nn.Module):
    """One layer of nn.GRU as a step (gate order r, z, n; the reset gate after the hidden bias)."""

    def __init__(self, w_ih, w_hh, b_ih, b_hh):
        super().__init__()
        self.w_ih, self.w_hh = nn.Parameter(w_ih), nn.Parameter(w_hh)
        self.hidden_size = w_hh.shape[1]
        self.b_ih = nn.Parameter(b_ih) if b_ih is not None else None
        self.b_hh = nn.Parameter(b_hh) if b_hh is not None else None

    def forward(self, x, h):
        xr, xz, xn = F.linear(x, self.w_ih, self.b_ih).chunk(3, 1)
        hr, hz, hn = F.linear(h, self.w_hh, self.b_hh).chunk(3, 1)
        r = torch.sigmoid(xr + hr)
        z = torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        h2 = (1 - z) * n + z * h
        return h2, h2


def _stock_layers(rnn):
    """Step modules with the weights of each layer of an nn.LSTM / nn.GRU."""
    if rnn.bidirectional:
        raise CellfuseError(f"Generator.from_torch: a bidirectional {type(rnn).__name__} cannot generate "
                            "(it reads the future)")
    if getattr(rnn, "proj_size", 0):
        raise CellfuseError("Generator.from_torch: nn.LSTM with proj_size is not supported; pass the cell "
                            "to cellfuse.Generator(cell=...)")
    step = _LSTMStep if isinstance(rnn, nn.LSTM) else _GRUStep
    layers = []
    for l in range(rnn.num_layers):
        get = lambda name: (_floats(getattr(rnn, f"{name}_l{l}"), f"{type(rnn).__name__}.{name}_l{l}")
                            if getattr(rnn, f"{name}_l{l}", None) is not None else None)
        layers.append(step(get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh")))
    return layers


def _vocab_tokens(vocab, size):
    if vocab is None:
        return []
    if isinstance(vocab, str):
        tokens = list(vocab)
    elif isinstance(vocab, (list, tuple)) and all(isinstance(t, str) for t in vocab):
        tokens = list(vocab)
    elif isinstance(vocab, dict):
        tokens = [None] * len(vocab)
        for tok, i in vocab.items():
            if not isinstance(i, int) or not 0 <= i < len(vocab) or tokens[i] is not None:
                raise CellfuseError("vocab: a dict must map each token to a distinct id 0..len-1")
            tokens[i] = tok
    else:
        raise CellfuseError(f"vocab: expected a string (one character per id), a list of tokens or a dict "
                            f"token -> id, got {type(vocab).__name__}")
    if len(tokens) != size:
        raise CellfuseError(f"vocab has {len(tokens)} tokens but the model has {size} ids")
    return tokens


class Generator:
    """A recurrent language model compiled for native sampling on the CPU.

    Generator(cell=..., embedding=..., decoder=..., vocab=None, weights="fp32", states=None,
              threads=0)
      cell: the step of any recurrent cell cellfuse.compile accepts, `forward(x, *states)` returning
        the new states (the first is what the next layer and the decoder read) or an output and
        the new states; or a list of them, one per layer (layer l reads layer l-1's output).
      embedding: an nn.Embedding or a (vocab, dim) tensor; decoder: an nn.Linear or a (vocab, hidden)
        weight tensor (or a (weight, bias) pair).
      vocab: a string (character i is id i), a list of tokens or a dict token -> id; with one,
        prime texts are encoded and generate() returns text.
      weights: "fp32", "bf16", "int8" (per-row scales, activations quantized per step) or "int4"
        (groups of 32, a scale each); quantized once, here.
      states: example states for tracing a cell whose states are not one (1, hidden) tensor per
        argument of forward after x (e.g. a tuple (h, c)); a list per layer with several cells.
      threads: threads for the products (0: CELLFUSE_NUM_THREADS, else every core).

    Example: an (untrained) char-RNN of nn.Embedding, nn.LSTM and nn.Linear, sampled natively.

    >>> import torch, cellfuse
    >>> class CharRNN(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.emb = torch.nn.Embedding(5, 8)
    ...         self.rnn = torch.nn.LSTM(8, 16)
    ...         self.out = torch.nn.Linear(16, 5)
    >>> gen = cellfuse.Generator.from_torch(CharRNN(), vocab="abcde")
    >>> text = gen.generate("ab", 10, temperature=0.8, seed=1)
    >>> len(text), set(text) <= set("abcde")
    (10, True)
    >>> text == gen.generate("ab", 10, temperature=0.8, seed=1)    # the same seed, the same text
    True
    """

    def __init__(self, cell=None, embedding=None, decoder=None, *, vocab=None, weights="fp32", states=None,
                 threads=0, _native=None):
        if _native is not None:
            self._g = _native
            self._tokens = list(_native.tokens)
            return
        if weights not in _FORMATS:
            raise CellfuseError(f"weights: '{weights}' is not one of {', '.join(_FORMATS)}")
        if cell is None or embedding is None or decoder is None:
            raise CellfuseError("Generator: cell, embedding and decoder are all required (or use "
                                "Generator.from_torch(model))")
        emb = _floats(embedding.weight if isinstance(embedding, nn.Embedding) else embedding, "embedding")
        if emb.dim() != 2:
            raise CellfuseError(f"embedding: expected (vocab, dim), got {tuple(emb.shape)}")
        if isinstance(decoder, nn.Linear):
            dw, db = decoder.weight, decoder.bias
        elif isinstance(decoder, (tuple, list)) and len(decoder) == 2:
            dw, db = decoder
        else:
            dw, db = decoder, None
        dw = _floats(dw, "decoder weight")
        db = _floats(db, "decoder bias") if db is not None else None
        if dw.dim() != 2:
            raise CellfuseError(f"decoder weight: expected (vocab, hidden), got {tuple(dw.shape)}")
        cells = list(cell) if isinstance(cell, (list, tuple, nn.ModuleList)) else [cell]
        if states is not None and len(cells) > 1 and len(states) != len(cells):
            raise CellfuseError(f"states: {len(states)} entries for {len(cells)} layers")
        layers, alive, width = [], [], emb.shape[1]
        for l, c in enumerate(cells):
            example = states[l] if (states is not None and len(cells) > 1) else states
            text, params, out_width = self._trace_layer(c, width, dw.shape[1], example, l, len(cells))
            layers.append((text, [(p.data_ptr(), p.numel()) for p in params]))
            alive.append(params)  # the addresses stay valid until the native side has copied them
            width = out_width
        tokens = _vocab_tokens(vocab, dw.shape[0])
        self._g = _C.Generator(layers, emb.data_ptr(), emb.shape[0], emb.shape[1],
                               dw.data_ptr(), dw.numel(), db.data_ptr() if db is not None else 0,
                               db.numel() if db is not None else 0, tokens, weights, int(threads))
        self._tokens = tokens

    @staticmethod
    def _trace_layer(cell, width, hidden, example, index, count):
        x = torch.zeros(1, width)
        if example is None:
            fn = cell.forward if isinstance(cell, nn.Module) else cell
            try:
                params = list(inspect.signature(fn).parameters.values())
            except (TypeError, ValueError):
                params = []
            n_states = sum(1 for p in params[1:] if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                           and p.default is p.empty)
            if n_states < 1:
                raise CellfuseError(f"layer {index}: cannot tell the cell's states from its signature; pass "
                                    "states=(example state tensors)")
            # Every state as wide as the decoder's input when it is the last layer; else as the
            # cell's hidden_size when it has one.
            width_h = hidden if index == count - 1 else getattr(cell, "hidden_size", None)
            if width_h is None:
                raise CellfuseError(f"layer {index}: pass states=... (the state widths of a middle layer "
                                    "are not known from the decoder)")
            example = tuple(torch.zeros(1, width_h) for _ in range(n_states))
        elif isinstance(example, torch.Tensor):
            example = (example,)
        example = tuple(s.detach().to(torch.float32)[:1] if isinstance(s, torch.Tensor) else
                        tuple(t.detach().to(torch.float32)[:1] for t in s) for s in example)
        program = capture(cell, (x, *example))
        lifted = []
        for name in program.lifted_names:
            try:
                lifted.append(cell.get_parameter(name))
            except AttributeError:
                lifted.append(cell.get_buffer(name))
        with torch.no_grad():
            params = program.prelude.run(lifted, torch.float32)  # the cell's parameters from the module's tensors
        params = [_floats(p.reshape(1) if p.dim() == 0 else p, f"layer {index} parameter {k}")
                  for k, p in enumerate(params)]
        return program.text(), params, program.output_width

    @classmethod
    def from_torch(cls, model, vocab=None, weights="fp32", threads=0):
        """The usual char-RNN: the model's nn.Embedding, its nn.LSTM or nn.GRU (any number of layers)
        and its last nn.Linear (the decoder), found among model.modules()."""
        emb = [m for m in model.modules() if isinstance(m, nn.Embedding)]
        rnn = [m for m in model.modules() if isinstance(m, (nn.LSTM, nn.GRU))]
        lin = [m for m in model.modules() if isinstance(m, nn.Linear)]
        missing = [what for what, found in (("nn.Embedding", emb), ("nn.LSTM or nn.GRU", rnn), ("nn.Linear", lin))
                   if not found]
        if missing:
            raise CellfuseError(f"Generator.from_torch: the model has no {' and no '.join(missing)}; for other "
                                "models pass cell=, embedding=, decoder= to cellfuse.Generator")
        if len(rnn) > 1:
            raise CellfuseError(f"Generator.from_torch: the model has {len(rnn)} recurrent modules; pass the "
                                "layers as cell=[...] to cellfuse.Generator")
        emb, rnn, lin = emb[0], rnn[0], lin[-1]
        layers = _stock_layers(rnn)
        if emb.embedding_dim != rnn.input_size or lin.in_features != rnn.hidden_size:
            raise CellfuseError(f"Generator.from_torch: embedding dim {emb.embedding_dim} -> "
                                f"{type(rnn).__name__}({rnn.input_size}, {rnn.hidden_size}) -> Linear"
                                f"({lin.in_features}, {lin.out_features}) do not chain")
        return cls(cell=layers, embedding=emb, decoder=lin, vocab=vocab, weights=weights,
                   threads=threads)

    @classmethod
    def load(cls, path, threads=0):
        """A generator saved by save(): the same weights, format, cells and vocabulary."""
        return cls(_native=_C.Generator.load(os.fspath(path), int(threads)))

    def save(self, path):
        """Writes one versioned file (weights in their format, the cells' text, the vocabulary)."""
        self._g.save(os.fspath(path))

    @property
    def weights(self):
        return self._g.format

    @property
    def vocab_size(self):
        return self._g.vocab_size

    @property
    def vocab(self):
        return list(self._tokens) or None

    @property
    def weight_bytes(self):
        """Bytes of weights one step reads."""
        return self._g.weight_bytes

    @property
    def kernels(self):
        """The instruction set of the matrix-vector kernels in use on this CPU: "avx512-vnni",
        "avx2" or "scalar"."""
        return self._g.kernels

    def _ids(self, x, what):
        if isinstance(x, str):
            if not self._tokens:
                raise CellfuseError(f"{what}: this generator has no vocabulary; pass token ids")
            return list(self._g.encode(x))
        if isinstance(x, torch.Tensor):
            if x.dim() != 1 or x.dtype.is_floating_point:
                raise CellfuseError(f"{what}: expected a 1-D integer tensor, got {x.dtype} {tuple(x.shape)}")
            return [int(v) for v in x.tolist()]
        try:
            return [int(v) for v in x]
        except (TypeError, ValueError):
            raise CellfuseError(f"{what}: expected text or token ids, got {type(x).__name__}") from None

    def logits(self, ids):
        """Teacher-forced logits (T, vocab) of one stream fed `ids` (text or token ids) from zero states."""
        ids = self._ids(ids, "logits")
        out = torch.empty(len(ids), self._g.vocab_size, dtype=torch.float32)
        self._g.logits_into(ids, out.data_ptr())
        return out

    def _options(self, temperature, top_k, top_p, seed, streams, length):
        if top_k is None:
            top_k = 0
        if top_p is None:
            top_p = 1.0
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little")
        if not isinstance(length, int) or isinstance(length, bool):
            raise CellfuseError(f"length: expected an int, got {type(length).__name__}")
        if not isinstance(streams, int) or streams < 1:
            raise CellfuseError(f"streams: expected an int >= 1, got {streams!r}")
        return float(temperature), int(top_k), float(top_p), int(seed) % (1 << 64), streams

    def _out(self, ids):
        return "".join(self._tokens[i] for i in ids) if self._tokens else list(ids)

    def generate(self, prime, length, temperature=1.0, top_k=None, top_p=None, seed=None, streams=1):
        """Samples `length` tokens after `prime` (text with a vocabulary, else ids; at least one token).
        temperature 0 is greedy; top_k / top_p keep the k most likely tokens / the most likely ones
        reaching probability p. The same seed gives the same result on any thread count. Returns the
        generated text (or ids); with streams > 1 a list of them, one per independent stream."""
        ids = self._ids(prime, "prime")
        t, k, p, s, b = self._options(temperature, top_k, top_p, seed, streams, length)
        out = self._g.generate(ids, length, t, k, p, s, b)
        results = [self._out(o) for o in out]
        return results[0] if streams == 1 else results

    def stream(self, prime, length, temperature=1.0, top_k=None, top_p=None, seed=None):
        """An iterator over the tokens of generate(...) (one stream) as they are made: text pieces
        with a vocabulary, else ids. Closing it early stops the native loop at the next step."""
        ids = self._ids(prime, "prime")
        t, k, p, s, b = self._options(temperature, top_k, top_p, seed, 1, length)
        q = queue.Queue()
        stop = threading.Event()
        done = object()

        def on_step(step, tokens):
            q.put(tokens[0])
            return not stop.is_set()

        def run():
            try:
                self._g.generate(ids, length, t, k, p, s, b, on_step)
                q.put(done)
            except BaseException as e:  # handed to the consumer
                q.put(e)

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        try:
            while True:
                item = q.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield self._tokens[item] if self._tokens else item
        finally:
            stop.set()
            worker.join()

    def __repr__(self):
        return (f"cellfuse.Generator(layers={self._g.num_layers}, vocab={self._g.vocab_size}, "
                f"weights={self._g.format}, {self._g.weight_bytes / 2**20:.1f} MiB per step)")
