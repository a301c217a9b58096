"""Text files attached to a message: checked on upload (binary or oversized files are refused
and nothing is stored), sent with the message, given to the model after its text (cut, and
said so, when they do not fit), exported, and readable by staff in review."""

from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from conversations import services
from conversations.generation import generation_wait_idle
from conversations.models import Attachment, Message
from inference.engine.loading import load_model
from inference.engine.prompt import CUT_FROM, CUT_NOTE, PromptTooLongError, fit_prompt
from tests.conftest import ROOT, TINY_MODEL_DIR
from tests.conversations.wsclient import open_socket
from tests.fakes import ScriptedEngine
from tests.helpers import client_for

NOTES = "Meeting notes\nThe launch moves to Friday.\nOwner: Dana\n"


def upload(client: Client, name: str, data: bytes):
    return client.post(reverse("attachment_upload"), {"file": SimpleUploadedFile(name, data)})


@pytest.mark.django_db
def test_a_text_file_becomes_a_chip_for_the_composer(alice) -> None:
    response = upload(client_for(alice), "notes.md", NOTES.encode())
    attachment = Attachment.objects.get()
    assert response.status_code == 200
    assert f'name="attachment" value="{attachment.public_id}"' in response.content.decode()
    assert (attachment.name, attachment.text, attachment.size, attachment.message) == ("notes.md", NOTES, len(NOTES), None)


@pytest.mark.django_db
def test_binary_and_oversized_files_are_refused_and_nothing_is_stored(alice, settings) -> None:
    client = client_for(alice)
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
    response = upload(client, "photo.png", png)
    assert response.status_code == 400 and "“photo.png” is not a text file" in response.content.decode()
    assert upload(client, "zeros.txt", b"abc\x00def").status_code == 400
    settings.CHAT_ATTACHMENT_MAX_BYTES = 1000
    response = upload(client, "big.txt", b"x" * 5000)
    said = response.content.decode().replace("\xa0", " ")  # filesizeformat's spaces do not break
    assert response.status_code == 400 and said == "“big.txt” is 4.9 KB; files up to 1000 bytes can be attached."
    response = upload(client, "huge.txt", b"x" * 100_000)  # refused on its Content-Length, before it is read
    assert response.status_code == 400 and response.content.decode().replace("\xa0", " ").startswith("That file is 97.")
    assert Attachment.objects.count() == 0


@pytest.mark.django_db
def test_a_file_is_read_only_by_its_owner(alice, bob) -> None:
    upload(client_for(alice), "notes.txt", b"<b>bold</b> & more")
    url = reverse("attachment_text", args=[Attachment.objects.get().public_id])
    assert client_for(alice).get(url).content == b"&lt;b&gt;bold&lt;/b&gt; &amp; more"
    assert client_for(bob).get(url).status_code == 404


@pytest.mark.django_db(transaction=True)
async def test_the_file_goes_with_the_message_to_the_model(alice, scripted_engine) -> None:
    engine = scripted_engine(ScriptedEngine(["Friday", "."], delay=0.005))
    chat = await database_sync_to_async(services.conversation_create)(owner=alice)
    client = await database_sync_to_async(client_for)(alice)
    await database_sync_to_async(upload)(client, "notes.txt", NOTES.encode())
    attachment = await Attachment.objects.aget()
    _, _, socket = await open_socket(alice, chat)
    await socket.send({"action": "send", "message": "When is the launch?", "attachment": str(attachment.public_id)})
    await socket.until_finished()
    await generation_wait_idle()
    question = await Message.objects.aget(conversation=chat, role="user")
    assert (await Attachment.objects.aget()).message_id == question.pk
    assert "notes.txt" in "".join(socket.frames), "the sent message shows its file"
    loaded = load_model(str(TINY_MODEL_DIR), cache_dir=ROOT / ".cache" / "models")
    prompt = loaded.tokenizer.decode(engine.requests[0].prompt_ids)
    assert "When is the launch?" in prompt and "File notes.txt:" in prompt and "The launch moves to Friday." in prompt
    await socket.close()


@pytest.mark.django_db(transaction=True)
async def test_someone_elses_file_cannot_be_sent(alice, bob, scripted_engine) -> None:
    chat = await database_sync_to_async(services.conversation_create)(owner=bob)
    await database_sync_to_async(upload)(await database_sync_to_async(client_for)(alice), "notes.txt", b"secret")
    attachment = await Attachment.objects.aget()
    _, _, socket = await open_socket(bob, chat)
    await socket.send({"action": "send", "message": "Read this", "attachment": str(attachment.public_id)})
    await socket.receive()
    assert socket.errors == ["An attached file is no longer there; attach it again."]
    assert await Message.objects.filter(conversation=chat).acount() == 0
    assert (await Attachment.objects.aget()).message_id is None
    await socket.close()


@pytest.mark.django_db(transaction=True)
async def test_a_file_too_long_for_the_context_is_cut_and_the_reply_says_so(alice, scripted_engine) -> None:
    engine = scripted_engine(ScriptedEngine(["Done", "."], delay=0.005))
    chat = await database_sync_to_async(services.conversation_create)(owner=alice)
    client = await database_sync_to_async(client_for)(alice)
    long_text = "".join(f"line {n}: the quick brown fox jumps\n" for n in range(400))  # the tiny model reads 512 tokens
    await database_sync_to_async(upload)(client, "long.txt", long_text.encode())
    attachment = await Attachment.objects.aget()
    _, _, socket = await open_socket(alice, chat)
    await socket.send({"action": "send", "message": "Summarise", "attachment": str(attachment.public_id)})
    message_id = await socket.until_finished()
    await generation_wait_idle()
    reply = await Message.objects.aget(public_id=message_id)
    assert 0 < reply.attachment_cut_chars < len(long_text)
    assert "The attached files were too long" in "".join(socket.frames)
    loaded = load_model(str(TINY_MODEL_DIR), cache_dir=ROOT / ".cache" / "models")
    assert len(engine.requests[0].prompt_ids) <= 512
    assert "cut here to fit" in loaded.tokenizer.decode(engine.requests[0].prompt_ids)
    await socket.close()


def test_fitting_cuts_only_marked_files_and_keeps_as_much_as_fits() -> None:
    tokenizer = load_model(str(TINY_MODEL_DIR), cache_dir=ROOT / ".cache" / "models").tokenizer
    text = "Question?"
    files = "\n\nFile a.txt:\n```\n" + "word " * 2000 + "\n```"
    fitted = fit_prompt(
        tokenizer, [{"role": "user", "content": text + files, CUT_FROM: str(len(text))}], context_length=512, max_new_tokens=64
    )
    assert len(fitted.prompt_ids) <= 512 - 64 and fitted.cut_chars > 0
    content = fitted.messages[-1]["content"]
    assert content.startswith(text + "\n\nFile a.txt:") and content.endswith(CUT_NOTE) and CUT_FROM not in fitted.messages[-1]
    longer = fit_prompt(
        tokenizer, [{"role": "user", "content": text + files, CUT_FROM: str(len(text))}], context_length=1024, max_new_tokens=64
    )
    assert longer.cut_chars < fitted.cut_chars, "a larger window keeps more of the file"
    with pytest.raises(PromptTooLongError):
        fit_prompt(tokenizer, [{"role": "user", "content": text + files}], context_length=512, max_new_tokens=64)


@pytest.mark.django_db
def test_files_are_exported_and_shown_to_staff(alice) -> None:
    chat = services.conversation_create(owner=alice)
    upload(client_for(alice), "notes.txt", NOTES.encode())
    turn = services.turn_start(conversation=chat, text="Read it", attachments=str(Attachment.objects.get().public_id))
    services.assistant_message_finish(
        message_pk=turn.assistant_message.pk, content="Friday.", seq=1, finish_reason="stop", prompt_tokens=9, completion_tokens=2
    )
    exported = json.loads(client_for(alice).get(reverse("export_json", args=[chat.public_id])).content)
    assert "The launch moves to Friday." in exported["messages"][1]["content"]
    assert "File notes.txt:" in client_for(alice).get(reverse("export_markdown", args=[chat.public_id])).content.decode()
    staff = User.objects.create_superuser("reviewer", password="a long pass phrase 42")
    page = client_for(staff).get(reverse("admin:conversations_conversation_change", args=[chat.pk])).content.decode()
    assert "Attached file: notes.txt" in page and "The launch moves to Friday." in page


@pytest.mark.django_db
def test_a_message_may_be_only_a_file_but_not_too_many(alice, settings) -> None:
    chat = services.conversation_create(owner=alice)
    client = client_for(alice)
    upload(client, "notes.txt", NOTES.encode())
    turn = services.turn_start(conversation=chat, text="", attachments=[str(Attachment.objects.get().public_id)])
    chat.refresh_from_db()
    assert turn.user_message.content == "" and chat.title == "notes.txt"
    settings.CHAT_MAX_ATTACHMENTS = 1
    with pytest.raises(Exception, match="at most 1 file"):
        services.turn_start(conversation=chat, text="two", attachments=["a", "b"])
