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
    sys.stdout.flush()
    sys.stderr.flush()
    return _C.cli_main(["cellfuse", *args])
