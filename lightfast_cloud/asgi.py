"""ASGI entry point: Django for HTTP, Channels consumers for websockets."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lightfast_cloud.settings")
django.setup(set_prefix=False)  # what django.core.asgi.get_asgi_application does first

from channels.routing import ProtocolTypeRouter  # noqa: E402
from django.conf import settings  # noqa: E402

from lightfast_cloud.asgi_handler import PooledThreadASGIHandler  # noqa: E402

django_asgi_app = PooledThreadASGIHandler(threads=settings.LIGHTFAST_WEB_THREADS)

from execution import routing as execution_routing  # noqa: E402
from lightfast_cloud.asgi_limits import BodySizeLimit  # noqa: E402

websocket_urlpatterns: list = [*execution_routing.websocket_urlpatterns]

application = ProtocolTypeRouter(
    {
        "http": BodySizeLimit(django_asgi_app, limit_bytes=settings.LIGHTFAST_MAX_REQUEST_BYTES),
        # Origins are checked per credential (only cookie sessions need it): see execution.ws_auth.
        "websocket": execution_routing.websocket_application(websocket_urlpatterns),
    }
)

# Import every view now (Django loads the URLconf at the first request), then freeze what
# start-up built out of the garbage collector's scans (lightfast_cloud.gc_freeze).
from django.urls import get_resolver  # noqa: E402

from lightfast_cloud.gc_freeze import freeze_startup_objects  # noqa: E402

get_resolver().url_patterns  # noqa: B018 - imports the URLconf and every view module
freeze_startup_objects("web")
