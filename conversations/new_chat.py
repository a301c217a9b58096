"""The settings a user picks on the "New chat" page before its first message. The chat is
not stored until that message is sent, so they wait in the session until then."""

from __future__ import annotations

from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase

SESSION_KEY = "parley_new_chat_settings"


def new_chat_settings(session: SessionBase) -> dict[str, Any]:
    return dict(session.get(SESSION_KEY) or {})


def new_chat_settings_store(session: SessionBase, chosen: dict[str, Any]) -> None:
    session[SESSION_KEY] = {name: value for name, value in chosen.items() if value is not None}


def session_as_stored(session: SessionBase) -> SessionBase:
    """The session as stored now. A websocket's copy was read when it connected (to find
    its user), before the page may have chosen settings over HTTP."""
    store: type[SessionBase] = import_module(settings.SESSION_ENGINE).SessionStore
    return store(session_key=session.session_key)


def new_chat_settings_clear(session: SessionBase) -> None:
    """The new chat was stored with them: the next one starts from the defaults again."""
    if SESSION_KEY in session:
        del session[SESSION_KEY]
        session.save()
