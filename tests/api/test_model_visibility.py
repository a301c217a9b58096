"""Restricted fine-tuned models through the API, with the official openai client: a model
a key's owner may not use is missing from /v1/models and answers 404 in OpenAI's shape,
exactly like one that does not exist; /v1/openapi.json names model ids only to a caller
with a key, and only theirs."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.api.conftest import TINY_MODEL_ID, LiveServer

FOR_STAFF = "ft:tiny-llama:staff:dddd4444"
FOR_TEAM = "ft:tiny-llama:team:eeee5555"
HELLO = [{"role": "user", "content": "Hello"}]

SETUP = f"""
from django.contrib.auth.models import Group, User
from finetuning.models import FineTunedModel
team, _ = Group.objects.get_or_create(name="API team")
User.objects.get(username="bob").groups.add(team)
User.objects.filter(username="sam").exists() or User.objects.create_user("sam", password="sam horse battery", is_staff=True)
for model_id, label, visibility in [("{FOR_STAFF}", "Staff tiny", "staff"), ("{FOR_TEAM}", "Team tiny", "groups")]:
    model = FineTunedModel.objects.create(
        public_id=model_id, label=label, base_model="tiny-llama", adapter_path="/nonexistent", visibility=visibility
    )
    if visibility == "groups":
        model.groups.add(team)
"""
TEARDOWN = f"""
from django.contrib.auth.models import Group
from finetuning.models import FineTunedModel
FineTunedModel.objects.filter(public_id__in=["{FOR_STAFF}", "{FOR_TEAM}"]).delete()
Group.objects.filter(name="API team").delete()
"""


@pytest.fixture(scope="module")
def keys(api_server: LiveServer) -> Iterator[dict[str, str]]:
    """Keys of alice (no access), bob (in the model's group) and sam (staff)."""
    api_server.manage("shell", "-c", SETUP)
    yield {name: api_server.new_key(name, f"{name}'s visibility tests") for name in ("alice", "bob", "sam")}
    api_server.manage("shell", "-c", TEARDOWN)


def client_of(api_server: LiveServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=api_server.base_url, api_key=key, max_retries=0, timeout=60)


def listed(api_server: LiveServer, key: str) -> set[str]:
    return {model.id for model in client_of(api_server, key).models.list().data}


def test_the_model_list_holds_only_the_models_the_key_may_use(api_server, keys) -> None:
    assert TINY_MODEL_ID in listed(api_server, keys["alice"])
    assert {FOR_STAFF, FOR_TEAM}.isdisjoint(listed(api_server, keys["alice"]))
    assert FOR_TEAM in listed(api_server, keys["bob"]) and FOR_STAFF not in listed(api_server, keys["bob"])
    assert FOR_STAFF in listed(api_server, keys["sam"]) and FOR_TEAM not in listed(api_server, keys["sam"])
    assert client_of(api_server, keys["bob"]).models.retrieve(FOR_TEAM).id == FOR_TEAM


def test_a_model_the_key_may_not_use_is_not_found_like_one_that_does_not_exist(api_server, keys) -> None:
    alice = client_of(api_server, keys["alice"])
    with pytest.raises(openai.NotFoundError) as restricted:
        alice.models.retrieve(FOR_STAFF)
    with pytest.raises(openai.NotFoundError) as missing:
        alice.models.retrieve("ft:tiny-llama:nothing:ffff6666")
    assert restricted.value.body["code"] == missing.value.body["code"] == "model_not_found"
    assert restricted.value.body["type"] == "invalid_request_error"
    assert restricted.value.body["message"].replace(FOR_STAFF, "?") == missing.value.body["message"].replace(
        "ft:tiny-llama:nothing:ffff6666", "?"
    )
    with pytest.raises(openai.NotFoundError) as chat:
        alice.chat.completions.create(model=FOR_TEAM, messages=HELLO)
    assert (chat.value.body["param"], chat.value.body["code"]) == ("model", "model_not_found")
    with pytest.raises(openai.NotFoundError):
        client_of(api_server, keys["sam"]).chat.completions.create(model=FOR_TEAM, messages=HELLO, stream=True)


def openapi(api_server: LiveServer, key: str | None = None) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    request = urllib.request.Request(f"{api_server.base_url}/openapi.json", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def model_enum(document: dict[str, Any]) -> list[str] | None:
    return document["components"]["schemas"]["ChatCompletionRequest"]["properties"]["model"].get("enum")


def test_the_openapi_document_names_model_ids_only_to_a_caller_with_a_key(api_server, keys) -> None:
    anonymous = openapi(api_server)
    assert model_enum(anonymous) is None
    assert TINY_MODEL_ID not in json.dumps(anonymous) and "ft:" not in json.dumps(anonymous)
    alices = model_enum(openapi(api_server, keys["alice"]))
    assert alices is not None and TINY_MODEL_ID in alices and FOR_STAFF not in alices and FOR_TEAM not in alices
    assert FOR_STAFF in (model_enum(openapi(api_server, keys["sam"])) or [])
    with pytest.raises(urllib.error.HTTPError) as caught:
        openapi(api_server, "not-a-key")
    assert caught.value.code == 401
