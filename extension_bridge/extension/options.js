// Options page: edit the controller and bridge URLs (saved through the same
// configure path the agents use) and show what is registered right now.

const $ = (id) => document.getElementById(id);

async function ask(type, fields = {}) {
  const answer = await chrome.runtime.sendMessage({ type, ...fields });
  if (!answer?.ok) throw new Error(answer?.error || "no answer from the service worker");
  return answer.result;
}

function showMessage(text, kind) {
  $("message").textContent = text;
  $("message").className = kind;
}

async function showStatus() {
  const status = await ask("semantest.status");
  if (status.config && !$("controllerUrl").value) {
    $("controllerUrl").value = status.config.controllerUrl;
    $("bridgeUrl").value = status.config.bridgeUrl;
  }
  $("userScripts").textContent = status.userScripts ? "allowed" : "not allowed";
  $("user-scripts-note").hidden = status.userScripts;
  $("bridge").textContent = status.bridge;
  const rows = status.addons.map(({ id, version }) => {
    const row = document.createElement("tr");
    for (const value of [id, version]) row.appendChild(document.createElement("td")).textContent = value;
    return row;
  });
  if (rows.length === 0) {
    const row = document.createElement("tr");
    const cell = row.appendChild(document.createElement("td"));
    cell.colSpan = 2;
    cell.textContent = "none";
    rows.push(row);
  }
  $("addons").replaceChildren(...rows);
}

$("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  showMessage("Connecting…", "");
  try {
    const config = { controllerUrl: $("controllerUrl").value.trim(), bridgeUrl: $("bridgeUrl").value.trim() };
    const result = await ask("semantest.configure", { config });
    showMessage(`Saved. ${result.addons.length} addon(s) registered, bridge open.`, "ok");
  } catch (err) {
    showMessage(err.message, "error");
  }
  showStatus().catch(() => {});
});

showStatus().catch((err) => showMessage(err.message, "error"));
