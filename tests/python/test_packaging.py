"""The package as a user gets it from `pip install .` or the wheel (tests/run_all.sh installs the
repaired manylinux wheel into a fresh venv and runs these there): the `cellfuse` command, `python
-m cellfuse`, the README's commands, the bench scripts without PYTHONPATH, the docstrings, and a
native module that needs no system LLVM or OpenBLAS."""
import doctest
import os
import pathlib
import pydoc
import re
import shutil
import subprocess
import sys
import sysconfig

import pytest

import cellfuse

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPTS = pathlib.Path(sysconfig.get_path("scripts"))
INSTALLED = pathlib.Path(cellfuse.__file__).resolve().is_relative_to(pathlib.Path(sys.prefix).resolve())
needs_install = pytest.mark.skipif(not INSTALLED, reason="cellfuse is not installed in this Python (run_all.sh installs it)")


def clean_env():
    """The environment of a user's shell: no PYTHONPATH, the venv's scripts first on PATH."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{SCRIPTS}{os.pathsep}{env.get('PATH', '')}"
    return env


def run(args, cwd=None, **kw):
    return subprocess.run(args, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=600, **kw)


@needs_install
def test_cellfuse_command_is_on_path_and_is_the_cpp_cli():
    exe = shutil.which("cellfuse", path=clean_env()["PATH"])
    assert exe is not None and pathlib.Path(exe).parent == SCRIPTS
    r = run([exe, "--help"])
    assert r.returncode == 0, r.stderr
    assert "cellfuse run CELL --seq T --batch B" in r.stdout and "cellfuse print --fusion" in r.stdout
    # `run` defaults to the compiled target, agrees with the reference interpreter.
    fast = run([exe, "run", "gru:5,7", "--seq", "6", "--batch", "3", "--seed", "2"])
    ref = run([exe, "run", "gru:5,7", "--seq", "6", "--batch", "3", "--seed", "2", "--target", "ref"])
    assert fast.returncode == 0 and ref.returncode == 0, fast.stderr + ref.stderr
    assert "target=ref" not in fast.stdout and "target=ref" in ref.stdout
    a, b = (float(re.search(r"checksum: (\S+)", r.stdout).group(1)) for r in (fast, ref))
    assert abs(a - b) <= 1e-4 * max(1.0, abs(b))


@needs_install
def test_cli_errors_exit_2_with_the_message():
    r = run([str(SCRIPTS / "cellfuse"), "run", "lstm:0", "--seq", "2", "--batch", "2"])
    assert r.returncode == 2
    assert "cellfuse: error:" in r.stderr and "'0'" in r.stderr


@needs_install
def test_python_m_cellfuse():
    r = run([sys.executable, "-m", "cellfuse", "--help"], cwd=ROOT / "tests")
    assert r.returncode == 0, r.stderr
    assert "cellfuse run CELL" in r.stdout
    r = run([sys.executable, "-m", "cellfuse", "frobnicate", "lstm"], cwd=ROOT / "tests")
    assert r.returncode == 2 and "cellfuse: error: unknown command 'frobnicate'" in r.stderr, r.stderr


def readme_commands():
    """The commands of the README's shell blocks that run cellfuse's command line (`./build/cellfuse
    ...` included: the pip package's `cellfuse` is the same program). The blocks' other commands
    (quickstart.sh, pip wheel, auditwheel, cmake --install, ...) are what tests/run_all.sh itself
    runs."""
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.splitlines():
            for part in line.split("  #")[0].split("&&"):
                part = part.strip()
                if re.match(r"(\./build/)?cellfuse |python3? -m cellfuse", part):
                    commands.append(re.sub(r"^\./build/cellfuse ", "cellfuse ", part))
    return commands


@needs_install
def test_readme_cli_commands_run():
    commands = readme_commands()
    assert commands, "no cellfuse command found in the README's shell blocks"
    for line in commands:
        r = run(line, cwd=ROOT, shell=True)
        assert r.returncode == 0, f"{line}\n{r.stdout}\n{r.stderr}"
        if " run " in f" {line} ":
            assert "checksum:" in r.stdout, r.stdout


BENCH = sorted(p for p in (ROOT / "bench").glob("*.py") if "__main__" in p.read_text())  # not bench_common.py


@needs_install
@pytest.mark.parametrize("script", BENCH, ids=[p.name for p in BENCH])
def test_bench_script_starts_from_a_clean_shell(script, tmp_path):
    r = run([sys.executable, str(script), "--help"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "usage:" in r.stdout


@needs_install
def test_bench_paired_cpu_runs_from_a_clean_shell(tmp_path):
    out = tmp_path / "table.md"
    r = run([sys.executable, str(ROOT / "bench" / "paired_cpu.py"), "--only", "W1", "--runs", "1",
             "--settle-ms", "0", "--out", str(out)], cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "W1" in out.read_text()


PUBLIC = [getattr(cellfuse, name) for name in cellfuse.__all__ if callable(getattr(cellfuse, name))]


@pytest.mark.parametrize("obj", PUBLIC, ids=[o.__name__ for o in PUBLIC])
def test_public_docstrings_have_examples_that_run(obj):
    """Every public function and class shows an example in help() (the native module's too, which
    pytest --doctest-modules does not collect), and the example runs as written."""
    assert ">>> " in pydoc.render_doc(obj, renderer=pydoc.plaintext), f"help({obj.__name__}) shows no example"
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tried = 0
    for test in finder.find(obj, f"cellfuse.{obj.__name__}", globs={"cellfuse": cellfuse}):
        result = runner.run(test)
        assert result.failed == 0, f"{test.name}: {result.failed} example(s) failed"
        tried += result.attempted
    assert tried > 0


def test_help_of_compile_shows_the_example():
    doc = pydoc.render_doc(cellfuse.compile, renderer=pydoc.plaintext)
    assert "cellfuse.compile(" in doc and ">>> " in doc


@pytest.mark.skipif(not os.environ.get("CELLFUSE_WHEEL"), reason="set by run_all.sh after auditwheel repair")
def test_wheel_needs_no_system_llvm_or_openblas():
    module = pathlib.Path(cellfuse._C.__file__)
    assert module.resolve().is_relative_to(pathlib.Path(sys.prefix).resolve())
    ldd = subprocess.run(["ldd", str(module)], capture_output=True, text=True, check=True).stdout
    for line in ldd.splitlines():
        if re.search(r"libLLVM|libopenblas|libblas|liblapack|libz3|libgfortran", line):
            # Only a copy inside the wheel (auditwheel's cellfuse.libs) would be acceptable.
            assert str(pathlib.Path(sys.prefix).resolve()) in line, f"system library needed: {line.strip()}"
    show = subprocess.run([str(SCRIPTS / "auditwheel"), "show", os.environ["CELLFUSE_WHEEL"]],
                          capture_output=True, text=True, check=True).stdout
    assert re.search(r"manylinux_\d+_\d+_x86_64", show), show
