"""Native (C) sandbox runner: runner.py's protocol, process tree and engine behaviour, without Python.

`runner.c` drives QuickJS-NG's C library directly and shares the JavaScript runtime
(`js/dist/runtime.js`) with the Python engine; `launch.py` applies the jail in Python and
execve()s the binary (`build/lightfast-runner`, built by `make setup` from the quickjs-ng
sdist of the installed wheel's version). A call child forked from this zygote carries only
the JS heap, so fork, exit and copy-on-write cost a fraction of the Python zygote's.
The pool uses it by default (LIGHTFAST_SANDBOX_RUNNER=python opts out, see pool.py) and
falls back to the Python runner when the binary is missing.

Measured on the 2-vCPU development VM (benchmarks/sandbox_floor.py, weather.getWeather, with
other load on the machine): key zygote 5.5 MB anonymous memory against 14.4 MB for the Python
zygote; runner CPU per call 2.1 ms against 6.2 ms (about 880 against 310 CPU-bound calls/s
on two cores). What is left is the kernel, not this code: ~300 copy-on-write faults per call
child (QuickJS writes reference counts and reuses free slots all over the shared heap; about
half of all CPU in the runner tree) and the fork's page-table copy (~13%). The issue's targets
(p50 <= 1 ms, >= 2,000 calls/s) are not met yet; fewer pages written per call is the next lever.
To run the sandbox tests against it: the default; `LIGHTFAST_SANDBOX_RUNNER=python` for the other.
"""

from __future__ import annotations

from pathlib import Path

BINARY = Path(__file__).resolve().parent / "build" / "lightfast-runner"


def native_runner_available() -> bool:
    """Whether the native runner binary has been built on this machine."""
    return BINARY.is_file() and BINARY.stat().st_mode & 0o111 != 0
