"""The webhook SSRF guard: which addresses it refuses, before and after DNS, and the 422 a
request naming a refused target gets from the real controller (which runs with private
targets not allowed, as in production)."""

from __future__ import annotations

import ipaddress
import uuid

import httpx
import pytest

from semantest.webhooks import Guard, Refused, address_kind, resolve_checked

pytestmark = pytest.mark.integration

#: Address → the kind the guard refuses it as (None: public, allowed).
TABLE = [
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "cloud metadata"),
    ("169.254.1.1", "link-local"),
    ("100.64.0.1", "shared (CGNAT)"),
    ("100.100.100.200", "cloud metadata"),
    ("224.0.0.1", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("240.0.0.1", "private"),
    ("255.255.255.255", "private"),
    ("198.18.0.1", "private"),
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fe80::1", "link-local"),
    ("fc00::1", "private"),
    ("fd00:ec2::254", "cloud metadata"),
    ("ff02::1", "multicast"),
    ("::ffff:127.0.0.1", "loopback (IPv4 127.0.0.1 inside IPv6)"),
    ("::ffff:169.254.169.254", "cloud metadata (IPv4 169.254.169.254 inside IPv6)"),
    ("64:ff9b::a9fe:a9fe", "cloud metadata (IPv4 169.254.169.254 inside IPv6)"),
    ("2002:a00:1::1", "private (IPv4 10.0.0.1 inside IPv6)"),
    ("93.184.215.14", None),
    ("8.8.8.8", None),
    ("2606:4700:4700::1111", None),
    ("::ffff:8.8.8.8", None),
]


@pytest.mark.parametrize(("address", "kind"), TABLE)
def test_the_guard_refuses_every_non_public_kind(address: str, kind: str | None) -> None:
    ip = ipaddress.ip_address(address)
    assert address_kind(ip) == kind
    refusal = Guard().refusal(ip)
    assert (refusal is None) == (kind is None)
    assert Guard(allow_private=True).refusal(ip) is None


def test_allowed_networks_open_only_themselves() -> None:
    guard = Guard(allow_networks=(ipaddress.ip_network("127.0.0.1/32"),))
    assert guard.refusal(ipaddress.ip_address("127.0.0.1")) is None
    assert guard.refusal(ipaddress.ip_address("127.0.0.2")) == "127.0.0.2 is a loopback address"
    assert guard.refusal(ipaddress.ip_address("10.0.0.1")) == "10.0.0.1 is a private address"


LITERALS = [
    ("https://hooks.example.com/x", Guard(), None),
    ("https://93.184.215.14:8443/x", Guard(), None),
    ("https://127.0.0.1/x", Guard(), "127.0.0.1 is a loopback address"),
    ("https://[::ffff:a9fe:a9fe]/x", Guard(), "cloud metadata"),
    ("http://hooks.example.com/x", Guard(), "must be https"),
    ("http://127.0.0.1:9/x", Guard(), "must be https"),
    ("http://127.0.0.1:9/x", Guard(allow_private=True), None),
    ("http://localhost:9/x", Guard(allow_private=True), None),
    ("http://[::1]:9/x", Guard(allow_private=True), None),
    ("http://10.0.0.1/x", Guard(allow_private=True), "must be https"),
    ("http://hooks.example.com/x", Guard(allow_private=True), "must be https"),
]


@pytest.mark.parametrize(("url", "guard", "refused"), LITERALS)
def test_urls_are_judged_by_scheme_and_literal_address(
    url: str, guard: Guard, refused: str | None
) -> None:
    why = guard.check_literal(url)
    assert (why is None) == (refused is None), why
    assert refused is None or refused in (why or "")


async def test_names_are_checked_after_resolution() -> None:
    # localhost resolves to loopback addresses only: refused without private targets...
    with pytest.raises(Refused, match=r"localhost resolves to .* loopback address"):
        await resolve_checked(httpx.URL("https://localhost:9/x"), Guard())
    # ...allowed with them, and pinned to a loopback address
    address = await resolve_checked(httpx.URL("http://localhost:9/x"), Guard(allow_private=True))
    assert address.is_loopback
    # http:// to anything but loopback stays refused, whatever the guard allows
    with pytest.raises(Refused, match="http:// only to a loopback address"):
        await resolve_checked(httpx.URL("http://10.0.0.1/x"), Guard(allow_private=True))
    with pytest.raises(OSError):  # a name that does not resolve is an error to retry
        await resolve_checked(httpx.URL("https://no-such-host.invalid/x"), Guard())


BAD_TARGETS = [
    ("https://127.0.0.1/hook", "127.0.0.1 is a loopback address"),
    ("https://10.0.0.7/hook", "10.0.0.7 is a private address"),
    ("https://169.254.169.254/latest/meta-data", "cloud metadata"),
    ("https://[::1]:8443/hook", "::1 is a loopback address"),
    ("https://[::ffff:10.0.0.1]/hook", "private (IPv4 10.0.0.1 inside IPv6)"),
    ("http://127.0.0.1:9000/hook", "must be https"),
    ("http://hooks.example.com/hook", "must be https"),
    ("ftp://hooks.example.com/hook", "must be an https URL"),
    ("https://user:pw@hooks.example.com/hook", "must be an https URL"),
]


@pytest.mark.parametrize(("url", "reason"), BAD_TARGETS)
def test_a_refused_target_is_a_422_naming_webhook_url(
    client: httpx.Client, url: str, reason: str
) -> None:
    bodies = {
        "/api/v1/images/generate": {"prompt": "p", "webhook": {"url": url}},
        "/api/v1/images/batch": {"prompts": ["p"], "webhook": {"url": url}},
        "/api/v1/chat/new": {"message": "m", "provider": "sandbox", "webhook": {"url": url}},
    }
    for path, body in bodies.items():
        reply = client.post(path, json=body)
        assert reply.status_code == 422, (path, reply.text)
        details = reply.json()["error"]["details"]
        assert [d["field"] for d in details] == ["webhook.url"], details
        assert reason in details[0]["reason"], details


def test_a_public_target_is_accepted_and_kept_in_the_record(client: httpx.Client) -> None:
    url = f"https://hooks.example.com/semantest/{uuid.uuid4().hex}"
    reply = client.post("/api/v1/images/generate", json={"prompt": "p", "webhook": {"url": url}})
    assert reply.status_code == 202, reply.text
    record = client.get(f"/api/v1/images/status/{reply.json()['jobId']}").json()
    assert record["webhook"] == {"url": url}
