// Semantest addon runtime. Injected (USER_SCRIPT world) before every addon.
// An addon calls SemantestAddon.define(driver) with
//   {id, version, detectState(), submit(prompt, options, progress, signal),
//    collect(progress, options, signal), chat?: true}
// and the runtime does the rest: connects to the service worker, says
// `addon.ready`, runs `job.run` messages through the driver and posts
// `job.progress`, `job.result` or `job.error` back. `options.timeoutMs` is what
// is left of the job's deadline; `signal` (an AbortSignal) fires on `job.cancel`,
// and the runtime answers a canceled job with `job.error` CANCELED at once,
// whether or not the driver listens to the signal.
// `options.generateImage` says whether the reply should carry an image. A chat
// message also has `options.chat = {chatId, new}`: `new` means start a fresh
// conversation in the page first, otherwise continue the one on screen; only a
// driver that declares `chat: true` gets chat messages. `collect` resolves with
// the images (an array) or with `{images, reply}` (the reply's text).
(() => {
  if (globalThis.SemantestAddon) return; // already injected by another addon on this page

  const STATES = ["ready", "busy", "logged-out", "rate-limited", "refused", "error"];
  // A page in one of these states cannot take a job; the agent may retry elsewhere.
  // `error`: the driver's detectState() threw (a broken driver, or a page it does not know).
  const BLOCKING_STATES = {
    busy: "ADDON_BUSY",
    "logged-out": "PROVIDER_LOGGED_OUT",
    "rate-limited": "PROVIDER_RATE_LIMITED",
    error: "ADDON_ERROR",
  };
  // What addons share across their scopes: a dependency provides, a dependent uses.
  const provided = new Map();

  /** An Error carrying a job error code; drivers throw these. */
  function error(code, message, retryable = false, retryAfterS = undefined) {
    const err = new Error(message);
    err.code = code;
    err.retryable = retryable;
    if (retryAfterS != null) err.retryAfterS = retryAfterS;
    return err;
  }

  function define(driver) {
    for (const name of ["id", "version"]) {
      if (!driver?.[name]) throw new Error(`SemantestAddon.define: driver.${name} is missing`);
    }
    for (const name of ["detectState", "submit", "collect"]) {
      if (typeof driver[name] !== "function") throw new Error(`SemantestAddon.define: driver.${name}() is missing`);
    }

    let port = null;
    let running = null; // jobId of the job in progress
    let abort = null;   // AbortController of the running job
    let retries = 0;     // reconnect attempts since the last port that lived a while
    let connectedAt = 0;

    let stateError = null; // why the last detectState() failed
    function detectState() {
      try {
        const state = driver.detectState();
        stateError = null;
        return STATES.includes(state) ? state : "ready";
      } catch (err) {
        console.warn("[semantest] detectState failed", err);
        stateError = String(err?.message || err);
        return "error";
      }
    }

    function connect() {
      if (port) return; // post() reconnected already
      try {
        port = chrome.runtime.connect({ name: "addon:" + driver.id });
      } catch (err) {
        port = null; // extension reloaded or removed: this page's runtime is orphaned
        console.warn("[semantest] cannot connect to the extension:", err.message);
        return;
      }
      connectedAt = Date.now();
      port.onMessage.addListener(onMessage);
      port.onDisconnect.addListener(() => {
        // The service worker restarted (or the extension went away): connect again.
        port = null;
        void chrome.runtime.lastError;
        if (Date.now() - connectedAt > 5000) retries = 0;
        const delay = retries === 0 ? 0 : Math.min(100 * 2 ** retries, 5000);
        retries++;
        setTimeout(connect, delay);
      });
      post({
        type: "addon.ready",
        addonId: driver.id,
        addonVersion: driver.version,
        url: location.href,
        state: detectState(),
      });
    }

    function post(message) {
      if (!port) connect();
      try {
        port?.postMessage(message);
      } catch (err) {
        console.warn("[semantest] could not post", message.type, err.message);
      }
    }

    function onMessage(message) {
      if (message?.type === "job.run") runJob(message);
      else if (message?.type === "job.cancel" && message.jobId === running) abort?.abort(message.reason);
    }

    async function runJob({ jobId, prompt, options = {}, timeoutMs, chat = null, generateImage = true }) {
      const fail = (err) => post({
        type: "job.error",
        jobId,
        code: err?.code || "ADDON_ERROR",
        message: String(err?.message || err),
        retryable: err?.retryable === true,
        // A rate-limit notice's wait (seconds), when the driver read one.
        ...(Number(err?.retryAfterS) >= 0 && err?.retryAfterS != null ? { retryAfterS: Math.round(Number(err.retryAfterS)) } : {}),
      });
      if (running) return fail(error("ADDON_BUSY", `job ${running} is still running in this tab`, true));
      const state = detectState();
      if (BLOCKING_STATES[state]) {
        const why = state === "error" ? `detectState() threw: ${stateError}` : `the page is ${state}`;
        return fail(error(BLOCKING_STATES[state], why, true));
      }
      if (chat && driver.chat !== true) {
        return fail(error("CHAT_UNSUPPORTED", `the ${driver.id} addon cannot hold a conversation`, false));
      }

      running = jobId;
      abort = new AbortController();
      const { signal } = abort;
      const canceled = new Promise((_, reject) => signal.addEventListener("abort", () => reject(
        error("CANCELED", `job ${jobId} canceled: ${signal.reason || "canceled"}`, false)), { once: true }));
      const driverOptions = {
        ...options,
        ...(timeoutMs > 0 ? { timeoutMs } : {}),
        generateImage: generateImage !== false,
        ...(chat ? { chat: { chatId: chat.chatId, new: chat.new === true } } : {}),
      };
      const progress = (percent, stage, message) => !signal.aborted && post({
        type: "job.progress",
        jobId,
        progress: Math.max(0, Math.min(100, Math.round(percent))),
        stage,
        ...(message ? { message: String(message) } : {}),
      });
      try {
        progress(10, "typing");
        const { images, reply } = await Promise.race([canceled, (async () => {
          await driver.submit(prompt, driverOptions, progress, signal);
          const found = await driver.collect(progress, driverOptions, signal);
          const result = Array.isArray(found) ? { images: found } : (found || {});
          return {
            images: await Promise.all((result.images || []).map(describeImage)),
            reply: typeof result.reply === "string" ? result.reply : null,
          };
        })()]);
        post({ type: "job.result", jobId, images, reply });
      } catch (err) {
        fail(err);
      } finally {
        if (running === jobId) running = null;
        abort = null;
      }
    }

    connect();
  }

  /** {url, width, height} with an absolute URL; `blob:`/`data:` images also carry their bytes as dataUrl. */
  async function describeImage(image) {
    const url = new URL(image.url, location.href).href;
    const described = { url, width: image.width | 0, height: image.height | 0 };
    if (url.startsWith("data:")) {
      described.dataUrl = url;
    } else if (url.startsWith("blob:")) {
      const blob = await (await fetch(url)).blob();
      described.dataUrl = await new Promise((resolve, reject) => {
        const reader = new FileReader();
        reader.onload = () => resolve(reader.result);
        reader.onerror = () => reject(reader.error);
        reader.readAsDataURL(blob);
      });
    }
    return described;
  }

  /** A dependency makes `value` available to the addons injected after it. */
  function provide(id, value) {
    provided.set(String(id), value);
    return value;
  }

  /** What the dependency `id` provided; throws naming it when it was not injected. */
  function use(id) {
    if (!provided.has(String(id))) throw new Error(`SemantestAddon.use: nothing provided ${JSON.stringify(id)}`);
    return provided.get(String(id));
  }

  globalThis.SemantestAddon = { define, error, provide, use };
})();
