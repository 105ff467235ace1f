#!/usr/bin/env python3
"""The f32 GEMM ceiling of this CPU: the products W2/W3 spend their time in, through OpenBLAS (what
cellfuse's CPU backend calls) and through PyTorch's BLAS (MKL in the PyPI wheels), 1 and 2 threads,
best of 15 runs, alternating between the two so that machine drift falls on both.

    python3 bench/gemm_ceiling.py [--runs 15]

The shapes (row-major, m x k times k x n): the hoisted input product of W2 (T*B = 6400 rows), the
recurrent product of one step (64 rows, forward: h W_hh^T; backward: dG W_hh), and a parameter
gradient over all rows (dW = dG^T h). With the FLOPs of each workload this gives the time below
which no cellfuse run can go while its GEMMs run at the library's rate.
"""
import argparse
import ctypes
import ctypes.util
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import best_ms  # noqa: E402

SHAPES = [  # (what, m, k, n, transposed B)
    ("W2 input product (T*B rows)", 6400, 512, 2048, True),
    ("W2 recurrent product, one step", 64, 512, 2048, True),
    ("W2 backward recurrent product, one step", 64, 2048, 512, False),
    ("W2 parameter gradient (T*B rows)", 2048, 6400, 512, False),
]


def openblas():
    for name in ("openblas", "openblas64"):
        path = ctypes.util.find_library(name)
        if path:
            lib = ctypes.CDLL(path)
            lib.cblas_sgemm.argtypes = [ctypes.c_int] * 6 + [ctypes.c_float, ctypes.c_void_p, ctypes.c_int,
                                                             ctypes.c_void_p, ctypes.c_int, ctypes.c_float,
                                                             ctypes.c_void_p, ctypes.c_int]
            return lib
    raise SystemExit("OpenBLAS not found (apt-get install libopenblas-dev)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="timed runs of each product (the best is kept)")
    args = parser.parse_args()
    lib = openblas()
    rng = np.random.default_rng(0)
    print("| product | m x k x n | threads | OpenBLAS ms | GFLOP/s | PyTorch (MKL) ms | GFLOP/s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for what, m, k, n, bt in SHAPES:
        a = rng.uniform(-1, 1, (m, k)).astype(np.float32)
        b = rng.uniform(-1, 1, (n, k) if bt else (k, n)).astype(np.float32)
        out = np.empty((m, n), np.float32)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        for threads in (1, 2):
            lib.openblas_set_num_threads(threads)
            torch.set_num_threads(threads)

            def ob():
                lib.cblas_sgemm(101, 111, 112 if bt else 111, m, n, k, 1.0, a.ctypes.data, k, b.ctypes.data,
                                k if bt else n, 0.0, out.ctypes.data, n)

            def tm():
                torch.mm(ta, tb.t() if bt else tb)
            o1, t1, o2, t2 = (best_ms(f, args.runs) for f in (ob, tm, ob, tm))
            o, t = min(o1, o2), min(t1, t2)
            flop = 2.0 * m * k * n
            print(f"| {what} | {m} x {k} x {n} | {threads} | {o:.2f} | {flop / o / 1e6:.0f} | {t:.2f} | {flop / t / 1e6:.0f} |")


if __name__ == "__main__":
    main()
