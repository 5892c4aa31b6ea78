"""Webhooks: where they may go (the SSRF guard), how they are signed and what they carry.

A webhook event is posted as JSON `{"type", "timestamp", "data"}` and signed the Standard
Webhooks way (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>`,
with the tenant's `whsec_` secret), so a receiver verifies it with any Standard Webhooks
library. The guard decides which addresses a delivery may reach: never loopback, private,
link-local, CGNAT, multicast, reserved, unspecified or cloud metadata addresses (IPv6 forms and
IPv4 addresses embedded in IPv6 included), unless the deployment allows private targets or
names a network. It is applied to the literal address when a request names a webhook, and to
every resolved address of every hop when one is delivered; the connection then goes to the
address that was checked, so a DNS answer that changes in between cannot move it.

Emitting events lives in `semantest/webhook_events.py`, delivering them in
`semantest/webhook_worker.py`. Imports only the kernel's settings and models.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook

from semantest.config import Settings
from semantest.models import WEBHOOK_URL_PATTERN

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Cloud instance metadata services: AWS, GCP, Azure, OpenStack (IPv4), AWS (IPv6),
#: Alibaba, Oracle. Named first so a refusal says what the address is.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "192.0.0.192")
)
#: Shared address space (RFC 6598): carrier-grade NAT, not reachable from the internet.
CGNAT = ipaddress.ip_network("100.64.0.0/10")
#: The well-known NAT64 prefix (RFC 6052): the last 32 bits are an IPv4 address.
NAT64 = ipaddress.ip_network("64:ff9b::/96")
#: Redirects followed per delivery (each hop checked like the first).
MAX_REDIRECTS = 3
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


class Refused(Exception):
    """The guard refuses this target; the message says which address and why."""


def address_kind(address: IPAddress) -> str | None:
    """What kind of address the guard refuses this one as; None for a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # a socket to it reaches exactly that IPv4 address
            kind = address_kind(address.ipv4_mapped)
            return None if kind is None else f"{kind} (IPv4 {address.ipv4_mapped} inside IPv6)"
        embedded = _embedded_ipv4(address)
        if embedded is not None and (kind := address_kind(embedded)) is not None:
            return f"{kind} (IPv4 {embedded} inside IPv6)"
    checks = (
        (address in METADATA_ADDRESSES, "cloud metadata"),
        (address.is_loopback, "loopback"),
        (address.is_unspecified, "unspecified"),
        (address.is_link_local, "link-local"),
        (address.is_multicast, "multicast"),
        (address.version == 4 and address in CGNAT, "shared (CGNAT)"),
        (address.is_private, "private"),
        (address.is_reserved, "reserved"),
        (not address.is_global, "non-global"),
    )
    return next((kind for refused, kind in checks if refused), None)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries on (6to4, Teredo client, NAT64), if any."""
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


@dataclass(frozen=True)
class Guard:
    """Which addresses webhooks may reach: public ones, plus what the settings allow."""

    allow_private: bool = False
    allow_networks: tuple[IPNetwork, ...] = field(default_factory=tuple)

    @classmethod
    def from_settings(cls, settings: Settings) -> Guard:
        """The deployment's guard (`SEMANTEST_WEBHOOK_ALLOW_PRIVATE`, `..._ALLOW_NETWORKS`)."""
        networks = tuple(
            ipaddress.ip_network(n, strict=False) for n in settings.webhook_allow_networks
        )
        return cls(settings.webhook_allow_private, networks)

    def refusal(self, address: IPAddress) -> str | None:
        """Why `address` may not be reached (None: it may)."""
        if self.allow_private or any(address in n for n in self.allow_networks):
            return None
        kind = address_kind(address)
        return None if kind is None else f"{address} is a {kind} address"

    def allows_loopback(self) -> bool:
        """Whether any loopback address is reachable (what `http://` targets need)."""
        return self.refusal(ipaddress.IPv4Address("127.0.0.1")) is None

    def check_literal(self, url: str) -> str | None:
        """Why a webhook URL is refused before any DNS lookup (None: it may be queued).

        Refuses `http://` except to a loopback host where loopback is allowed, and a host that
        is an address the guard refuses. Names are checked when the webhook is delivered.
        """
        match = re.fullmatch(WEBHOOK_URL_PATTERN, url)
        if match is None:
            return "must be an https URL with a host name or address"
        scheme = url.split(":", 1)[0].lower()
        host = match.group(1).strip("[]")
        literal = _literal(host)
        if scheme == "http" and not (
            self.allows_loopback()
            and (host.lower() == "localhost" or (literal is not None and literal.is_loopback))
        ):
            return (
                "must be https (http:// only to a loopback address, where the deployment "
                "allows private targets)"
            )
        return None if literal is None else self.refusal(literal)


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


async def resolve_checked(url: httpx.URL, guard: Guard) -> IPAddress:
    """The address to connect to for `url`, after checking every address its host resolves to.

    Raises `Refused` when any of them is refused, or when an `http://` URL leads anywhere but
    loopback; `OSError` (socket.gaierror) when the name does not resolve.
    """
    host = url.raw_host.decode("ascii")
    if url.scheme not in ("http", "https"):
        raise Refused(f"{url.scheme}:// is not a webhook scheme")
    literal = _literal(host.strip("[]"))
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, url.port or (443 if url.scheme == "https" else 80), type=socket.SOCK_STREAM
        )
        addresses = list(dict.fromkeys(ipaddress.ip_address(i[4][0]) for i in infos))
    for address in addresses:
        if (why := guard.refusal(address)) is not None:
            raise Refused(why if literal is not None else f"{host} resolves to {why}")
    if url.scheme == "http" and not all(a.is_loopback for a in addresses):
        raise Refused(f"http:// only to a loopback address ({host} is not one); use https")
    return addresses[0]


def sign(secret: str, event_id: str, at: float, body: str) -> dict[str, str]:
    """The Standard Webhooks headers of one delivery of `body` (signed now, at `at`)."""
    stamp = int(at)
    signature = Webhook(secret).sign(event_id, datetime.fromtimestamp(stamp, tz=UTC), body)
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": signature,
    }


def body(event_type: str, occurred_at: float, data: dict[str, Any]) -> str:
    """The JSON posted for an event: `{"type", "timestamp", "data"}`.

    `timestamp` is epoch seconds, as every timestamp in the API's JSON (`createdAt`, `at`, …),
    not the RFC 3339 string some Standard Webhooks senders use: one format everywhere.
    """
    event = {"type": event_type, "timestamp": occurred_at, "data": data}
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


@dataclass
class Answer:
    """How one delivery attempt ended: the receiver's status, or why there was none."""

    status_code: int | None = None
    error: str | None = None
    #: The URL that answered (after redirects).
    url: str = ""
    #: True when retrying cannot help: the guard refused the target or the URL is malformed.
    final: bool = False

    @property
    def delivered(self) -> bool:
        """A 2xx answer."""
        return self.status_code is not None and 200 <= self.status_code < 300


async def post(
    url: str, content: str, headers: dict[str, str], guard: Guard, timeout_s: float
) -> Answer:
    """POST a signed event to `url`, following up to `MAX_REDIRECTS` redirects (each hop
    re-checked by the guard and re-posted with the same body), all within `timeout_s`."""
    answer = Answer(url=url)
    try:
        target = httpx.URL(url)
    except httpx.InvalidURL as exc:
        return Answer(error=f"invalid URL: {exc}", url=url, final=True)
    # trust_env=False: a proxy from the environment would connect where the guard did not look
    async with httpx.AsyncClient(timeout=timeout_s, trust_env=False) as client:
        try:
            async with asyncio.timeout(timeout_s):
                for _hop in range(MAX_REDIRECTS + 1):
                    answer.url = str(target)
                    address = await resolve_checked(target, guard)
                    request = client.build_request(
                        "POST",
                        target.copy_with(host=str(address)),
                        content=content.encode(),
                        headers={
                            **headers,
                            "host": target.netloc.decode("ascii"),
                            "content-type": "application/json",
                            "user-agent": "Semantest-Webhooks/1",
                        },
                        # TLS: SNI and the certificate's name are the host's, not the address
                        extensions={"sni_hostname": target.raw_host.decode("ascii")},
                    )
                    response = await client.send(request, stream=True)
                    await response.aclose()  # the answer's body is not read
                    answer.status_code = response.status_code
                    location = response.headers.get("location")
                    if response.status_code not in REDIRECT_STATUSES or not location:
                        return answer
                    target = target.join(location)
                answer.error = f"more than {MAX_REDIRECTS} redirects"
        except Refused as exc:
            answer.status_code, answer.error, answer.final = None, f"refused: {exc}", True
        except TimeoutError:
            answer.status_code, answer.error = None, f"no answer within {timeout_s:g} s"
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            answer.status_code, answer.error = None, f"{type(exc).__name__}: {exc}".rstrip(": ")
    return answer
