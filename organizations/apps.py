from django.apps import AppConfig


class OrganizationsConfig(AppConfig):
    name = "organizations"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Connect the signal receivers (a revoked credential tells its live connections)."""
        from organizations import receivers  # noqa: F401 - importing connects them
