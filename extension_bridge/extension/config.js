// Stored configuration: where the controller (addon index) and the bridge (jobs) live.
// Kept in chrome.storage.local so a restarted service worker picks it up again.

const KEY = "config";
/** How often the addon index is polled by default (seconds). */
export const DEFAULT_REFRESH_SECONDS = 60;
const CHANNELS = ["stable", "beta"];

/** Returns the stored {controllerUrl, bridgeUrl, refreshSeconds, channel}, or null when never configured. */
export async function loadConfig() {
  const stored = await chrome.storage.local.get(KEY);
  return stored[KEY] || null;
}

/** Validates, normalises and stores a config; returns what was stored. */
export async function saveConfig(input) {
  const config = normalizeConfig(input);
  await chrome.storage.local.set({ [KEY]: config });
  return config;
}

/** Throws an Error naming the bad field; otherwise returns a clean copy. */
export function normalizeConfig(input) {
  if (!input || typeof input !== "object") {
    throw new Error("configure() needs an object {controllerUrl, bridgeUrl, refreshSeconds?, channel?}");
  }
  const controllerUrl = checkUrl("controllerUrl", input.controllerUrl, ["http:", "https:"]);
  const bridgeUrl = checkUrl("bridgeUrl", input.bridgeUrl, ["ws:", "wss:"]);
  const refreshSeconds = input.refreshSeconds == null ? DEFAULT_REFRESH_SECONDS : Number(input.refreshSeconds);
  if (!Number.isFinite(refreshSeconds) || refreshSeconds < 1 || refreshSeconds > 86400) {
    throw new Error(`refreshSeconds must be a number of seconds from 1 to 86400, got ${JSON.stringify(input.refreshSeconds)}`);
  }
  const channel = input.channel == null ? "stable" : String(input.channel);
  if (!CHANNELS.includes(channel)) {
    throw new Error(`channel must be one of ${CHANNELS.join(", ")}, got ${JSON.stringify(input.channel)}`);
  }
  return { controllerUrl: controllerUrl.replace(/\/+$/, ""), bridgeUrl, refreshSeconds, channel };
}

function checkUrl(name, value, protocols) {
  let url;
  try {
    url = new URL(String(value || ""));
  } catch {
    throw new Error(`${name} is not a valid URL: ${JSON.stringify(value)}`);
  }
  if (!protocols.includes(url.protocol)) {
    const allowed = protocols.map((p) => `${p}//`).join(" or ");
    throw new Error(`${name} must start with ${allowed}, got ${url.protocol}//`);
  }
  return url.href;
}
