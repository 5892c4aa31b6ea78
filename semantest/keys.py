"""Every Redis key and RQ queue name Semantest uses, in one place.

Our own keys live under `semantest:`; RQ keeps its own under `rq:` and we only name its
queues here (and read their length for health and pressure).
"""

from __future__ import annotations

PREFIX = "semantest"

#: Live agents: sorted set, member = agent id, score = last heartbeat (unix seconds).
AGENTS = f"{PREFIX}:agents"
#: Seconds between an agent's heartbeats.
HEARTBEAT_S = 2.0
#: Seconds after its last heartbeat that an agent's record expires and its jobs' leases are
#: lost: the reaper re-queues them (a dead agent's job waits at most this + one reaper tick).
LEASE_TTL_S = 10
#: Seconds after which an agent without a heartbeat counts as gone (same as its lease).
AGENT_TTL_S = LEASE_TTL_S


#: Names of every RQ worker (slot) that may hold claimed jobs (set); see `claims()`.
CLAIMERS = f"{PREFIX}:claimers"


def claims(worker: str) -> str:
    """Jobs a slot's worker has taken off a queue but not yet put in RQ's started registry.

    RQ pops from several queues with a plain LPOP, so a worker killed between the pop and the
    registry write would leave its job nowhere; our slots take jobs with an atomic move into
    this list instead, and the lease reaper puts a dead worker's claims back on their queues.
    """
    return f"{PREFIX}:claims:{worker}"


#: Held (a few seconds) by the controller process that runs the lease reaper's current pass.
REAPER_LOCK = f"{PREFIX}:reaper"


def job(job_id: str) -> str:
    """The job record (JSON string)."""
    return f"{PREFIX}:job:{job_id}"


def job_events(job_id: str) -> str:
    """The job's event stream (Redis stream of transitions and progress)."""
    return f"{PREFIX}:job:{job_id}:events"


def agent(agent_id: str) -> str:
    """An agent's heartbeat record (JSON, expires after AGENT_TTL_S)."""
    return f"{PREFIX}:agent:{agent_id}"


def account_budget(account: str) -> str:
    """A provider account's budget: sorted set of its takes in the last hour (score = ms)."""
    return f"{PREFIX}:budget:{account}"


def queue_name(provider: str, priority: str = "normal") -> str:
    """The RQ queue for one provider and priority lane; agents listen on their providers'."""
    return f"{PREFIX}.{provider}.{priority}"


def rq_queue_key(name: str) -> str:
    """RQ's own list key for a queue name (RQ's `Queue.key`)."""
    return f"rq:queue:{name}"


#: Dotted path of the job function the controller enqueues; it lives in `agents` and the
#: controller must not import it.
GENERATE_FUNC = "agents.jobs.generate"
#: RQ's failure callback for it: records attempts that died without recording anything.
FAILURE_CALLBACK = "agents.jobs.on_failure"
#: RQ's own timeout is a backstop beyond the agent's `job_timeout_s`, which the agent enforces
#: itself (and records); RQ's only fires when the agent is stuck.
RQ_TIMEOUT_MARGIN_S = 60

#: How long job records and their event streams are kept (seconds).
RECORD_TTL_S = 7 * 24 * 3600
#: Cap on one job's event stream length.
EVENTS_MAXLEN = 1000

#: `/api/v1/pressure`'s hysteresis latch, shared by every controller process: `queue-full` while
#: the queue has reached its limit and not yet drained to the resume mark; absent otherwise.
PRESSURE = f"{PREFIX}:pressure"


# --- Submission and fair scheduling (see controller/submission.py and agents/worker.py) ---


def fair_ring(provider: str, priority: str) -> str:
    """Tenants with jobs waiting in one lane, in round-robin order (a list used as a ring).

    A new job waits in its tenant's list `fair_ring(...) + ":" + tenant`, not in RQ's queue:
    a slot takes the next job of the next tenant (agents/worker.py), so a tenant with 10,000
    queued jobs does not starve one with 10. RQ's own queue list still takes retries and jobs
    the reaper gives back, and is served first.
    """
    return f"{PREFIX}:fair:{provider}.{priority}"


def fair_queue(provider: str, priority: str, tenant: str) -> str:
    """One tenant's waiting jobs in one lane (job ids, oldest first)."""
    return f"{fair_ring(provider, priority)}:{tenant}"


def lane_depth(provider: str, priority: str) -> str:
    """How many new jobs wait in a lane's tenant lists (a counter kept by the scripts)."""
    return f"{PREFIX}:depth:{provider}.{priority}"


def waiting(provider: str, priority: str) -> tuple[str, str]:
    """What holds a lane's waiting jobs: RQ's queue list (length) and the fair depth counter."""
    return rq_queue_key(queue_name(provider, priority)), lane_depth(provider, priority)


def doorbell(provider: str) -> str:
    """A list idle slots block on; every submission pushes one token per job it queues."""
    return f"{PREFIX}:doorbell:{provider}"


def slot_queue(worker: str) -> str:
    """Jobs for one slot's worker only (a chat's follow-ups), taken before the shared lanes."""
    return f"{PREFIX}:slotq:{worker}"


def slot_doorbell(worker: str) -> str:
    """The doorbell of one slot's worker: rung when a job is queued for that slot only."""
    return f"{PREFIX}:slotq:{worker}:bell"


def idempotency(tenant: str, key_hash: str) -> str:
    """The first answer to a request with this `Idempotency-Key` (JSON, kept 24 h)."""
    return f"{PREFIX}:idem:{tenant}:{key_hash}"


def batch(batch_id: str) -> str:
    """A batch record: tenant, job ids, creation time (JSON)."""
    return f"{PREFIX}:batch:{batch_id}"


def tenant_jobs(tenant: str) -> str:
    """A tenant's jobs, newest last (sorted set, score = creation time, unix seconds)."""
    return f"{PREFIX}:tenant:{tenant}:jobs"


def followers(job_id: str) -> str:
    """Jobs of the same batch that take this job's result (identical requests), a set."""
    return f"{PREFIX}:job:{job_id}:followers"


def result_cache(tenant: str, fingerprint: str) -> str:
    """A tenant's cached result (images JSON) for one request fingerprint."""
    return f"{PREFIX}:cache:{tenant}:{fingerprint}"


#: Pub/sub channel of canceled job ids; agents stop the attempt that runs one.
CANCELS = f"{PREFIX}:cancels"
#: Lanes a slot serves, highest first.
LANES = ("high", "normal", "low")


def chat(chat_id: str) -> str:
    """A chat session: tenant, provider, the slot worker that holds its conversation, turns
    (JSON; expires `Settings.chat_idle_s` after its last message, when the agent closes its tab).
    """
    return f"{PREFIX}:chat:{chat_id}"


#: The audit log: a stream of JSON entries, trimmed by age (see controller/audit.py).
AUDIT = f"{PREFIX}:audit"


# --- Tenants and API keys (see semantest/tenants.py and semantest/api_keys.py) ---


def tenant(name: str) -> str:
    """A tenant's record: plan, webhook secret and default URL (JSON)."""
    return f"{PREFIX}:tenant:{name}"


def api_key(digest: str) -> str:
    """An API key's record by the sha256 of the key (hash: prefix, tenant, scopes, createdAt,
    revoked); the key itself is never stored."""
    return f"{PREFIX}:apikey:{digest}"


def api_key_prefix(prefix: str) -> str:
    """The sha256 of the key with this visible prefix (string): prefixes are unique."""
    return f"{PREFIX}:apikey-prefix:{prefix}"


#: Every API key's prefix, scored by creation time (sorted set): what the admin list reads.
API_KEYS = f"{PREFIX}:apikeys"


def rate_bucket(bucket: str, subject: str) -> str:
    """One rate-limit bucket (GCRA): its theoretical arrival time, unix microseconds, expiring
    when the bucket is full again. `bucket` is an endpoint (`images.generate`) or `all` (the
    plan's overall limit); `subject` is `t:<tenant>`, or `ip:<address>` for anonymous addon GETs.
    """
    return f"{PREFIX}:rl:{bucket}:{subject}"


# --- Webhooks (see semantest/webhooks.py, semantest/webhook_events.py, webhook_worker.py) ---

#: The RQ queue webhook deliveries wait on; its own worker (`python -m semantest.webhook_worker`)
#: serves it, never an agent.
WEBHOOK_QUEUE = "webhooks"
#: Dotted path of the delivery function RQ runs (kept out of the agents' and controller's code).
WEBHOOK_DELIVER_FUNC = "semantest.webhook_worker.deliver"
#: Attempts kept per tenant in its deliveries log (newest first).
WEBHOOK_DELIVERIES_MAXLEN = 1000


def webhook_event(event_id: str) -> str:
    """One webhook event (JSON: type, tenant, target, data), written once with SET NX: the key
    existing is what makes a second final write of the same job emit nothing."""
    return f"{PREFIX}:webhook:event:{event_id}"


def webhook_deliveries(tenant: str) -> str:
    """A tenant's delivery attempts, newest first (list of JSON, capped)."""
    return f"{PREFIX}:webhook:deliveries:{tenant}"


def webhook_batch_ended(batch_id: str) -> str:
    """Jobs of a batch that have ended (set): when it holds them all, `batch.completed`."""
    return f"{PREFIX}:webhook:batch-ended:{batch_id}"


#: Scrape targets of the processes that serve their own `/metrics` (agents, pool, webhook
#: workers): a hash of `<role>/<instance>` → JSON {target, role, instance, seen}.
METRICS_TARGETS = f"{PREFIX}:metrics:targets"


def job_trace(job_id: str) -> str:
    """A job's trace context (W3C `traceparent`), written at submit only while tracing is on."""
    return f"{PREFIX}:job:{job_id}:trace"


def provider_health(provider: str) -> str:
    """Hash: a provider's health as its canaries found it (`status` ok|degraded, `since`,
    `failures` in a row, `reason`, `canaryJob`, `canaryAt`); see `semantest/canaries.py`."""
    return f"{PREFIX}:provider:{provider}:health"


#: Lock one controller holds while it runs the canaries (SET NX PX).
CANARY_LOCK = f"{PREFIX}:canaries:lock"
