"""Who may use a fine-tuned model: everyone, staff, or named groups (superusers always),
in the model picker, the settings form and the chat socket; set in the admin.

The API side (404s, the model list, the OpenAPI document) is tests/api/test_model_visibility.py.
"""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import Group, User
from django.urls import reverse

from conversations import services as chat_services
from conversations.models import Message
from finetuning import services
from finetuning.models import FineTunedModel
from inference import registry
from tests.conversations.factories import finished_turn
from tests.conversations.wsclient import open_socket
from tests.finetuning.test_chat_with_fine_tuned import register
from tests.helpers import client_for

FOR_ALL = "ft:tiny-llama:all:aaaa1111"
FOR_STAFF = "ft:tiny-llama:staff:bbbb2222"
FOR_TEAM = "ft:tiny-llama:team:cccc3333"


@pytest.fixture
def team(db) -> Group:
    return Group.objects.create(name="Support team")


@pytest.fixture
def models(team, tmp_path) -> dict[str, FineTunedModel]:
    everyone = register(FOR_ALL, tmp_path, "For all")
    staff = register(FOR_STAFF, tmp_path, "For staff", visibility="staff")
    grouped = register(FOR_TEAM, tmp_path, "For the team", visibility="groups")
    grouped.groups.add(team)
    return {"all": everyone, "staff": staff, "team": grouped}


def picker(user: User) -> set[str]:
    return {model_id for model_id, _ in registry.model_choices(user=user) if registry.is_fine_tuned(model_id)}


@pytest.mark.django_db
def test_each_user_picks_among_the_models_they_may_use(alice, bob, team, models) -> None:
    bob.groups.add(team)
    staff = User.objects.create_user("sam", password="staff pass 123", is_staff=True)
    boss = User.objects.create_superuser("boss", password="boss pass 123")
    assert picker(alice) == {FOR_ALL}
    assert picker(bob) == {FOR_ALL, FOR_TEAM}
    assert picker(staff) == {FOR_ALL, FOR_STAFF}
    assert picker(boss) == {FOR_ALL, FOR_STAFF, FOR_TEAM}
    assert registry.model_get(FOR_STAFF, user=alice) is None
    assert registry.model_get(FOR_STAFF) is not None, "the server itself still serves it"

    chat = chat_services.conversation_create(owner=alice)
    page = client_for(alice).get(reverse("conversation", args=[chat.public_id])).content.decode()
    assert f'<option value="{FOR_ALL}">For all</option>' in page
    assert FOR_STAFF not in page and "For staff" not in page and FOR_TEAM not in page


@pytest.mark.django_db
def test_a_model_the_user_may_not_use_cannot_be_chosen_in_settings(alice, models) -> None:
    chat = chat_services.conversation_create(owner=alice)
    form = {"model_name": FOR_STAFF, "system_prompt": "", "temperature": "0", "max_tokens": "16"}
    response = client_for(alice).post(reverse("conversation_settings", args=[chat.public_id]), form, HTTP_HX_REQUEST="true")
    assert response.status_code == 422
    assert "Select a valid choice" in response.content.decode()
    chat.refresh_from_db()
    assert chat.model_name != FOR_STAFF
    with pytest.raises(Exception, match="is not available"):
        chat_services.conversation_update_settings(
            conversation=chat, model_name=FOR_STAFF, system_prompt="", temperature=0.0, max_tokens=16
        )


@pytest.mark.django_db(transaction=True)
async def test_the_socket_refuses_replies_on_a_model_restricted_since_it_was_picked(alice, models) -> None:
    chat = await database_sync_to_async(chat_services.conversation_create)(owner=alice, model_name=FOR_ALL)
    turn = await database_sync_to_async(finished_turn)(chat, "Hello", "Hi there.")
    everyone = models["all"]
    await database_sync_to_async(services.finetuned_model_set_visibility)(model=everyone, visibility="staff")
    _, _, socket = await open_socket(alice, chat)
    await socket.send({"action": "send", "message": "Still there?"})
    await socket.send({"action": "regenerate", "message_id": str(turn.assistant_message.public_id)})
    await socket.send({"action": "edit", "message_id": str(turn.user_message.public_id), "message": "Hi"})
    await socket.until(lambda: len(socket.errors) >= 3)
    refusal = f"The model {FOR_ALL} is not available to you any more; pick another in Settings."
    assert socket.errors == [refusal] * 3
    assert await Message.objects.filter(conversation=chat).acount() == 2, "no reply was started"
    await socket.close()


@pytest.mark.django_db
def test_fine_tuners_choose_who_may_use_a_model_in_the_admin(alice, team, models) -> None:
    boss = User.objects.create_superuser("boss", password="boss pass 123")
    model = models["all"]
    url = reverse("admin:finetuning_finetunedmodel_change", args=[model.pk])
    page = client_for(boss).get(url).content.decode()
    assert 'name="visibility"' in page and 'name="groups"' in page
    base = {"label": "For all", "hidden": "", "_save": "Save"}
    refused = client_for(boss).post(url, {**base, "visibility": "groups"})
    assert refused.status_code == 200 and "Choose at least one group, or another visibility." in refused.content.decode()
    model.refresh_from_db()
    assert model.visibility == "everyone"
    saved = client_for(boss).post(url, {**base, "visibility": "groups", "groups": [team.pk]})
    assert saved.status_code == 302
    model.refresh_from_db()
    assert model.visibility == "groups" and list(model.groups.all()) == [team]
    assert FOR_ALL not in picker(alice)
    alice.groups.add(team)
    assert FOR_ALL in picker(alice)
