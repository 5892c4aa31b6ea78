// Addons: fetch the index from the controller, fetch each addon's source
// (ETag / If-None-Match so an unchanged addon costs a 304 or nothing), and
// register every addon as a user script with addon_runtime.js injected first.

const CACHE_KEY = "addonCache";        // storage.local: {id: {etag, source}}
const INDEX_KEY = "addonIndex";        // storage.local: {etag, body} of the last index
const REGISTERED_KEY = "registeredSig"; // storage.session: what is registered now
const WORLD_KEY = "worldConfigured";  // storage.session: messaging enabled this browser session
const RUNTIME_FILE = "addon_runtime.js";

let registered = []; // [{id, version}] currently registered

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

/**
 * Brings the registered user scripts in line with the controller's index.
 * Re-registers only when something changed (or `force`). Returns
 * {changed, addons}.
 */
export async function syncAddons(controllerUrl, { force = false } = {}) {
  if (!userScriptsAvailable()) {
    throw new Error("Allow User Scripts is off for this extension");
  }
  const index = await fetchIndex(controllerUrl);
  const cache = (await chrome.storage.local.get(CACHE_KEY))[CACHE_KEY] || {};
  const addons = [];
  for (const entry of index) {
    const { etag, source } = await fetchSource(controllerUrl, entry, cache[entry.id]);
    cache[entry.id] = { etag, source };
    addons.push({ ...entry, etag, source });
  }
  for (const id of Object.keys(cache)) {
    if (!addons.some((a) => a.id === id)) delete cache[id];
  }
  await chrome.storage.local.set({ [CACHE_KEY]: cache });

  const signature = JSON.stringify(addons.map(({ source, url, name, ...rest }) => rest));
  const changed = force || !(await alreadyRegistered(signature, addons));
  if (changed) {
    await register(addons);
    await chrome.storage.session.set({ [REGISTERED_KEY]: signature });
  }
  registered = addons.map(({ id, version }) => ({ id, version }));
  return { changed, addons: registeredAddons() };
}

async function fetchIndex(controllerUrl) {
  const url = `${controllerUrl}/api/v1/addons`;
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
    etag: a.etag || null,
    url: a.url || `/api/v1/addons/${encodeURIComponent(a.id)}`,
  }));
}

/** Returns {etag, source}; skips the request when the index etag equals the cached one. */
async function fetchSource(controllerUrl, entry, cached) {
  if (cached?.source != null && entry.etag && cached.etag === entry.etag) return cached;
  const url = new URL(entry.url, controllerUrl + "/").href;
  const headers = cached?.etag ? { "If-None-Match": cached.etag } : {};
  const response = await fetchOrExplain(url, { headers });
  if (response.status === 304 && cached?.source != null) return cached;
  if (!response.ok) throw new Error(`GET ${url} answered ${response.status}`);
  return { etag: response.headers.get("ETag") || entry.etag, source: await response.text() };
}

async function fetchOrExplain(url, init) {
  try {
    return await fetch(url, { cache: "no-store", ...init });
  } catch (err) {
    throw new Error(`cannot reach ${url}: ${err.message}`);
  }
}

/** After a service-worker restart the scripts are still registered; skip the gap of re-registering. */
async function alreadyRegistered(signature, addons) {
  const stored = (await chrome.storage.session.get(REGISTERED_KEY))[REGISTERED_KEY];
  if (stored !== signature) return false;
  const scripts = await chrome.userScripts.getScripts();
  return scripts.length === addons.length;
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

async function register(addons) {
  await enableMessaging();
  await chrome.userScripts.unregister();
  if (addons.length === 0) return;
  await chrome.userScripts.register(
    addons.map((addon) => ({
      id: addon.id,
      matches: addon.matches,
      excludeMatches: addon.excludeMatches,
      js: [{ file: RUNTIME_FILE }, { code: addon.source }],
      world: addon.world,
      runAt: addon.runAt,
    })),
  );
}
