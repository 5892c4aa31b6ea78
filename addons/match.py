"""Chrome's match patterns, in one place: the registry, `resolve` and the allowlist use this.

Semantics, as Chrome applies them to content and user scripts (docs/addons.md has the table):

- `<all_urls>` matches every URL of a permitted scheme (http, https, ws, wss, ftp, file).
- scheme `*` matches `http` and `https` only; any other scheme matches itself.
- host `*` matches every host; `*.example.com` matches `example.com` and every subdomain of it
  (never an IP address); otherwise the host must be equal. Hosts compare after canonicalising
  both sides as a browser does: lowercase, IDN to punycode, one trailing dot ignored.
- a pattern without a port matches every port; `:*` too; an explicit port matches only that
  port, compared with the URL's effective port (`http://a/` is port 80).
- the path glob (`*` = any run of characters, everything else literal and case-sensitive) is
  matched against the URL's path **and query**; the fragment never takes part.
- userinfo (`user:pass@`) is not part of the host.
- excludes win: a URL that matches any exclude pattern is not matched.

URLs are parsed with a WHATWG URL parser (`ada-url`, the one Node.js uses), so the canonical
form is the one Chromium computes: `HTTP://EXAMPLE.com/a b` is `http://example.com/a%20b`.
Imports nothing of ours.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from ada_url import URL

ALL_URLS = "<all_urls>"
#: Schemes a pattern may name, and the ones `<all_urls>` covers.
SCHEMES = frozenset({"http", "https", "ws", "wss", "ftp", "file"})
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443, "ftp": 21}
_PATTERN = re.compile(r"^(?P<scheme>[^:/]+)://(?P<authority>[^/]*)(?P<path>/.*)?$", re.DOTALL)


class PatternError(ValueError):
    """A string that is not a valid match pattern; the message says why."""


@dataclass(frozen=True)
class MatchPattern:
    """One parsed match pattern."""

    text: str
    schemes: frozenset[str]
    #: Canonical host; "" with `any_host`.
    host: str
    any_host: bool
    subdomains: bool
    #: None: any port.
    port: int | None
    path: re.Pattern[str]

    @classmethod
    def parse(cls, text: str) -> MatchPattern:
        """Parse `text`, or raise `PatternError` saying what is wrong."""
        return _parse(text)

    def matches(self, url: str | ParsedUrl) -> bool:
        """Whether the URL is matched by this pattern."""
        target = url if isinstance(url, ParsedUrl) else ParsedUrl.of(url)
        if target is None or target.scheme not in self.schemes:
            return False
        if target.scheme != "file":
            if not self._host_matches(target):
                return False
            if self.port is not None and self.port != target.port:
                return False
        return self.path.fullmatch(target.path_and_query) is not None

    def _host_matches(self, target: ParsedUrl) -> bool:
        if self.any_host or target.host == self.host:
            return True
        if not self.subdomains or target.is_ip:
            return False
        return target.host.endswith("." + self.host)


@dataclass(frozen=True)
class ParsedUrl:
    """The parts of a URL that matching reads, canonical."""

    scheme: str
    host: str
    port: int | None
    path_and_query: str
    is_ip: bool

    @classmethod
    def of(cls, url: str) -> ParsedUrl | None:
        """The URL's parts, or None when it does not parse as a URL."""
        return _parse_url(url)


@lru_cache(maxsize=4096)
def _parse_url(url: str) -> ParsedUrl | None:
    try:
        parsed = URL(url)
    except ValueError:
        return None
    scheme = parsed.protocol.removesuffix(":")
    host = _canonical_host(parsed.hostname)
    port = int(parsed.port) if parsed.port else _DEFAULT_PORTS.get(scheme)
    return ParsedUrl(
        scheme=scheme,
        host=host,
        port=port,
        path_and_query=(parsed.pathname or "/") + parsed.search,
        is_ip=_is_ip(host),
    )


def _canonical_host(host: str) -> str:
    """Lowercase punycode without one trailing dot (Chromium's CanonicalizeHostForMatching)."""
    return host.removesuffix(".")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


@lru_cache(maxsize=1024)
def _parse(text: str) -> MatchPattern:
    if text == ALL_URLS:
        return MatchPattern(text, SCHEMES, "", True, False, None, re.compile(".*", re.DOTALL))
    found = _PATTERN.match(text)
    if found is None:
        raise PatternError(f"{text!r} is not a match pattern: expected <scheme>://<host>/<path>")
    scheme, authority, path = found["scheme"], found["authority"], found["path"]
    if scheme == "*":
        schemes = frozenset({"http", "https"})
    elif scheme in SCHEMES:
        schemes = frozenset({scheme})
    else:
        raise PatternError(
            f"{text!r}: scheme {scheme!r} is not one of *, {', '.join(sorted(SCHEMES))}"
        )
    if path is None:
        raise PatternError(f"{text!r}: the path is missing (add '/*' to match every path)")
    glob = re.compile(_glob(path), re.DOTALL)
    if scheme == "file":
        if authority not in ("", "localhost"):
            raise PatternError(f"{text!r}: a file pattern has no host (file:///path)")
        return MatchPattern(text, schemes, "", True, False, None, glob)
    host, port = _split_port(text, authority)
    if "@" in host:
        raise PatternError(f"{text!r}: a pattern's host cannot carry user info")
    if host == "*":
        return MatchPattern(text, schemes, "", True, False, port, glob)
    subdomains = host.startswith("*.")
    bare = host[2:] if subdomains else host
    if not bare:
        raise PatternError(f"{text!r}: the host is empty")
    if "*" in bare:
        raise PatternError(f"{text!r}: '*' in a host must be the first character, followed by '.'")
    canonical = _pattern_host(text, bare)
    return MatchPattern(text, schemes, canonical, False, subdomains, port, glob)


def _split_port(text: str, authority: str) -> tuple[str, int | None]:
    if authority.startswith("["):  # an IPv6 literal: the port follows the bracket
        end = authority.find("]")
        if end < 0:
            raise PatternError(f"{text!r}: unclosed '[' in the host")
        host, rest = authority[: end + 1], authority[end + 1 :]
    else:
        host, sep, port_text = authority.partition(":")
        rest = sep + port_text
    if not rest or rest == ":*":
        return host, None
    port_text = rest[1:]
    if not rest.startswith(":") or not port_text.isdigit() or int(port_text) > 65535:
        raise PatternError(f"{text!r}: the port must be a number up to 65535 or '*'")
    return host, int(port_text)


def _pattern_host(text: str, host: str) -> str:
    """A pattern's host canonicalised the way a URL's host is (lowercase, IDN to punycode)."""
    try:
        return _canonical_host(URL(f"http://{host}/").hostname)
    except ValueError:
        raise PatternError(f"{text!r}: {host!r} is not a valid host") from None


def _glob(path: str) -> str:
    """`*` is any run of characters; everything else is literal (no `?` or classes)."""
    return ".*".join(re.escape(piece) for piece in path.split("*"))


def matches_any(url: str, patterns: Iterable[str], excludes: Iterable[str] = ()) -> bool:
    """Whether `url` is matched by one of `patterns` and by none of `excludes` (exclude wins)."""
    target = ParsedUrl.of(url)
    if target is None:
        return False
    if any(MatchPattern.parse(p).matches(target) for p in excludes):
        return False
    return any(MatchPattern.parse(p).matches(target) for p in patterns)


def check_pattern(text: str) -> str:
    """`text` when it is a valid pattern (a pydantic validator's body); else PatternError."""
    MatchPattern.parse(text)
    return text
