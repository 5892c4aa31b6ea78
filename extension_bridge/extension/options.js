// Options page: edit where the controller and bridge are, how often addons are
// checked and which channel (saved through the same configure path the agents
// use), and show the connection, the registered addons and any refused bundle.

const $ = (id) => document.getElementById(id);
const FIELDS = ["controllerUrl", "bridgeUrl", "refreshSeconds", "channel"];

async function ask(type, fields = {}) {
  const answer = await chrome.runtime.sendMessage({ type, ...fields });
  if (!answer?.ok) throw new Error(answer?.error || "no answer from the service worker");
  return answer.result;
}

function showMessage(text, kind) {
  $("message").textContent = text;
  $("message").className = kind;
}

function rowsOf(items, columns, empty) {
  const rows = items.map((item) => {
    const row = document.createElement("tr");
    for (const value of columns(item)) row.appendChild(document.createElement("td")).textContent = value;
    return row;
  });
  if (rows.length === 0) {
    const row = document.createElement("tr");
    const cell = row.appendChild(document.createElement("td"));
    cell.colSpan = 3;
    cell.textContent = empty;
    rows.push(row);
  }
  return rows;
}

function describeSync(sync) {
  if (sync.ok === null) return "not checked yet";
  const at = new Date(sync.at).toLocaleTimeString();
  if (sync.ok) return `connected (checked ${at})`;
  return `unreachable since ${at}: ${sync.error} — running the last good addons`;
}

async function showStatus() {
  const status = await ask("semantest.status");
  if (status.config && !$("controllerUrl").value) {
    for (const field of FIELDS) if (status.config[field] != null) $(field).value = status.config[field];
  }
  $("controller").textContent = describeSync(status.sync);
  $("controller").className = status.sync.ok === false ? "error" : "ok";
  $("userScripts").textContent = status.userScripts ? "allowed" : "not allowed";
  $("user-scripts-note").hidden = status.userScripts;
  $("bridge").textContent = status.bridge;
  $("extensionVersion").textContent = status.extensionVersion;
  $("installId").textContent = status.installId;
  $("addons").replaceChildren(...rowsOf(status.addons, (a) => [a.id, a.version, a.integrity || ""], "none"));
  const refused = status.refused.slice().reverse().map((r) => {
    const item = document.createElement("li");
    item.textContent = `${new Date(r.at).toLocaleString()}: ${r.id}@${r.version} — ${r.reason}`;
    return item;
  });
  if (refused.length === 0) refused.push(Object.assign(document.createElement("li"), { textContent: "none" }));
  $("refused").replaceChildren(...refused);
}

$("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  showMessage("Connecting…", "");
  try {
    const config = {
      controllerUrl: $("controllerUrl").value.trim(),
      bridgeUrl: $("bridgeUrl").value.trim(),
      refreshSeconds: Number($("refreshSeconds").value),
      channel: $("channel").value,
    };
    const result = await ask("semantest.configure", { config });
    showMessage(`Saved. ${result.addons.length} addon(s) registered, bridge open.`, "ok");
  } catch (err) {
    showMessage(err.message, "error");
  }
  showStatus().catch(() => {});
});

showStatus().catch((err) => showMessage(err.message, "error"));
setInterval(() => showStatus().catch(() => {}), 2000);
