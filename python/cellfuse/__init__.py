"""cellfuse: compile the recurrent cell you already wrote in PyTorch.

    rnn = cellfuse.compile(MyCell(256, 512), (x0, h0))   # trace one step
    out, state = rnn(X, state0)                           # X: (T, B, 256), the whole sequence native

See cellfuse.compile for layers, directions, variable lengths and options, and docs/USER_GUIDE.md
for the whole API. cellfuse.SUPPORTED_OPS lists what the tracer accepts:

>>> import cellfuse
>>> "sigmoid" in cellfuse.SUPPORTED_OPS and "layer_norm" in cellfuse.SUPPORTED_OPS
True
"""
# PyTorch first, then the extension: on a GPU machine (torch 2.11 with its CUDA libraries, the
# module built with g++ 13) loading _C before torch made `import torch` crash (SIGSEGV in its
# operator registry); libraries that share a process with libtorch load after it.
import torch  # noqa: F401,E402  (import order matters: see above)
from ._C import CellfuseError, cuda_available  # noqa: F401
from ._rnn import RNN, compile  # noqa: F401
from ._generate import Generator  # noqa: F401
from ._lower import SUPPORTED_OPS  # noqa: F401
from ._profile import ProfileReport, profile  # noqa: F401

__all__ = ["compile", "RNN", "Generator", "CellfuseError", "cuda_available", "SUPPORTED_OPS", "profile", "ProfileReport"]
__version__ = "0.1.0"
