"""Queue depth and worker load, visible to staff on a page and as JSON."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from conversations import services
from inference import registry, status
from inference.models import EngineStatus
from inference.runtime import GONE, ModelRuntime, ProcessRole, Reporter, RuntimeSnapshot, ServedModel
from tests.helpers import client_for, until

pytestmark = pytest.mark.django_db


class BusyEngine:
    stopped_with: str | None = None

    def shutdown(self, error: str | None = None) -> None:
        self.stopped_with = error

    def stats(self) -> dict[str, int]:
        return {
            "active_streams": 3,
            "queued_requests": 2,
            "tokens_generated": 120,
            "weights": "fp32",
            "weights_reason": "auto chose fp32: int8 changes the answers",
        }


@pytest.fixture
def staff_client(db) -> Client:
    return client_for(User.objects.create_user("sam", password="x", is_staff=True))


def busy_runtime(role: ProcessRole = ProcessRole.WEB, report: Reporter | None = None) -> ModelRuntime:
    """A runtime serving the bundled model on an engine that is always busy."""
    runtime = ModelRuntime(role=role, start=lambda source: ServedModel(engine=BusyEngine(), loaded=None), report=report)
    runtime.engine_for(registry.ModelSpec(id="smollm2", label="SmolLM2", base_source="bundled"))
    return runtime


def test_a_process_reports_its_streams_and_queue(staff_client, alice) -> None:
    status.report_once(busy_runtime().snapshot())
    row = EngineStatus.objects.get()
    assert (row.active_streams, row.queued_requests, row.tokens_generated) == (3, 2, 120)
    assert row.role == "web"
    services.turn_start(conversation=services.conversation_create(owner=alice), text="hi")

    data = staff_client.get(reverse("inference_status_json")).json()
    assert data["active_streams"] == 3 and data["queued_requests"] == 2
    assert data["replies_streaming"] == 1
    assert data["processes"][0]["up"] is True and data["processes"][0]["models"] == ["bundled"]
    page = staff_client.get(reverse("inference_status")).content.decode()
    assert "requests queued" in page and ">up<" in page
    assert data["processes"][0]["weights"][0]["weights"] == "fp32"
    assert "fp32 weights" in page and "auto chose fp32: int8 changes the answers" in page, "the choice and its reason"


def test_a_worker_reports_its_role_and_its_rate_since_the_last_report(staff_client) -> None:
    runtime = busy_runtime(ProcessRole.WORKER)
    first = runtime.snapshot()
    later = replace(first, taken_at=first.taken_at + 2, served=(replace(first.served[0], tokens_generated=180),))
    status.report_once(later, first)
    row = EngineStatus.objects.get()
    assert (row.role, row.tokens_generated, row.tokens_per_second) == ("worker", 180, 30.0)
    assert staff_client.get(reverse("inference_status_json")).json()["processes"][0]["role"] == "worker"


def test_reporting_releases_nothing_and_housekeeping_lets_go_of_what_is_gone(staff_client) -> None:
    runtime = ModelRuntime(start=lambda source: ServedModel(engine=BusyEngine(), loaded=None), report=status.report_once)
    engine = runtime.engine_for(registry.ModelSpec(id="ft:gone", label="Gone", base_source="/deleted/model")).engine
    status.report_once(runtime.snapshot())
    assert list(runtime.loaded_engines()) == ["/deleted/model"], "a report only reads"
    runtime.housekeep_once()
    assert runtime.loaded_engines() == {} and engine.stopped_with == GONE, "no model offered runs on it"
    assert EngineStatus.objects.get().served_models == [], "the report after the release shows it gone"


@pytest.mark.django_db(transaction=True)
def test_one_housekeeping_thread_reports_from_the_first_engine_until_the_runtime_closes(settings) -> None:
    settings.INFERENCE_STATUS_REPORTING = True
    settings.INFERENCE_STATUS_INTERVAL_SECONDS = 0.05
    both_reported = threading.Event()

    def report(snapshot: RuntimeSnapshot, previous: RuntimeSnapshot | None) -> None:
        status.report_once(snapshot, previous)
        if snapshot.active_streams == 6:
            both_reported.set()

    # The test's thread reads the table only once the runtime has closed: in the test
    # database (SQLite in memory, one shared cache) a read beside the housekeeping
    # thread's write fails at once with "database table is locked" instead of waiting.
    runtime = busy_runtime(report=report)
    thread = runtime.housekeeping
    assert thread is not None and thread.is_alive(), "the first engine starts it"
    try:
        runtime.engine_for(registry.ModelSpec(id="tiny-llama", label="Tiny", base_source=settings.INFERENCE_MODEL))
        assert both_reported.wait(timeout=10), "a report of both busy models"
        assert runtime.housekeeping is thread, "one thread, however many models it serves"
    finally:
        runtime.close()
    thread.join(timeout=10)
    assert not thread.is_alive(), "closing the runtime ends its thread"
    assert EngineStatus.objects.get().active_streams == 6, "the row holds what the thread wrote"


def test_rows_written_before_weights_were_reported_still_show(staff_client) -> None:
    status.report_once(ModelRuntime().snapshot())
    EngineStatus.objects.update(served_models=["bundled"])
    data = staff_client.get(reverse("inference_status_json")).json()
    assert data["processes"][0]["models"] == ["bundled"] and data["processes"][0]["weights"] == []


def test_a_silent_process_shows_as_down(staff_client, settings) -> None:
    status.report_once(ModelRuntime().snapshot())
    settings.INFERENCE_STATUS_INTERVAL_SECONDS = 0.0001
    data = staff_client.get(reverse("inference_status_json")).json()
    assert data["processes"][0]["up"] is False


def test_only_staff_see_the_status(client, alice) -> None:
    client.force_login(alice)
    for name in ("inference_status", "inference_status_json"):
        response = client.get(reverse(name))
        assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_a_chore_repeats_until_it_says_it_is_done() -> None:
    runtime = ModelRuntime()
    runs: list[str] = []
    try:
        runtime.chore_add("count", lambda: runs.append("first") or len(runs) < 3, every=lambda: 0.01)
        runtime.chore_add("count", lambda: runs.append("ignored") is None, every=lambda: 0.01)
        until(lambda: len(runs) >= 3)
        # The name is free again once the chore said it was done, so this one runs.
        runtime.chore_add("count", lambda: runs.append("second") is None and False, every=lambda: 0.01, at_once=True)
        until(lambda: "second" in runs)
    finally:
        runtime.close()
    assert runs == ["first", "first", "first", "second"]
