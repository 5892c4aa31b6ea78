"""`semantest addons list | publish DIR | promote | rollback`: addon publishing from a shell.

They call the addon API on `--url` (else `SEMANTEST_URL`) with `--api-key` (else
`SEMANTEST_API_KEY`, else `SEMANTEST_ADMIN_KEY`), like the job and key commands: publishing,
promoting and rolling back take the `addons:publish` scope. `publish DIR` reads `DIR/addon.json`
and every file its `js` lists and sends them as one version; the controller checks everything
(a bad manifest, a missing file, a JS syntax error: the field, file and line are printed).
Results go to stdout, notes to stderr; `--json` prints the API's answer.

Exit codes: 0 done, 2 bad usage (an unreadable folder), 3 the controller refused the request
or could not be reached.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from semantest.cli_http import api_client, api_send
from semantest.cli_jobs import (
    CLIENT_ENV,
    EXIT_USAGE,
    ApiKey,
    AsJson,
    Url,
    client_command,
    err,
)
from semantest.client_calls import DEFAULT_URL

app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help=f"""List, publish, promote and roll back addons (publishing needs addons:publish).

{CLIENT_ENV}""",
    short_help="List, publish, promote and roll back addons.",
)

Channel = Annotated[str, typer.Option("--channel", help="The channel: stable or beta.")]


@client_command(app, "list")
def list_addons(
    channel: Channel = "stable",
    as_json: AsJson = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """List the addons a channel serves: id, version, bundle hash and match patterns."""
    with api_client(url, api_key) as http:
        found = api_send(http, "GET", "/addons", params={"channel": channel}).json()
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    if not found["addons"]:
        err.print("no addons")
        return
    lines = [("ID", "VERSION", "HASH", "MATCHES")]
    lines += [
        (a["id"], a["version"], a["hash"][:12], " ".join(a["matches"])) for a in found["addons"]
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(3)]
    for line in lines:
        typer.echo("  ".join([*(c.ljust(w) for c, w in zip(line, widths, strict=False)), line[3]]))


@client_command(app)
def publish(
    folder: Annotated[Path, typer.Argument(help="The addon's folder (addon.json and its files).")],
    as_json: AsJson = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Publish the version in a folder; it becomes current on its manifest's channel.

    The same bytes again change nothing; other bytes under a published version are refused."""
    manifest, files = _read_folder(folder)
    addon_id, version = manifest.get("id"), manifest.get("version")
    with api_client(url, api_key) as http:
        reply = api_send(
            http,
            "PUT",
            f"/addons/{addon_id}/versions/{version}",
            json={"manifest": manifest, "files": files},
        )
    answer = reply.json()
    if as_json:
        typer.echo(json.dumps(answer, indent=2))
        return
    done = "published" if answer["created"] else "already published (same bytes)"
    typer.echo(f"{done}: {addon_id}@{version}; bundle {answer['addon']['hash'][:12]}")
    _channels(answer["channels"])


@client_command(app)
def promote(
    addon_id: Annotated[str, typer.Argument(help="The addon id.")],
    version: Annotated[str, typer.Argument(help="A published version.")],
    channel: Channel = "stable",
    as_json: AsJson = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Make a published version current on a channel."""
    with api_client(url, api_key) as http:
        body = {"version": version, "channel": channel}
        answer = api_send(http, "POST", f"/addons/{addon_id}/promote", json=body).json()
    if as_json:
        typer.echo(json.dumps(answer, indent=2))
        return
    _channels(answer["channels"])


@client_command(app)
def rollback(
    addon_id: Annotated[str, typer.Argument(help="The addon id.")],
    channel: Channel = "stable",
    as_json: AsJson = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Move a channel back to the version it served before."""
    with api_client(url, api_key) as http:
        answer = api_send(
            http, "POST", f"/addons/{addon_id}/rollback", json={"channel": channel}
        ).json()
    if as_json:
        typer.echo(json.dumps(answer, indent=2))
        return
    _channels(answer["channels"])


def _read_folder(folder: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The manifest and the text of every file it lists; exit 2 naming what is unreadable."""
    path = folder / "addon.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        err.print(f"[red]cannot read {path}[/]: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("js"), list):
        err.print(f"[red]{path}[/]: expected an object with a js list")
        raise typer.Exit(EXIT_USAGE)
    files: dict[str, str] = {}
    for name in manifest["js"]:
        try:
            files[str(name)] = (folder / str(name)).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            err.print(f"[red]cannot read {folder / str(name)}[/] (listed in js): {exc}")
            raise typer.Exit(EXIT_USAGE) from None
    return manifest, files


def _channels(channels: dict[str, str | None]) -> None:
    for name, version in channels.items():
        typer.echo(f"{name}: {version or '-'}")
