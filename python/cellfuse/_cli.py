"""The ``cellfuse`` command of the pip package: the C++ command line, run in this process."""
import sys


def main(argv=None):
    """Runs ``cellfuse ARGS...`` (the same commands as the C++ build's binary); returns its status.

    ``argv`` defaults to ``sys.argv[1:]``. The installed ``cellfuse`` script and
    ``python -m cellfuse`` call this.

    >>> from cellfuse._cli import main
    >>> main(["run", "elman:3,4", "--seq", "2", "--batch", "1", "--target", "ref"])
    0
    """
    from . import _C

    args = sys.argv[1:] if argv is None else list(argv)
    if args and args[0] == "profile" and "--png" in args:
        return _profile_with_png(args)
    sys.stdout.flush()
    sys.stderr.flush()
    return _C.cli_main(["cellfuse", *args])


def _profile_with_png(args):
    """`cellfuse profile ... --png FILE`: the C++ command writes the report as JSON (to --json, or
    a temporary file), then matplotlib draws it (python/cellfuse/plot_profile.py)."""
    import json
    import os
    import tempfile

    from . import _C
    from ._errors import CellfuseError
    from .plot_profile import plot

    at = args.index("--png")
    if at + 1 >= len(args):
        print("cellfuse: error: --png needs a value", file=sys.stderr)
        return 2
    png = args[at + 1]
    rest = args[:at] + args[at + 2:]
    temporary = None
    if "--json" not in rest:
        fd, temporary = tempfile.mkstemp(suffix=".json")
        os.close(fd)
        rest += ["--json", temporary]
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        status = _C.cli_main(["cellfuse", *rest])
        if status != 0:
            return status
        with open(rest[rest.index("--json") + 1]) as f:
            report = json.load(f)
        try:
            plot(report, png)
        except CellfuseError as e:
            print(f"cellfuse: error: {e}", file=sys.stderr)
            return 2
        print(f"picture: {png}")
        return 0
    finally:
        if temporary:
            os.unlink(temporary)
