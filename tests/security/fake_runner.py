"""A runner that lies: started by the real pool in place of the jailed runner, it answers the first
invoke with forged frames from a scenario file, then (as its replacement) answers honestly.

Run as `python tests/security/fake_runner.py SCENARIO.json` (the pool's own arguments follow and
are ignored). The scenario: {"frames": [{"kind": "payload" (framed with the
call id filled in for "$ID") or "raw" (sent as is), "bytes": base64}],
"marker": path created once the forgery was sent, "pids": file each runner appends its pid to}.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from execution.sandbox.protocol import PeerClosed, read_frame, write_frame  # noqa: E402

LAYERS = {name: "on" for name in ("seccomp", "rlimits", "netns", "drop_uid", "close_fds", "clear_env")}


def main(scenario_path: str) -> None:
    scenario = json.loads(Path(scenario_path).read_text())
    with open(scenario["pids"], "a") as pids:
        pids.write(f"{os.getpid()}\n")
    write_frame(
        1, {"type": "log", "level": "info", "message": "ready", "detail": {"layers": LAYERS, "engine": "ok"}}
    )
    marker = Path(scenario["marker"])
    while True:
        try:
            frame = read_frame(0)
        except PeerClosed:
            return
        call_id = frame.get("id")
        if frame["type"] == "load":
            write_frame(1, {"type": "result", "id": call_id, "ok": True, "cached": False})
        elif frame["type"] == "invoke" and not marker.exists():
            marker.touch()
            for item in scenario["frames"]:
                data = base64.b64decode(item["bytes"])
                if item["kind"] == "payload":  # framed here, after the call id is known
                    data = data.replace(b'"$ID"', str(call_id).encode())
                    data = struct.pack(">I", len(data)) + data
                view = memoryview(data)
                while view:
                    view = view[os.write(1, view) :]
        elif frame["type"] == "invoke":
            usage = {"cpu_ms": 1, "wall_ms": 1, "peak_memory_bytes": 0, "fetches": 0}
            write_frame(
                1,
                {
                    "type": "result",
                    "id": call_id,
                    "ok": True,
                    "output": {"honest": True},
                    "logs": [],
                    "usage": usage,
                },
            )


if __name__ == "__main__":
    main(sys.argv[1])
