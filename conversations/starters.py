"""The few prompts an empty chat offers, so a newcomer has somewhere to start."""

from __future__ import annotations

from typing import NamedTuple


class Starter(NamedTuple):
    title: str
    prompt: str


STARTERS = (
    Starter("Explain", "Explain how a rainbow forms, in three sentences."),
    Starter("Write", "Write a short, friendly note inviting the team to lunch on Friday."),
    Starter("Brainstorm", "Give me five names for a bakery that sells only bread."),
    Starter("Summarise", "Summarise the main idea of photosynthesis for a ten-year-old."),
)
