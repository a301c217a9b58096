"""Settings for tools that load Django without serving anyone: the test run (pytest-django)
and mypy's Django plugin.

They are ``chatsite.settings`` with a throwaway secret key when ``PARLEY_SECRET_KEY`` is
unset, since those settings refuse to start without one (``PARLEY_DEBUG`` off). The key
goes into the environment, so the servers a test starts share it.
"""

from __future__ import annotations

import os
import secrets

if not os.environ.get("PARLEY_SECRET_KEY") and not os.environ.get("PARLEY_SECRET_KEY_FILE"):
    os.environ["PARLEY_SECRET_KEY"] = f"parley-tools-{secrets.token_urlsafe(50)}"

from chatsite.settings import *  # noqa: F403
