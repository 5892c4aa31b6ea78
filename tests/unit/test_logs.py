"""semantest.logs: one JSON object per line with the context's ids, and secrets masked
wherever a caller put them (message, arguments, extra fields, tracebacks)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from semantest import logs

KEY = "sk_live_" + "A1b2C3d4" * 5
SECRET = "whsec_" + "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJlc2lnbmF0dXJl"


@pytest.fixture
def lines(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    logs.configure_logging("DEBUG", "agent")
    yield out
    logging.basicConfig(force=True, handlers=[logging.NullHandler()])


def entries(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_line_is_json_with_role_and_the_bound_ids(lines: io.StringIO) -> None:
    log = logging.getLogger("agents.attempt")
    with logs.bound(job_id="j1", agent="agent-1", slot=0):
        log.info("job %s attempt %d", "j1", 1)
    log.info("outside")
    inside, outside = entries(lines)
    assert inside["message"] == "job j1 attempt 1"
    assert (inside["role"], inside["logger"], inside["level"]) == (
        "agent",
        "agents.attempt",
        "INFO",
    )
    assert (inside["job_id"], inside["agent"], inside["slot"]) == ("j1", "agent-1", 0)
    assert "job_id" not in outside and "time" in outside


def test_context_follows_tasks_and_coroutines_handed_to_a_loop_thread(lines: io.StringIO) -> None:
    """What an agent does: a slot thread hands a coroutine to the agent's loop thread."""
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()

    async def work() -> None:
        logging.getLogger("x").info("on the loop")

    def slot_thread() -> None:
        logs.bind(agent="agent-2", slot=3, job_id="j9")
        asyncio.run_coroutine_threadsafe(work(), loop).result(5)

    thread = threading.Thread(target=slot_thread)
    thread.start()
    thread.join()
    loop.call_soon_threadsafe(loop.stop)
    runner.join(5)
    (entry,) = [e for e in entries(lines) if e["logger"] == "x"]
    assert (entry["job_id"], entry["agent"], entry["slot"]) == ("j9", "agent-2", 3)


def test_keys_secrets_and_tokens_are_masked_everywhere(lines: io.StringIO) -> None:
    log = logging.getLogger("controller.auth")
    log.warning("refused %s", KEY)
    log.info("header Authorization: Bearer %s", TOKEN, extra={"detail": f"secret={SECRET}"})
    try:
        raise ValueError(f"bad key {KEY}")
    except ValueError:
        log.exception("failed")
    text = lines.getvalue()
    for secret in (KEY, SECRET, TOKEN, KEY[8:]):
        assert secret not in text
    refused, header, failed = [e for e in entries(lines) if e["logger"] == "controller.auth"]
    assert refused["message"] == "refused sk_live_A1b…"  # the prefix the admin API shows
    assert header["message"] == "header Authorization: Bearer <jwt>"
    assert header["detail"] == "secret=whsec_…"
    assert "ValueError: bad key sk_live_A1b…" in failed["exc_info"]


def test_text_format_for_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    logs.configure_logging("INFO", "pool", fmt="text")
    logging.getLogger("agents.pool").info("started %s", KEY)
    logging.basicConfig(force=True, handlers=[logging.NullHandler()])
    line = out.getvalue()
    assert " INFO pool agents.pool: started sk_live_A1b…" in line and KEY not in line
