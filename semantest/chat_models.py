"""The chat contract: request and answer bodies of the chat routes, and the chat record.

A chat session is a conversation with a provider in one browser tab of one agent slot: its
first message starts it (`POST /api/v1/chat/new`), each further one continues it
(`POST /api/v1/chat/{chatId}/messages`). Every message is a job (`JobRecord` with `chatId`,
`generateImage` and, once answered, `reply`). The chat record says where its conversation
lives, so follow-ups reach that slot and no other.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, field_validator

from semantest.models import (
    CamelModel,
    JobOptions,
    Prompt,
    ProviderName,
    WebhookTarget,
    _webhook_target,
)

#: A webhook a job's final state is posted to.
WebhookUrl = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^https?://\S+$", max_length=2000)
]
#: Chat ids are ours (hex uuid4); anything longer than this is not one.
CHAT_ID_MAX = 64


class ChatOptions(JobOptions):
    """`JobOptions` without the result cache: a reply depends on the conversation so far."""

    cache: Literal[False] = Field(
        default=False, description="Always false: a chat reply never comes from the result cache."
    )


class ChatMessageRequest(CamelModel):
    """Body of `POST /api/v1/chat/{chatId}/messages`: the next message of a chat."""

    message: Prompt
    #: Ask the provider for an image with the reply (the reply text comes either way).
    generate_image: bool = False
    options: ChatOptions = Field(default_factory=ChatOptions)


class ChatRequest(ChatMessageRequest):
    """Body of `POST /api/v1/chat/new`: a new chat and its first message."""

    provider: ProviderName
    #: Posted to when each of the chat's messages ends (its job's final record).
    webhook: WebhookTarget | None = None


class ChatAccepted(CamelModel):
    """Answer to an accepted chat message (202): poll `statusUrl` for `reply` and `images`."""

    chat_id: str
    job_id: str
    status_url: str


class ChatRecord(CamelModel):
    """A chat session as stored in Redis (`keys.chat(id)`, camelCase JSON).

    It expires `Settings.chat_idle_s` after the last message (each message renews it): then the
    agent closes the chat's tab and the chat is gone.
    """

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    tenant: str
    provider: str
    #: The job of the first message: its attempt starts the conversation (a new one on each
    #: attempt) and binds the chat to its slot.
    first_job_id: str
    #: The RQ worker of the slot holding the conversation (`<agent>/<slot>@<boot>`), once the
    #: first message's attempt has started; follow-ups are queued for it alone.
    worker: str | None = None
    #: That slot's name (`<agent>/<slot>`), as job records show it in `agent`.
    slot: str | None = None
    created_at: float = Field(default_factory=time.time)
    last_used_at: float = Field(default_factory=time.time)
    #: Messages answered so far.
    turns: int = 0
    webhook: WebhookTarget | None = None

    _legacy_webhook = field_validator("webhook", mode="before")(_webhook_target)

    def to_json(self) -> str:
        """The stored JSON form (camelCase)."""
        return self.model_dump_json(by_alias=True)
