#!/usr/bin/env python3
"""Writes two research cells of tests/python/test_research_cells.py, traced from their PyTorch
modules, as .cell text files for the golden tests (tests/cpp/test_golden.cpp reads them, so the
C++ test needs no Python). Run it again when the tracer changes what these cells become:

    PYTHONPATH=<dir with the cellfuse package and its _C module> python3 tests/golden/make_research_cells.py
"""
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))

from cellfuse._capture import capture  # noqa: E402
from test_research_cells import CASES  # noqa: E402

# SRU: an elementwise recurrence with highway output (no recurrent GEMM); mLSTM: a multiplicative
# state path feeding an LSTM (two recurrent products, one feeding the other).
for name in ("sru", "mlstm"):
    make, I, H, pair, has_output = CASES[name]
    torch.manual_seed(0)
    cell = make()
    x = torch.randn(2, I)
    state = (torch.randn(2, H), torch.randn(2, H)) if pair else torch.randn(2, H)
    program = capture(cell, (x, state), has_output=has_output)
    with open(os.path.join(HERE, "cells", name + ".cell"), "w") as f:
        f.write(program.cell.text())
    print("wrote", name)
