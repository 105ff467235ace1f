"""cellfuse.profile on CUDA tensors (run on a GPU machine by tests/gpu/run_python_gpu_tests.sh;
without a GPU every test here is reported as skipped, none passes): every GEMM and kernel launch
has its device time from CUDA events on the trace's GPU track, the report is the GPU's, and the
eager column counts CUDA kernels as torch.profiler does."""
import json

import pytest
import torch

import cellfuse
from cellfuse import _cli
from test_profile import CoupledLSTM, Elman, validate_trace

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("batch", [1, 8, 64])
def test_gpu_trace_has_a_device_event_per_launch(tmp_path, batch):
    cell = CoupledLSTM(32, 64).cuda()
    x0, h0 = torch.randn(batch, 32, device="cuda"), torch.randn(batch, 64, device="cuda")
    rnn = cellfuse.compile(cell, (x0, (h0, h0.clone())))
    X = torch.randn(40, batch, 32, device="cuda")
    path = tmp_path / "t.json"
    report = cellfuse.profile(rnn, X, trace=str(path), runs=2)
    trace = json.loads(path.read_text())
    tracks = validate_trace(trace)
    host = [e for e in trace["traceEvents"] if e.get("cat") in ("gemm", "kernel")]
    device = [e for e in trace["traceEvents"] if e.get("cat") in ("gpu gemm", "gpu kernel")]
    assert len(host) == len(device) > 0
    assert any(pid == 2 for pid, _ in tracks), "no GPU track"
    assert sorted(e["name"] for e in host) == sorted(e["name"] for e in device)
    assert report.cellfuse["target"] == "cuda"
    phase = report.cellfuse["phases"][0]
    assert phase["device_us_per_step"] > 0 and phase["steps"] == 80
    assert report.cellfuse["machine"]["gflops"] > 100  # a GPU's SGEMM, measured
    # The profiled run computed what an unprofiled one does.
    with torch.no_grad():
        a, _ = rnn(X)
        cellfuse.profile(rnn, X, runs=1)
        b, _ = rnn(X)
    assert torch.equal(a, b)


def test_gpu_eager_side_by_side_and_training():
    cell = Elman(24, 48).cuda()
    x0, h0 = torch.randn(4, 24, device="cuda"), torch.randn(4, 48, device="cuda")
    X = torch.randn(30, 4, 24, device="cuda")
    report = cellfuse.profile(cell, (x0, h0), X, compare="eager", backward=True, runs=2)
    eager = report.columns["eager"]
    assert eager["launches_per_step"] >= 3  # two products, an add, a tanh: kernels on the GPU
    assert eager["device_us_per_step"] > 0
    assert [p["phase"] for p in report.cellfuse["phases"]] == ["forward", "backward"]
    print(report)


def test_gpu_command_line(tmp_path, capfd):
    trace = tmp_path / "t.json"
    status = _cli.main(["profile", "lstm:128", "--seq", "50", "--batch", "16", "--target", "cuda", "--backward",
                        "--trace", str(trace)])
    out = capfd.readouterr().out
    assert status == 0, out
    assert "device us per step (CUDA events)" in out
    validate_trace(json.loads(trace.read_text()))
    print(out)
