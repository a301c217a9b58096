"""The API keys page (create shown once, list, revoke, strangers get 404), the API page
and ``manage.py create_api_key``."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from api.keys.selectors import api_key_authenticate
from api.models import ApiKey

SECRET = re.compile(r'<code id="new-key" class="key-secret">(pk-[^<]+)</code>')


@pytest.fixture
def alice_browser(alice) -> Client:
    browser = Client()
    browser.force_login(alice)
    return browser


def _create(browser: Client, name: str, **headers: str):
    return browser.post(reverse("api_key_create"), {"name": name}, **headers)


def test_it_shows_a_new_key_once_and_stores_only_its_hash(alice_browser, alice) -> None:
    response = _create(alice_browser, "laptop", HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    secret = SECRET.search(response.content.decode()).group(1)
    stored = ApiKey.objects.get(owner=alice)
    assert stored.name == "laptop"
    assert secret.startswith(stored.prefix)
    assert secret not in str(ApiKey.objects.filter(pk=stored.pk).values().get())
    assert api_key_authenticate(secret=secret) == stored
    page = alice_browser.get(reverse("api_keys")).content.decode()
    assert "laptop" in page and stored.prefix in page
    assert secret not in page, "the key is shown only when it is created"


def test_a_key_needs_a_name(alice_browser, alice) -> None:
    response = _create(alice_browser, "   ", HTTP_HX_REQUEST="true")
    assert response.status_code == 400
    assert "Give the key a name" in response.content.decode()
    assert not ApiKey.objects.filter(owner=alice).exists()


def test_revoking_a_key_stops_it_working(alice_browser, alice) -> None:
    secret = SECRET.search(_create(alice_browser, "old").content.decode()).group(1)
    key = ApiKey.objects.get(owner=alice)
    response = alice_browser.post(reverse("api_key_revoke", args=[key.public_id]), HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert "Revoked" in response.content.decode()
    assert api_key_authenticate(secret=secret) is None


def test_a_stranger_cannot_see_or_revoke_someone_elses_key(alice_browser, bob) -> None:
    _create(alice_browser, "alice's key")
    key = ApiKey.objects.get(name="alice's key")
    stranger = Client()
    stranger.force_login(bob)
    assert "alice&#x27;s key" not in stranger.get(reverse("api_keys")).content.decode()
    assert stranger.post(reverse("api_key_revoke", args=[key.public_id])).status_code == 404
    key.refresh_from_db()
    assert key.revoked_at is None


def test_the_keys_page_needs_a_login(db) -> None:
    response = Client().get(reverse("api_keys"))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_the_api_page_shows_the_base_url_and_examples(alice_browser) -> None:
    page = alice_browser.get(reverse("api_docs")).content.decode()
    assert "http://testserver/v1" in page
    assert "curl http://testserver/v1/chat/completions" in page
    assert 'OpenAI(base_url="http://testserver/v1"' in page
    assert 'data-copy-target="example-python"' in page
    assert "js/copy.js" in page
    assert reverse("api_docs") in alice_browser.get(reverse("home")).content.decode(), "linked from the sidebar"


def test_the_command_prints_a_working_key(alice) -> None:
    out = StringIO()
    call_command("create_api_key", "alice", "--name", "ci", stdout=out)
    secret = out.getvalue().strip()
    key = api_key_authenticate(secret=secret)
    assert key is not None and key.owner == alice and key.name == "ci"


def test_the_command_names_an_unknown_user(db) -> None:
    with pytest.raises(CommandError, match="no user named 'nobody'"):
        call_command("create_api_key", "nobody")
