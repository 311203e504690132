"""`manage.py bundle inspect FILE` and `manage.py bundle invoke FILE ...`: a bundle through the sandbox."""

from __future__ import annotations

import json
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from execution.sandbox import api
from execution.sandbox.egress import EgressPolicy
from execution.sandbox.errors import SandboxError
from execution.sandbox.limits import Limits
from execution.sandbox.transform import transform

CLASSIFIED_ERROR_EXIT = 2


class Command(BaseCommand):
    help = "Inspect a Lightfast bundle or invoke its tools in the sandbox; prints JSON."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        inspect = sub.add_parser("inspect", help="print the bundle's manifest")
        inspect.add_argument("file")
        inspect.add_argument("--backend", default=None)
        invoke = sub.add_parser("invoke", help="run one tool call (or one per line of --calls)")
        invoke.add_argument("file")
        invoke.add_argument("--agent")
        invoke.add_argument("--tool")
        invoke.add_argument("--input", default="{}", help="the tool input as JSON")
        invoke.add_argument(
            "--allow-host",
            action="append",
            default=[],
            dest="allow_hosts",
            help="allow fetch to this host (exact or *.domain); repeatable",
        )
        invoke.add_argument("--timeout", type=float, default=None, help="wall limit per call, seconds")
        invoke.add_argument("--memory", type=int, default=None, help="memory limit per call, MB")
        invoke.add_argument("--backend", default=None)
        invoke.add_argument("--calls", default=None, help="JSON lines file of {agent, tool, input}")

    def handle(self, *args: Any, **options: Any) -> None:
        """Dispatch to inspect or invoke; exit 2 on a classified error."""
        try:
            data = Path(options["file"]).read_bytes()
            bundle = transform(data)
        except OSError as exc:
            raise CommandError(f"cannot read {options['file']}: {exc}") from exc
        except SandboxError as exc:
            self._emit({"ok": False, "error": exc.to_dict()})
            sys.exit(CLASSIFIED_ERROR_EXIT)
        if options["action"] == "inspect":
            self._inspect(bundle, options, data)
        else:
            self._invoke(bundle, options)

    def _emit(self, payload: dict[str, Any]) -> None:
        self.stdout.write(json.dumps(payload, ensure_ascii=False))

    def _inspect(self, bundle: Any, options: dict[str, Any], data: bytes) -> None:
        try:
            manifest = api.introspect(bundle, backend=options["backend"], upload=lambda: data)
        except SandboxError as exc:
            self._emit({"ok": False, "error": exc.to_dict()})
            sys.exit(CLASSIFIED_ERROR_EXIT)
        self._emit(manifest)

    def _invoke(self, bundle: Any, options: dict[str, Any]) -> None:
        calls = self._calls(options)
        limit_values: dict[str, int] = {}
        if options["timeout"] is not None:
            limit_values["wall_ms"] = max(1, int(options["timeout"] * 1000))
        if options["memory"] is not None:
            limit_values["memory_mb"] = options["memory"]
        try:
            limits = Limits(**limit_values)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        egress = EgressPolicy(allow_hosts=list(options["allow_hosts"]))
        session = f"cli-{uuid.uuid4()}"
        failed = False
        for call in calls:
            result = api.invoke(
                bundle,
                agent=call["agent"],
                tool=call["tool"],
                input=call.get("input"),
                context={"sessionId": session, "resourceId": "cli"},
                env={},
                egress=egress,
                limits=limits,
                bundle_key=f"cli:{bundle.sha256}",
                cancel=threading.Event(),
                backend=options["backend"],
            )
            failed = failed or not result.ok
            self._emit(result.to_dict())
        if failed:
            sys.exit(CLASSIFIED_ERROR_EXIT)

    @staticmethod
    def _calls(options: dict[str, Any]) -> list[dict[str, Any]]:
        if options["calls"]:
            calls = []
            try:
                # JSON lines end at "\n" only: str.splitlines() would also split at U+2028, U+2029,
                # U+0085 and others, which JSON strings may hold raw (a "\r\n" end is JSON whitespace).
                lines = Path(options["calls"]).read_text(encoding="utf-8").split("\n")
            except OSError as exc:
                raise CommandError(f"cannot read {options['calls']}: {exc}") from exc
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    call = json.loads(line)
                except ValueError as exc:
                    raise CommandError(f"{options['calls']}:{number}: not JSON: {exc}") from exc
                if not isinstance(call, dict) or not {"agent", "tool"} <= set(call):
                    raise CommandError(f'{options["calls"]}:{number}: needs "agent" and "tool"')
                calls.append(call)
            return calls
        if not options["agent"] or not options["tool"]:
            raise CommandError("invoke needs --agent and --tool (or --calls FILE.jsonl)")
        try:
            payload = json.loads(options["input"])
        except ValueError as exc:
            raise CommandError(f"--input is not JSON: {exc}") from exc
        return [{"agent": options["agent"], "tool": options["tool"], "input": payload}]
