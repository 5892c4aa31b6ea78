"""Settings from the environment; the error hierarchy and its envelope."""

from __future__ import annotations

import pytest
from pydantic import ValidationError as PydanticValidationError

from semantest import errors
from semantest.config import Settings, find_chromium

pytestmark = pytest.mark.unit


def test_settings_read_semantest_prefixed_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEMANTEST_PORT", "9123")
    monkeypatch.setenv("SEMANTEST_REDIS_URL", "redis://127.0.0.1:7000/1")
    monkeypatch.setenv("SEMANTEST_ADMIN_KEY", "sk_secret_value")
    monkeypatch.setenv("SEMANTEST_SANDBOX_LATENCY_MS", "250")
    s = Settings()
    assert s.port == 9123 and s.sandbox_latency_ms == 250
    assert s.redis_url == "redis://127.0.0.1:7000/1"
    assert s.controller_url == "http://127.0.0.1:9123"
    # the key never shows in reprs or logs
    assert "sk_secret_value" not in repr(s)
    assert s.admin_key is not None and s.admin_key.get_secret_value() == "sk_secret_value"


def test_settings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SEMANTEST_PORT", "SEMANTEST_REDIS_URL", "SEMANTEST_CHROMIUM"):
        monkeypatch.delenv(name, raising=False)
    s = Settings()
    assert s.port == 8000 and s.redis_url is None
    assert s.chromium == find_chromium()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SEMANTEST_PORT", "0"),
        ("SEMANTEST_PORT", "http"),
        ("SEMANTEST_REDIS_URL", "localhost:6379"),
    ],
)
def test_bad_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(PydanticValidationError) as info:
        Settings()
    assert info.value.errors()[0]["loc"][0] == name.removeprefix("SEMANTEST_").lower()


def test_envelope_and_codes() -> None:
    err = errors.JobNotFound("no job 'x'")
    assert (err.status, err.code) == (404, "JOB_NOT_FOUND")
    assert isinstance(err, errors.NotFound)
    body = err.envelope("req-1")["error"]
    assert body == {
        "code": "JOB_NOT_FOUND",
        "message": "no job 'x'",
        "details": [],
        "requestId": "req-1",
    }


def test_retry_after_errors_carry_the_header() -> None:
    assert errors.RateLimited("slow down", retry_after_s=7).headers() == {"Retry-After": "7"}
    assert errors.Unavailable("full").status == 503


def test_job_failures_know_if_they_are_retryable() -> None:
    assert not errors.GenerationFailed("refused").retryable
    timeout = errors.RetryableFailure("too slow", "PROVIDER_TIMEOUT")
    assert timeout.retryable and timeout.job_code == "PROVIDER_TIMEOUT"
    assert errors.GenerationFailed("refused").job_code == "GENERATION_FAILED"


def test_our_feature_switches_keep_every_feature_playwright_sets() -> None:
    """Chromium honours only the last --disable-features/--enable-features switch: ours must
    repeat what the installed Playwright driver passes, or we would silently undo it."""
    import re
    from pathlib import Path

    import playwright

    from semantest.config import PLAYWRIGHT_DISABLED_FEATURES, PLAYWRIGHT_ENABLED_FEATURES

    bundle = next(Path(playwright.__file__).parent.joinpath("driver").rglob("coreBundle.js"))
    source = bundle.read_text()
    disabled = source[source.index("disabledFeatures = [") :]
    disabled = disabled[: disabled.index("]")]
    enabled = source[source.index("enabledFeatures = () => [") :]
    enabled = enabled[: enabled.index("]")]
    assert set(re.findall(r'^\s*"(\w+)"', disabled, re.M)) <= set(PLAYWRIGHT_DISABLED_FEATURES)
    assert set(re.findall(r'"(\w+)"', enabled)) <= set(PLAYWRIGHT_ENABLED_FEATURES)
