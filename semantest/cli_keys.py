"""`semantest keys create | list | revoke`: tenants' API keys from a shell, over the admin API.

They call `/api/v1/admin/keys` on `--url` (else `SEMANTEST_URL`) with an admin key (`--api-key`,
else `SEMANTEST_API_KEY`, else `SEMANTEST_ADMIN_KEY`), like the job commands
(`semantest/cli_jobs.py`, whose options and exit codes these share). Results go to stdout,
notes to stderr; `--json` prints exactly one JSON document (camelCase, as the API answers).
A new key, and a new tenant's webhook secret, are shown once: only their creation prints them.

Exit codes: 0 done, 2 bad usage, 3 the controller refused the request or could not be reached.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Annotated, Any

import httpx
import typer

from semantest.admin_models import KeyCreated, KeyInfo, KeyList
from semantest.api_keys import DEFAULT_SCOPES
from semantest.cli_http import api_client, api_send
from semantest.cli_jobs import (
    CLIENT_ENV,
    ApiKey,
    AsJson,
    CommandFunction,
    Url,
    client_command,
    err,
)
from semantest.client_calls import DEFAULT_URL
from semantest.client_replies import parse

app = typer.Typer(
    no_args_is_help=True,
    rich_markup_mode=None,
    help=f"""Create, list and revoke tenants' API keys (needs a key with the admin scope).

{CLIENT_ENV}""",
    short_help="Create, list and revoke tenants' API keys.",
)

Tenant = Annotated[
    str, typer.Option("--tenant", help="The tenant (a new one is made with its first key).")
]
Plan = Annotated[
    str | None,
    typer.Option("--plan", help="A new tenant's plan: standard (the default) or partner."),
]
Scopes = Annotated[
    str | None,
    typer.Option(
        "--scopes",
        help="Comma- or space-separated, of jobs:write jobs:read addons:read addons:publish "
        f"admin (default: {','.join(DEFAULT_SCOPES)}).",
    ),
]


def _command(name: str | None = None) -> Callable[[CommandFunction], CommandFunction]:
    return client_command(app, name)


@_command()
def create(
    tenant: Tenant,
    plan: Plan = None,
    scopes: Scopes = None,
    as_json: AsJson = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Make an API key for a tenant.

    It prints the key, and a new tenant's webhook secret, once: store them then."""
    body: dict[str, Any] = {"tenant": tenant}
    if plan is not None:
        body["plan"] = plan
    if scopes is not None:
        body["scopes"] = scopes.replace(",", " ").split()
    with api_client(url, api_key) as http:
        created = parse(KeyCreated, _send(http, "POST", "/keys", json=body))
    if as_json:
        typer.echo(created.model_dump_json(by_alias=True, indent=2, exclude_none=True))
        return
    rows = [("key", created.key), *_rows(created)]
    if created.webhook_secret is not None:
        rows.append(("webhook secret", created.webhook_secret))
    _table(rows)
    shown = "the key" if created.webhook_secret is None else "the key and the webhook secret"
    err.print(f"{shown} will not be shown again: store them now")


@_command("list")
def list_keys(
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="Show only this tenant's keys.")
    ] = None,
    as_json: AsJson = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """List the keys by their prefix, oldest first.

    The keys themselves are never shown again; a revoked key stays listed as revoked."""
    params = {"tenant": tenant} if tenant else None
    with api_client(url, api_key) as http:
        found = parse(KeyList, _send(http, "GET", "/keys", params=params))
    if as_json:
        typer.echo(found.model_dump_json(by_alias=True, indent=2))
        return
    if not found.keys:
        err.print("no keys")
        return
    lines = [("PREFIX", "TENANT", "PLAN", "CREATED", "STATE", "SCOPES")]
    lines += [
        (
            k.prefix,
            k.tenant,
            k.plan.value,
            _when(k.created_at),
            "revoked" if k.revoked else "active",
            " ".join(k.scopes),
        )
        for k in found.keys
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(5)]
    for line in lines:
        typer.echo("  ".join([*(c.ljust(w) for c, w in zip(line, widths, strict=False)), line[5]]))


@_command()
def revoke(
    prefix: Annotated[str, typer.Argument(help="The key's prefix, e.g. sk_4bX9qTzL.")],
    as_json: AsJson = False,
    url: Url = DEFAULT_URL,
    api_key: ApiKey = None,
) -> None:
    """Revoke a key by its prefix.

    The controller refuses the key within a second; its record stays, marked revoked."""
    with api_client(url, api_key) as http:
        revoked = parse(KeyInfo, _send(http, "DELETE", f"/keys/{prefix}"))
    if as_json:
        typer.echo(revoked.model_dump_json(by_alias=True, indent=2))
        return
    typer.echo(f"revoked {revoked.prefix} (tenant {revoked.tenant})")


# --- talking to the controller ---------------------------------------------------------------


def _send(http: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return api_send(http, method, f"/admin{path}", **kwargs)


# --- output ----------------------------------------------------------------------------------


def _rows(key: KeyInfo) -> list[tuple[str, str]]:
    return [
        ("prefix", key.prefix),
        ("tenant", key.tenant),
        ("plan", key.plan.value),
        ("scopes", " ".join(key.scopes)),
        ("created", _when(key.created_at)),
    ]


def _table(rows: list[tuple[str, str]]) -> None:
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        typer.echo(f"{label.ljust(width)}  {value}")


def _when(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%SZ")
