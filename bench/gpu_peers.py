"""The fastest recurrent layers a user would pick on the GPU, for compare_gpu.py's peer columns:
cuDNN through torch.nn (nn.RNN(tanh) + nn.Linear for the Elman cell with its output layer,
nn.GRU, nn.LSTM) and FlashRNN's fused kernel (`flashrnn` from PyPI, 1.0.8). Each peer is a
function of the workload that returns a callable running the whole layer, input projection
included, and the parameters that receive gradients.

FlashRNN takes the input projection precomputed, Wx [B, T, gates, heads, H], a recurrent weight R
[gates, heads, H, H] and a bias [gates(+1 for GRU), heads, H], and returns (all h [?, B, T, heads,
H], last state). Its cuda_fused backend multiplies with tensor cores: its "float32" is TF32, its
batch is padded to 16 (f32) or 8 (bf16). Two things are set up before its first call here:
its device query (gpu_info.cc) uses cudaDeviceProp fields that CUDA 13 removed, so the four
numbers its tiling search needs come from torch.cuda.get_device_properties instead; and the
random sleep of up to 10 s it takes before loading each extension is removed. Its first call
builds its kernels with nvcc (minutes; cached under TORCH_EXTENSIONS_DIR after that).
"""
import os
import sys
import types

import torch
import torch.nn as nn

GATES = {"lstm": 4, "gru": 3, "elman": 1}


def cudnn_layer(kind, i, h, o, dtype):
    """cuDNN's layer for `kind` (elman_proj: nn.RNN(tanh) then nn.Linear over every step)."""
    dev = torch.device("cuda")
    if kind in ("lstm", "lnlstm"):
        core = nn.LSTM(i, h)
    elif kind == "gru":
        core = nn.GRU(i, h)
    else:
        core = nn.RNN(i, h, nonlinearity="tanh")
    core = core.to(dev, dtype)
    head = nn.Linear(h, o).to(dev, dtype) if kind == "elman_proj" else None

    def run(xs, h0, c0):
        if kind in ("lstm", "lnlstm"):
            return core(xs, (h0[None], c0[None]))
        ys, hT = core(xs, h0[None])
        return (head(ys), hT) if head is not None else (ys, hT)
    params = list(core.parameters()) + (list(head.parameters()) if head is not None else [])
    name = {"lstm": "nn.LSTM", "lnlstm": "nn.LSTM (plain)", "gru": "nn.GRU"}.get(kind, "nn.RNN(tanh)+Linear")
    return name, run, params


_FLASHRNN = None


def _flashrnn():
    """The flashrnn entry point, imported once with the two adjustments above; None when the
    package is not installed."""
    global _FLASHRNN
    if _FLASHRNN is not None:
        return _FLASHRNN or None
    try:
        from flashrnn import flashrnn as entry
    except ImportError:
        _FLASHRNN = False
        return None
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", "/tmp/flashrnn_torch_ext")
    init = sys.modules.get("flashrnn.flashrnn.cuda_init")
    if init is not None and hasattr(init, "random"):
        init.random = types.SimpleNamespace(random=lambda: 0.0)
    module = sys.modules.get("flashrnn.flashrnn.flashrnn")

    def device_info(device_id):
        p = torch.cuda.get_device_properties(device_id)
        return {"name": p.name, "major": p.major, "minor": p.minor, "warpSize": 32,
                "multiProcessorCount": p.multi_processor_count,
                "maxThreadsPerBlock": getattr(p, "max_threads_per_block", 1024) or 1024,
                "regsPerMultiprocessor": getattr(p, "regs_per_multiprocessor", 65536) or 65536,
                "sharedMemPerBlockOptin": getattr(p, "shared_memory_per_block_optin", 232448) or 232448,
                "sharedMemPerMultiprocessor": getattr(p, "shared_memory_per_multiprocessor", 233472) or 233472}
    if module is not None and os.environ.get("FLASHRNN_NATIVE_GPU_INFO", "0") != "1":
        module.get_gpu_info = device_info
    _FLASHRNN = entry
    return entry


def flashrnn_layer(kind, i, h, o, dtype, backend="cuda_fused"):
    """FlashRNN's layer for `kind` (lstm, gru, elman_proj: its Elman cell then an nn.Linear), the
    input projection as one matmul before it; None when flashrnn is not installed or has no such
    cell."""
    entry = _flashrnn()
    cell = {"lstm": "lstm", "gru": "gru", "elman_proj": "elman"}.get(kind)
    if entry is None or cell is None:
        return None
    dev = torch.device("cuda")
    g = GATES[cell]
    torch.manual_seed(1)
    w = (torch.randn(g * h, i, device=dev) / i ** 0.5).to(dtype).requires_grad_(True)
    r = (torch.randn(g, 1, h, h, device=dev) / h ** 0.5).to(dtype).requires_grad_(True)
    b = (torch.randn(g + (1 if cell == "gru" else 0), 1, h, device=dev) * 0.1).to(dtype).requires_grad_(True)
    head = nn.Linear(h, o).to(dev, dtype) if kind == "elman_proj" else None
    name = {torch.float32: "float32", torch.bfloat16: "bfloat16"}[dtype]

    def run(xs, h0, c0):  # xs [T, B, I] like the others; FlashRNN's batch comes first
        xb = xs.transpose(0, 1)
        wx = torch.matmul(xb, w.t()).view(xb.shape[0], xb.shape[1], g, 1, h)
        out, last = entry(wx, r, b, function=cell, backend=backend, dtype=name)
        ys = out[0, :, :, 0, :]
        return (head(ys), last) if head is not None else (ys, last)
    params = [w, r, b] + (list(head.parameters()) if head is not None else [])
    return f"FlashRNN {backend}" + (" (TF32)" if dtype == torch.float32 else ""), run, params
