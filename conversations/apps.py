from __future__ import annotations

from typing import TYPE_CHECKING

from django.apps import AppConfig

if TYPE_CHECKING:
    from conversations.generation import LocalJobs


class ConversationsConfig(AppConfig):
    name = "conversations"
    verbose_name = "Conversations"
    # The reply jobs running in this process (conversations/generation.py).
    reply_jobs: LocalJobs

    def ready(self) -> None:
        from conversations.generation import LocalJobs

        self.reply_jobs = LocalJobs()
