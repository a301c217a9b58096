"""ASGI entry point: HTTP through Django, websockets through Channels, and the
inference channel for remote generation workers (``manage.py runworker inference``)."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from chatsite import dbthread  # noqa: E402
from chatsite.reaper import ReaperStarter  # noqa: E402
from chatsite.routing import websocket_urlpatterns  # noqa: E402
from conversations.worker import GenerationWorkerConsumer  # noqa: E402

dbthread.install()

# Every process this serves reaps dead workers' replies and jobs on a timer (chatsite/reaper.py).
application = ReaperStarter(
    ProtocolTypeRouter(
        {
            "http": django_asgi_app,
            "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
            "channel": ChannelNameRouter({settings.INFERENCE_CHANNEL: GenerationWorkerConsumer.as_asgi()}),
        }
    )
)
