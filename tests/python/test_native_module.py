"""The native module in a process it shares with PyTorch: it exports nothing but its entry point
(no symbol of ours or of the C++ library's templates for the dynamic loader to bind across
libraries), keeps pybind11 internals of its own, and imports in either order with torch, whose
operator lookups (torch.ops, the path that crashed on a GPU machine with cellfuse's module
loaded first) then work."""
import shutil
import subprocess
import sys

from cellfuse import _C


def test_pybind11_internals_are_cellfuse_own():
    assert "_cellfuse" in _C._pybind11_internals_id


def test_only_the_entry_point_and_llvm_are_exported():
    nm = shutil.which("nm")
    assert nm is not None, "binutils' nm is needed to read the module's dynamic symbols"
    out = subprocess.run([nm, "-D", "--defined-only", "-C", _C.__file__], capture_output=True, text=True, check=True).stdout
    # "address type name"; a lower-case type is a local symbol (some stay listed in .dynsym)
    rows = [line.split(maxsplit=2) for line in out.splitlines()]
    names = [r[2] for r in rows if len(r) == 3 and r[1].isupper()]
    assert "PyInit__C" in names
    others = [n for n in names if n != "PyInit__C" and not n.startswith("llvm::")]
    assert others == [], f"exported besides PyInit__C and LLVM's: {others[:10]}"


def _run(code):
    return subprocess.run([sys.executable, "-X", "faulthandler", "-c", code], capture_output=True, text=True, timeout=300)


def test_imports_in_either_order_with_torch():
    body = ("import torch, cellfuse\n"
            "rnn = cellfuse.compile(lambda x, h: torch.tanh(x + h), (torch.zeros(2, 3), torch.zeros(2, 3)))\n"
            "out, _ = rnn(torch.randn(4, 2, 3))\n"
            "assert torch.ops.aten.add.Tensor(out, out).shape == (4, 2, 3)\n"
            "assert torch.ops.cellfuse.sequence is not None\n"
            "print('ok')\n")
    # The native module loaded before torch (the package itself now imports torch first).
    native_first = ("import importlib.util, sys\n"
                    f"spec = importlib.util.spec_from_file_location('cellfuse._C', {_C.__file__!r})\n"
                    "native = importlib.util.module_from_spec(spec)\n"
                    "spec.loader.exec_module(native)\n"
                    "sys.modules['cellfuse._C'] = native\n"
                    "assert 'torch' not in sys.modules\n")
    for first in (native_first, "import torch\n"):
        r = _run(first + body)
        assert r.returncode == 0 and r.stdout.strip() == "ok", f"{first!r}: {r.returncode}\n{r.stdout}\n{r.stderr}"
