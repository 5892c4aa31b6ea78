# ruff: noqa: E501  (the page's HTML and JavaScript keep their own line lengths)
"""The ChatGPT replica: `chatgpt.com` (page and conversation API) and `files.oaiusercontent.com`
(generated images at signed URLs, bound to the signed-in session that asked for them).

Structure the addon relies on, as on the real page (2025): `#prompt-textarea` is a ProseMirror
contenteditable div holding `<p>` paragraphs; `button[data-testid=send-button]` is disabled
while the composer is empty and replaced by `button[data-testid=stop-button]` while a reply
streams; turns are `article[data-testid=conversation-turn-N]` holding
`[data-message-author-role=user|assistant]`; an image reply ends with
`<img alt="Generated image: …">` from the image host; notices are
`[data-testid=message-error]` blocks in the turn; a logged-out page has
`button[data-testid=login-button]` and no composer. The `legacy` variant (`PUT
/_replica/chatgpt/variant`) serves older markup: no composer id, the `composer-send-button` test
id, a stop button known only by its label; the addon's fallback selectors must drive it. The conversation API streams Server-Sent
Events (`data: {...}` lines, then `data: [DONE]`) as the real `backend-api/conversation` does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from sandbox.replicas.state import FaultIn, Replica

REPLICA = Replica(
    name="chatgpt",
    page_host="chatgpt.com",
    image_host="files.oaiusercontent.com",
    session_cookie="__Secure-next-auth.session-token",
)

_SCRIPT = r"""
(() => {
  const composer = document.getElementById("prompt-textarea");
  const bar = document.getElementById("composer-actions");
  const main = document.querySelector("main");
  let turnNo = 0;
  const EMPTY = '<p class="placeholder" data-placeholder="Ask anything"><br class="ProseMirror-trailingBreak"></p>';
  const text = () => (composer.innerText || "").replace(/\u00a0/g, " ").trim();
  function button(kind) {
    const b = document.createElement("button");
    b.id = "composer-submit-button";
    // the legacy markup: the older send test id, and a stop button known only by its label
    if (!LEGACY) b.dataset.testid = kind === "send" ? "send-button" : "stop-button";
    else if (kind === "send") b.dataset.testid = "composer-send-button";
    b.setAttribute("aria-label", kind === "send" ? "Send prompt" : "Stop streaming");
    b.className = "composer-submit-btn";
    b.textContent = kind === "send" ? "↑" : "■";
    if (kind === "send") b.addEventListener("click", submit);
    return b;
  }
  let send = button("send");
  bar.appendChild(send);
  function refresh() {
    const empty = !text();
    if (send.isConnected) send.disabled = empty;
    // ProseMirror's placeholder class on an empty first paragraph
    composer.firstElementChild?.classList.toggle("placeholder", empty);
  }
  // ProseMirror reads the DOM through a MutationObserver: any edit counts, as here.
  new MutationObserver(refresh).observe(composer, {childList: true, subtree: true, characterData: true});
  composer.addEventListener("input", refresh);
  composer.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); if (!send.disabled) submit(); }
  });
  composer.innerHTML = EMPTY;
  refresh();
  function turn(role) {
    const article = document.createElement("article");
    article.dataset.testid = "conversation-turn-" + (++turnNo);
    const msg = document.createElement("div");
    msg.dataset.messageAuthorRole = role;
    msg.dataset.messageId = crypto.randomUUID();
    const body = document.createElement("div");
    body.className = role === "user" ? "whitespace-pre-wrap" : "markdown prose";
    msg.appendChild(body);
    article.appendChild(msg);
    main.appendChild(article);
    return [msg, body];
  }
  async function submit() {
    const prompt = text();
    if (!prompt) return;
    composer.innerHTML = EMPTY;
    turn("user")[1].textContent = prompt;
    const stop = button("stop");
    send.replaceWith(stop);
    let msg = null, body = null;
    const assistant = () => { if (!msg) [msg, body] = turn("assistant"); return body; };
    const notice = (message) => {
      assistant();
      const box = document.createElement("div");
      box.dataset.testid = "message-error";
      box.className = "text-token-text-error";
      box.textContent = message;
      msg.appendChild(box);
    };
    try {
      const res = await fetch("/backend-api/conversation", {
        method: "POST", credentials: "include",
        headers: {"Content-Type": "application/json", "Accept": "text/event-stream"},
        body: JSON.stringify({action: "next", messages: [{content: {parts: [prompt]}}]}),
      });
      if (res.status === 401) { notice("Your session has expired. Please log in again."); return; }
      if (!res.ok) { notice(`Something went wrong (${res.status}). Try again later.`); return; }
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const line = buffer.slice(0, cut).replace(/^data: /, "");
          buffer = buffer.slice(cut + 2);
          if (line === "[DONE]") continue;
          const ev = JSON.parse(line);
          if (ev.type === "delta") assistant().textContent += ev.text;
          else if (ev.type === "error") notice(ev.message);
          else if (ev.type === "image") {
            const img = document.createElement("img");
            img.alt = "Generated image: " + ev.alt;
            img.src = ev.url;
            img.className = "w-full";
            assistant();
            msg.appendChild(img);
            try { await img.decode(); } catch (_) {}
          }
        }
      }
    } catch (err) {
      notice("Network error: " + err.message);
    } finally {
      send = button("send");
      stop.replaceWith(send);
      refresh();
    }
  }
})();
"""

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ChatGPT</title>
<style>body{font:15px system-ui;margin:0}main{padding:16px;min-height:70vh}
[data-message-author-role]{margin:8px 0}img{max-width:256px;display:block}
#composer{display:flex;gap:8px;padding:12px;border-top:1px solid #ccc}
#prompt-textarea{flex:1;min-height:24px;border:1px solid #aaa;padding:6px}
.placeholder::before{content:attr(data-placeholder);color:#999}</style></head>
<body><div id="__next"><nav><a data-testid="create-new-chat-button" href="/">New chat</a></nav>
<main></main>
<form id="composer" onsubmit="return false">
<div id="prompt-textarea" contenteditable="true" translate="no" role="textbox"
 class="ProseMirror" aria-label="Message ChatGPT"></div>
<div id="composer-actions"></div></form></div>
<script>const LEGACY = __LEGACY__;__SCRIPT__</script></body></html>"""

_LOGGED_OUT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ChatGPT</title></head>
<body><div id="__next"><header><button data-testid="login-button">Log in</button>
<button data-testid="signup-button">Sign up for free</button></header>
<main><h1>Get smarter responses, upload files and images, and more.</h1></main></div></body></html>"""

RATE_LIMIT = (
    "You've hit the plus plan limit for image generations requests. You can create more "
    "images when the limit resets in {wait} seconds."
)
REFUSAL = (
    "I can't help with that request because it may violate our content policy. "
    "Feel free to ask for something else."
)


def page_app(replica: Replica = REPLICA) -> FastAPI:
    """`chatgpt.com`: the chat page, sign-in hop, and the streamed conversation API."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/_replica/signin")
    async def signin(request: Request) -> Response:
        return replica.finish_sign_in(request)

    @app.get("/")
    @app.get("/c/{conversation}")
    async def page(request: Request) -> Response:
        if replica.logged_out:
            return HTMLResponse(_LOGGED_OUT)
        if not replica.signed_in(request):
            return replica.sign_in(request)
        page = _PAGE.replace("__SCRIPT__", _SCRIPT)
        legacy = replica.variant == "legacy"
        replica.pages.append(replica.variant)
        if legacy:  # no id on the composer
            page = page.replace('<div id="prompt-textarea" ', "<div ")
            page = page.replace(
                'getElementById("prompt-textarea")', 'querySelector(".ProseMirror")'
            )
        return HTMLResponse(page.replace("__LEGACY__", "true" if legacy else "false"))

    @app.post("/backend-api/conversation")
    async def conversation(request: Request) -> Response:
        if not replica.signed_in(request):
            return JSONResponse({"detail": "Unauthorized"}, 401)
        body = await request.json()
        prompt = str(body["messages"][0]["content"]["parts"][0])
        replica.prompts.append(prompt)
        fault = replica.next_fault()
        if fault and fault.kind == "logout":
            replica.logged_out = True
            return JSONResponse({"detail": "Your session has expired"}, 401)
        image = None if fault and fault.kind != "slow" else replica.image(prompt, request)
        stream = _reply(replica, prompt, fault, image)
        return StreamingResponse(stream, media_type="text/event-stream")

    return app


async def _reply(
    replica: Replica, prompt: str, fault: FaultIn | None, image: str | None
) -> AsyncIterator[str]:
    step = replica.step_s
    if fault and fault.kind == "slow":
        step = fault.retry_after / 4
    for piece in ("Creating ", "image", "…"):
        await asyncio.sleep(step)
        yield "data: " + json.dumps({"type": "delta", "text": piece}) + "\n\n"
    if fault and fault.kind == "ratelimit":
        message = RATE_LIMIT.format(wait=fault.retry_after)
        yield "data: " + json.dumps({"type": "error", "message": message}) + "\n\n"
    elif (fault and fault.kind == "refusal") or image is None:
        yield "data: " + json.dumps({"type": "delta", "text": " " + REFUSAL}) + "\n\n"
    else:
        await asyncio.sleep(step)
        url = f"https://{replica.image_host}/file-{image}"
        yield "data: " + json.dumps({"type": "image", "url": url, "alt": prompt[:80]}) + "\n\n"
    yield "data: [DONE]\n\n"


def image_app(replica: Replica = REPLICA) -> FastAPI:
    """`files.oaiusercontent.com`: the images, at URLs signed for the session that asked."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/file-{image_id}")
    async def image(image_id: str, request: Request) -> Response:
        data = replica.image_for(image_id, request)
        if data is None:
            return Response(
                "<Error><Code>AuthenticationFailed</Code></Error>",
                403,
                media_type="application/xml",
            )
        return Response(data, media_type="image/png", headers={"Cache-Control": "private"})

    return app
