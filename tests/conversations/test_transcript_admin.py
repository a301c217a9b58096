"""Staff transcript review in the Django admin: read as a chat, tag, inspect, audit, export, datasets."""

from __future__ import annotations

import json
import re

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from conversations import services
from conversations.generation import generation_run
from conversations.models import Conversation, GenerationRecord, Message, MessageFeedback, TranscriptView
from inference.engine.datasets import parse_dataset
from tests.fakes import ScriptedEngine
from tests.helpers import CORES_PER_TEST_PROCESS, client_for, migrated_group

LIST = "admin:conversations_conversation_changelist"
FEEDBACK = "admin:conversations_messagefeedback_changelist"


@pytest.fixture
def reviewer(db) -> User:
    user = User.objects.create_user("rita", password="reviewer pass 123", is_staff=True)
    user.groups.add(migrated_group("Transcript reviewers"))
    return user


def finish(reply: Message, text: str, reason: str = "stop") -> None:
    services.assistant_message_finish(
        message_pk=reply.pk, content=text, seq=1, finish_reason=reason, prompt_tokens=12, completion_tokens=3
    )


@pytest.fixture
def chat(chat, alice) -> Conversation:
    """The shared new chat with two turns, feedback on both replies and a regenerated one."""
    first = services.turn_start(conversation=chat, text="What is the capital of Peru?")
    finish(first.assistant_message, "Lima.")
    second = services.turn_start(conversation=chat, text="And of Chile?")
    finish(second.assistant_message, "Buenos Aires.")
    MessageFeedback.objects.create(
        message=second.assistant_message, user=alice, rating="down", reason="wrong", comment="That is Argentina"
    )
    MessageFeedback.objects.create(message=first.assistant_message, user=alice, rating="up")
    retry = services.reply_regenerate(conversation=chat, message_id=second.assistant_message.public_id)
    finish(retry.assistant_message, "Santiago.")
    return chat


@pytest.fixture
def other_chat(bob) -> Conversation:
    chat = services.conversation_create(owner=bob)
    turn = services.turn_start(conversation=chat, text="Write a poem")
    finish(turn.assistant_message, "", reason="error")
    return chat


def change_url(chat: Conversation) -> str:
    return reverse("admin:conversations_conversation_change", args=[chat.pk])


def listed(page: str, chat: Conversation) -> bool:
    return f'href="{change_url(chat)}' in page


@pytest.fixture
def superuser(db) -> User:
    return User.objects.create_superuser("sue", password="superuser pass 123")


@pytest.mark.django_db
def test_the_list_shows_counts_and_feedback_and_filters(reviewer, chat, other_chat) -> None:
    client = client_for(reviewer)
    page = client.get(reverse(LIST)).content.decode()
    assert "1 up · 1 down" in page and ">5<" in page, "feedback summary and message count"
    assert str(chat.public_id)[:8] in page, "a conversation is named by its public id"
    down = client.get(reverse(LIST), {"feedback": "down"}).content.decode()
    assert listed(down, chat) and not listed(down, other_chat)
    errors = client.get(reverse(LIST), {"finish_reason": "error"}).content.decode()
    assert listed(errors, other_chat) and not listed(errors, chat)
    by_text = client.get(reverse(LIST), {"q": "Santiago"}).content.decode()
    assert listed(by_text, chat) and not listed(by_text, other_chat)
    by_user = client.get(reverse(LIST), {"q": "bob"}).content.decode()
    assert listed(by_user, other_chat) and not listed(by_user, chat)
    assert client.get(reverse(LIST), {"source__exact": "api"}).status_code == 200


@pytest.mark.django_db
def test_the_lists_show_no_user_text_until_a_transcript_is_opened(reviewer, chat) -> None:
    client = client_for(reviewer)
    conversations = client.get(reverse(LIST)).content.decode()
    feedback = client.get(reverse(FEEDBACK)).content.decode()
    assert listed(conversations, chat) and "What is the capital of Peru?" not in conversations, "titles are user text"
    assert "Thumbs down" in feedback and "Wrong or made up" in feedback
    for text in ("Buenos Aires", "That is Argentina", "Lima"):
        assert text not in feedback, "neither replies nor comments show in the feedback list"
    down = MessageFeedback.objects.get(rating="down")
    for url in (
        reverse("admin:conversations_messagefeedback_change", args=[down.pk]),
        reverse("admin:conversations_messagefeedback_history", args=[down.pk]),
        reverse("admin:conversations_conversation_history", args=[chat.pk]),
    ):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(change_url(chat)), url
    assert not TranscriptView.objects.exists(), "lists and redirects showed nobody's text"
    assert "That is Argentina" in client.get(change_url(chat)).content.decode()
    assert TranscriptView.objects.get().what == "transcript"


@pytest.mark.django_db
def test_searching_users_text_is_audited_with_each_conversation_it_showed(reviewer, chat, other_chat) -> None:
    client = client_for(reviewer)
    client.get(reverse(LIST), {"q": "Santiago"})
    client.get(reverse(FEEDBACK), {"q": "Argentina"})
    client.get(reverse(LIST), {"q": "no such words anywhere"})
    searches = list(
        TranscriptView.objects.order_by("id").values_list(
            "viewer_username", "what", "query", "conversation_public_id", "owner_username"
        )
    )
    assert searches == [
        ("rita", "search", "Santiago", chat.public_id, "alice"),
        ("rita", "search", "Argentina", chat.public_id, "alice"),
        ("rita", "search", "no such words anywhere", None, ""),
    ]


@pytest.mark.django_db
def test_nobody_deletes_conversations_or_the_audit_trail_through_the_admin(superuser, reviewer, chat) -> None:
    client_for(reviewer).get(change_url(chat))
    view = TranscriptView.objects.get()
    admin = client_for(superuser)
    assert admin.post(reverse("admin:conversations_conversation_delete", args=[chat.pk]), {"post": "yes"}).status_code == 403
    admin.post(reverse(LIST), {"action": "delete_selected", "_selected_action": [chat.pk], "post": "yes", "index": 0})
    assert Conversation.objects.filter(pk=chat.pk).exists()
    trail = reverse("admin:conversations_transcriptview_changelist")
    assert "rita" in admin.get(trail).content.decode(), "superusers read the trail"
    assert admin.post(reverse("admin:conversations_transcriptview_delete", args=[view.pk]), {"post": "yes"}).status_code == 403
    admin.post(trail, {"action": "delete_selected", "_selected_action": [view.pk], "post": "yes", "index": 0})
    change = reverse("admin:conversations_transcriptview_change", args=[view.pk])
    admin.post(change, {"viewer_username": "someone else", "what": "search"})
    view.refresh_from_db()
    assert (view.viewer_username, view.what) == ("rita", "transcript"), "unchanged"


@pytest.mark.django_db
def test_the_audit_trail_outlives_the_conversation_and_both_accounts(superuser, reviewer, alice, chat) -> None:
    client_for(reviewer).get(change_url(chat))
    public_id = chat.public_id
    response = client_for(alice).post(reverse("conversation_delete", args=[public_id]))
    assert response.status_code in {200, 302} and not Conversation.objects.filter(public_id=public_id).exists()
    alice.delete()
    reviewer.delete()
    view = TranscriptView.objects.get()
    assert (view.viewer_username, view.owner_username, view.conversation_public_id) == ("rita", "alice", public_id)
    found = client_for(superuser).get(reverse("admin:conversations_transcriptview_changelist"), {"q": str(public_id)})
    assert str(public_id) in found.content.decode()


@pytest.mark.django_db
def test_a_transcript_reads_as_a_chat_with_branches_and_feedback_and_is_audited(reviewer, chat) -> None:
    page = client_for(reviewer).get(change_url(chat)).content.decode()
    assert "What is the capital of Peru?" in page and "Santiago." in page and "Buenos Aires." in page
    assert "branch 1 of 2" in page and "branch 2 of 2" in page
    assert page.count("not on the active path") == 1, "the replaced reply is marked"
    assert "Wrong or made up" in page and "That is Argentina" in page
    assert "reply 3 tokens" in page and "inspect" in page
    fields = set(re.findall(r'<(?:input|textarea|select)[^>]*name="([^"]+)"', page))
    assert fields <= {"csrfmiddlewaretoken", "tag", "remove_tag"}, "nothing editable but the tag box"
    view = TranscriptView.objects.get()
    assert (view.viewer, view.conversation_public_id, view.what) == (reviewer, chat.public_id, "transcript")
    assert view.owner_username == "alice"


@pytest.mark.django_db
def test_a_reviewer_can_tag_but_cannot_change_or_delete(reviewer, chat) -> None:
    client = client_for(reviewer)
    client.post(change_url(chat), {"tag": "  Geography  Error "})
    assert list(chat.tags.values_list("name", flat=True)) == ["geography error"]
    tagged = client.get(reverse(LIST), {"tag": "geography error"}).content.decode()
    assert listed(tagged, chat)
    assert not listed(client.get(reverse(LIST), {"tag": "other"}).content.decode(), chat)
    client.post(change_url(chat), {"title": "Hacked", "tag": ""})
    chat.refresh_from_db()
    assert chat.title == "What is the capital of Peru?"
    delete = reverse("admin:conversations_conversation_delete", args=[chat.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    assert Conversation.objects.filter(pk=chat.pk).exists()
    assert client.get("/admin/conversations/message/").status_code == 404, "messages are not editable rows"
    feedback = MessageFeedback.objects.first()
    assert feedback is not None
    change_feedback = reverse("admin:conversations_messagefeedback_change", args=[feedback.pk])
    client.post(change_feedback, {"rating": "up"})
    feedback.refresh_from_db()
    assert feedback.rating == "down"
    assert client.get(reverse("admin:conversations_transcriptview_changelist")).status_code == 403


@pytest.mark.django_db
def test_users_without_staff_access_get_nothing(alice, chat) -> None:
    response = client_for(alice).get(change_url(chat))
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    plain_staff = User.objects.create_user("sam", password="staff pass 123", is_staff=True)
    assert client_for(plain_staff).get(change_url(chat)).status_code == 403
    assert client_for(plain_staff).get(reverse(LIST)).status_code == 403
    assert not TranscriptView.objects.exists()


@pytest.mark.django_db
def test_export_selected_transcripts_as_jsonl(reviewer, chat, other_chat) -> None:
    response = client_for(reviewer).post(
        reverse(LIST), {"action": "export_jsonl", "_selected_action": [chat.pk, other_chat.pk], "index": 0}
    )
    assert response["Content-Disposition"].startswith('attachment; filename="transcripts-')
    records = [json.loads(line) for line in response.content.decode().splitlines()]
    assert [r["user"] for r in records] == ["alice", "bob"]
    assert len(records[0]["messages"]) == 5 and records[0]["active_messages"][-1]["content"] == "Santiago."
    down = [m for m in records[0]["messages"] if m["feedback"] and m["feedback"][0]["rating"] == "down"]
    assert down[0]["content"] == "Buenos Aires." and down[0]["active"] is False
    assert TranscriptView.objects.filter(what="export").count() == 2


@pytest.mark.django_db
def test_a_dataset_from_selected_conversations_is_previewed_validated_and_downloaded(
    reviewer, chat, other_chat
) -> None:
    client = client_for(reviewer)
    form = {"action": "build_training_dataset", "_selected_action": [chat.pk, other_chat.pk], "index": 0}
    preview = client.post(reverse(LIST), form).content.decode()
    assert "1 example in the chat format from 2 selected items" in preview, "the failed reply gives no example"
    assert "Valid: it passes the same checks as an uploaded file." in preview
    download = client.post(reverse(LIST), {**form, "download": "1"})
    parsed = parse_dataset(download.content, format="chat")
    assert parsed.ok and len(parsed.examples) == 1
    assert [m.content for m in parsed.examples[0].messages][-2:] == ["And of Chile?", "Santiago."]


@pytest.mark.django_db
def test_a_dataset_from_thumbs_up_replies(reviewer, chat) -> None:
    ids = list(MessageFeedback.objects.values_list("pk", flat=True))
    response = client_for(reviewer).post(
        reverse("admin:conversations_messagefeedback_changelist"),
        {"action": "build_training_dataset", "_selected_action": ids, "index": 0, "download": "1"},
    )
    parsed = parse_dataset(response.content, format="chat")
    assert parsed.ok and len(parsed.examples) == 1, "only the thumbs-up reply is used"
    assert [m.content for m in parsed.examples[0].messages][1:] == ["What is the capital of Peru?", "Lima."]


@pytest.mark.django_db(transaction=True)
async def test_inspect_shows_the_exact_prompt_settings_and_timing(reviewer, alice, scripted_engine) -> None:
    from channels.db import database_sync_to_async

    engine = scripted_engine(ScriptedEngine(["Fine", "."], delay=0.01))
    chat = await database_sync_to_async(services.conversation_create)(owner=alice)
    chat.temperature = 0.3
    await chat.asave()
    turn = await database_sync_to_async(services.turn_start)(conversation=chat, text="How are you?")
    await generation_run(message_pk=turn.assistant_message.pk)
    record = await GenerationRecord.objects.aget(message=turn.assistant_message)
    assert record.prompt_tokens == len(engine.requests[0].prompt_ids)
    assert "How are you?" in record.prompt_text and chat.system_prompt in record.prompt_text
    assert record.params["temperature"] == 0.3 and record.dropped_messages == 0

    url = reverse("admin:conversations_conversation_inspect", args=[chat.pk, turn.assistant_message.public_id])
    page = await database_sync_to_async(lambda: client_for(reviewer).get(url).content.decode())()
    assert f"{record.prompt_tokens} prompt tokens" in page and "nothing was left out" in page
    assert "How are you?" in page and "<th>temperature</th><td>0.3</td>" in page
    assert "Tokens per second" in page
    assert await TranscriptView.objects.filter(what="inspect", viewer=reviewer).aexists()


@pytest.mark.django_db
def test_a_transcript_dataset_is_saved_as_a_training_file_and_trains_the_tiny_model(
    reviewer, chat, other_chat, alice, settings, tmp_path
) -> None:
    from finetuning import services as finetuning
    from finetuning.models import FineTuningJob, TrainingFile
    from finetuning.tasks import finetune_job_run

    settings.FINETUNE_OUTPUT_DIR = tmp_path / "finetuned"
    settings.FINETUNE_NICENESS = 0
    settings.FINETUNE_THREADS = CORES_PER_TEST_PROCESS
    settings.FINETUNE_HEARTBEAT_SECONDS = 3600
    second = services.conversation_create(owner=alice)
    turn = services.turn_start(conversation=second, text="Say hello")
    finish(turn.assistant_message, "Hello!")
    form = {"action": "build_training_dataset", "_selected_action": [chat.pk, other_chat.pk, second.pk], "index": 0}

    refused = client_for(reviewer).post(reverse(LIST), {**form, "save": "1"})
    assert refused.status_code == 403, "reviewers read transcripts; launching training needs the fine-tuning permission"
    reviewer.groups.add(migrated_group("Fine-tuners"))
    preview = client_for(reviewer).post(reverse(LIST), form).content.decode()
    assert "Save as training file" in preview
    response = client_for(reviewer).post(reverse(LIST), {**form, "save": "1"})
    assert response.status_code == 302
    file = TrainingFile.objects.get()
    assert (file.format, file.status, file.created_by) == ("chat", "processed", reviewer)
    assert file.stats["examples"] == 2

    job = finetuning.finetune_job_create(
        training_file=file, base_model="tiny-llama", n_epochs=1, batch_size=1, validation_split=0.0, enqueue=False
    )
    assert finetune_job_run.call(job_pk=job.pk) == "succeeded"
    job.refresh_from_db()
    assert job.status == FineTuningJob.Status.SUCCEEDED and job.trained_tokens > 0
