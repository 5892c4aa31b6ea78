// Sandbox image chat driver (addon "sandbox").
// Page contract (sandbox/page.py): #thread > .turn[data-role=user|assistant],
// assistant turns have data-state=streaming|done|error, a .text child and
// img.generated once generated; #composer is a contenteditable textbox;
// #send is disabled while the composer is empty or a reply is streaming;
// #new-chat empties the thread and starts a new conversation; #image-toggle
// (aria-pressed) says whether replies carry an image; #image-settings holds
// #image-count, #image-size, #image-style and #image-model, which the driver
// fills from the job's options (count, size, style, model) before each send.
// A chat message (options.chat) starts a new conversation when options.chat.new,
// else continues the one on screen; collect() reports the reply's text, and
// waits for an image only when options.generateImage.
// Waits use MutationObservers and load events, never polling.
// Wrapped in a function so its names never clash with another addon in the same world.

(() => {
  const DEFAULT_TIMEOUT_MS = 120_000;
  const SEND_ENABLE_TIMEOUT_MS = 5_000;
  const IMAGE_APPEAR_GRACE_MS = 10_000; // a finished turn should already hold its image

  const $ = (selector, root = document) => root.querySelector(selector);
  const assistantTurns = () => [...document.querySelectorAll('#thread .turn[data-role="assistant"]')];
  const fail = (code, message, retryable) => SemantestAddon.error(code, message, retryable);

  let knownTurns = new Set(); // assistant turns that existed before our prompt was sent

  /**
   * Resolves with check()'s first truthy value, re-checking on every mutation
   * under `root`; rejects with `timeoutError` after `timeoutMs`.
   */
  function until(root, observeOptions, check, timeoutMs, timeoutError, signal) {
    return new Promise((resolve, reject) => {
      const first = check();
      if (first) return resolve(first);
      const observer = new MutationObserver(() => {
        const value = check();
        if (value) finish(() => resolve(value));
      });
      const timer = setTimeout(() => finish(() => reject(timeoutError())), Math.max(0, timeoutMs));
      const onAbort = () => finish(() => reject(fail("CANCELED", "the job was canceled", false)));
      signal?.addEventListener("abort", onAbort, { once: true });
      function finish(settle) {
        observer.disconnect();
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        settle();
      }
      observer.observe(root, observeOptions);
    });
  }

  /** The wait (seconds) a rate-limit notice names: its data-retry-after, else its words. */
  function noticeWait(turn, text) {
    const attr = Number(turn?.dataset.retryAfter);
    if (turn?.dataset.retryAfter != null && Number.isFinite(attr)) return attr;
    const words = /(?:try again|retry) in (\d+) ?(s|sec|seconds?|m|min|minutes?)\b/i.exec(text);
    if (!words) return undefined;
    return Number(words[1]) * (/^m/i.test(words[2]) ? 60 : 1);
  }

  /** How an error turn maps to a job error: its data-error kind first, else its text. */
  function classifyError(text, turn = null) {
    const kind = turn?.dataset.error || "";
    if (kind === "refused" || /content policy|can'?t create that/i.test(text)) {
      return fail("CONTENT_REFUSED", text, false);
    }
    if (kind === "rate-limited" || /\b429\b|rate.?limit|too many requests/i.test(text)) {
      const err = fail("PROVIDER_RATE_LIMITED", text, true);
      const wait = noticeWait(turn, text);
      if (wait !== undefined) err.retryAfterS = wait;
      return err;
    }
    if (kind === "logged-out" || /\b40[13]\b|log(ged)?.?(in|out)|sign.?in|session (has )?expired/i.test(text)) {
      return fail("PROVIDER_LOGGED_OUT", text, true);
    }
    if (kind === "broken" || /broken image|does not decode/i.test(text)) {
      return fail("GENERATION_FAILED", text, false);
    }
    if (kind === "server" || /\b5\d\d\b|stream ended|network|failed to fetch/i.test(text)) {
      return fail("PROVIDER_ERROR", text, true);
    }
    return fail("GENERATION_FAILED", text || "the provider returned an error", false);
  }

  function detectState() {
    if ($("#login-wall") || !$("#composer") || !$("#send")) return "logged-out";
    const turns = assistantTurns();
    const last = turns[turns.length - 1];
    if (!last) return "ready";
    if (last.dataset.state === "streaming") return "busy";
    if (last.dataset.state === "error") {
      const code = classifyError($(".text", last)?.textContent || "", last).code;
      if (code === "PROVIDER_RATE_LIMITED") return "rate-limited";
      if (code === "PROVIDER_LOGGED_OUT") return "logged-out";
      if (code === "CONTENT_REFUSED") return "refused"; // the last prompt was refused; a new one may pass
    }
    return "ready";
  }

  /** Replaces the composer's content with `text` the way a person's typing would. */
  function typeInto(composer, text) {
    composer.focus();
    const selection = getSelection();
    const range = document.createRange();
    range.selectNodeContents(composer);
    selection.removeAllRanges();
    selection.addRange(range);
    document.execCommand("insertText", false, text);
    const typed = (composer.innerText || "").replace(/\u00a0/g, " ").trim();
    if (typed !== text.trim()) {
      // execCommand can be refused (no focus in a background tab); fall back to a plain edit.
      composer.textContent = text;
      composer.dispatchEvent(new InputEvent("input", { bubbles: true, inputType: "insertText", data: text }));
    }
  }

  /** Empties the thread for a new conversation (the page's own "New chat"). */
  function startConversation() {
    const button = $("#new-chat");
    if (!button) throw fail("PAGE_CHANGED", "no #new-chat on this page", true);
    if (button.disabled) throw fail("ADDON_BUSY", "a reply is still streaming", true);
    button.click(); // the page empties #thread synchronously
    if (assistantTurns().length) throw fail("PAGE_CHANGED", "New chat did not empty the thread", true);
  }

  /** Presses or releases the page's image toggle so the reply does (not) carry an image. */
  function wantImage(wanted) {
    const toggle = $("#image-toggle");
    if (!toggle) {
      if (wanted) return; // a page without the toggle always answers with an image
      throw fail("PAGE_CHANGED", "no #image-toggle on this page", true);
    }
    if ((toggle.getAttribute("aria-pressed") !== "false") !== wanted) toggle.click();
  }

  /** Fills the page's image settings from the job's options (defaults when absent), as a
   * person would in its settings menu: a reused tab must not keep another job's choices. */
  function applyImageOptions(options) {
    const wanted = {
      count: String(options.count ?? 1),
      size: options.size ?? "",
      style: options.style ?? "",
      model: options.model ?? "",
    };
    for (const [name, value] of Object.entries(wanted)) {
      const input = $(`#image-${name}`);
      if (!input) {
        const asked = name === "count" ? value !== "1" : value !== "";
        if (asked) throw fail("PAGE_CHANGED", `no #image-${name} on this page for options.${name}`, true);
        continue;
      }
      if (input.value !== value) {
        input.value = value;
        input.dispatchEvent(new Event("input", { bubbles: true }));
        input.dispatchEvent(new Event("change", { bubbles: true }));
      }
    }
  }

  async function submit(prompt, options = {}, progress, signal) {
    const composer = $("#composer");
    const send = $("#send");
    if (!composer || !send) throw fail("PAGE_CHANGED", "no #composer or #send on this page", true);
    if (options.chat?.new) startConversation();
    wantImage(options.generateImage !== false);
    applyImageOptions(options);
    knownTurns = new Set(assistantTurns());
    typeInto(composer, prompt);
    await until(send, { attributes: true, attributeFilter: ["disabled"] }, () => !send.disabled,
      SEND_ENABLE_TIMEOUT_MS, () => fail("COMPOSER_STUCK", "the send button stayed disabled", true), signal);
    send.click();
    progress(30, "waiting");
  }

  /** Resolves once `img` has loaded with a size; rejects if it fails or the deadline passes. */
  function loaded(img, deadline) {
    if (img.complete && img.naturalWidth > 0) return Promise.resolve(img);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => done(() => reject(
        fail("TIMEOUT", "the generated image did not finish loading", true))), deadline - Date.now());
      const onLoad = () => done(() => img.naturalWidth > 0
        ? resolve(img) : reject(fail("IMAGE_LOAD_FAILED", "the generated image is empty", true)));
      const onError = () => done(() => reject(fail("IMAGE_LOAD_FAILED", `the generated image failed to load: ${img.src}`, true)));
      function done(settle) {
        clearTimeout(timer);
        img.removeEventListener("load", onLoad);
        img.removeEventListener("error", onError);
        settle();
      }
      img.addEventListener("load", onLoad);
      img.addEventListener("error", onError);
    });
  }

  async function collect(progress, options = {}, signal) {
    const timeoutMs = Number(options.timeoutMs) > 0 ? Number(options.timeoutMs) : DEFAULT_TIMEOUT_MS;
    const deadline = Date.now() + timeoutMs;
    const thread = $("#thread");
    if (!thread) throw fail("PAGE_CHANGED", "no #thread on this page", true);

    const finished = () => assistantTurns().find(
      (turn) => !knownTurns.has(turn) && (turn.dataset.state === "done" || turn.dataset.state === "error"));
    const turn = await until(thread, { childList: true, subtree: true, attributes: true, attributeFilter: ["data-state"] },
      finished, timeoutMs, () => fail("TIMEOUT", `no finished reply within ${timeoutMs} ms`, true), signal);
    if (turn.dataset.state === "error") throw classifyError(($(".text", turn)?.textContent || "").trim(), turn);
    const reply = ($(".text", turn)?.textContent || "").trim();
    if (options.generateImage === false) {
      progress(80, "capturing");
      return { reply, images: [] };
    }

    await until(turn, { childList: true, subtree: true }, () => $("img.generated", turn),
      Math.min(IMAGE_APPEAR_GRACE_MS, deadline - Date.now()), () => fail("NO_IMAGE", "the reply has no image", false), signal);
    const images = await Promise.all([...turn.querySelectorAll("img.generated")].map((img) => loaded(img, deadline)));
    progress(80, "capturing");
    return {
      reply,
      images: images.map((img) => ({ url: img.src, width: img.naturalWidth, height: img.naturalHeight })),
    };
  }

  SemantestAddon.define({ id: "sandbox", version: "0.2.0", chat: true, detectState, submit, collect });
})();
