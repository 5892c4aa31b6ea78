"""The HTTP calls of the CLI commands that talk to the controller (keys, addons).

`api_client` opens a client for `--url`/`--api-key` (else `SEMANTEST_URL` and
`SEMANTEST_API_KEY`); any Semantest error inside it ends the command with one readable message
and exit code 3. `api_send` makes one call under `/api/v1` and turns an error answer or a
refused connection into that error.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import typer

from semantest.cli_jobs import EXIT_REFUSED, _explain
from semantest.client_calls import API, auth_headers, connection
from semantest.client_replies import connection_failed, error_from
from semantest.errors import SemantestError


@contextmanager
def api_client(url: str, api_key: str | None) -> Iterator[httpx.Client]:
    """An HTTP client of the API; an error ends the command with a message (exit 3)."""
    base, key = connection(url, api_key)
    try:
        with httpx.Client(base_url=base, headers=auth_headers(key), timeout=30) as http:
            yield http
    except SemantestError as exc:
        _explain(exc, base)
        raise typer.Exit(EXIT_REFUSED) from None


def api_send(http: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One call to `/api/v1<path>`; an error answer or a refused connection is raised."""
    try:
        response = http.request(method, f"{API}{path}", **kwargs)
    except httpx.TransportError as exc:
        raise connection_failed(http.base_url, exc) from exc
    if not response.is_success:
        raise error_from(response)
    return response
