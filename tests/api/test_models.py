"""GET /v1/models and /v1/models/{id} through the openai client."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import openai
import pytest

from tests.api.conftest import TINY_MODEL_ID


def test_it_lists_the_models_a_key_can_use(client) -> None:
    models = client.models.list().data
    ids = [model.id for model in models]
    assert ids[0] == TINY_MODEL_ID
    assert "smollm2-135m-instruct" in ids
    assert all(model.object == "model" and model.owned_by for model in models)


def test_it_retrieves_one_model(client) -> None:
    model = client.models.retrieve(TINY_MODEL_ID)
    assert model.id == TINY_MODEL_ID
    assert model.object == "model"


def test_an_unknown_model_id_is_not_found(client) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("nothing-like-it")
    assert caught.value.body["code"] == "model_not_found"


def test_listing_models_needs_a_key(api_server) -> None:
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{api_server.base_url}/models", timeout=10)
    assert caught.value.code == 401
    assert "didn't provide an API key" in json.loads(caught.value.read())["error"]["message"]
