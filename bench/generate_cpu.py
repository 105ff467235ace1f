#!/usr/bin/env python3
"""Character generation on the CPU, side by side in one run: cellfuse.Generator in every weight
format against PyTorch eager, quantize_dynamic and ONNX Runtime, with the machine's read
bandwidth and each format's weight-streaming floor.

    python3 bench/generate_cpu.py [--chars 1000] [--rounds 5] [--quick] [--out FILE]
                                  [--only charrnn,streams,lnlstm,gru]

(cellfuse importable: `pip install .`, or the package and a built _C on PYTHONPATH.)

Models (random weights; speed does not depend on them): the issue's char-RNN (embedding 1024 ->
3-layer nn.LSTM 1024 -> Linear over 100 characters, ~100 MB of fp32), a LayerNorm-LSTM char model
(2 layers, 512, a custom cell nn.LSTM tools cannot take), a 2-layer nn.GRU of 100 and the char-RNN
with 8 streams. Batch 1 unless said; ms per generated character, temperature 0.8, multinomial.
Baselines sample in a Python loop as a user writes it (model call, softmax, torch.multinomial / a
NumPy draw); PyTorch and ONNX Runtime on as many threads as cellfuse (every core). The machine is
shared, so contenders are timed in alternation, round by round (A B C A B C ...), each call after
an idle pause (PyTorch's OpenMP workers spin for a while after a call), and the table gives the
medians over rounds (times) and of the per-round ratios. Slow baselines generate fewer characters
per round (--slow-chars); the unit stays ms per character.
"""
import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import cellfuse

TEMPERATURE = 0.8
THREADS = int(os.environ.get("CELLFUSE_NUM_THREADS", os.cpu_count() or 1))


class CharRNN(nn.Module):
    def __init__(self, vocab, embed, hidden, layers, kind=nn.LSTM):
        super().__init__()
        self.emb = nn.Embedding(vocab, embed)
        self.rnn = kind(embed, hidden, layers)
        self.dec = nn.Linear(hidden, vocab)

    def forward(self, ids, state):  # ids (1,), state as nn.LSTM/GRU takes it for batch 1
        y, state = self.rnn(self.emb(ids).unsqueeze(0), state)
        return self.dec(y[0]), state

    def zero_state(self):
        h = torch.zeros(self.rnn.num_layers, 1, self.rnn.hidden_size)
        return (h, h.clone()) if isinstance(self.rnn, nn.LSTM) else h


class LNLSTMCell(nn.Module):
    """A LayerNorm-LSTM step (Ba et al. 2016), as research code writes it."""

    def __init__(self, inp, hidden):
        super().__init__()
        self.hidden_size = hidden
        self.ih, self.hh = nn.Linear(inp, 4 * hidden, bias=False), nn.Linear(hidden, 4 * hidden, bias=False)
        self.ln_ih, self.ln_hh, self.ln_c = nn.LayerNorm(4 * hidden), nn.LayerNorm(4 * hidden), nn.LayerNorm(hidden)

    def forward(self, x, h, c):
        i, f, g, o = (self.ln_ih(self.ih(x)) + self.ln_hh(self.hh(h))).chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(self.ln_c(c))
        return h, c


class LNCharModel(nn.Module):
    def __init__(self, vocab, embed, hidden, layers):
        super().__init__()
        self.emb = nn.Embedding(vocab, embed)
        self.cells = nn.ModuleList(LNLSTMCell(embed if l == 0 else hidden, hidden) for l in range(layers))
        self.dec = nn.Linear(hidden, vocab)
        self.hidden = hidden

    def forward(self, ids, h, c):  # h, c: (layers, 1, hidden)
        x, hs, cs = self.emb(ids), [], []
        for l, cell in enumerate(self.cells):
            x, c_l = cell(x, h[l], c[l])
            hs.append(x)
            cs.append(c_l)
        return self.dec(x), torch.stack(hs), torch.stack(cs)

    def zero_state(self):
        h = torch.zeros(len(self.cells), 1, self.hidden)
        return h, h.clone()


# --- the contenders: each a function generating n characters after a prime, timed as a whole ---

def peak_decoder(model, ids, entropy=1.5):
    """Scales the untrained decoder so that the next-character distributions are as peaked as a
    trained char-RNN's (mean entropy ~1.5 nats instead of ~ln 100): KL figures on near-uniform
    distributions would say nothing."""
    with torch.no_grad():
        y, _ = model.rnn(model.emb(torch.tensor(ids)).unsqueeze(1))
        raw = model.dec(y[:, 0])
        lo, hi = 1.0, 1000.0
        for _ in range(40):
            mid = (lo * hi) ** 0.5
            p = (raw * mid).log_softmax(1)
            if -(p.exp() * p).sum(1).mean().item() > entropy:
                lo = mid
            else:
                hi = mid
        model.dec.weight.mul_(lo)
        model.dec.bias.mul_(lo)
    return lo


def torch_loop(model, stateful_call):
    """Eager PyTorch (or quantize_dynamic) sampling loop. stateful_call(ids, state) -> logits, state."""
    def run(prime, n, seed):
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            state = model.zero_state()
            for t in prime:
                logits, state = stateful_call(torch.tensor([t]), state)
            out = []
            for _ in range(n):
                p = F.softmax(logits[0] / TEMPERATURE, dim=0)
                nxt = int(torch.multinomial(p, 1, generator=g))
                out.append(nxt)
                logits, state = stateful_call(torch.tensor([nxt]), state)
        return out
    return run


def ort_session(model, example, names, outputs, path, int8):
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic
    torch.onnx.export(model, example, path, input_names=names, output_names=outputs, opset_version=17,
                      dynamo=False)
    if int8:
        qpath = path.replace(".onnx", "_int8.onnx")
        quantize_dynamic(path, qpath, weight_type=QuantType.QInt8)
        path = qpath
    so = ort.SessionOptions()
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def ort_loop(session, zero_state):
    """ONNX Runtime sampling loop: state tensors fed back, NumPy softmax and draw."""
    in_names = [i.name for i in session.get_inputs()]

    def run(prime, n, seed):
        rng = np.random.default_rng(seed)
        state = [s.numpy() for s in zero_state()]
        def step(t):
            nonlocal state
            res = session.run(None, dict(zip(in_names, [np.array([t], dtype=np.int64), *state])))
            state = res[1:]
            return res[0][0]
        for t in prime:
            logits = step(t)
        out = []
        for _ in range(n):
            z = logits.astype(np.float64) / TEMPERATURE
            p = np.exp(z - z.max())
            nxt = int(rng.choice(len(p), p=p / p.sum()))
            out.append(nxt)
            logits = step(nxt)
        return out
    return run


def cellfuse_run(gen, streams=1):
    def run(prime, n, seed):
        return gen.generate(prime, n, temperature=TEMPERATURE, seed=seed, streams=streams)
    return run


def read_bandwidth_gbs(mib=256, rounds=7):
    """Read bandwidth: the median time of summing a float32 array far larger than the caches, on
    the same threads as the contenders."""
    x = torch.ones(mib * 2**20 // 4)
    x.sum()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        x.sum()
        times.append(time.perf_counter() - t0)
    return x.numel() * 4 / statistics.median(times) / 1e9


def progress(rows, start):
    for m, c, t, f in rows[start:]:
        print(f"  {m} | {c}: {t:.3f} ms {f}", file=sys.stderr, flush=True)
    return len(rows)


def paired(contenders, prime, chars, slow_chars, rounds, settle_s):
    """Per contender: median ms per character over rounds, and per-round times (for ratios)."""
    per_round = {name: [] for name in contenders}
    for name, (fn, slow) in contenders.items():
        fn(prime, 5, 0)  # warm-up (compilations, first-touch)
    for r in range(rounds):
        for name, (fn, slow) in contenders.items():
            n = slow_chars if slow else chars
            time.sleep(settle_s)
            t0 = time.perf_counter()
            fn(prime, n, r + 1)
            per_round[name].append((time.perf_counter() - t0) * 1e3 / n)
    return per_round


def med(v):
    return statistics.median(v)


def ratio(per_round, a, b):
    """Median over rounds of time(a) / time(b)."""
    return med([x / y for x, y in zip(per_round[a], per_round[b])])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chars", type=int, default=1000)
    ap.add_argument("--slow-chars", type=int, default=150, help="characters per round for eager loops")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--settle-ms", type=float, default=50)
    ap.add_argument("--quick", action="store_true", help="smaller models (a smoke test of this script)")
    parts = ("charrnn", "streams", "lnlstm", "gru")
    ap.add_argument("--only", default=",".join(parts),
                    help="comma-separated parts to run (while iterating): " + ", ".join(parts))
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                  "generate_cpu.md"))
    args = ap.parse_args()
    only = set(args.only.split(","))
    if not only <= set(parts):
        ap.error(f"--only: {', '.join(sorted(only - set(parts)))} not among {', '.join(parts)}")
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    settle = args.settle_ms / 1e3
    V, H, E = (100, 256, 256) if args.quick else (100, 1024, 1024)
    prime = list(range(10, 20))
    rows, notes = [], []
    tmp = tempfile.mkdtemp(prefix="cellfuse_gen_bench_")

    bw = read_bandwidth_gbs()
    notes.append(f"read bandwidth (sum over 256 MiB, {THREADS} threads): {bw:.1f} GB/s")

    # 1. The char-RNN: every format against PyTorch and ONNX Runtime.
    title = f"char-RNN: embedding {E} -> 3-layer nn.LSTM {H} -> Linear {V}"
    figures, shown, gens = [], 0, None
    if only & {"charrnn", "streams"}:
        model = CharRNN(V, E, H, 3).eval()
        with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "README.md")) as f:
            text_ids = [min(ord(ch), 127) % V for ch in f.read()[:1000]]
        peak_decoder(model, text_ids[:300])
        gens = {w: cellfuse.Generator.from_torch(model, weights=w) for w in ("fp32", "bf16", "int8", "int4")}
        notes.append(f"cellfuse's matrix-vector kernels on this CPU: {gens['fp32'].kernels}")
    if "charrnn" in only:
        qmodel = torch.ao.quantization.quantize_dynamic(model, {nn.LSTM, nn.Linear}, dtype=torch.qint8)
        path = os.path.join(tmp, "charrnn.onnx")
        step_model = _LstmStep(model)
        ort32 = ort_session(step_model, (torch.tensor([1]), *model.zero_state()), ["ids", "h", "c"],
                            ["logits", "h_out", "c_out"], path, False)
        ort8 = ort_session(step_model, (torch.tensor([1]), *model.zero_state()), ["ids", "h", "c"],
                           ["logits", "h_out", "c_out"], path, True)
        # Accuracy: mean KL of each format's next-token distribution against fp32, teacher-forced over
        # 1000 characters of real text (this repository's README, mapped onto the 100 ids).
        base = gens["fp32"].logits(text_ids).double().log_softmax(1)
        with torch.no_grad():
            eager, state = [], model.zero_state()
            for t in text_ids[:200]:
                logits, state = model(torch.tensor([t]), state)
                eager.append(logits)
        eager = torch.cat(eager).double()
        rel = ((gens["fp32"].logits(text_ids[:200]).double() - eager).abs().max() / eager.abs().max()).item()
        notes.append(f"fp32 teacher-forced logits against PyTorch eager (200 characters): max relative difference {rel:.2e}")
        for w in ("bf16", "int8", "int4"):
            lq = gens[w].logits(text_ids).double().log_softmax(1)
            kl = (base.exp() * (base - lq)).sum(1).mean().item()
            notes.append(f"{w}: mean KL of the next-token distribution against fp32 over {len(text_ids)} steps: {kl:.2e}")

        contenders = {f"cellfuse {w}": (cellfuse_run(g), False) for w, g in gens.items()}
        contenders["PyTorch eager fp32"] = (torch_loop(model, model), True)
        contenders["PyTorch quantize_dynamic int8"] = (torch_loop(model, qmodel), True)
        contenders["ONNX Runtime fp32"] = (ort_loop(ort32, model.zero_state), False)
        contenders["ONNX Runtime int8"] = (ort_loop(ort8, model.zero_state), False)
        pr = paired(contenders, prime, args.chars, args.slow_chars, args.rounds, settle)
        for name in contenders:
            floor = ""
            if name.startswith("cellfuse"):
                g = gens[name.split()[1]]
                floor_ms = g.weight_bytes / (bw * 1e9) * 1e3
                floor = f"{g.weight_bytes / 2**20:.1f} MiB, floor {floor_ms:.3f} ms, {med(pr[name]) / floor_ms:.2f}x floor"
            rows.append((title, name, med(pr[name]), floor))
        shown = progress(rows, 0)
        figures += [
            ("fp32 / ONNX Runtime fp32", ratio(pr, "cellfuse fp32", "ONNX Runtime fp32"), "<= 1"),
            ("fp32 / its floor", med(pr["cellfuse fp32"]) / (gens["fp32"].weight_bytes / bw / 1e6), "<= 1.15"),
            ("bf16 / cellfuse fp32", ratio(pr, "cellfuse bf16", "cellfuse fp32"), "<= 0.6"),
            ("int8 / ONNX Runtime int8", ratio(pr, "cellfuse int8", "ONNX Runtime int8"), "<= 0.8"),
            ("int8 / its floor", med(pr["cellfuse int8"]) / (gens["int8"].weight_bytes / bw / 1e6), "<= 1.3"),
            ("int4 / cellfuse int8", ratio(pr, "cellfuse int4", "cellfuse int8"), "<= 0.6"),
            ("PyTorch eager fp32 / cellfuse fp32", ratio(pr, "PyTorch eager fp32", "cellfuse fp32"), ""),
            ("quantize_dynamic int8 / cellfuse int8", ratio(pr, "PyTorch quantize_dynamic int8", "cellfuse int8"), ""),
        ]

    if "streams" in only:
        # 2. 8 streams at once against one (per step), same model.
        contenders = {f"cellfuse {w} x1": (cellfuse_run(gens[w], 1), False) for w in ("fp32", "int8")}
        contenders.update({f"cellfuse {w} x8": (cellfuse_run(gens[w], 8), False) for w in ("fp32", "int8")})
        pr8 = paired(contenders, prime, args.chars // 2, args.chars // 2, args.rounds, settle)
        for name in contenders:
            rows.append((title + ", streams", name + " (ms per step)", med(pr8[name]), ""))
        for w in ("fp32", "int8"):
            figures.append((f"8 streams / 1 stream per step ({w})", ratio(pr8, f"cellfuse {w} x8", f"cellfuse {w} x1"), "<= 2"))
        shown = progress(rows, shown)

    del gens

    if "lnlstm" in only:
        # 3. A custom cell: the LayerNorm-LSTM char model.
        LH, LE = (128, 64) if args.quick else (512, 128)
        ln = LNCharModel(V, LE, LH, 2).eval()
        lgens = {w: cellfuse.Generator(cell=list(ln.cells), embedding=ln.emb, decoder=ln.dec, weights=w)
                 for w in ("fp32", "int8")}
        lpath = os.path.join(tmp, "lnlstm.onnx")
        lort32 = ort_session(ln, (torch.tensor([1]), *ln.zero_state()), ["ids", "h", "c"], ["logits", "h_out", "c_out"],
                             lpath, False)
        lort8 = ort_session(ln, (torch.tensor([1]), *ln.zero_state()), ["ids", "h", "c"], ["logits", "h_out", "c_out"],
                            lpath, True)
        contenders = {f"cellfuse {w}": (cellfuse_run(g), False) for w, g in lgens.items()}
        contenders["PyTorch eager fp32"] = (torch_loop(ln, lambda ids, st: _ln_call(ln, ids, st)), True)
        contenders["ONNX Runtime fp32"] = (ort_loop(lort32, ln.zero_state), False)
        contenders["ONNX Runtime int8"] = (ort_loop(lort8, ln.zero_state), False)
        prl = paired(contenders, prime, args.chars, args.slow_chars, args.rounds, settle)
        ltitle = f"LayerNorm-LSTM char model: embedding {LE} -> 2 x LN-LSTM {LH} -> Linear {V}"
        for name in contenders:
            rows.append((ltitle, name, med(prl[name]), ""))
        shown = progress(rows, shown)
        best_ort = min(("ONNX Runtime fp32", "ONNX Runtime int8"), key=lambda n: med(prl[n]))
        figures.append((f"LN-LSTM: {best_ort} / cellfuse int8", ratio(prl, best_ort, "cellfuse int8"), ">= 2"))
        figures.append(("LN-LSTM: eager / cellfuse fp32", ratio(prl, "PyTorch eager fp32", "cellfuse fp32"), ""))

    if "gru" in only:
        # 4. The small GRU: per-call overhead, not bandwidth, rules.
        gru = CharRNN(V, 32, 100, 2, kind=nn.GRU).eval()
        ggen = cellfuse.Generator.from_torch(gru, weights="fp32")
        contenders = {"cellfuse fp32": (cellfuse_run(ggen), False),
                      "PyTorch eager fp32": (torch_loop(gru, gru), True)}
        prg = paired(contenders, prime, args.chars, args.slow_chars, args.rounds, settle)
        gtitle = f"2-layer nn.GRU 100: embedding 32 -> GRU 100 x 2 -> Linear {V}"
        for name in contenders:
            rows.append((gtitle, name, med(prg[name]), ""))
        figures.append(("GRU 100: eager / cellfuse", ratio(prg, "PyTorch eager fp32", "cellfuse fp32"), ">= 30"))

    report(args, rows, figures, notes)


class _LstmStep(nn.Module):
    """The char-RNN's step with its state as separate tensors (what ONNX export takes)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, ids, h, c):
        logits, (h, c) = self.model(ids, (h, c))
        return logits, h, c


def _ln_call(model, ids, state):
    logits, h, c = model(ids, *state)
    return logits, (h, c)


def report(args, rows, figures, notes):
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import onnxruntime
    lines = [f"# Character generation on the CPU ({datetime.date.today().isoformat()})", "",
             f"`python3 bench/generate_cpu.py {' '.join(sys.argv[1:])}` on {cpu}, {THREADS} threads, "
             f"PyTorch {torch.__version__}, ONNX Runtime {onnxruntime.__version__}; batch 1 unless said, "
             f"{args.chars} characters per round for cellfuse and ONNX Runtime, {args.slow_chars} for eager "
             f"loops, {args.rounds} rounds timed in alternation (medians).", ""]
    lines += [f"- {n}" for n in notes] + [""]
    lines += ["| model | contender | ms per character | weights |", "|---|---|---:|---|"]
    # A small model's microseconds need a fourth decimal.
    lines += [f"| {m} | {c} | {t:.3f} | {f} |" if t >= 0.1 else f"| {m} | {c} | {t:.4f} | {f} |" for m, c, t, f in rows]
    lines += ["", "| figure | measured | target |", "|---|---:|---|"]
    lines += [f"| {n} | {v:.3f} | {t} |" for n, v, t in figures]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text)
        print(f"(written to {args.out})")


if __name__ == "__main__":
    main()
