"""Native (C) sandbox runner: runner.py's protocol, process tree and engine behaviour, without Python.

`runner.c` drives QuickJS-NG's C library directly and shares the JavaScript runtime
(`js/dist/runtime.js`) with the Python engine; `launch.py` applies the jail in Python and
execve()s the binary (`build/lightfast-runner`, built by `make setup` from the quickjs-ng
sdist of the installed wheel's version). A call child forked from this zygote carries only
the JS heap, so fork, exit and copy-on-write cost a fraction of the Python zygote's.
The pool chooses it with LIGHTFAST_SANDBOX_RUNNER (see pool.py) and falls back to the
Python runner when the binary is missing.
"""

from __future__ import annotations

from pathlib import Path

BINARY = Path(__file__).resolve().parent / "build" / "lightfast-runner"


def native_runner_available() -> bool:
    """Whether the native runner binary has been built on this machine."""
    return BINARY.is_file() and BINARY.stat().st_mode & 0o111 != 0
