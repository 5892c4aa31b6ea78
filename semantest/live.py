"""Live progress on the wire: what the event routes send and what `Client.stream()` yields.

A job's events are the entries of its Redis stream (`keys.job_events`); the controller serves
them as Server-Sent Events (`GET /api/v1/jobs/{jobId}/events`,
`GET /api/v1/batches/{batchId}/events`) and over the WebSocket `/api/v1/ws`. Each SSE event is

    id: <position>            (a job: the stream entry id; a batch: <jobId>:<entry id>)
    event: job                (data: the `JobEvent` JSON, which names its jobId)

and a stream ends with one `event: end` (data `{"jobId", "status"}` or `{"batchId",
"counts"}`) once the job, or every job of the batch, is final. Heartbeats are SSE comments.
Positions are opaque to clients: send the last one back (`Last-Event-ID`, or `since` on the
WebSocket) and the stream resumes after it. docs/architecture.md ("Live progress") says why
this loses and repeats nothing.

Imports pydantic and the kernel's models only.
"""

from __future__ import annotations

from semantest.models import JobEvent

#: SSE event name of a job's event.
EVENT_JOB = "job"
#: SSE event name of the last event of a stream: the job, or every job of the batch, is final.
EVENT_END = "end"
#: Media type of the event routes.
EVENT_STREAM = "text/event-stream"


class StreamEvent(JobEvent):
    """One event of a live stream: the job's event, its position, and its batch when the
    stream is a batch's. Pass `id` as `since` to resume after this event."""

    id: str
    batch_id: str | None = None
