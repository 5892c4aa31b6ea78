"""OpenTelemetry tracing of a job's path: submit → queue → agent → bridge → store.

Off unless `SEMANTEST_OTEL_ENDPOINT` is set: then each process calls `setup()` once at start
and exports its spans over OTLP/HTTP (`<endpoint>/v1/traces`) in batches. While off, `span()`
is a no-op context manager and nothing is written to Redis: no cost on the hot path.

A job's trace crosses processes through Redis: the controller's `semantest.submit` span
writes its W3C `traceparent` to `keys.job_trace(job_id)` (next to the record, same lifetime),
and the agent that takes the job reads it back (`parent_of`) and makes its spans children of
it: `semantest.queue` (from the job's creation to its lease), `semantest.attempt` (one per
attempt, with agent, slot and attempt number), and inside that `semantest.bridge` (the
addon's run through the extension) and `semantest.store` (fetching and storing the images).

Must not import anything of ours but the kernel.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from semantest.config import Settings

if TYPE_CHECKING:  # the SDK is imported only when tracing is on
    from opentelemetry.sdk.trace import TracerProvider

_tracer: Tracer | None = None
_propagator = TraceContextTextMapPropagator()
#: Spans are sent at least this often (ms): processes that end by a signal lose little.
EXPORT_EVERY_MS = 500


def setup(settings: Settings, service: str) -> bool:
    """Export this process's spans when `settings.otel_endpoint` is set; whether it is on."""
    if not settings.otel_endpoint:
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    endpoint = settings.otel_endpoint.rstrip("/")
    if not endpoint.endswith("/v1/traces"):
        endpoint += "/v1/traces"
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(
        BatchSpanProcessor(
            OTLPSpanExporter(endpoint=endpoint), schedule_delay_millis=EXPORT_EVERY_MS
        )
    )
    install(provider)
    return True


def install(provider: TracerProvider) -> None:
    """Trace with `provider` (what `setup` builds; tests pass one with an in-memory exporter)."""
    global _tracer
    _tracer = provider.get_tracer("semantest")


def uninstall() -> None:
    """Stop tracing in this process (tests)."""
    global _tracer
    _tracer = None


def enabled() -> bool:
    """Whether this process traces."""
    return _tracer is not None


_OFF: contextlib.nullcontext[None] = contextlib.nullcontext()


def span(
    name: str,
    *,
    parent: otel_context.Context | None = None,
    start_time: float | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> AbstractContextManager[Span | None]:
    """A span, current for the `with` block, child of `parent` (else of the current span);
    while tracing is off, a shared do-nothing context (None). `start_time`: Unix seconds."""
    if _tracer is None:
        return _OFF
    return _tracer.start_as_current_span(
        name,
        context=parent,
        start_time=int(start_time * 1e9) if start_time is not None else None,
        attributes=dict(attributes or {}),
    )


def traceparent() -> str | None:
    """The W3C `traceparent` of the current span (None while off or outside a span)."""
    if _tracer is None:
        return None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


def parent_of(value: str | bytes | None) -> otel_context.Context | None:
    """The context a stored `traceparent` names (None when there is none)."""
    if not value:
        return None
    text = value.decode() if isinstance(value, bytes) else value
    return _propagator.extract({"traceparent": text})


def record_span(name: str, parent: otel_context.Context | None, start: float, end: float) -> None:
    """A finished span from `start` to `end` (Unix seconds), e.g. the time a job queued."""
    if _tracer is None:
        return
    done = _tracer.start_span(name, context=parent, start_time=int(start * 1e9))
    done.end(end_time=int(end * 1e9))


def current_span() -> Span:
    """The current span (a non-recording one when none)."""
    return trace.get_current_span()
