"""cellfuse.profile and `cellfuse profile`: the trace is valid Trace Event Format JSON (fields, ph
values, nesting), its GEMM and kernel events are the runner's calls, the eager column counts what
torch.profiler counts for the same loop, and the picture and the command line write their files."""
import json
import os

import pytest
import torch
from torch import nn

import cellfuse
from cellfuse import _cli
from cellfuse._profile import torch_op_counts

PHASES = {"X", "i", "I", "M", "B", "E", "C"}


def validate_trace(trace):
    """Checks `trace` (parsed JSON) against the Trace Event Format's JSON Object Format: every
    event has name/ph/pid/tid, a known ph, ts (and X: dur >= 0, i: a scope), metadata names a
    process or thread, and the complete events of each thread nest (no partial overlaps)."""
    assert isinstance(trace, dict) and isinstance(trace["traceEvents"], list)
    tracks = {}
    for e in trace["traceEvents"]:
        assert isinstance(e.get("name"), str) and e["name"], e
        assert e.get("ph") in PHASES, e
        assert isinstance(e.get("pid"), int) and isinstance(e.get("tid"), int), e
        if e["ph"] == "M":
            assert e["name"] in ("process_name", "thread_name") and isinstance(e["args"]["name"], str), e
            continue
        assert isinstance(e.get("ts"), (int, float)) and e["ts"] >= 0, e
        if e["ph"] == "X":
            assert isinstance(e.get("dur"), (int, float)) and e["dur"] >= 0, e
            tracks.setdefault((e["pid"], e["tid"]), []).append(e)
        if e["ph"] in ("i", "I"):
            assert e.get("s", "t") in ("g", "p", "t"), e
    eps = 1e-3  # the timestamps' resolution: 1 ns
    for events in tracks.values():
        events.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack = []
        for e in events:
            while stack and e["ts"] >= stack[-1]["ts"] + stack[-1]["dur"] - eps:
                stack.pop()
            if stack:
                top = stack[-1]
                assert e["ts"] + e["dur"] <= top["ts"] + top["dur"] + eps, (
                    f"{e['name']} overlaps {top['name']} without nesting")
            stack.append(e)
    return tracks


class Elman(nn.Module):
    def __init__(self, n_in, n):
        super().__init__()
        self.ih = nn.Linear(n_in, n)
        self.hh = nn.Linear(n, n)

    def forward(self, x, h):
        return torch.tanh(self.ih(x) + self.hh(h))


class CoupledLSTM(nn.Module):
    def __init__(self, n_in, n):
        super().__init__()
        self.ih = nn.Linear(n_in, 3 * n)
        self.hh = nn.Linear(n, 3 * n, bias=False)

    def forward(self, x, state):
        h, c = state
        f, o, g = (self.ih(x) + self.hh(h)).chunk(3, 1)
        f = torch.sigmoid(f)
        c = f * c + (1 - f) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


def test_trace_of_a_compiled_module_is_valid_and_has_every_call(tmp_path):
    cell = CoupledLSTM(5, 9)
    x0, h0 = torch.randn(3, 5), torch.randn(3, 9)
    rnn = cellfuse.compile(cell, (x0, (h0, h0.clone())))
    X = torch.randn(11, 3, 5)
    path = tmp_path / "t.json"
    report = cellfuse.profile(rnn, X, trace=str(path), runs=2)
    trace = json.loads(path.read_text())
    validate_trace(trace)
    calls = [e for e in trace["traceEvents"] if e.get("cat") in ("gemm", "kernel")]
    phase = report.cellfuse["phases"][0]
    assert phase["steps"] == 2 * 11 and phase["runs"] == 2
    # The launches the report counts are the trace's call events, each named as print --fusion.
    assert len(calls) == round(phase["launches_per_step"] * phase["steps"])
    for e in calls:
        assert e["name"].startswith("cf_" if e["cat"] == "kernel" else "gemm %"), e["name"]
    steps = {e["args"]["step"] for e in calls if e["args"]["step"] >= 0}
    assert steps == set(range(11))
    compile_names = {e["name"] for e in trace["traceEvents"] if e.get("cat") == "compile"}
    # Every stage of compile()'s log ("forward: hoist" when the module compiled for training).
    for stage in ("verify", "hoist", "fuse", "lower to kernel IR", "generate LLVM IR", "LLVM JIT (-O3, native code)"):
        assert any(name == stage or name.endswith(": " + stage) for name in compile_names), (stage, compile_names)
    assert "GEMMs" in str(report) and "summary:" in str(report)
    again = json.loads(report.to_json())
    assert again["cellfuse"]["summary"] == report.cellfuse["summary"]


def test_eager_column_counts_what_torch_profiler_counts():
    torch.manual_seed(0)
    cell = Elman(4, 6)
    x0, h0 = torch.randn(2, 4), torch.randn(2, 6)
    X = torch.randn(7, 2, 4)
    report = cellfuse.profile(cell, (x0, h0), X, compare="eager", runs=2)
    eager = report.columns["eager"]
    # By hand: linear, linear, add, tanh per step; once per loop, `for x in X` (aten::unbind) and
    # torch.stack of the outputs.
    assert eager["ops_per_step"] == pytest.approx(4 + 2 / 7)
    # And as torch.profiler itself sees the same loop, counted here without cellfuse's helper.
    h = torch.zeros(2, 6)
    with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        outs = []
        for x in X:
            h = cell(x, h)
            outs.append(h)
        torch.stack(outs)
    top = [e for e in prof.events() if e.name.startswith("aten::")
           and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))]
    assert len(top) == 7 * 4 + 2
    assert torch_op_counts(prof.events())["ops"] == len(top)
    ours = report.columns["cellfuse"]
    assert ours["ops_per_step"] > 0 and ours["launches_per_step"] > 0 and ours["total_ms"] > 0
    assert eager["launches_per_step"] >= eager["ops_per_step"] - 1e-9  # linear = t + addmm on the CPU
    text = str(report)
    assert "side by side" in text and "ops dispatched per step" in text and "this much faster" in text


def test_training_profile_has_both_passes_and_compare_torch_compile():
    cell = Elman(3, 5)
    x0, h0 = torch.randn(2, 3), torch.randn(2, 5)
    X = torch.randn(6, 2, 3)
    report = cellfuse.profile(cell, (x0, h0), X, compare="torch.compile", backward=True, runs=1)
    assert [p["phase"] for p in report.cellfuse["phases"]] == ["forward", "backward"]
    assert report.cellfuse["phases"][1]["kernels_per_step"] >= 1
    column = report.columns["torch.compile"]
    # torch.compile runs here or says why not: never a silent empty column.
    assert "error" in column or column["total_ms"] > 0


def test_png_and_its_message_without_matplotlib(tmp_path, monkeypatch):
    cell = Elman(3, 5)
    x0, h0 = torch.randn(2, 3), torch.randn(2, 5)
    X = torch.randn(5, 2, 3)
    png = tmp_path / "split.png"
    report = cellfuse.profile(cell, (x0, h0), X, compare="eager", png=str(png), runs=1)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)
    with pytest.raises(cellfuse.CellfuseError, match="matplotlib"):
        report.save_png(str(tmp_path / "other.png"))


def test_command_line_profile_writes_trace_json_and_png(tmp_path, capfd):
    trace, report, png = tmp_path / "t.json", tmp_path / "r.json", tmp_path / "p.png"
    status = _cli.main(["profile", "lnlstm:6,8", "--seq", "5", "--batch", "3", "--runs", "2", "--trace", str(trace),
                        "--json", str(report), "--png", str(png)])
    out = capfd.readouterr().out
    assert status == 0, out
    assert "launches per step" in out and "summary:" in out
    validate_trace(json.loads(trace.read_text()))
    data = json.loads(report.read_text())
    assert data["phases"][0]["steps"] == 10 and data["cache_misses"] + data["cache_hits"] >= 1
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_profiler_is_off_by_default_and_bad_calls_say_why():
    cell = Elman(3, 4)
    x0, h0 = torch.randn(2, 3), torch.randn(2, 4)
    with pytest.raises(cellfuse.CellfuseError, match="compare must be"):
        cellfuse.profile(cell, (x0, h0), torch.randn(3, 2, 3), compare="jax")
    with pytest.raises(cellfuse.CellfuseError, match="cellfuse.profile"):
        cellfuse.profile(cell, torch.randn(3, 2, 3))
    rnn = cellfuse.compile(cell, (x0, h0))
    with pytest.raises(cellfuse.CellfuseError, match="your own cell"):
        cellfuse.profile(rnn, torch.randn(3, 2, 3), compare="eager")
    # Two profilers at once are refused; none is left on after a profile.
    p = cellfuse._C.Profiler()
    with pytest.raises(ValueError, match="already on"):
        cellfuse._C.Profiler()
    p.stop()
    q = cellfuse._C.Profiler()
    q.stop()


def test_machine_ceilings_are_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLFUSE_CACHE_DIR", str(tmp_path))
    first = cellfuse._C.machine_ceilings("cpu")
    second = cellfuse._C.machine_ceilings("cpu")
    assert first["gflops"] > 0 and first["gbytes_per_s"] > 0
    assert not first["from_cache"] and second["from_cache"]
    assert os.path.dirname(second["cache_file"]) == str(tmp_path)
