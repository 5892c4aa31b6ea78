// Addon ports: the addon runtime in each provider tab connects here
// (chrome.runtime.onUserScriptConnect, port name "addon:<addonId>").
// Jobs from the bridge go to the port of their tab; whatever the addon
// posts goes back to the bridge with the tabId added.

const PORT_PREFIX = "addon:";
const FROM_ADDON = new Set(["addon.ready", "job.progress", "job.result", "job.error"]);

export class AddonPorts {
  /** @param {(type: string, fields: object, opts?: {queue: boolean}) => boolean} sendToBridge */
  constructor(sendToBridge) {
    this.sendToBridge = sendToBridge;
    this.byTab = new Map();      // tabId -> {port, addonId, ready: last addon.ready fields}
    this.jobsByTab = new Map();  // tabId -> Set(jobId) running in that tab
  }

  /** Listener for chrome.runtime.onUserScriptConnect. */
  attach(port) {
    const tabId = port.sender?.tab?.id;
    if (!port.name.startsWith(PORT_PREFIX) || tabId == null) {
      port.disconnect();
      return;
    }
    const entry = { port, addonId: port.name.slice(PORT_PREFIX.length), ready: null };
    const previous = this.byTab.get(tabId);
    if (previous) this.#detach(tabId, previous); // the tab loaded a new page
    this.byTab.set(tabId, entry);
    port.onMessage.addListener((message) => this.#fromAddon(tabId, port, message));
    port.onDisconnect.addListener(() => this.#detach(tabId, entry));
  }

  /** Handles `job.run` from the bridge. */
  runJob(message) {
    const { tabId, jobId } = message;
    const entry = this.byTab.get(tabId);
    if (!entry) {
      this.sendToBridge("job.error", {
        tabId, jobId, code: "ADDON_NOT_READY",
        message: `no addon is connected in tab ${tabId}`, retryable: true,
      }, { queue: true });
      return;
    }
    this.#jobs(tabId).add(jobId);
    entry.port.postMessage({
      type: "job.run", jobId, prompt: message.prompt, options: message.options || {},
      timeoutMs: message.timeoutMs, chat: message.chat || null,
      generateImage: message.generateImage !== false,
    });
  }

  /** Handles `job.cancel` from the bridge: the addon aborts and answers job.error CANCELED. */
  cancelJob({ tabId, jobId, reason }) {
    const entry = this.byTab.get(tabId);
    if (!entry) return; // the page is gone already; so is the job
    entry.port.postMessage({ type: "job.cancel", jobId, reason: reason || "canceled" });
  }

  /** On every bridge (re)open: tell the agent again which tabs have an addon ready. */
  replayReady() {
    for (const [tabId, { ready }] of this.byTab) {
      if (ready) this.sendToBridge("addon.ready", { ...ready, tabId });
    }
  }

  /** Tabs with a connected addon, for status pages. */
  list() {
    return [...this.byTab].map(([tabId, { addonId }]) => ({ tabId, addonId }));
  }

  #fromAddon(tabId, port, message) {
    if (!message || !FROM_ADDON.has(message.type)) {
      console.warn("[semantest] unexpected message from addon", message);
      return;
    }
    const { type, ...fields } = message;
    if (type === "addon.ready") {
      if (!fields.url) fields.url = port.sender.url;
      const entry = this.byTab.get(tabId);
      if (entry?.port === port) entry.ready = fields; // replayed when the bridge reconnects
      this.sendToBridge(type, { ...fields, tabId });
      return;
    }
    if (type === "job.result" || type === "job.error") this.#jobs(tabId).delete(fields.jobId);
    this.sendToBridge(type, { ...fields, tabId }, { queue: true });
  }

  /** A page went away (navigation, tab closed): fail its running jobs so the agent need not wait. */
  #detach(tabId, entry) {
    if (this.byTab.get(tabId) !== entry) return; // a newer port replaced it already
    this.byTab.delete(tabId);
    for (const jobId of this.#jobs(tabId)) {
      this.sendToBridge("job.error", {
        tabId, jobId, code: "ADDON_DISCONNECTED",
        message: `the page in tab ${tabId} went away during the job`, retryable: true,
      }, { queue: true });
    }
    this.jobsByTab.delete(tabId);
  }

  #jobs(tabId) {
    if (!this.jobsByTab.has(tabId)) this.jobsByTab.set(tabId, new Set());
    return this.jobsByTab.get(tabId);
  }
}
