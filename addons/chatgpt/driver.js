// ChatGPT image driver (addon "chatgpt"). Selectors and texts: selectors.js (one table, with
// fallbacks). Helpers: the "chatkit" addon (requires). What the page does, as the replica
// sandbox/replicas/chatgpt.py reproduces it: #prompt-textarea is a ProseMirror contenteditable;
// the send button (data-testid=send-button) is disabled while the composer is empty and
// replaced by the stop button (data-testid=stop-button) while a reply streams; each reply is a
// [data-message-author-role=assistant] turn whose text streams in, and an image reply ends with
// an <img alt="Generated image: ..."> served from files.oaiusercontent.com (another origin,
// which needs the signed-in profile's cookies). Notices (rate limit, logged out, refusal) are
// text in the turn or an error block; a logged-out page shows a log-in button.
(() => {
  const kit = SemantestAddon.use("chatkit");
  const { SELECTORS: S, TEXTS, MIN_IMAGE_PX } = SemantestAddon.use("chatgpt/selectors");
  const DEFAULT_TIMEOUT_MS = 300_000; // image replies take 30-120 s on the real page
  const SEND_ENABLE_TIMEOUT_MS = 5_000;
  const fail = (code, message, retryable, retryAfterS) => SemantestAddon.error(code, message, retryable, retryAfterS);
  const turns = () => kit.findAll(S.assistantTurn);
  let known = new Set(); // assistant turns that existed before our prompt was sent

  function classify(text) {
    if (TEXTS.rateLimited.test(text)) {
      const wait = kit.waitSeconds(text);
      return fail("PROVIDER_RATE_LIMITED", text, true, wait ?? undefined);
    }
    if (TEXTS.loggedOut.test(text)) return fail("PROVIDER_LOGGED_OUT", text, true);
    if (TEXTS.refused.test(text)) return fail("CONTENT_REFUSED", text, false);
    return fail("GENERATION_FAILED", text || "ChatGPT answered with an error", false);
  }

  function detectState() {
    if (kit.find(S.login) || !kit.find(S.composer)) return "logged-out";
    if (kit.find(S.stop)) return "busy";
    const last = turns().at(-1);
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
    const send = () => kit.find(S.send);
    if (!composer) throw fail("PAGE_CHANGED", `no composer (${S.composer.join(" | ")})`, true);
    known = new Set(turns());
    kit.typeInto(composer, prompt);
    await kit.until(document.body, { subtree: true, childList: true, attributes: true, attributeFilter: ["disabled"] },
      () => send() && !send().disabled, SEND_ENABLE_TIMEOUT_MS,
      () => fail("COMPOSER_STUCK", "the send button stayed disabled", true), signal);
    send().click();
    progress(30, "waiting");
  }

  /** The new turn once it has finished: the stop button is gone and it holds text or an image. */
  function finishedTurn() {
    if (kit.find(S.stop)) return null;
    return turns().find((t) => !known.has(t) && (kit.plain(t) || kit.find(S.image, t))) || null;
  }

  async function collect(progress, options = {}, signal) {
    const deadline = kit.deadlineOf(options, DEFAULT_TIMEOUT_MS);
    const root = document.body; // the stop button lives outside the thread: watch both
    const turn = await kit.until(root, { childList: true, subtree: true, characterData: true, attributes: true },
      finishedTurn, deadline - Date.now(),
      () => fail("PROVIDER_TIMEOUT", "no finished reply before the job's deadline", true), signal);
    const notice = kit.find(S.error, turn);
    if (notice) throw classify(kit.plain(notice));
    const reply = kit.plain(turn);
    if (options.generateImage === false) return { reply, images: [] };
    const pictures = kit.findAll(S.image, turn);
    if (!pictures.length) throw classify(reply);
    progress(80, "capturing");
    const images = await Promise.all(pictures.map((img) => kit.loaded(img, deadline, signal)));
    const big = images.filter((img) => Math.min(img.naturalWidth, img.naturalHeight) >= MIN_IMAGE_PX);
    if (!big.length) throw fail("NO_IMAGE", "the reply's pictures are all icon-sized", false);
    return { reply, images: big.map((img) => ({ url: img.src, width: img.naturalWidth, height: img.naturalHeight })) };
  }

  SemantestAddon.define({ id: "chatgpt", version: "1.0.0", detectState, submit, collect });
})();
