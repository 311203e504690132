"""Native (C) sandbox runner: runner.py's protocol and engine behaviour, without Python.

`runner.c` drives QuickJS-NG's C library directly and shares the JavaScript runtime
(`js/dist/runtime.js`) with the Python engine; `launch.py` applies the jail in Python and
execve()s the binary (`build/lightfast-runner`, built by `make setup` from the quickjs-ng
sdist of the installed wheel's version). Unlike runner.py it does not fork a call child per
call: each bundle's zygote runs the calls itself and copies back, after each one, the pages of
its JS heap that the call wrote, from a snapshot taken after the load (runner.c explains how).
The pool uses it by default (LIGHTFAST_SANDBOX_RUNNER=python opts out, see pool.py) and
falls back to the Python runner when the binary is missing.

Measured on the 2-vCPU development VM (weather.getWeather, other load on the machine):
benchmarks/sandbox.py p50 0.23 ms, ~5,000 calls/s through the jailed pool, against 1.84 ms and
947 calls/s when each call was a forked child of the zygote; benchmarks/sandbox_floor.py runner
CPU 0.21 ms per call (was 2.1 ms), of which the restore is ~35 us (~180 of the snapshot's
~2,200 pages are copied back); a weather zygote holds ~8.6 MB of anonymous memory (5.5 MB
before, when every call also had a child of its own). To run the sandbox tests against it:
the default; `LIGHTFAST_SANDBOX_RUNNER=python` for the other.
"""

from __future__ import annotations

from pathlib import Path

BINARY = Path(__file__).resolve().parent / "build" / "lightfast-runner"


def native_runner_available() -> bool:
    """Whether the native runner binary has been built on this machine."""
    return BINARY.is_file() and BINARY.stat().st_mode & 0o111 != 0
