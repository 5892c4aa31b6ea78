"""What a replica remembers: sessions, pending faults, generated images, and the sign-in hops."""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Annotated, Literal
from urllib.parse import quote

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from sandbox.render import ImageSpec, render


class FaultIn(BaseModel):
    """Body of `POST /_replica/<name>/faults`: the next `count` prompts meet `kind`.

    `logout` signs the profile out until the faults are cleared (`DELETE`); `slow` streams the
    reply over `retryAfter` seconds; `ratelimit` names `retryAfter` in its notice.
    """

    kind: Literal["ratelimit", "refusal", "logout", "slow"]
    count: Annotated[int, Field(ge=0, le=1000)] = 1
    retry_after: Annotated[int, Field(ge=0, le=3600, alias="retryAfter")] = 2


@dataclass
class Replica:
    """One provider's replica: its hosts, cookies and what it has generated."""

    name: str
    page_host: str
    image_host: str
    session_cookie: str
    #: The cookie's `Domain` (a parent of both hosts, so the image host gets it), or None: the
    #: image URLs are signed instead (bound to the session that asked, dead once it is).
    cookie_domain: str | None = None
    #: Seconds between two streamed pieces of a reply.
    step_s: float = 0.05
    sessions: set[str] = field(default_factory=set)
    faults: deque[FaultIn] = field(default_factory=deque)
    #: Generated images by id: their bytes and the session they were made for.
    images: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    logged_out: bool = False
    #: Which markup the page serves: `current`, or `legacy` (older attribute names, which the
    #: addon's fallback selectors must still find).
    variant: str = "current"
    #: The variant of each chat page served, in order (tests read it).
    pages: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)

    def next_fault(self) -> FaultIn | None:
        """The fault the next prompt meets (consumed), if any."""
        while self.faults and self.faults[0].count <= 0:
            self.faults.popleft()
        if not self.faults:
            return None
        self.faults[0].count -= 1
        return self.faults[0]

    def clear(self) -> None:
        """No pending faults, the current markup, and signed in again on the next visit."""
        self.faults.clear()
        self.logged_out = False
        self.variant = "current"

    def signed_in(self, request: Request) -> bool:
        """Whether the request carries a live session of the page host."""
        return not self.logged_out and request.cookies.get(self.session_cookie) in self.sessions

    def image_for(self, image_id: str, request: Request) -> bytes | None:
        """An image's bytes when the request may see them: with the signed-in profile's cookie
        (`cookie_domain`), or with the URL's signature while its session lives."""
        found = self.images.get(image_id)
        if found is None or self.logged_out:
            return None
        data, session = found
        if self.cookie_domain:
            allowed = request.cookies.get(self.session_cookie) in self.sessions
        else:
            allowed = request.query_params.get("sig") == session and session in self.sessions
        return data if allowed else None

    def image(self, prompt: str, request: Request) -> str:
        """Render the prompt's PNG for the request's session; its id (and, for signed URLs,
        the query that signs it)."""
        image_id = secrets.token_urlsafe(12)
        session = request.cookies.get(self.session_cookie, "")
        self.images[image_id] = (render(ImageSpec(prompt)), session)
        return (
            image_id if self.cookie_domain else f"{image_id}?se=2099-01-01T00%3A00Z&sig={session}"
        )

    def sign_in(self, request: Request) -> Response:
        """A profile's first visit signs it in (as a saved login would): one hop that sets the
        session cookie, then back to the page."""
        back = str(request.url.replace(scheme="https"))
        return RedirectResponse(
            f"https://{self.page_host}/_replica/signin?next={quote(back, safe='')}", 302
        )

    def finish_sign_in(self, request: Request) -> Response:
        """The sign-in hop: set the session cookie, go on to `next` (a page of this host)."""
        target = request.query_params.get("next", f"https://{self.page_host}/")
        if not target.startswith(f"https://{self.page_host}/"):
            return Response("bad next", 400)
        response = RedirectResponse(target, 302)
        token = secrets.token_urlsafe(16)
        self.sessions.add(token)
        response.set_cookie(
            self.session_cookie,
            token,
            domain=self.cookie_domain,
            secure=True,
            httponly=True,
            samesite="lax",
            path="/",
        )
        return response
