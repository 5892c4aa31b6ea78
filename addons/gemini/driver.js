// Gemini image driver (addon "gemini"). Selectors and texts: selectors.js. Helpers: "chatkit".
// What the page does, as sandbox/replicas/gemini.py reproduces it: the composer is a Quill
// editor (rich-textarea .ql-editor, contenteditable); the send button (button.send-button) is
// aria-disabled while the composer is empty and turns into a stop button (class "stop") while a
// reply streams; each reply is a <model-response> whose markdown streams in, and an image reply
// holds <generated-image><img class="image"> from lh3.googleusercontent.com (another origin that
// needs the signed-in profile's cookies); a logged-out page has a "Sign in" link.
(() => {
  const kit = SemantestAddon.use("chatkit");
  const { SELECTORS: S, TEXTS, MIN_IMAGE_PX } = SemantestAddon.use("gemini/selectors");
  const DEFAULT_TIMEOUT_MS = 300_000;
  const SEND_ENABLE_TIMEOUT_MS = 5_000;
  const fail = (code, message, retryable, retryAfterS) => SemantestAddon.error(code, message, retryable, retryAfterS);
  const responses = () => kit.findAll(S.response);
  const sendable = (b) => b && !b.disabled && b.getAttribute("aria-disabled") !== "true" && !b.matches(S.stop.join(","));
  let known = new Set();

  function classify(text) {
    if (TEXTS.rateLimited.test(text)) {
      const wait = kit.waitSeconds(text);
      return fail("PROVIDER_RATE_LIMITED", text, true, wait ?? undefined);
    }
    if (TEXTS.loggedOut.test(text)) return fail("PROVIDER_LOGGED_OUT", text, true);
    if (TEXTS.refused.test(text)) return fail("CONTENT_REFUSED", text, false);
    return fail("GENERATION_FAILED", text || "Gemini answered with an error", false);
  }

  function detectState() {
    if (kit.find(S.login) || !kit.find(S.composer)) return "logged-out";
    if (kit.find(S.stop) || kit.find(S.pending)) return "busy";
    const last = responses().at(-1);
    const notice = last && kit.find(S.error, last);
    if (notice) {
      const code = classify(kit.plain(notice)).code;
      if (code === "PROVIDER_RATE_LIMITED") return "rate-limited";
      if (code === "PROVIDER_LOGGED_OUT") return "logged-out";
      if (code === "CONTENT_REFUSED") return "refused";
    }
    return "ready";
  }

  async function submit(prompt, _options, progress, signal) {
    const composer = kit.find(S.composer);
    if (!composer) throw fail("PAGE_CHANGED", `no composer (${S.composer.join(" | ")})`, true);
    known = new Set(responses());
    kit.typeInto(composer, prompt);
    const send = await kit.until(document.body, { subtree: true, childList: true, attributes: true },
      () => { const b = kit.find(S.send); return sendable(b) ? b : null; }, SEND_ENABLE_TIMEOUT_MS,
      () => fail("COMPOSER_STUCK", "the send button stayed disabled", true), signal);
    send.click();
    progress(30, "waiting");
  }

  function finishedResponse() {
    if (kit.find(S.stop) || kit.find(S.pending)) return null;
    return responses().find((r) => !known.has(r) && r.getAttribute("aria-busy") !== "true"
      && (kit.plain(r) || kit.find(S.image, r))) || null;
  }

  async function collect(progress, options = {}, signal) {
    const deadline = kit.deadlineOf(options, DEFAULT_TIMEOUT_MS);
    const root = document.body; // the stop button lives outside the thread: watch both
    const response = await kit.until(root, { childList: true, subtree: true, characterData: true, attributes: true },
      finishedResponse, deadline - Date.now(),
      () => fail("PROVIDER_TIMEOUT", "no finished reply before the job's deadline", true), signal);
    const notice = kit.find(S.error, response);
    if (notice) throw classify(kit.plain(notice));
    const textEl = kit.find(S.responseText, response);
    const reply = textEl ? kit.plain(textEl) : kit.plain(response);
    if (options.generateImage === false) return { reply, images: [] };
    const pictures = kit.findAll(S.image, response);
    if (!pictures.length) throw classify(reply);
    progress(80, "capturing");
    const images = await Promise.all(pictures.map((img) => kit.loaded(img, deadline, signal)));
    const big = images.filter((img) => Math.min(img.naturalWidth, img.naturalHeight) >= MIN_IMAGE_PX);
    if (!big.length) throw fail("NO_IMAGE", "the reply's pictures are all icon-sized", false);
    return { reply, images: big.map((img) => ({ url: img.src, width: img.naturalWidth, height: img.naturalHeight })) };
  }

  SemantestAddon.define({ id: "gemini", version: "1.0.0", detectState, submit, collect });
})();
