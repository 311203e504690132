"""The runner protocol: framing rules, and a real runner process spoken to frame by frame."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from execution.sandbox.jail import JailConfig, JailLayers
from execution.sandbox.pool import resolve_runner, runner_from_env
from execution.sandbox.protocol import (
    MAX_FRAME_BYTES,
    PeerClosed,
    ProtocolError,
    encode_frame,
    read_frame,
    write_frame,
)

ROOT = Path(__file__).resolve().parents[3]


def test_frame_round_trip_over_a_pipe() -> None:
    read_fd, write_fd = os.pipe()
    try:
        frame = {"type": "log", "message": "héllo", "detail": {"n": [1, 2, 3]}}
        write_frame(write_fd, frame)
        assert read_frame(read_fd) == frame
        assert encode_frame(frame)[:4] == struct.pack(">I", len(encode_frame(frame)) - 4)
    finally:
        os.close(read_fd)
        os.close(write_fd)


@pytest.mark.parametrize(
    "raw",
    [
        struct.pack(">I", MAX_FRAME_BYTES + 1),  # too long: refused before reading the body
        struct.pack(">I", 3) + b"\xff\xfe\x00",  # not UTF-8
        struct.pack(">I", 2) + b"[]",  # not an object
        struct.pack(">I", 13) + b'{"type": 123}',  # type not a string
        struct.pack(">I", 10) + b'{"type":',  # closed mid-frame
    ],
)
def test_malformed_frames_are_protocol_errors(raw: bytes) -> None:
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, raw)
        os.close(write_fd)
        write_fd = -1
        with pytest.raises(ProtocolError):
            read_frame(read_fd)
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)


def test_clean_eof_is_peer_closed() -> None:
    read_fd, write_fd = os.pipe()
    os.close(write_fd)
    try:
        with pytest.raises(PeerClosed):
            read_frame(read_fd)
    finally:
        os.close(read_fd)


def test_nan_cannot_be_sent() -> None:
    with pytest.raises(ValueError):
        encode_frame({"type": "result", "output": float("nan")})


@pytest.fixture
def runner() -> Iterator[subprocess.Popen[bytes]]:
    """A runner process without probes, all jail layers that this host allows."""
    layers = (
        JailLayers() if os.geteuid() == 0 else JailLayers.only("rlimits", "seccomp", "close_fds", "clear_env")
    )
    module = (
        "execution.sandbox.native.launch"
        if resolve_runner(runner_from_env()) == "native"
        else "execution.sandbox.runner"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--jail", JailConfig(layers=layers).to_json()],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={},
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _send(proc: subprocess.Popen[bytes], frame: dict[str, object]) -> dict[str, object]:
    assert proc.stdin and proc.stdout
    write_frame(proc.stdin.fileno(), frame)
    return read_frame(proc.stdout.fileno())


def test_runner_says_ready_with_jail_status_first(runner: subprocess.Popen[bytes]) -> None:
    assert runner.stdout
    ready = read_frame(runner.stdout.fileno())
    assert ready["type"] == "log" and ready["message"] == "ready"
    assert set(ready["detail"]["layers"]) >= {"seccomp", "rlimits", "netns", "drop_uid"}


def test_runner_answers_bad_requests_with_classified_errors(runner: subprocess.Popen[bytes]) -> None:
    assert runner.stdout
    read_frame(runner.stdout.fileno())
    unknown = _send(runner, {"type": "reboot", "id": 1})
    assert unknown == {
        "type": "error",
        "id": 1,
        "error": {"type": "sandbox_crash", "message": "unknown frame type 'reboot'", "detail": {}},
    }
    # Probes exist only when the host started the runner with --test-probes.
    probe = _send(runner, {"type": "probe", "id": 2, "probe": "env"})
    assert probe["type"] == "error" and "unknown frame type" in probe["error"]["message"]
    not_loaded = _send(runner, {"type": "invoke", "id": 3, "key": "nope", "agent": "a", "tool": "t"})
    assert not_loaded["type"] == "error" and not_loaded["id"] == 3
    assert not_loaded["error"]["type"] == "sandbox_crash"


def test_runner_ignores_late_frames_and_exits_on_eof(runner: subprocess.Popen[bytes]) -> None:
    assert runner.stdin and runner.stdout
    read_frame(runner.stdout.fileno())
    write_frame(runner.stdin.fileno(), {"type": "cancel", "id": 9})
    write_frame(runner.stdin.fileno(), {"type": "fetch-result", "id": 9, "fetch_id": 1, "result": {}})
    runner.stdin.close()
    assert runner.wait(timeout=10) == 0


def test_runner_serves_interleaved_keys_late_frames_and_introspect(runner: subprocess.Popen[bytes]) -> None:
    # The native runner's zygote reads stdin itself after a call until a frame for another key or
    # of another type comes; every kind of frame must still reach the right process, in order.
    from execution.sandbox.transform import transform

    assert runner.stdout
    read_frame(runner.stdout.fileno())
    weather = transform((ROOT.parent / "shared" / "bundles" / "weather.mjs").read_bytes()).script
    for key in ("a", "b"):
        loaded = _send(
            runner,
            {
                "type": "load",
                "id": f"load-{key}",
                "key": key,
                "script": weather,
                "env": {},
                "filename": "w.js",
                "evict": [],
            },
        )
        assert loaded["ok"] is True, loaded
    call = {"type": "invoke", "agent": "weather", "tool": "getWeather", "context": {"resourceId": "r"}}
    plan = ["a", "a", "b", "late", "b", "a", "introspect", "a", "cached-load", "b", "late", "a"]
    for number, step in enumerate(plan):
        if step == "late":
            assert runner.stdin
            write_frame(runner.stdin.fileno(), {"type": "cancel", "id": number - 1})
            write_frame(
                runner.stdin.fileno(), {"type": "fetch-result", "id": number - 1, "fetch_id": 1, "result": {}}
            )
        elif step == "introspect":
            reply = _send(
                runner, {"type": "introspect", "id": number, "script": weather, "env": {}, "filename": "w.js"}
            )
            assert reply["id"] == number and "weather" in reply["manifest"]["agents"], reply
        elif step == "cached-load":
            reply = _send(
                runner,
                {
                    "type": "load",
                    "id": number,
                    "key": "b",
                    "script": weather,
                    "env": {},
                    "filename": "w.js",
                    "evict": [],
                },
            )
            assert reply == {"type": "result", "id": number, "ok": True, "cached": True}
        else:
            city = f"City{number}"
            reply = _send(runner, {**call, "id": number, "key": step, "input": {"city": city}})
            assert reply["id"] == number and reply["output"]["city"] == city, reply
    evicted = _send(
        runner,
        {
            "type": "load",
            "id": "load-c",
            "key": "c",
            "script": weather,
            "env": {},
            "filename": "w.js",
            "evict": ["a"],
        },
    )
    assert evicted["ok"] is True
    gone = _send(runner, {**call, "id": "after-evict", "key": "a", "input": {"city": "X"}})
    assert gone["type"] == "error" and gone["error"]["type"] == "sandbox_crash", gone
    assert _send(runner, {**call, "id": "c", "key": "c", "input": {"city": "Y"}})["output"]["city"] == "Y"
    assert runner.stdin
    runner.stdin.close()
    assert runner.wait(timeout=10) == 0
