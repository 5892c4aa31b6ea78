"""Conversations of the sandbox provider: what each one has been told, and the replies.

The chat page keeps its conversation on screen and sends its conversation id with every
message (a "New chat" starts another id), as real chat providers do; the server remembers how
many messages each conversation has had and the last one, so each reply depends on the
conversation so far: `reply #n to: <message> (after #n-1: <previous message>).` — which is what
lets a test prove that a follow-up landed in the same conversation, in the same tab.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

DEFAULT_MAX_CONVERSATIONS = 10_000
#: Longest piece of a message a reply quotes (the current one, then the previous one).
SUBJECT_CHARS = 120
PREVIOUS_CHARS = 60


@dataclass(frozen=True)
class Turn:
    """One message's place in its conversation."""

    number: int
    message: str
    previous: str | None


def subject(text: str, limit: int = SUBJECT_CHARS) -> str:
    """The message on one line, cut to `limit` characters (with an ellipsis when cut)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def image_reply(message: str) -> str:
    """The reply of a one-off image prompt (no conversation id): `Here is an image of …`."""
    return f"Here is an image of {subject(message)}."


def chat_reply(turn: Turn, image: bool) -> str:
    """The reply to one message of a conversation; mentions the previous message, if any."""
    text = f"reply #{turn.number} to: {subject(turn.message)}"
    if turn.previous is not None:
        text += f" (after #{turn.number - 1}: {subject(turn.previous, PREVIOUS_CHARS)})"
    text += "."
    if image:
        text += " " + image_reply(turn.message)
    return text


class Conversations:
    """Message count and last message per (session, conversation id), LRU-bounded."""

    def __init__(self, max_conversations: int = DEFAULT_MAX_CONVERSATIONS) -> None:
        self._max = max_conversations
        self._seen: OrderedDict[tuple[str, str], tuple[int, str]] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, session: str, conversation: str, message: str) -> Turn:
        """Record `message` as the next one of the conversation and return its turn."""
        key = (session, conversation)
        with self._lock:
            count, previous = self._seen.get(key, (0, None))
            self._seen[key] = (count + 1, message)
            self._seen.move_to_end(key)
            while len(self._seen) > self._max:
                self._seen.popitem(last=False)
        return Turn(count + 1, message, previous)
