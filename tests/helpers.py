"""Helpers the tests share (fixtures live in the conftest.py files)."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.test import Client


def client_for(user: User) -> Client:
    """A test client logged in as ``user``."""
    client = Client()
    client.force_login(user)
    return client
