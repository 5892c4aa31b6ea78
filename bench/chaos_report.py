"""What bench/chaos.py checks after a run: every job's fate, its bytes, and re-run waits.

`verify()` reads the records, event streams and stored files; `reruns()` pairs each kill with the
jobs it interrupted and the time until each ran again.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from sandbox.render import render_png
from semantest import keys
from semantest.storage import PARTIAL_DIR

FINAL = ("succeeded", "failed", "canceled")


@dataclass
class Kill:
    """One SIGKILL of an agent process."""

    at: float  # time.time() just before the signal (the clock of the events' `at`)
    agent: str
    pid: int
    #: Jobs the fleet showed on the agent's slots at that moment.
    busy_jobs: list[str] = field(default_factory=list)


@dataclass
class ChaosResult:
    """What one chaos run measured; `ok` when nothing was lost, duplicated or wrong."""

    jobs: int
    agents: int
    slots: int
    latency_ms: int
    kills: int
    #: Kills that hit an agent with at least one attempt running (from the job events).
    kills_mid_job: int
    redis_restarts: int
    redis_down_s: float
    startup_s: float
    submit_s: float
    #: Submission start → last job final.
    run_s: float
    wall_s: float
    throughput_per_s: float
    succeeded: int
    lost: int
    #: Lost jobs RQ popped off their queue for an agent that died before registering them as
    #: started: in no queue and no registry, record `queued` with 0 attempts.
    stranded: list[str]
    duplicated: int
    #: Stored files whose bytes differ from the sandbox's PNG (or are missing).
    bad_bytes: int
    #: Files under images/ that no record names.
    orphan_files: int
    max_attempts_seen: int
    #: Jobs that needed more than one attempt.
    retried_jobs: int
    #: Every (kill, job running on the killed agent) pair and how long until its next lease.
    reruns: list[Rerun]
    timed_out: bool
    error_codes: dict[str, int]
    problems: list[str]
    data_dir: str

    @property
    def rerun_waits(self) -> list[float]:
        return sorted(v.wait_s for v in self.reruns if v.wait_s is not None)

    @property
    def rerun_missing(self) -> int:
        """Jobs of a killed agent that were never leased again (should be none)."""
        return sum(v.wait_s is None for v in self.reruns)

    @property
    def longest_rerun_wait_s(self) -> float:
        """The longest time a dead agent's job waited before its re-run (kill → next lease)."""
        return max(self.rerun_waits, default=0.0)

    @property
    def longest_detection_s(self) -> float:
        """The longest time from a kill to the record saying its attempt was lost."""
        return max((v.detected_s for v in self.reruns if v.detected_s is not None), default=0.0)

    @property
    def ok(self) -> bool:
        return (
            not self.timed_out
            and self.lost == 0
            and self.duplicated == 0
            and self.bad_bytes == 0
            and self.rerun_missing == 0
        )

    def summary(self) -> str:
        waits = self.rerun_waits
        p50 = waits[len(waits) // 2] if waits else float("nan")
        lines = [
            f"jobs              {self.jobs} ({self.succeeded} succeeded)",
            f"agents x slots    {self.agents} x {self.slots}, sandbox latency {self.latency_ms} ms",
            f"kills             {self.kills} ({self.kills_mid_job} while the agent ran a job)",
            f"redis restarts    {self.redis_restarts} (down {self.redis_down_s:.1f} s)",
            f"wall time         {self.wall_s:.1f} s (stack start {self.startup_s:.1f} s, "
            f"submit {self.submit_s:.1f} s, submit -> all final {self.run_s:.1f} s)",
            f"throughput        {self.throughput_per_s:.2f} jobs/s",
            f"lost              {self.lost} ({len(self.stranded)} stranded off RQ's queues)",
            f"duplicated        {self.duplicated}",
            f"wrong bytes       {self.bad_bytes} (orphan files {self.orphan_files})",
            f"max attempts seen {self.max_attempts_seen} ({self.retried_jobs} jobs retried)",
            f"longest re-run wait {self.longest_rerun_wait_s:.1f} s "
            f"(p50 {p50:.1f} s over {len(waits)} killed attempts, "
            f"{self.rerun_missing} never re-run; kill -> AGENT_LOST at most "
            f"{self.longest_detection_s:.1f} s, the rest is the wait in the queue)",
            f"attempt errors    {dict(sorted(self.error_codes.items())) or '{}'}",
            f"data dir          {self.data_dir}",
        ]
        if self.timed_out:
            lines.append("GAVE UP waiting before every job was final (timeout or stall)")
        lines += [f"problem: {p}" for p in self.problems[:20]]
        if len(self.problems) > 20:
            lines.append(f"... and {len(self.problems) - 20} more problems")
        lines.append("OK" if self.ok else "FAILED")
        return "\n".join(lines)


def events_of(r: redis.Redis, job_id: str) -> list[dict[str, Any]]:
    return [json.loads(f[b"event"]) for _id, f in r.xrange(keys.job_events(job_id)) if f]


@dataclass
class Rerun:
    """A job whose attempt was running on a killed agent, and what happened next."""

    job_id: str
    agent: str
    kill_at: float
    #: Kill → the next lease of the job (None: never leased again).
    wait_s: float | None
    #: Kill → the record saying the attempt was lost (the reaper's `AGENT_LOST`).
    detected_s: float | None


def reruns(kills: list[Kill], job_events: dict[str, list[dict[str, Any]]]) -> list[Rerun]:
    """For each kill, the jobs whose attempt ran on the killed agent (from the events'
    `detail.agent` and `at`) and how long until their next lease."""
    found: list[Rerun] = []
    for kill in kills:
        for job_id, evs in job_events.items():
            before = [e for e in evs if e["at"] <= kill.at]
            if not before:
                continue
            last = before[-1]
            slot = str(last.get("detail", {}).get("agent") or "")
            if last["status"] not in ("leased", "running") or not slot.startswith(kill.agent + "/"):
                continue
            after = [e for e in evs if e["at"] > kill.at]
            # the attempt may have finished in the instant between reading the clock and the
            # signal: then it was not a victim
            same = [
                e
                for e in after
                if e.get("detail", {}).get("agent") == slot
                and e.get("detail", {}).get("attempt") == last["detail"].get("attempt")
            ]
            if any(e["status"] == "succeeded" for e in same):
                continue
            lease = next((e for e in after if e["status"] == "leased"), None)
            lost = next((e for e in after if e["status"] in ("retrying", "failed", "queued")), None)
            found.append(
                Rerun(
                    job_id,
                    kill.agent,
                    kill.at,
                    None if lease is None else lease["at"] - kill.at,
                    None if lost is None else lost["at"] - kill.at,
                )
            )
    return found


def rq_whereabouts(r: redis.Redis, job_id: str) -> tuple[str | None, list[str]]:
    """Where RQ has a job: its status and every queue list or registry that holds it."""
    raw = r.hget(f"rq:job:{job_id}", "status")
    status = raw.decode() if isinstance(raw, bytes) else raw
    held = []
    for key in r.scan_iter("rq:*semantest.*"):
        name = key.decode()
        kind = r.type(key).decode()
        if kind == "list":
            members = [m.decode() for m in r.lrange(key, 0, -1)]
        elif kind == "zset":  # RQ 2+ registries hold `<job id>:<execution id>`
            members = [m.decode().split(":")[0] for m in r.zrange(key, 0, -1)]
        else:
            continue
        if job_id in members:
            held.append(name)
    return status, held


def verify(
    r: redis.Redis,
    images_dir: Path,
    job_ids: list[str],
    prompts: list[str],
    kills: list[Kill],
) -> dict[str, Any]:
    """Every check made after the run, from Redis and the image files."""
    problems: list[str] = []
    lost = duplicated = bad_bytes = 0
    max_attempts = retried = 0
    errors: Counter[str] = Counter()
    stranded: list[str] = []
    job_events: dict[str, list[dict[str, Any]]] = {}
    named_files: set[Path] = set()
    for job_id, prompt in zip(job_ids, prompts, strict=True):
        raw = r.get(keys.job(job_id))
        evs = events_of(r, job_id)
        job_events[job_id] = evs
        if raw is None:
            lost += 1
            problems.append(f"job {job_id}: no record")
            continue
        record = json.loads(raw)
        max_attempts = max(max_attempts, record["attempts"])
        retried += record["attempts"] > 1
        for e in evs:
            code = e.get("detail", {}).get("error")
            if code and e["status"] in ("retrying", "failed", "queued"):
                errors[code] += 1
        if record["status"] != "succeeded":
            lost += 1
            last = evs[-1] if evs else {}
            rq_status, held = rq_whereabouts(r, job_id)
            if record["status"] == "queued" and rq_status == "queued" and not held:
                # popped off its queue by an agent that died before RQ put it in the
                # started registry: no queue, registry or reaper will ever see it again
                stranded.append(job_id)
            problems.append(
                f"job {job_id}: {record['status']} after {record['attempts']} attempts, "
                f"error {record.get('error')}, last event {last.get('status')} "
                f"{last.get('detail')}; RQ status {rq_status}, held by {held or 'nothing'}"
            )
            continue
        expected = render_png(prompt)
        digest = hashlib.sha256(expected).hexdigest()
        wins = [e for e in evs if e["status"] == "succeeded"]
        images = record["images"]
        if len(wins) != 1 or len(images) != 1 or images[0]["sha256"] != digest:
            duplicated += 1
            problems.append(
                f"job {job_id}: {len(wins)} succeeded events, images "
                f"{[i['sha256'][:12] for i in images]} (expected one {digest[:12]})"
            )
        for image in images:
            path = images_dir / image["key"]
            named_files.add(path.resolve())
            try:
                data = path.read_bytes()
            except OSError as e:
                bad_bytes += 1
                problems.append(f"job {job_id}: stored file {image['key']} unreadable: {e}")
                continue
            if data != expected or hashlib.sha256(data).hexdigest() != image["sha256"]:
                bad_bytes += 1
                problems.append(f"job {job_id}: stored bytes of {image['key']} differ")
    # staged writes of agents killed mid-write are not images (swept at the next agent start)
    stored = {
        p.resolve()
        for p in images_dir.rglob("*")
        if p.is_file() and PARTIAL_DIR not in p.relative_to(images_dir).parts
    }
    orphans = stored - named_files
    victims = reruns(kills, job_events)
    problems += [
        f"job {v.job_id} ran on killed {v.agent} and was never leased again"
        for v in victims
        if v.wait_s is None
    ]
    return {
        "lost": lost,
        "stranded": stranded,
        "duplicated": duplicated,
        "bad_bytes": bad_bytes,
        "orphan_files": len(orphans),
        "max_attempts_seen": max_attempts,
        "retried_jobs": retried,
        "error_codes": dict(errors),
        "reruns": victims,
        "kills_mid_job": len({v.kill_at for v in victims}),
        "problems": problems,
    }
