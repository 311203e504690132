"""`manage.py lightfast up`: run the embedded stack (see lightfast_cloud.launcher)."""

from __future__ import annotations

import os
from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from lightfast_cloud.launcher import Launcher


class Command(BaseCommand):
    help = "Run Lightfast Cloud on its embedded defaults: private redis, web and Celery worker processes."

    def add_arguments(self, parser: ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        up = sub.add_parser("up", help="start everything; Ctrl-C stops it")
        up.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        up.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        up.add_argument("--no-demo", action="store_true", help="do not create the demo organization")

    def handle(self, *args: Any, **options: Any) -> None:
        launcher = Launcher(data_dir=settings.DATA_DIR, host=options["host"], port=options["port"])

        def prepare() -> None:
            call_command("migrate", interactive=False, verbosity=0)
            self.stdout.write("Database is up to date.")
            if not options["no_demo"]:
                from lightfast_cloud.demo import demo_ensure  # noqa: PLC0415 - needs migrated apps

                for line in demo_ensure():
                    self.stdout.write(line)
            self.stdout.flush()

        status = launcher.run(prepare)
        if status:
            raise CommandError("a process of the stack exited unexpectedly (see its output above)")
