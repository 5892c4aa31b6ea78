"""Chrome's match patterns: Chrome's documented examples and the tricky URLs, one table.

Each row is (pattern, url, matched). The documented examples come from Chrome's match-pattern
page (its "valid patterns" table); the rest are the edges an addon author trips over.
"""

from __future__ import annotations

import pytest

from addons.match import MatchPattern, PatternError, matches_any

pytestmark = pytest.mark.unit

CASES: list[tuple[str, str, bool]] = [
    # Chrome's documented examples
    ("https://*/*", "https://www.google.com/", True),
    ("https://*/*", "https://example.org/foo/bar.html", True),
    ("https://*/*", "http://example.org/", False),
    ("https://*/foo*", "https://example.com/foo/bar.html", True),
    ("https://*/foo*", "https://www.google.com/foo", True),
    ("https://*/foo*", "https://www.google.com/bar/foo", False),
    ("https://*.google.com/foo*bar", "https://www.google.com/foo/baz/bar", True),
    ("https://*.google.com/foo*bar", "https://docs.google.com/foobar", True),
    ("https://*.google.com/foo*bar", "https://docs.google.com/foobarbaz", False),
    ("https://example.org/foo/bar.html", "https://example.org/foo/bar.html", True),
    ("https://example.org/foo/bar.html", "https://example.org/foo/bar.htm", False),
    ("file:///foo*", "file:///foo/bar.html", True),
    ("file:///foo*", "file:///foo", True),
    ("file:///foo*", "file:///bar/foo", False),
    ("http://127.0.0.1/*", "http://127.0.0.1/", True),
    ("http://127.0.0.1/*", "http://127.0.0.1/foo/bar.html", True),
    ("*://mail.google.com/*", "http://mail.google.com/foo/baz/bar", True),
    ("*://mail.google.com/*", "https://mail.google.com/foobar", True),
    ("*://mail.google.com/*", "ftp://mail.google.com/", False),
    ("<all_urls>", "http://example.org/foo/bar.html", True),
    ("<all_urls>", "file:///bar/baz.html", True),
    ("<all_urls>", "wss://example.org/socket", True),
    ("<all_urls>", "chrome://extensions/", False),
    ("<all_urls>", "about:blank", False),
    # scheme `*` is http and https only
    ("*://*/*", "ws://example.com/", False),
    ("*://*/*", "file:///tmp/x", False),
    ("wss://*/*", "wss://example.com/live", True),
    # `*.` also matches the bare domain, never a lookalike
    ("*://*.example.com/*", "https://example.com/", True),
    ("*://*.example.com/*", "https://a.b.example.com/x", True),
    ("*://*.example.com/*", "https://notexample.com/", False),
    ("*://*.example.com/*", "https://example.com.evil.net/", False),
    ("*://*.co.uk/*", "https://bbc.co.uk/news", True),
    ("*://*.co.uk/*", "https://co.uk/", True),
    ("*://*.co.uk/*", "https://bbc.co.ukk/", False),
    ("*://*.1.2.3/*", "http://4.1.2.3/", False),
    # hosts compare canonical: lowercase, punycode, trailing dot ignored
    ("*://example.com/*", "http://EXAMPLE.COM/", True),
    ("*://EXAMPLE.com/*", "http://example.com/", True),
    ("*://example.com/*", "http://example.com./", True),
    ("*://example.com./*", "http://example.com/", True),
    ("*://*.example.com/*", "http://www.example.com./", True),
    ("*://bücher.de/*", "https://xn--bcher-kva.de/", True),
    ("*://xn--bcher-kva.de/*", "https://BÜCHER.de/", True),
    ("*://*.bücher.de/*", "https://shop.bücher.de/", True),
    # userinfo is not the host
    ("*://example.com/*", "https://user:pass@example.com/", True),
    ("*://example.com/*", "https://example.com@evil.com/", False),
    ("*://evil.com/*", "https://example.com@evil.com/", True),
    # ports: none given = every port; explicit = only that one (the effective port)
    ("http://localhost/*", "http://localhost:8080/chat", True),
    ("http://localhost/*", "http://localhost/chat", True),
    ("http://localhost:*/*", "http://localhost:9/", True),
    ("http://localhost:8080/*", "http://localhost:8080/", True),
    ("http://localhost:8080/*", "http://localhost:8081/", False),
    ("http://localhost:8080/*", "http://localhost/", False),
    ("http://example.com:80/*", "http://example.com/", True),
    ("http://example.com:80/*", "http://example.com:8080/", False),
    ("https://example.com:443/*", "https://example.com/", True),
    ("https://example.com:80/*", "https://example.com/", False),
    ("http://[::1]:8080/*", "http://[::1]:8080/x", True),
    ("http://[::1]/*", "http://[::1]:3000/x", True),
    # path globs cover path and query; fragment ignored; case-sensitive
    ("*://example.com/chat*", "https://example.com/chat?id=1", True),
    ("*://example.com/chat", "https://example.com/chat?id=1", False),
    ("*://example.com/*?id=*", "https://example.com/c?id=1", True),
    ("*://example.com/*?id=*", "https://example.com/c", False),
    ("*://example.com/chat", "https://example.com/chat#frag", True),
    ("*://example.com/*frag*", "https://example.com/page#frag", False),
    ("*://example.com/Chat*", "https://example.com/chat", False),
    ("*://example.com/chat*", "https://example.com/Chat", False),
    ("*://example.com/a b*", "https://example.com/a%20b", False),
    ("*://example.com/a%20b*", "https://example.com/a b", True),
    ("*://example.com/x.y", "https://example.com/xzy", False),
    ("*://example.com/a?b", "https://example.com/a?b", True),
    ("*://example.com/a?b", "https://example.com/ab", False),
    ("*://example.com/a*b*c", "https://example.com/a-b-c", True),
    ("http://127.0.0.1/chat*", "http://127.0.0.1:51234/chat?session=7", True),
    ("http://127.0.0.1/chat*", "http://127.0.0.1:51234/chatter", True),
    ("http://127.0.0.1/chat*", "http://127.0.0.1:51234/other/chat", False),
    ("*://example.com/", "https://example.com", True),
    ("*://*/*", "not a url", False),
]


@pytest.mark.parametrize(("pattern", "url", "matched"), CASES)
def test_chrome_match_semantics(pattern: str, url: str, matched: bool) -> None:
    assert MatchPattern.parse(pattern).matches(url) is matched


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 60


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("example.com", "not a match pattern"),
        ("https://example.com", "path is missing"),
        ("gopher://example.com/*", "scheme"),
        ("https://*example.com/*", "first character"),
        ("https://www.*.com/*", "first character"),
        ("https://*./*", "host"),
        ("https:///*", "host is empty"),
        ("https://example.com:99999/*", "port"),
        ("https://example.com:x/*", "port"),
        ("file://host/*", "no host"),
        ("https://user@example.com/*", "user info"),
    ],
)
def test_invalid_patterns_say_why(pattern: str, reason: str) -> None:
    with pytest.raises(PatternError, match=reason):
        MatchPattern.parse(pattern)


def test_exclude_wins() -> None:
    patterns, excludes = ["*://*.example.com/*"], ["*://admin.example.com/*"]
    assert matches_any("https://www.example.com/", patterns, excludes)
    assert not matches_any("https://admin.example.com/x", patterns, excludes)
    assert not matches_any("https://admin.example.com/x", patterns, ["<all_urls>"])
    assert not matches_any("https://other.org/", patterns, excludes)
