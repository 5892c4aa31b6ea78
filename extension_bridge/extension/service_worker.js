// Semantest service worker: wires the stored config, the addons (user
// scripts), the bridge WebSocket and the addon ports together.
//
// Entry points:
//   self.semantest.configure({controllerUrl, bridgeUrl})  (agents, via Playwright worker.evaluate)
//   self.semantest.status()
//   chrome.runtime messages "semantest.configure" / "semantest.status" (options page)
// On every service-worker start a stored config is applied again.

import { DEFAULT_REFRESH_SECONDS, loadConfig, saveConfig } from "./config.js";
import {
  refusals, registeredAddons, registeredDetails, syncAddons, syncState, userScriptsAvailable,
} from "./addons.js";
import { Bridge } from "./bridge.js";
import { AddonPorts } from "./ports.js";

const EXTENSION_VERSION = chrome.runtime.getManifest().version;
const REFRESH_ALARM = "semantest-refresh";
const REFRESH_MINUTES = 1; // alarms wake a stopped worker; the timer below polls faster while it runs
const INSTALL_KEY = "installId";
const BRIDGE_OPEN_TIMEOUT_MS = 10_000;
const USER_SCRIPTS_OFF = "Allow User Scripts is off for this extension";

const bridge = new Bridge({
  onMessage: fromBridge,
  helloPayload: () => ({
    extensionVersion: EXTENSION_VERSION,
    userScripts: userScriptsAvailable(),
    addons: registeredAddons(),
  }),
  onOpen: () => ports.replayReady(),
});
const ports = new AddonPorts((type, fields, opts) => bridge.send(type, fields, opts));

function fromBridge(message) {
  if (message.type === "job.run") {
    ports.runJob(message);
  } else if (message.type === "job.cancel") {
    ports.cancelJob(message);
  } else {
    console.warn("[semantest] ignoring bridge message", message.type);
  }
}

// One apply at a time: configure, start-up and the refresh alarm never interleave.
let queue = Promise.resolve();
function serialized(task) {
  const run = queue.then(task);
  queue = run.catch(() => {});
  return run;
}

/**
 * Registers the addons from `config.controllerUrl` and connects the bridge.
 * With `waitBridge`, resolves {userScripts, addons, bridge: "open"} once both are done;
 * without, as soon as the addons are registered (the bridge keeps reconnecting on its own).
 */
async function apply(config, { force = false, waitBridge = true } = {}) {
  const allowed = userScriptsAvailable();
  let changed = false;
  let syncError = null;
  if (allowed) {
    try {
      ({ changed } = await syncAddons(config.controllerUrl, { force, channel: config.channel }));
    } catch (err) {
      syncError = err;
    }
  }
  scheduleRefresh(config);
  heartbeat(config).catch(() => {}); // best effort: the controller may be down
  bridge.connect(config.bridgeUrl); // `hello` on open carries the addons just registered
  if (changed && bridge.state === "open") bridge.sendHello(); // tell the agent about new versions
  if (!allowed) throw new Error(USER_SCRIPTS_OFF);
  if (syncError) throw syncError;
  if (waitBridge) await bridge.whenOpen(BRIDGE_OPEN_TIMEOUT_MS);
  return { userScripts: true, addons: registeredAddons(), bridge: bridge.state };
}

function configure(input) {
  return serialized(async () => apply(await saveConfig(input)));
}

// Start-up and the refresh alarm do not wait for the bridge: a stored bridge URL may be stale
// (the agent restarted on a new port) and must not hold up the configure() that replaces it.
function reapplyStored({ force = false, waitBridge = false } = {}) {
  return serialized(async () => {
    const config = await loadConfig();
    return config ? apply(config, { force, waitBridge }) : null;
  });
}

async function status() {
  return {
    extensionVersion: EXTENSION_VERSION,
    installId: await installId(),
    config: await loadConfig(),
    userScripts: userScriptsAvailable(),
    addons: registeredDetails(),
    refused: await refusals(),
    sync: syncState(),
    bridge: bridge.state,
    tabs: ports.list(),
  };
}

/** This install's id: random, made once, kept in storage.local. */
async function installId() {
  const stored = (await chrome.storage.local.get(INSTALL_KEY))[INSTALL_KEY];
  if (stored) return stored;
  const made = crypto.randomUUID();
  await chrome.storage.local.set({ [INSTALL_KEY]: made });
  return made;
}

/** Tells the controller what this install runs (POST /api/v1/installs/heartbeat). */
async function heartbeat(config) {
  const sync = syncState();
  const body = {
    installId: await installId(),
    extensionVersion: EXTENSION_VERSION,
    channel: config.channel || "stable",
    userScripts: userScriptsAvailable(),
    addons: registeredDetails(),
    refused: (await refusals()).slice(-20),
    lastSync: sync.ok === false ? String(sync.error).slice(0, 500) : "ok",
  };
  await fetch(`${config.controllerUrl}/api/v1/installs/heartbeat`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

// While the worker runs (the bridge keeps it alive), poll every `refreshSeconds`.
let refreshTimer = null;
function scheduleRefresh(config) {
  clearTimeout(refreshTimer);
  const seconds = Number(config.refreshSeconds) || DEFAULT_REFRESH_SECONDS;
  refreshTimer = setTimeout(() => {
    reapplyStored().catch((err) => console.warn("[semantest] refresh failed:", err.message));
  }, seconds * 1000);
}

const refresh = () => reapplyStored({ force: true, waitBridge: true });
self.semantest = { configure, status, refresh };

// --- listeners (registered synchronously at start so wake-up events are not lost) ---

chrome.runtime.onUserScriptConnect.addListener((port) => ports.attach(port));

chrome.runtime.onMessage.addListener((message, sender, sendResponse) => {
  if (sender.id !== chrome.runtime.id || !sender.url?.startsWith(chrome.runtime.getURL(""))) return false;
  const handlers = {
    "semantest.configure": () => configure(message.config),
    "semantest.status": () => status(),
    "semantest.refresh": refresh,
  };
  const handler = handlers[message?.type];
  if (!handler) return false;
  handler().then(
    (result) => sendResponse({ ok: true, result }),
    (err) => sendResponse({ ok: false, error: String(err?.message || err) }),
  );
  return true; // answer asynchronously
});

chrome.alarms.onAlarm.addListener((alarm) => {
  if (alarm.name !== REFRESH_ALARM) return;
  reapplyStored().catch((err) => console.warn("[semantest] refresh failed:", err.message));
});

// --- start-up ---

chrome.alarms.get(REFRESH_ALARM).then((alarm) => {
  if (!alarm) chrome.alarms.create(REFRESH_ALARM, { periodInMinutes: REFRESH_MINUTES });
});

reapplyStored().catch((err) => console.warn("[semantest] start-up:", err.message));
