// Helpers every chat-page driver needs (addon "chatkit"), shared through `requires`:
//   const kit = SemantestAddon.use("chatkit");
// - kit.find(selectors, root) / kit.findAll(selectors, root): the first selector of a list that
//   matches (a driver keeps its selectors in one table, newest first, with fallbacks);
// - kit.until(root, observeOptions, check, timeoutMs, timeoutError, signal): resolves with
//   check()'s first truthy value, re-checked on every mutation (no polling);
// - kit.typeInto(composer, text): types into a contenteditable composer (ProseMirror, Quill)
//   the way a person's typing would, so the editor's own state follows;
// - kit.loaded(img, deadline, signal): resolves once the image has loaded with a size;
// - kit.waitSeconds(text): the wait a rate-limit notice names ("in 2 minutes", "in 30 s");
// - kit.deadlineOf(options, fallbackMs): the job's deadline (options.timeoutMs) as a time.
// Its own matches are its dependents' sites: it is registered on its own there as well, which
// is harmless (providing again hands out the same functions).
(() => {
  const fail = (code, message, retryable) => SemantestAddon.error(code, message, retryable);

  function find(selectors, root = document) {
    for (const selector of selectors) {
      const found = root.querySelector(selector);
      if (found) return found;
    }
    return null;
  }

  function findAll(selectors, root = document) {
    for (const selector of selectors) {
      const found = root.querySelectorAll(selector);
      if (found.length) return [...found];
    }
    return [];
  }

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

  const plain = (el) => (el.innerText || el.textContent || "").replace(/\u00a0/g, " ").trim();

  function typeInto(composer, text) {
    composer.focus();
    const selection = getSelection();
    const range = document.createRange();
    range.selectNodeContents(composer);
    selection.removeAllRanges();
    selection.addRange(range);
    // insertText goes through beforeinput/input, which rich editors (ProseMirror, Quill) read.
    document.execCommand("insertText", false, text);
    if (plain(composer) !== text.trim()) {
      // execCommand can be refused (no focus in a background tab): write a paragraph instead.
      const p = document.createElement("p");
      p.textContent = text;
      composer.replaceChildren(p);
      composer.dispatchEvent(new InputEvent("input", { bubbles: true, inputType: "insertText", data: text }));
    }
  }

  function loaded(img, deadline, signal) {
    if (img.complete && img.naturalWidth > 0) return Promise.resolve(img);
    if (img.complete && img.currentSrc) {  // it already failed: no load or error event comes
      return Promise.reject(fail("IMAGE_LOAD_FAILED", `the generated image failed to load: ${img.src}`, true));
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => done(() => reject(
        fail("PROVIDER_TIMEOUT", "the generated image did not finish loading", true))), deadline - Date.now());
      const onLoad = () => done(() => img.naturalWidth > 0
        ? resolve(img) : reject(fail("IMAGE_LOAD_FAILED", "the generated image is empty", true)));
      const onError = () => done(() => reject(fail("IMAGE_LOAD_FAILED", `the generated image failed to load: ${img.src}`, true)));
      const onAbort = () => done(() => reject(fail("CANCELED", "the job was canceled", false)));
      function done(settle) {
        clearTimeout(timer);
        img.removeEventListener("load", onLoad);
        img.removeEventListener("error", onError);
        signal?.removeEventListener("abort", onAbort);
        settle();
      }
      img.addEventListener("load", onLoad);
      img.addEventListener("error", onError);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  function waitSeconds(text) {
    const m = /(\d+)\s*(seconds?|secs?|s|minutes?|mins?|m|hours?|h)\b/i.exec(text || "");
    if (!m) return null;
    const unit = m[2].toLowerCase();
    const factor = unit.startsWith("h") ? 3600 : unit.startsWith("m") ? 60 : 1;
    return Number(m[1]) * factor;
  }

  function deadlineOf(options, fallbackMs) {
    const ms = Number(options?.timeoutMs) > 0 ? Number(options.timeoutMs) : fallbackMs;
    return Date.now() + ms;
  }

  SemantestAddon.provide("chatkit", { find, findAll, until, typeInto, loaded, waitSeconds, deadlineOf, plain });
})();
