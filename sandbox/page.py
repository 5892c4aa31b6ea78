"""The sandbox chat page: HTML, CSS and the inline script that drives the conversation.

It lives in a Python module (not a static file) so it ships with the package without extra
package-data, and so the per-response CSP nonce can be stamped onto the script tag.

DOM contract relied on by the provider addons (keep the selectors exact):
  #thread > .turn[data-role=user|assistant]; assistant turns carry
  data-state=streaming|done|error, a .text child and, once generated, img.generated. An error
  turn carries data-error=refused|rate-limited|logged-out|server|broken (the provider's kind of
  failure) and, for a rate limit, data-retry-after (the notice's wait in seconds). A logout
  replaces the composer bar with #login-wall until the page reloads.
  #composer is a contenteditable textbox; #send (data-testid=send-button) is disabled while
  the composer is empty or a reply is streaming. Enter without Shift sends.
  #new-chat (data-testid=new-chat) empties #thread and starts a new conversation (a new
  conversation id, sent with every message); it is disabled while a reply is streaming.
  #image-toggle (data-testid=image-toggle) is a toggle button: aria-pressed="true" (the
  default) asks for an image with each reply, "false" for a text reply only.
  #image-settings holds the image options a person would pick in a settings menu, sent with
  every message: #image-count (1-4 images per reply), #image-size (WxH, empty: 512x512),
  #image-style and #image-model (free text, empty: none). A reply carries one img.generated
  per image and is marked done once all of them have loaded.
"""

from __future__ import annotations

_NONCE_MARK = "__SANDBOX_NONCE__"

_SCRIPT = r"""
(() => {
  "use strict";
  const thread = document.getElementById("thread");
  const composer = document.getElementById("composer");
  const send = document.getElementById("send");
  const newChat = document.getElementById("new-chat");
  const imageToggle = document.getElementById("image-toggle");
  const setting = (name) => document.getElementById("image-" + name).value.trim();
  let busy = false;
  let conversationId = newConversationId();

  function newConversationId() {
    const bytes = new Uint8Array(12);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function composerText() {
    return (composer.innerText || "").replace(/\u00a0/g, " ").trim();
  }

  function refresh() {
    send.disabled = busy || composerText().length === 0;
    newChat.disabled = busy;
  }

  // Attributes are set before insertion so observers never see a half-made turn.
  function addTurn(role, state) {
    const turn = document.createElement("div");
    turn.className = "turn";
    turn.dataset.role = role;
    if (state) turn.dataset.state = state;
    const text = document.createElement("div");
    text.className = "text";
    turn.appendChild(text);
    thread.appendChild(turn);
    turn.scrollIntoView({block: "end"});
    return turn;
  }

  // A failure carrying the provider's kind of error (refused, rate-limited, logged-out,
  // server, broken) and, for a rate limit, the wait its notice shows.
  function providerError(message, kind, retryAfterS) {
    const err = new Error(message || "provider error");
    err.kind = kind || "";
    if (retryAfterS != null) err.retryAfterS = retryAfterS;
    return err;
  }
  async function waitForImage(img) {
    try {
      await img.decode();
    } catch (_) {
      if (img.complete && img.naturalWidth > 0) return;
      // The server answered but the bytes are no image: the provider's image is broken.
      let served = false;
      try {
        served = (await fetch(img.src, {credentials: "same-origin"})).ok;
      } catch (_) { /* a network failure: retryable, below */ }
      const broken = "broken image: the generated image does not decode";
      if (served) throw providerError(broken, "broken");
      // Worded so callers classify it as a retryable transport failure.
      throw new Error("network error: the generated image failed to load");
    }
  }

  // Returns true once the "done" line has been handled.
  async function handleLine(line, turn, text, state) {
    const ev = JSON.parse(line);
    if (ev.type === "delta") {
      text.textContent += ev.text;
    } else if (ev.type === "image") {
      const img = document.createElement("img");
      img.className = "generated";
      img.alt = "generated image";
      img.src = ev.url;
      turn.appendChild(img);
      state.imgs.push(img);
    } else if (ev.type === "error") {
      throw providerError(ev.message, ev.kind, ev.retryAfterS);
    } else if (ev.type === "done") {
      // "done" promises displayable images, as a real provider's finished turn does.
      await Promise.all(state.imgs.map(waitForImage));
      return true;
    }
    return false;
  }

  async function stream(prompt, turn, text) {
    const resp = await fetch("/api/conversation", {
      method: "POST",
      credentials: "same-origin",
      headers: {"Content-Type": "application/json", "Accept": "application/x-ndjson"},
      body: JSON.stringify({
        prompt, conversationId, image: imageToggle.getAttribute("aria-pressed") !== "false",
        count: Number(setting("count") || "1"),
        size: setting("size") || null,
        style: setting("style") || null,
        model: setting("model") || null,
      }),
    });
    if (!resp.ok) {
      let msg = "HTTP " + resp.status;
      try {
        const body = await resp.json();
        msg += ": " + (body.error || JSON.stringify(body.detail));
      } catch (_) { /* non-JSON error body: the status is all we have */ }
      throw new Error(msg);
    }
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    const state = {imgs: []};
    let buf = "";
    for (;;) {
      const {value, done} = await reader.read();
      buf += done ? decoder.decode() : decoder.decode(value, {stream: true});
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (line && await handleLine(line, turn, text, state)) return;
      }
      if (done) break;
    }
    if (buf.trim() && await handleLine(buf.trim(), turn, text, state)) return;
    throw new Error("stream ended before done");
  }

  async function submit() {
    const prompt = composerText();
    if (busy || !prompt) return;
    busy = true;
    const user = addTurn("user", null);
    user.querySelector(".text").textContent = prompt;
    composer.textContent = "";
    refresh();
    const turn = addTurn("assistant", "streaming");
    const text = turn.querySelector(".text");
    try {
      await stream(prompt, turn, text);
      turn.dataset.state = "done";
    } catch (err) {
      text.textContent = String((err && err.message) || err);
      if (err && err.kind) turn.dataset.error = err.kind;
      if (err && err.retryAfterS != null) turn.dataset.retryAfter = String(err.retryAfterS);
      turn.dataset.state = "error";
      if (err && err.kind === "logged-out") showLoginWall();
    } finally {
      busy = false;
      refresh();
      turn.scrollIntoView({block: "end"});
    }
  }

  // The session is gone: the composer makes way for a sign-in notice until the page reloads.
  function showLoginWall() {
    const bar = document.querySelector(".composer-bar");
    const wall = document.createElement("div");
    wall.id = "login-wall";
    wall.dataset.testid = "login-wall";
    wall.textContent = "You have been logged out. Log in to continue.";
    if (bar) bar.replaceWith(wall);
  }
  composer.addEventListener("input", refresh);
  // Catch programmatic edits (textContent, DOM insertion) that fire no input event.
  new MutationObserver(refresh).observe(
    composer, {childList: true, subtree: true, characterData: true});
  composer.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      submit();
    }
  });
  // Keep the composer plain text, as ProseMirror-style editors do on paste.
  composer.addEventListener("paste", (ev) => {
    ev.preventDefault();
    const pasted = ev.clipboardData ? ev.clipboardData.getData("text/plain") : "";
    document.execCommand("insertText", false, pasted);
  });
  send.addEventListener("click", () => { submit(); });
  newChat.addEventListener("click", () => {
    if (busy) return;
    thread.replaceChildren();
    conversationId = newConversationId();
    composer.focus();
  });
  imageToggle.addEventListener("click", () => {
    const on = imageToggle.getAttribute("aria-pressed") !== "false";
    imageToggle.setAttribute("aria-pressed", on ? "false" : "true");
  });
  refresh();
  composer.focus();
})();
"""

_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sandbox image chat</title>
<link rel="icon" href="data:,">
<style>
  body { margin: 0; font: 15px/1.45 system-ui, sans-serif; background: #f6f6f4; color: #1b1b1b;
         display: flex; flex-direction: column; height: 100vh; }
  header { padding: 10px 16px; font-weight: 600; border-bottom: 1px solid #ddd;
           display: flex; justify-content: space-between; align-items: center; }
  header button, #image-toggle { font: inherit; font-size: 13px; padding: 2px 10px;
                                 border-radius: 8px; border: 1px solid #bbb; background: #fff; }
  #image-toggle[aria-pressed=true] { background: #1b1b1b; color: #fff; }
  #thread { flex: 1; overflow-y: auto; padding: 16px; display: flex; flex-direction: column;
            gap: 12px; }
  .turn { max-width: 720px; padding: 10px 14px; border-radius: 12px; white-space: pre-wrap; }
  .turn[data-role=user] { align-self: flex-end; background: #dfe9ff; }
  .turn[data-role=assistant] { align-self: flex-start; background: #fff;
                               border: 1px solid #e2e2e2; }
  .turn[data-state=error] { border-color: #d33; color: #a11; }
  img.generated { display: block; margin-top: 8px; max-width: 100%; height: auto;
                  border-radius: 8px; }
  .composer-bar { display: flex; gap: 8px; padding: 12px 16px; border-top: 1px solid #ddd; }
  #composer { flex: 1; min-height: 24px; max-height: 200px; overflow-y: auto; padding: 8px 12px;
              border: 1px solid #bbb; border-radius: 10px; background: #fff; outline: none;
              white-space: pre-wrap; }
  #composer:empty::before { content: attr(data-placeholder); color: #999; }
  #send { padding: 0 16px; border-radius: 10px; border: 0; background: #1b1b1b; color: #fff; }
  #send:disabled { background: #aaa; }
  #image-settings { padding: 0 16px 12px; font-size: 13px; color: #555; }
  #image-settings input { font: inherit; width: 7em; margin-right: 10px; }
</style>
</head>
<body>
<header><span>Sandbox image chat</span>
  <button id="new-chat" type="button" data-testid="new-chat">New chat</button></header>
<div id="thread" role="log" aria-live="polite"></div>
<div class="composer-bar">
  <div id="composer" contenteditable="true" role="textbox" aria-label="Message"
       aria-multiline="true" data-placeholder="Describe an image"></div>
  <button id="send" type="button" data-testid="send-button" aria-label="Send" disabled>Send</button>
  <button id="image-toggle" type="button" data-testid="image-toggle" aria-pressed="true"
          title="Create an image with the reply">Image</button>
</div>
<details id="image-settings"><summary>Image settings</summary>
  <label>Images <input id="image-count" type="number" min="1" max="4" value="1"></label>
  <label>Size <input id="image-size" placeholder="512x512"></label>
  <label>Style <input id="image-style" placeholder="none"></label>
  <label>Model <input id="image-model" placeholder="default"></label>
</details>
<script nonce="__SANDBOX_NONCE__">__SANDBOX_SCRIPT__</script>
</body>
</html>
"""


def chat_page_html(nonce: str) -> str:
    """Return the chat page whose only script carries ``nonce`` (matching the CSP header)."""
    return _HTML.replace("__SANDBOX_SCRIPT__", _SCRIPT).replace(_NONCE_MARK, nonce)
