"""`mta-ablate ARGS` inside the test process: the same `main` the console script calls, without the ~10 s of
interpreter start-up and imports a fresh process pays. Sweep workers are still processes of their own.

Tests of what only a separate process shows (signals to the launcher, `kill -9`, exit codes of the real console
entry) start one instead."""

import contextlib
import io
import subprocess

from mta_ablate.cli import main


def cli(*args) -> subprocess.CompletedProcess:
    """Run the command line in this process; its exit code, stdout and stderr, as `subprocess.run` gives them."""
    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code if isinstance(exc.code, int) else 2
    return subprocess.CompletedProcess(["mta-ablate", *argv], code, out.getvalue(), err.getvalue())
