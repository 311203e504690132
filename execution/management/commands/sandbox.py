"""`manage.py sandbox build-image|status|cleanup`: the Docker sandbox backend's image and containers."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from execution.sandbox.errors import SandboxError


class Command(BaseCommand):
    help = "Build the sandbox runner image, show sandbox status, or remove orphaned sandbox containers."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        build = sub.add_parser("build-image", help="build the runner image and print its id")
        build.add_argument(
            "--method",
            choices=["auto", "dockerfile", "offline"],
            default="auto",
            help="auto: the Dockerfile when its base image can be had, else an offline rootfs import",
        )
        build.add_argument("--tag", default=None, help="image tag (default LIGHTFAST_SANDBOX_DOCKER_IMAGE)")
        status = sub.add_parser("status", help="print the configured backend's status as JSON")
        status.add_argument("--backend", default=None)
        cleanup = sub.add_parser("cleanup", help="remove sandbox containers whose owning process is gone")
        cleanup.add_argument("--all", action="store_true", help="remove every container of this platform")

    def handle(self, *args: Any, **options: Any) -> None:
        """Dispatch to the chosen action."""
        try:
            if options["action"] == "build-image":
                self._build(options)
            elif options["action"] == "status":
                from execution.sandbox.api import sandbox_status

                self.stdout.write(json.dumps(sandbox_status(options["backend"]), default=str))
            else:
                self._cleanup(everything=options["all"])
        except SandboxError as exc:
            raise CommandError(exc.message) from exc

    def _build(self, options: dict[str, Any]) -> None:
        from execution.sandbox.docker_backend import DockerConfig, docker_client
        from execution.sandbox.image.rootfs import ImageBuildError, image_build

        client = docker_client(timeout=600)
        tag = options["tag"] or DockerConfig().image
        try:
            image_id, method = image_build(client=client, tag=tag, method=options["method"])
        except ImageBuildError as exc:
            raise CommandError(str(exc)) from exc
        self.stderr.write(f"built {tag} ({method})")
        self.stdout.write(image_id)

    def _cleanup(self, *, everything: bool) -> None:
        from execution.sandbox.docker_backend import DockerBackend, DockerConfig

        # reap_interval keeps this short-lived backend's reaper thread from doing anything.
        backend = DockerBackend(DockerConfig(reap_interval_s=3600))
        try:
            removed = backend.cleanup_orphans(everything=everything)
        finally:
            backend.shutdown()
        self.stdout.write(json.dumps({"removed": removed}))
