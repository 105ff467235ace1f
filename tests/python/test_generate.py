"""cellfuse.Generator: native sampling against PyTorch eager (logits), the formats' closeness to
fp32, determinism, streaming, the file and its errors."""
import os

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import cellfuse
from cells import LayerNormLSTM

VOCAB = "".join(chr(32 + i) for i in range(95)) + "\n\t"  # 97 tokens


class CharRNN(nn.Module):
    def __init__(self, vocab=97, embed=24, hidden=64, layers=2, kind=nn.LSTM):
        super().__init__()
        self.emb = nn.Embedding(vocab, embed)
        self.rnn = kind(embed, hidden, layers)
        self.dec = nn.Linear(hidden, vocab)

    def forward(self, ids, state=None):
        y, state = self.rnn(self.emb(ids).unsqueeze(1), state)
        return self.dec(y.squeeze(1)), state


def max_rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def mean_kl(p_logits, q_logits):
    lp, lq = p_logits.double().log_softmax(1), q_logits.double().log_softmax(1)
    return (lp.exp() * (lp - lq)).sum(1).mean().item()


@pytest.mark.parametrize("kind,layers,hidden", [(nn.LSTM, 2, 64), (nn.GRU, 3, 37), (nn.LSTM, 1, 5)])
def test_from_torch_fp32_logits_match_eager(kind, layers, hidden):
    model = CharRNN(hidden=hidden, layers=layers, kind=kind).eval()
    ids = torch.randint(0, 97, (60,))
    with torch.no_grad():
        want, _ = model(ids)
    gen = cellfuse.Generator.from_torch(model, vocab=VOCAB)
    got = gen.logits(ids)
    assert got.shape == (60, 97)
    assert max_rel(got, want) <= 1e-4


def test_custom_cell_logits_match_an_eager_loop():
    torch.manual_seed(3)
    emb, cell, dec = nn.Embedding(97, 20), LayerNormLSTM(20, 48), nn.Linear(48, 97)
    h0 = (torch.zeros(1, 48), torch.zeros(1, 48))
    gen = cellfuse.Generator(cell=cell, embedding=emb, decoder=dec, vocab=VOCAB, states=(h0,))
    ids = torch.randint(0, 97, (40,))
    state, want = h0, []
    with torch.no_grad():
        for t in ids:
            h, c = cell(emb(t.view(1)), state)
            state = (h, c)
            want.append(dec(h))
    assert max_rel(gen.logits(ids), torch.cat(want)) <= 1e-4


def test_formats_stay_close_to_fp32():
    model = CharRNN(hidden=128, layers=2).eval()
    ids = torch.randint(0, 97, (300,))
    base = cellfuse.Generator.from_torch(model, weights="fp32").logits(ids)
    sizes = {}
    for weights, limit in (("bf16", 1e-2), ("int8", 1e-2), ("int4", 5e-2)):
        gen = cellfuse.Generator.from_torch(model, weights=weights)
        kl = mean_kl(base, gen.logits(ids))
        assert 0 < kl < limit, (weights, kl)
        sizes[weights] = gen.weight_bytes
    assert sizes["int4"] < sizes["int8"] < sizes["bf16"]


def test_generate_is_reproducible_and_streams_agree():
    model = CharRNN(hidden=32).eval()
    gen = cellfuse.Generator.from_torch(model, vocab=VOCAB, weights="int8")
    a = gen.generate("The ", 80, temperature=0.8, top_k=20, seed=5)
    assert isinstance(a, str) and len(a) == 80
    assert gen.generate("The ", 80, temperature=0.8, top_k=20, seed=5) == a
    assert gen.generate("The ", 80, temperature=0.8, top_k=20, seed=6) != a
    assert "".join(gen.stream("The ", 80, temperature=0.8, top_k=20, seed=5)) == a
    many = gen.generate("The ", 30, top_p=0.9, seed=1, streams=3)
    assert len(many) == 3 and many[0] == gen.generate("The ", 30, top_p=0.9, seed=1)
    greedy = gen.generate("The ", 20, temperature=0)
    assert greedy == gen.generate("The ", 20, temperature=0, seed=123)
    # Greedy follows the argmax of the teacher-forced logits of its own output.
    logits = gen.logits("The " + greedy[:-1])
    assert "".join(VOCAB[i] for i in logits[3:].argmax(1).tolist()) == greedy


def test_stream_stops_early_and_ids_without_vocab():
    gen = cellfuse.Generator.from_torch(CharRNN(kind=nn.GRU, hidden=16).eval())
    it = gen.stream([1, 2, 3], 10000, seed=2)
    first = [next(it) for _ in range(5)]
    it.close()  # the native loop stops at its next step
    assert all(isinstance(i, int) for i in first)
    assert gen.generate([1, 2, 3], 5, seed=2) == first
    with pytest.raises(cellfuse.CellfuseError, match="no vocabulary"):
        gen.generate("abc", 5)


def test_save_load_round_trip_and_sizes(tmp_path):
    model = CharRNN(hidden=256, layers=2, embed=32).eval()
    ids = torch.randint(0, 97, (30,))
    size = {}
    for weights in ("fp32", "int8", "int4"):
        gen = cellfuse.Generator.from_torch(model, vocab=VOCAB, weights=weights)
        path = tmp_path / f"m_{weights}.cfgen"
        gen.save(path)
        size[weights] = os.path.getsize(path)
        back = cellfuse.Generator.load(path)
        assert back.weights == weights and back.vocab == list(VOCAB)
        assert torch.equal(back.logits(ids), gen.logits(ids))
        assert back.generate("ab", 40, seed=3) == gen.generate("ab", 40, seed=3)
    assert size["int8"] <= 0.3 * size["fp32"]
    assert size["int4"] <= 0.17 * size["fp32"]


def test_corrupt_files_and_bad_arguments(tmp_path):
    model = CharRNN(hidden=16).eval()
    gen = cellfuse.Generator.from_torch(model, vocab=VOCAB)
    path = tmp_path / "m.cfgen"
    gen.save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated"):
        cellfuse.Generator.load(path)
    path.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    with pytest.raises(ValueError, match="corrupt"):
        cellfuse.Generator.load(path)
    with pytest.raises(cellfuse.CellfuseError, match="int3"):
        cellfuse.Generator.from_torch(model, weights="int3")
    with pytest.raises(cellfuse.CellfuseError, match="bidirectional"):
        cellfuse.Generator.from_torch(_bidirectional())
    with pytest.raises(cellfuse.CellfuseError, match="temperature"):
        gen.generate("a", 5, temperature=-1)
    with pytest.raises(cellfuse.CellfuseError, match="top_p"):
        gen.generate("a", 5, top_p=1.5)
    with pytest.raises(cellfuse.CellfuseError, match="vocab has 3 tokens"):
        cellfuse.Generator.from_torch(model, vocab="abc")


def _bidirectional():
    m = CharRNN(hidden=8)
    m.rnn = nn.LSTM(24, 4, bidirectional=True)
    m.dec = nn.Linear(8, 97)
    return m


def test_serving_example_streams_and_reports(tmp_path):
    """examples/serve_charrnn.py: its server streams a generation to its client, which reports the
    first-token latency and the rate."""
    import subprocess
    import sys
    script = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "serve_charrnn.py")
    model = CharRNN(hidden=32, embed=16, vocab=96).eval()
    gen = cellfuse.Generator.from_torch(model, vocab="".join(chr(c) for c in range(32, 127)) + "\n", weights="int8")
    path = tmp_path / "m.cfgen"
    gen.save(path)
    run = subprocess.run([sys.executable, script, "--model", str(path), "--length", "60", "--seed", "4"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "The " + gen.generate("The ", 60, temperature=0.8, seed=4) + "\n"
    assert "first token after" in run.stderr and "characters/s" in run.stderr


def test_kernels_are_the_best_this_cpu_runs():
    """The kernel set is picked from the CPU at run time: AVX-512 VNNI where the flags say so (Intel
    since Cascade Lake, AMD Zen 4), else AVX2 + FMA, else plain C++."""
    with open("/proc/cpuinfo") as f:
        flags = next(line for line in f if line.startswith("flags")).split()
    if {"avx512f", "avx512bw", "avx512vl", "avx512_vnni"} <= set(flags):
        want = "avx512-vnni"
    elif {"avx2", "fma", "f16c"} <= set(flags):
        want = "avx2"
    else:
        want = "scalar"
    gen = cellfuse.Generator.from_torch(CharRNN(20, 8, 16, 1, nn.GRU), weights="int8")
    assert gen.kernels == want
