"""`manage.py` commands: `bundle` (inspect and invoke bundles through the sandbox)."""
