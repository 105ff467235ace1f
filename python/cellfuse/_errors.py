"""The one exception type of cellfuse: bad input, an unsupported op, a cell that cannot compile."""
from ._C import CellfuseError  # noqa: F401  (a ValueError; raised by the native module too)
