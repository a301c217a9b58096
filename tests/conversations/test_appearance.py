"""Dark mode: pages follow the system until a user picks a theme, which is remembered per user."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from tests.helpers import client_for

pytestmark = pytest.mark.django_db


def page_theme(client: Client, url: str) -> str:
    html = client.get(url).content.decode()
    return html.split('data-theme="', 1)[1].split('"', 1)[0]


def test_pages_follow_the_system_until_a_theme_is_chosen(alice) -> None:
    client = client_for(alice)
    assert page_theme(client, reverse("home")) == "system"
    assert page_theme(Client(), reverse("login")) == "system"


def test_a_chosen_theme_is_remembered_on_every_page(alice) -> None:
    client = client_for(alice)
    response = client.post(reverse("theme_set"), {"theme": "dark", "next": reverse("api_keys")})
    assert response.status_code == 302 and response["Location"] == reverse("api_keys")
    for url in (reverse("home"), reverse("account_settings"), reverse("api_keys"), reverse("conversation_search")):
        assert page_theme(client, url) == "dark", url
    assert page_theme(client_for(alice), reverse("home")) == "dark", "another browser of the same user"


def test_the_choice_is_each_users_own(alice, bob) -> None:
    client_for(alice).post(reverse("theme_set"), {"theme": "light"})
    assert page_theme(client_for(bob), reverse("home")) == "system"


def test_the_script_toggle_gets_no_redirect(alice) -> None:
    client = client_for(alice)
    response = client.post(reverse("theme_set"), {"theme": "dark"}, HTTP_X_PARLEY_THEME="1")
    assert response.status_code == 204
    assert page_theme(client, reverse("home")) == "dark"


def test_an_unknown_theme_or_foreign_next_is_refused(alice) -> None:
    client = client_for(alice)
    assert client.post(reverse("theme_set"), {"theme": "purple"}).status_code == 400
    assert page_theme(client, reverse("home")) == "system"
    response = client.post(reverse("theme_set"), {"theme": "light", "next": "https://evil.example/"})
    assert response["Location"] == reverse("account_settings")


def test_settings_page_offers_the_three_themes_with_the_current_one_checked(alice) -> None:
    client = client_for(alice)
    client.post(reverse("theme_set"), {"theme": "dark"})
    html = client.get(reverse("account_settings")).content.decode()
    assert 'value="system"' in html and 'value="light"' in html
    assert 'value="dark" checked' in html


def test_anonymous_theme_posts_go_to_login(client) -> None:
    response = client.post(reverse("theme_set"), {"theme": "dark"})
    assert response.status_code == 302 and reverse("login") in response["Location"]
