"""Tracing across real processes: a stack with `SEMANTEST_OTEL_ENDPOINT` pointing at an OTLP/HTTP
receiver in this test exports one job's spans from the controller and the agent — submit,
queue, attempt, bridge, store — in one trace, each linked to its parent."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from semantest.stack import Stack, free_port
from tests.e2e.conftest import client, stack_settings, submit, wait_final

pytestmark = pytest.mark.e2e

DB = 54
NAMES = ("semantest.submit", "semantest.queue", "semantest.attempt", "semantest.bridge")


class Collector:
    """An OTLP/HTTP trace receiver: every span it is sent, with its service's name."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest.FromString(body)
                for resource in request.resource_spans:
                    service = next(
                        (
                            a.value.string_value
                            for a in resource.resource.attributes
                            if a.key == "service.name"
                        ),
                        "",
                    )
                    for scope in resource.scope_spans:
                        for span in scope.spans:
                            collector.spans.append(
                                {
                                    "name": span.name,
                                    "service": service,
                                    "trace": span.trace_id.hex(),
                                    "id": span.span_id.hex(),
                                    "parent": span.parent_span_id.hex(),
                                    "start": span.start_time_unix_nano,
                                    "end": span.end_time_unix_nano,
                                    "attributes": {
                                        a.key: a.value.string_value or a.value.int_value
                                        for a in span.attributes
                                    },
                                }
                            )
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of(self, job_id: str, timeout: float = 15.0) -> dict[str, dict[str, Any]]:
        """The spans of one job's trace by name, once all of `NAMES` and the store arrived."""
        deadline = time.monotonic() + timeout
        while True:
            attempt = next(
                (
                    s
                    for s in self.spans
                    if s["name"] == "semantest.attempt" and s["attributes"].get("job.id") == job_id
                ),
                None,
            )
            if attempt is not None:
                mine = {s["name"]: s for s in self.spans if s["trace"] == attempt["trace"]}
                if set(NAMES) | {"semantest.store"} <= set(mine):
                    return mine
            assert time.monotonic() < deadline, f"spans so far: {self.spans}"
            time.sleep(0.2)


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    running = Collector()
    yield running
    running.server.shutdown()


@pytest.fixture(scope="module")
def traced_stack(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory, collector: Collector
) -> Iterator[Stack]:
    settings = stack_settings(
        redis_url, DB, tmp_path_factory.mktemp("traced"), otel_endpoint=collector.url
    )
    redis.Redis.from_url(settings.redis_url or "").flushdb()
    with Stack(settings, agents=1) as running:
        yield running


def test_one_jobs_spans_share_a_trace_and_are_parent_linked(
    traced_stack: Stack, collector: Collector
) -> None:
    with client(traced_stack) as api:
        job_id = submit(api, "a traced lighthouse")
        record = wait_final(api, job_id)
    assert record["status"] == "succeeded"
    spans = collector.of(job_id)
    submit_span, queue, attempt = (
        spans["semantest.submit"],
        spans["semantest.queue"],
        spans["semantest.attempt"],
    )
    bridge, store = spans["semantest.bridge"], spans["semantest.store"]
    assert submit_span["parent"] == ""  # the root
    assert queue["parent"] == submit_span["id"] and attempt["parent"] == submit_span["id"]
    assert bridge["parent"] == attempt["id"] and store["parent"] == attempt["id"]
    assert submit_span["service"] == "semantest-controller"
    assert {s["service"] for s in (queue, attempt, bridge, store)} == {"semantest-agent"}
    # in order: queued from the submission until the lease; the bridge before the store
    assert abs(queue["start"] - record["createdAt"] * 1e9) < 5e6
    assert queue["end"] <= attempt["start"] + 1e9
    assert bridge["end"] <= store["start"] <= store["end"] <= attempt["end"]
    assert attempt["attributes"]["agent.slot"] == "agent-1/0"
