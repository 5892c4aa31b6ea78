# ruff: noqa: E501  (the page's HTML and JavaScript keep their own line lengths)
"""The Gemini replica: `gemini.google.com` (the app page and its streaming endpoint) and
`lh3.google.com` (generated images, served only with the signed-in profile's `.google.com`
cookie: another origin of the same site, so the cookie goes with the page's `<img>` and with
the agent's download alike).

Structure the addon relies on, as on the real page (2025): the composer is a Quill editor,
`rich-textarea > div.ql-editor[contenteditable=true][role=textbox]` (class `ql-blank` while
empty); `button.send-button[aria-label="Send message"]` is `aria-disabled="true"` while the
composer is empty and becomes a stop button (class `stop`, label "Stop response") while a reply
streams; turns are `<user-query>` and `<model-response>` (with `<message-content><div
class="markdown">`), an image reply holds `<generated-image><single-image><img class="image">`
from the image host; notices are `.response-error` blocks; a logged-out page has
`a[aria-label="Sign in"]` and no composer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from sandbox.replicas.state import FaultIn, Replica

REPLICA = Replica(
    name="gemini",
    page_host="gemini.google.com",
    image_host="lh3.google.com",
    session_cookie="__Secure-1PSID",
    cookie_domain="google.com",
)
STREAM_PATH = "/_/BardChatUi/data/assistant.lamda.BardFrontendService/StreamGenerate"

_SCRIPT = r"""
(() => {
  const editor = document.querySelector("rich-textarea .ql-editor");
  const send = document.querySelector("button.send-button");
  const scroller = document.querySelector("infinite-scroller");
  let busy = false;
  const text = () => (editor.innerText || "").replace(/\u00a0/g, " ").trim();
  function refresh() {
    const empty = !text();
    editor.classList.toggle("ql-blank", empty);
    send.setAttribute("aria-disabled", String(empty && !busy));
    send.classList.toggle("stop", busy);
    send.setAttribute("aria-label", busy ? "Stop response" : "Send message");
  }
  // Quill, like ProseMirror, follows DOM edits through a MutationObserver.
  new MutationObserver(refresh).observe(editor, {childList: true, subtree: true, characterData: true});
  editor.addEventListener("input", refresh);
  editor.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); submit(); }
  });
  send.addEventListener("click", () => { if (!busy) submit(); });
  refresh();
  async function submit() {
    const prompt = text();
    if (!prompt || busy) return;
    busy = true;
    editor.innerHTML = "<p><br></p>";
    const container = document.createElement("div");
    container.className = "conversation-container";
    const query = document.createElement("user-query");
    query.textContent = prompt;
    container.appendChild(query);
    const response = document.createElement("model-response");
    response.setAttribute("aria-busy", "true");
    const content = document.createElement("message-content");
    content.className = "model-response-text";
    const markdown = document.createElement("div");
    markdown.className = "markdown";
    content.appendChild(markdown);
    response.appendChild(content);
    container.appendChild(response);
    scroller.appendChild(container);
    refresh();
    const notice = (message) => {
      const box = document.createElement("div");
      box.className = "response-error";
      box.textContent = message;
      response.appendChild(box);
    };
    try {
      const res = await fetch(STREAM, {method: "POST", credentials: "include",
        headers: {"Content-Type": "application/x-www-form-urlencoded;charset=UTF-8"},
        body: "f.req=" + encodeURIComponent(JSON.stringify([null, JSON.stringify([[prompt]])]))});
      if (res.status === 401) { notice("You've been signed out. Sign in to continue."); return; }
      if (!res.ok) { notice(`Something went wrong (${res.status}). Try again later.`); return; }
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, cut).trim();
          buffer = buffer.slice(cut + 1);
          if (!line || line === ")]}'") continue;
          const ev = JSON.parse(line);
          if (ev.type === "delta") markdown.textContent += ev.text;
          else if (ev.type === "error") notice(ev.message);
          else if (ev.type === "image") {
            const gen = document.createElement("generated-image");
            const single = document.createElement("single-image");
            single.className = "generated-image";
            const img = document.createElement("img");
            img.className = "image";
            img.alt = ev.alt;
            img.src = ev.url;
            single.appendChild(img);
            gen.appendChild(single);
            response.appendChild(gen);
            try { await img.decode(); img.classList.add("loaded"); } catch (_) {}
          }
        }
      }
    } catch (err) {
      notice("Network error: " + err.message);
    } finally {
      busy = false;
      response.removeAttribute("aria-busy");
      refresh();
    }
  }
})();
"""

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Gemini</title>
<style>body{font:15px system-ui;margin:0}infinite-scroller{display:block;min-height:70vh;padding:16px}
model-response,user-query{display:block;margin:8px 0}img.image{max-width:256px;display:block}
.ql-editor{min-height:24px;border:1px solid #aaa;padding:6px}</style></head>
<body><chat-app><chat-window><infinite-scroller></infinite-scroller>
<input-area-v2><rich-textarea><div class="ql-editor ql-blank textarea" contenteditable="true"
 role="textbox" aria-multiline="true" aria-label="Enter a prompt here"
 data-placeholder="Ask Gemini"><p><br></p></div></rich-textarea>
<div class="send-button-container"><button class="send-button" aria-label="Send message"
 aria-disabled="true">➤</button></div></input-area-v2></chat-window></chat-app>
<script>const STREAM = "__STREAM__";__SCRIPT__</script></body></html>"""

_LOGGED_OUT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Gemini</title></head>
<body><header><a aria-label="Sign in" href="https://accounts.google.com/ServiceLogin">Sign in</a>
</header><main><h1>Meet Gemini, your personal AI assistant</h1></main></body></html>"""

RATE_LIMIT = "You've reached your limit for creating images right now. Try again in {wait} seconds."
REFUSAL = (
    "I can't create images like that. Please try a different prompt that follows our policies."
)


def page_app(replica: Replica = REPLICA) -> FastAPI:
    """`gemini.google.com`: the app page, sign-in hop, and the streamed reply."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/_replica/signin")
    async def signin(request: Request) -> Response:
        return replica.finish_sign_in(request)

    @app.get("/")
    @app.get("/app")
    @app.get("/app/{conversation}")
    async def page(request: Request) -> Response:
        if replica.logged_out:
            return HTMLResponse(_LOGGED_OUT)
        if not replica.signed_in(request):
            return replica.sign_in(request)
        html = _PAGE.replace("__STREAM__", STREAM_PATH).replace("__SCRIPT__", _SCRIPT)
        return HTMLResponse(html)

    @app.post(STREAM_PATH)
    async def stream(request: Request) -> Response:
        if not replica.signed_in(request):
            return JSONResponse({"error": "unauthenticated"}, 401)
        form = await request.form()
        outer = json.loads(str(form["f.req"]))
        prompt = str(json.loads(outer[1])[0][0])
        replica.prompts.append(prompt)
        fault = replica.next_fault()
        if fault and fault.kind == "logout":
            replica.logged_out = True
            return JSONResponse({"error": "unauthenticated"}, 401)
        image = None if fault and fault.kind != "slow" else replica.image(prompt, request)
        stream = _reply(replica, prompt, fault, image)
        return StreamingResponse(stream, media_type="application/json")

    return app


async def _reply(
    replica: Replica, prompt: str, fault: FaultIn | None, image: str | None
) -> AsyncIterator[str]:
    step = fault.retry_after / 4 if fault and fault.kind == "slow" else replica.step_s
    yield ")]}'\n"  # Google's JSON-hijacking guard, as the real stream starts
    for piece in ("Sure, ", "here is ", "your image."):
        await asyncio.sleep(step)
        if fault and fault.kind in ("ratelimit", "refusal"):
            break
        yield json.dumps({"type": "delta", "text": piece}) + "\n"
    if fault and fault.kind == "ratelimit":
        yield json.dumps({"type": "error", "message": RATE_LIMIT.format(wait=fault.retry_after)})
        yield "\n"
    elif (fault and fault.kind == "refusal") or image is None:
        yield json.dumps({"type": "delta", "text": REFUSAL}) + "\n"
    else:
        await asyncio.sleep(step)
        url = f"https://{replica.image_host}/gg/{image}=s1024"
        yield json.dumps({"type": "image", "url": url, "alt": prompt[:80]}) + "\n"


def image_app(replica: Replica = REPLICA) -> FastAPI:
    """`lh3.google.com`: the images, only with the signed-in profile's cookie."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/gg/{image_id}")
    async def image(image_id: str, request: Request) -> Response:
        data = replica.image_for(image_id.split("=", 1)[0], request)
        if data is None:
            return Response("Forbidden", 403, media_type="text/plain")
        return Response(data, media_type="image/png", headers={"Cache-Control": "private"})

    return app
