"""Queue depth and worker load, visible to staff on a page and as JSON."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from conversations import services
from inference import engines, status
from inference.models import EngineStatus

pytestmark = pytest.mark.django_db


class BusyEngine:
    def stats(self) -> dict[str, int]:
        return {
            "active_streams": 3,
            "queued_requests": 2,
            "tokens_generated": 120,
            "weights": "fp32",
            "weights_reason": "auto chose fp32: int8 changes the answers",
        }


@pytest.fixture
def staff_client(db) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(User.objects.create_user("sam", password="x", is_staff=True))
    return client


def test_a_process_reports_its_streams_and_queue(monkeypatch, staff_client, alice) -> None:  # type: ignore[no-untyped-def]
    served = engines.ServedModel(engine=BusyEngine(), loaded=None)  # type: ignore[arg-type]
    monkeypatch.setattr(engines, "loaded_engines", lambda: {"bundled": served})
    status.report_once()
    row = EngineStatus.objects.get()
    assert (row.active_streams, row.queued_requests, row.tokens_generated) == (3, 2, 120)
    services.turn_start(conversation=services.conversation_create(owner=alice), text="hi")

    data = staff_client.get(reverse("inference_status_json")).json()
    assert data["active_streams"] == 3 and data["queued_requests"] == 2
    assert data["replies_streaming"] == 1
    assert data["processes"][0]["up"] is True and data["processes"][0]["models"] == ["bundled"]
    page = staff_client.get(reverse("inference_status")).content.decode()
    assert "requests queued" in page and ">up<" in page
    assert data["processes"][0]["weights"][0]["weights"] == "fp32"
    assert "fp32 weights" in page and "auto chose fp32: int8 changes the answers" in page, "the choice and its reason"


def test_rows_written_before_weights_were_reported_still_show(staff_client) -> None:  # type: ignore[no-untyped-def]
    status.report_once()
    EngineStatus.objects.update(served_models=["bundled"])
    data = staff_client.get(reverse("inference_status_json")).json()
    assert data["processes"][0]["models"] == ["bundled"] and data["processes"][0]["weights"] == []


def test_a_silent_process_shows_as_down(monkeypatch, staff_client, settings) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(engines, "loaded_engines", lambda: {})
    status.report_once()
    settings.INFERENCE_STATUS_INTERVAL_SECONDS = 0.0001
    data = staff_client.get(reverse("inference_status_json")).json()
    assert data["processes"][0]["up"] is False


def test_only_staff_see_the_status(client, alice) -> None:  # type: ignore[no-untyped-def]
    client.force_login(alice)
    for name in ("inference_status", "inference_status_json"):
        response = client.get(reverse(name))
        assert response.status_code == 302 and "/admin/login/" in response["Location"]
