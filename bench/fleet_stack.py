"""bench/fleet.py's side of the stack: one agent with K slots, submitting jobs, waiting for them."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import httpx
import redis

from sandbox.render import render_png
from semantest import keys
from semantest.stack import Child, Stack

AGENT_ID = "agent-1"


@dataclass
class Agent:
    """One agent process started by the bench."""

    child: Child
    pid: int
    ready_after_s: float
    slots: int


def start_agent(stack: Stack, r: redis.Redis, slots: int, label: str) -> Agent:
    """Start `python -m agents --name agent-1 --slots K` and wait for its first heartbeat."""
    argv = [sys.executable, "-m", "agents", "--name", AGENT_ID, "--slots", str(slots)]
    child = stack.spawn(f"agent-{label}", argv)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise SystemExit(f"agent exited ({child.proc.returncode}):\n{child.tail()}")
        raw = r.get(keys.agent(AGENT_ID))
        beat = json.loads(raw) if raw else {}
        if beat.get("pid") == child.proc.pid and beat.get("state") == "ready":
            return Agent(child, child.proc.pid, float(beat["readyAfterS"]), slots)
        time.sleep(0.05)
    child.proc.kill()
    raise SystemExit(f"agent ({slots} slots) not ready after 120 s:\n{child.tail()}")


def stop_agent(stack: Stack, r: redis.Redis, agent: Agent) -> None:
    """SIGTERM (the agent drains, closes its browser and releases its profile), wait for exit."""
    proc = agent.child.proc
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(40)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    stack.children.remove(agent.child)
    r.delete(keys.agent(AGENT_ID))


@dataclass
class Submitted:
    prompt: str
    job_id: str
    submitted: float
    record: dict[str, object] = field(default_factory=dict)

    @property
    def finished(self) -> float:
        return float(self.record["finishedAt"])  # type: ignore[arg-type]


def submit(client: httpx.Client, prompt: str) -> Submitted:
    submitted = time.time()
    reply = client.post("/api/v1/images/generate", json={"prompt": prompt})
    reply.raise_for_status()
    return Submitted(prompt, reply.json()["jobId"], submitted)


def wait_all(
    r: redis.Redis,
    jobs: list[Submitted],
    agent: Agent,
    timeout: float = 600,
    poll: float = 0.05,
) -> None:
    """Fill each job's record once it succeeded; exit on a failed job or a dead agent."""
    pending = {j.job_id: j for j in jobs}
    deadline = time.monotonic() + timeout
    while pending:
        if time.monotonic() > deadline:
            raise SystemExit(f"{len(pending)} job(s) not done after {timeout:.0f} s")
        if agent.child.proc.poll() is not None:
            raise SystemExit(
                f"the agent exited ({agent.child.proc.returncode}) with {len(pending)} job(s) "
                f"left; its log ends with:\n{agent.child.tail()}"
            )
        ids = list(pending)
        for job_id, raw in zip(ids, r.mget([keys.job(i) for i in ids]), strict=True):
            record = json.loads(raw) if raw else {}
            status = record.get("status")
            if status == "succeeded":
                pending.pop(job_id).record = record
            elif status in ("failed", "canceled"):
                raise SystemExit(f"job {job_id} {status}: {record.get('error')}")
        if pending:
            time.sleep(poll)


def check_bytes(jobs: list[Submitted]) -> None:
    for job in jobs:
        images = job.record["images"]
        assert isinstance(images, list)
        if images[0]["sha256"] != hashlib.sha256(render_png(job.prompt)).hexdigest():
            raise SystemExit(f"job {job.job_id}: stored bytes differ from the sandbox's PNG")


def throughput(
    client: httpx.Client, r: redis.Redis, prompts: list[str], agent: Agent
) -> tuple[float, float]:
    """(jobs/s, seconds) for a batch submitted at once, after one warm-up job per slot."""
    warm = [submit(client, p) for p in prompts[: agent.slots]]
    wait_all(r, warm, agent)
    batch = [submit(client, p) for p in prompts[agent.slots :]]
    wait_all(r, batch, agent)
    took = max(j.finished for j in batch) - batch[0].submitted
    check_bytes(warm + batch)
    return len(batch) / took, took


def closed_loop(
    stack: Stack,
    r: redis.Redis,
    agent: Agent,
    prompts_per_client: list[list[str]],
    latency_s: float,
) -> list[float]:
    """Each client submits a job and waits for it, then the next: per-job overhead (ms)."""
    results: list[list[Submitted]] = [[] for _ in prompts_per_client]
    errors: list[BaseException] = []

    def loop(n: int) -> None:
        headers = {"Authorization": f"Bearer {stack.admin_key}"}
        try:
            with httpx.Client(base_url=stack.url, headers=headers, timeout=30) as client:
                for prompt in prompts_per_client[n]:
                    job = submit(client, prompt)
                    wait_all(r, [job], agent, poll=0.02)
                    results[n].append(job)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(n,)) for n in range(len(prompts_per_client))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    jobs = [j for per_client in results for j in per_client[1:]]  # first one each: warm-up
    check_bytes([j for per_client in results for j in per_client])
    return [(j.finished - j.submitted - latency_s) * 1000 for j in jobs]
