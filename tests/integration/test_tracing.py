"""Tracing hooks with OpenTelemetry's in-memory exporter, against a real controller and Redis:
the submit span's context is kept next to the job and continued by what an agent does with
it (one trace, parent-linked); with tracing off, nothing is kept and no span is made.

The same path across real processes (controller and agent exporting over OTLP) is held by
tests/e2e/test_tracing_e2e.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
import redis
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import SecretStr

from semantest import keys, tracing
from semantest.config import Settings
from semantest.stack import free_port
from tests.conftest import ADMIN_KEY, serve_controller

pytestmark = pytest.mark.integration

DB = 54


@pytest.fixture(scope="module")
def url(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = Settings(
        redis_url=f"{redis_url.rsplit('/', 1)[0]}/{DB}",
        admin_key=SecretStr(ADMIN_KEY),
        port=free_port(),
        data_dir=tmp_path_factory.mktemp("tracing"),
        chromium=None,
    )
    with serve_controller(settings) as running:
        yield running


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracing.install(provider)
    yield spans
    tracing.uninstall()


def submit(url: str) -> str:
    reply = httpx.post(
        f"{url}/api/v1/images/generate",
        json={"prompt": f"a traced prompt {time.time_ns()}"},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert reply.status_code == 202, reply.text
    job_id: str = reply.json()["jobId"]
    return job_id


def test_the_submit_span_is_kept_and_an_agents_spans_continue_its_trace(
    url: str, exporter: InMemorySpanExporter, redis_url: str
) -> None:
    job_id = submit(url)
    (submitted,) = [s for s in exporter.get_finished_spans() if s.name == "semantest.submit"]
    r = redis.Redis.from_url(f"{redis_url.rsplit('/', 1)[0]}/{DB}")
    kept = r.get(keys.job_trace(job_id))
    assert r.ttl(keys.job_trace(job_id)) > 0
    r.close()
    assert kept is not None
    _version, trace_id, span_id, _flags = kept.decode().split("-")
    assert int(trace_id, 16) == submitted.context.trace_id
    assert int(span_id, 16) == submitted.context.span_id
    # what agents/attempt.py does with it
    parent = tracing.parent_of(kept)
    tracing.record_span("semantest.queue", parent, time.time() - 1, time.time())
    with tracing.span("semantest.attempt", parent=parent, attributes={"job.id": job_id}):
        with tracing.span("semantest.bridge"):
            pass
        with tracing.span("semantest.store"):
            pass
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert {s.context.trace_id for s in spans.values()} == {submitted.context.trace_id}
    attempt = spans["semantest.attempt"]
    assert spans["semantest.queue"].parent.span_id == submitted.context.span_id
    assert attempt.parent.span_id == submitted.context.span_id
    assert spans["semantest.bridge"].parent.span_id == attempt.context.span_id
    assert spans["semantest.store"].parent.span_id == attempt.context.span_id
    assert submitted.parent is None


def test_off_by_default_no_span_and_nothing_kept(url: str, redis_url: str) -> None:
    assert not tracing.enabled()
    job_id = submit(url)
    r = redis.Redis.from_url(f"{redis_url.rsplit('/', 1)[0]}/{DB}")
    assert r.exists(keys.job(job_id)) and not r.exists(keys.job_trace(job_id))
    r.close()
    with tracing.span("semantest.attempt") as span:
        assert span is None
    assert tracing.traceparent() is None and tracing.parent_of(None) is None
    assert not tracing.setup(Settings(chromium=None), "semantest-test")
