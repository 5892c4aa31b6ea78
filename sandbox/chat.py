"""Conversations of the sandbox provider: what each one has been told, and the replies.

The chat page keeps its conversation on screen and sends its conversation id with every
message (a "New chat" starts another id), as real chat providers do; the server remembers how
many messages each conversation has had and the last one, so each reply depends on the
conversation so far: `reply #n to: <message> (after #n-1: <previous message>).` — which is what
lets a test prove that a follow-up landed in the same conversation, in the same tab.
"""

from __future__ import annotations

import re
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


#: Prompt tokens that switch on a provider behaviour for that prompt (README, "Make a job fail
#: on purpose"): `[sandbox:refuse]`, `[sandbox:ratelimit]` (or `=<seconds>` to wait),
#: `[sandbox:logout]`, `[sandbox:slow]` (or `=<ms>`), `[sandbox:images=<n>]`,
#: `[sandbox:broken]`, `[sandbox:hang]`.
TOKEN = re.compile(r"\[sandbox:(refuse|ratelimit|logout|slow|images|broken|hang)(?:=(\d{1,6}))?\]")
#: How long a slow reply streams when `[sandbox:slow]` names no time (ms).
SLOW_DEFAULT_MS = 3000
#: The wait a rate-limit notice shows when `[sandbox:ratelimit]` names none (seconds).
RATELIMIT_DEFAULT_S = 2
#: Notices as the page shows them, worded as real providers word them.
REFUSAL = "I can't create that image. This prompt may violate our content policy."
LOGGED_OUT = "Your session has expired. Please log in again."


def ratelimit_notice(wait_s: int) -> str:
    """The rate-limit notice, naming its wait."""
    return f"You've reached the image generation rate limit. Please try again in {wait_s} seconds."


@dataclass(frozen=True)
class Behaviour:
    """What the tokens of one prompt ask the sandbox to do."""

    refuse: bool = False
    #: Seconds the rate-limit notice asks to wait (None: no notice).
    ratelimit_s: int | None = None
    logout: bool = False
    #: Milliseconds the reply streams for (None: the configured latency).
    slow_ms: int | None = None
    images: int | None = None
    broken: bool = False
    hang: bool = False


def behaviour(prompt: str) -> Behaviour:
    """The behaviour the prompt's tokens ask for (none: a normal reply)."""
    found: dict[str, object] = {}
    for name, value in TOKEN.findall(prompt):
        number = int(value) if value else None
        if name == "refuse":
            found["refuse"] = True
        elif name == "ratelimit":
            found["ratelimit_s"] = RATELIMIT_DEFAULT_S if number is None else number
        elif name == "logout":
            found["logout"] = True
        elif name == "slow":
            found["slow_ms"] = SLOW_DEFAULT_MS if number is None else number
        elif name == "images" and number is not None:
            found["images"] = max(1, min(number, 4))
        elif name == "broken":
            found["broken"] = True
        elif name == "hang":
            found["hang"] = True
    return Behaviour(**found)  # type: ignore[arg-type]


class FirstTimes:
    """Prompts a passing notice (rate limit, logout) was already shown for: shown once each,
    so the retry of the same prompt goes through, as it would once a real notice has passed."""

    def __init__(self, limit: int = DEFAULT_MAX_CONVERSATIONS) -> None:
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()

    def first(self, kind: str, prompt: str) -> bool:
        """True the first time `kind` is asked for `prompt`."""
        key = (kind, prompt)
        with self._lock:
            if key in self._seen:
                return False
            self._seen[key] = None
            while len(self._seen) > self._limit:
                self._seen.popitem(last=False)
        return True
