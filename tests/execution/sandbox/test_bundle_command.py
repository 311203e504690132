"""`manage.py bundle inspect|invoke`: JSON on stdout, exit 0 / 2 / other, run as a real process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SAMPLES = ROOT.parent / "shared" / "bundles"


def _bundle_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "bundle", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_inspect_prints_the_manifest() -> None:
    done = _bundle_command("inspect", str(SAMPLES / "weather.mjs"))
    assert done.returncode == 0, done.stderr
    manifest = json.loads(done.stdout)
    assert set(manifest["agents"]["weather"]["tools"]) == {"getWeather", "convertTemperature"}
    assert len(manifest["sha256"]) == 64 and manifest["bytes"] > 0


def test_inspect_of_a_broken_bundle_exits_2_with_a_classified_error() -> None:
    done = _bundle_command("inspect", str(SAMPLES / "hostile" / "syntax-error.mjs"))
    assert done.returncode == 2
    assert json.loads(done.stdout)["error"]["type"] == "syntax_error"


def test_invoke_prints_one_result_object() -> None:
    done = _bundle_command(
        "invoke",
        str(SAMPLES / "weather.mjs"),
        "--agent",
        "weather",
        "--tool",
        "getWeather",
        "--input",
        '{"city": "Paris"}',
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result) == {"ok", "output", "error", "logs", "usage"}
    assert result["ok"] is True and result["output"]["temperature"] == 3 and result["error"] is None


def test_invoke_classified_error_exits_2() -> None:
    done = _bundle_command(
        "invoke",
        str(SAMPLES / "hostile" / "tools.mjs"),
        "--agent",
        "hostile",
        "--tool",
        "infiniteLoop",
        "--timeout",
        "0.5",
    )
    assert done.returncode == 2
    assert json.loads(done.stdout)["error"]["type"] in {"timeout", "cpu_limit"}


def test_invoke_allow_host_never_opens_loopback() -> None:
    done = _bundle_command(
        "invoke",
        str(SAMPLES / "hostile" / "tools.mjs"),
        "--agent",
        "hostile",
        "--tool",
        "fetchLoopback",
        "--allow-host",
        "127.0.0.1",
    )
    assert done.returncode == 2
    error = json.loads(done.stdout)["error"]
    assert error["type"] == "egress_denied" and "loopback" in error["message"]


def test_calls_file_runs_one_line_per_call(tmp_path: Path) -> None:
    calls = tmp_path / "calls.jsonl"
    calls.write_text(
        "\n".join(
            json.dumps(call)
            for call in [
                {"agent": "weather", "tool": "getWeather", "input": {"city": "Oslo"}},
                {"agent": "weather", "tool": "getWeather", "input": {"city": ""}},
                {"agent": "weather", "tool": "convertTemperature", "input": {"value": 0, "from": "celsius"}},
            ]
        )
        + "\n"
    )
    done = _bundle_command("invoke", str(SAMPLES / "weather.mjs"), "--calls", str(calls), "--memory", "32")
    assert done.returncode == 2  # the second call failed with a classified error
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["ok"] for line in lines] == [True, False, True]
    assert lines[1]["error"]["type"] == "invalid_input"
    assert lines[2]["output"] == {"value": 32, "unit": "fahrenheit"}


def test_usage_errors_are_not_exit_2(tmp_path: Path) -> None:
    bad_json = _bundle_command(
        "invoke",
        str(SAMPLES / "weather.mjs"),
        "--agent",
        "weather",
        "--tool",
        "getWeather",
        "--input",
        "{nope",
    )
    assert bad_json.returncode not in (0, 2)
    missing = _bundle_command("inspect", str(tmp_path / "missing.mjs"))
    assert missing.returncode not in (0, 2)
