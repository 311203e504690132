from django.apps import AppConfig


class ExecutionConfig(AppConfig):
    name = "execution"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Connect the signal receivers (quarantined versions stop their runs)."""
        from execution import receivers  # noqa: F401 - importing connects them
