// Addons: mirror the controller's addon index, verify every bundle's SRI
// hash, and keep the user scripts registered to match.
//
// - The index is fetched with If-None-Match (an unchanged index costs a 304).
// - A bundle is fetched (content-addressed URL) only when its integrity changed,
//   and registered only if its sha384 equals the index's `integrity`. A bundle
//   that does not match is refused: the last good version of that addon stays
//   registered and the refusal is kept for the status and the heartbeat.
// - The last good set (index entries + verified bundles) is kept in
//   chrome.storage.local, so after a browser or service-worker restart the
//   addons are registered again even while the controller is unreachable.
// - Each bundle part (one addon, ending with its `//# sourceURL=` line) is
//   registered as its own script after addon_runtime.js.

const INDEX_KEY = "addonIndex";         // storage.local: {url, etag, body} of the last index
const GOOD_KEY = "addonGood";           // storage.local: {id: {entry, source}} verified bundles
const REFUSED_KEY = "addonRefused";     // storage.local: [{id, version, reason, at}]
const REGISTERED_KEY = "registeredSig"; // storage.session: what is registered now
const WORLD_KEY = "worldConfigured";    // storage.session: messaging enabled this browser session
const RUNTIME_FILE = "addon_runtime.js";
const MAX_REFUSALS = 20;

let registered = []; // [{id, version, integrity}] currently registered
let lastSync = { ok: null, at: null, error: null, offline: false };

/** True when the "Allow User Scripts" toggle is on for this extension. */
export function userScriptsAvailable() {
  try {
    return typeof chrome.userScripts?.register === "function";
  } catch {
    return false; // older Chrome throws on access when not allowed
  }
}

/** The addons registered right now, as reported to the agent. */
export function registeredAddons() {
  return registered.map(({ id, version }) => ({ id, version }));
}

/** Registered addons with their integrity, for the heartbeat and the options page. */
export function registeredDetails() {
  return registered.map(({ id, version, integrity }) => ({ id, version, integrity }));
}

/** Bundles refused lately (newest last). */
export async function refusals() {
  return (await chrome.storage.local.get(REFUSED_KEY))[REFUSED_KEY] || [];
}

/** How the last sync went: {ok, at, error, offline}. */
export function syncState() {
  return { ...lastSync };
}

/**
 * Brings the registered user scripts in line with the controller's index.
 * When the controller cannot be reached, the last good set is registered
 * (if it is not already) and {offline: true} is returned; only when there is
 * no good set either does it throw. Returns {changed, addons, offline}.
 */
export async function syncAddons(controllerUrl, { force = false, channel = "stable" } = {}) {
  if (!userScriptsAvailable()) {
    throw new Error("Allow User Scripts is off for this extension");
  }
  const good = (await chrome.storage.local.get(GOOD_KEY))[GOOD_KEY] || {};
  let index;
  try {
    index = await fetchIndex(controllerUrl, channel);
  } catch (err) {
    lastSync = { ok: false, at: Date.now(), error: err.message, offline: true };
    const cached = Object.values(good);
    if (cached.length === 0) throw err;
    const changed = await registerIfChanged(cached, force);
    return { changed, addons: registeredAddons(), offline: true };
  }
  const next = {};
  for (const entry of index) {
    const kept = good[entry.id];
    if (kept && kept.entry.integrity === entry.integrity && kept.entry.hash === entry.hash) {
      next[entry.id] = { ...kept, entry }; // same bytes: no request at all
      continue;
    }
    try {
      const source = await fetchBundle(controllerUrl, entry);
      await verify(source, entry);
      next[entry.id] = { entry, source };
    } catch (err) {
      await refuse(entry, err.message);
      if (kept) next[entry.id] = kept; // the last good version stays
    }
  }
  await chrome.storage.local.set({ [GOOD_KEY]: next });
  const changed = await registerIfChanged(Object.values(next), force);
  lastSync = { ok: true, at: Date.now(), error: null, offline: false };
  return { changed, addons: registeredAddons(), offline: false };
}

async function fetchIndex(controllerUrl, channel) {
  const url = `${controllerUrl}/api/v1/addons?channel=${encodeURIComponent(channel)}`;
  const cached = (await chrome.storage.local.get(INDEX_KEY))[INDEX_KEY];
  const usable = cached?.url === url && cached.etag;
  const response = await fetchOrExplain(url, { headers: usable ? { "If-None-Match": cached.etag } : {} });
  let body;
  if (response.status === 304 && usable) {
    body = cached.body;
  } else {
    if (!response.ok) throw new Error(`GET ${url} answered ${response.status}`);
    body = await response.json();
    const etag = response.headers.get("ETag");
    await chrome.storage.local.set({ [INDEX_KEY]: etag ? { url, etag, body } : null });
  }
  if (!Array.isArray(body?.addons)) throw new Error(`GET ${url}: no "addons" list in the answer`);
  return body.addons.map((a) => ({
    id: String(a.id),
    name: a.name || a.id,
    version: String(a.version || "0.0.0"),
    matches: a.matches || [],
    excludeMatches: a.excludeMatches || [],
    world: a.world || "USER_SCRIPT",
    runAt: a.runAt || "document_idle",
    hash: a.hash || null,
    integrity: a.integrity || null,
    url: a.bundleUrl || a.url || `/api/v1/addons/${encodeURIComponent(a.id)}`,
  }));
}

async function fetchBundle(controllerUrl, entry) {
  const url = new URL(entry.url, controllerUrl + "/").href;
  const response = await fetchOrExplain(url, {});
  if (!response.ok) throw new Error(`GET ${url} answered ${response.status}`);
  return response.text();
}

/** Throws unless the bytes' sha384 is the index's `integrity` (Subresource Integrity form). */
async function verify(source, entry) {
  if (!entry.integrity?.startsWith("sha384-")) {
    throw new Error(`the index gives no sha384 integrity for ${entry.id}@${entry.version}`);
  }
  const digest = await crypto.subtle.digest("SHA-384", new TextEncoder().encode(source));
  const actual = "sha384-" + btoa(String.fromCharCode(...new Uint8Array(digest)));
  if (actual !== entry.integrity) {
    throw new Error(`integrity mismatch for ${entry.id}@${entry.version}: expected ${entry.integrity}, got ${actual}`);
  }
}

async function refuse(entry, reason) {
  const list = await refusals();
  list.push({ id: entry.id, version: entry.version, reason, at: Date.now() });
  await chrome.storage.local.set({ [REFUSED_KEY]: list.slice(-MAX_REFUSALS) });
  console.warn("[semantest] refused", entry.id, entry.version, reason);
}

async function fetchOrExplain(url, init) {
  try {
    return await fetch(url, { cache: "no-store", ...init });
  } catch (err) {
    throw new Error(`cannot reach ${url}: ${err.message}`);
  }
}

/** Registers `items` ({entry, source}) unless exactly these are registered already. */
async function registerIfChanged(items, force) {
  items.sort((a, b) => (a.entry.id < b.entry.id ? -1 : 1));
  const signature = JSON.stringify(items.map(({ entry }) => [entry.id, entry.integrity, entry.matches,
    entry.excludeMatches, entry.world, entry.runAt]));
  const changed = force || !(await alreadyRegistered(signature, items.length));
  if (changed) {
    await register(items);
    await chrome.storage.session.set({ [REGISTERED_KEY]: signature });
  }
  registered = items.map(({ entry }) => ({ id: entry.id, version: entry.version, integrity: entry.integrity }));
  return changed;
}

/** After a service-worker restart the scripts are still registered; skip the gap of re-registering. */
async function alreadyRegistered(signature, count) {
  const stored = (await chrome.storage.session.get(REGISTERED_KEY))[REGISTERED_KEY];
  if (stored !== signature) return false;
  const scripts = await chrome.userScripts.getScripts();
  return scripts.length === count;
}

/**
 * Turns on messaging for the USER_SCRIPT world, once per browser session.
 * Chromium 156 quirks: after a browser restart the stored {messaging: true}
 * is still reported by getWorldConfigurations() but not applied to pages
 * (no chrome.runtime.connect in the addon's world), and configuring the same
 * value again is a no-op; resetting first fixes that. But a reset also strips
 * chrome.runtime.connect from pages already open, so it must not run again
 * later in the session (storage.session is cleared on browser restart).
 */
async function enableMessaging() {
  if ((await chrome.storage.session.get(WORLD_KEY))[WORLD_KEY]) return;
  await chrome.userScripts.resetWorldConfiguration();
  await chrome.userScripts.configureWorld({ messaging: true });
  await chrome.storage.session.set({ [WORLD_KEY]: true });
}

/** A bundle's parts: each ends with its own `//# sourceURL=` line. */
export function splitBundle(source) {
  const parts = [];
  const marker = /^\/\/# sourceURL=.*$/gm;
  let start = 0;
  for (const found of source.matchAll(marker)) {
    const end = found.index + found[0].length + 1;
    parts.push(source.slice(start, end));
    start = end;
  }
  if (source.slice(start).trim()) parts.push(source.slice(start));
  return parts;
}

async function register(items) {
  await enableMessaging();
  await chrome.userScripts.unregister();
  if (items.length === 0) return;
  await chrome.userScripts.register(
    items.map(({ entry, source }) => ({
      id: entry.id,
      matches: entry.matches,
      excludeMatches: entry.excludeMatches,
      js: [{ file: RUNTIME_FILE }, ...splitBundle(source).map((code) => ({ code }))],
      world: entry.world,
      runAt: entry.runAt,
    })),
  );
}
