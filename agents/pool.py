"""The pool supervisor: `python -m agents.pool --count N [--slots K]` (`semantest agents`).

It keeps N agent processes (`python -m agents --name <prefix>-<i>`) running:

- launches are staggered (`--stagger`, default 0.5 s) so N browsers do not start at once;
- an agent that exits on its own is restarted: at once when it asked to be recycled (exit 75:
  M jobs done, over its memory ceiling), after a back-off (1 s, 2 s, 4 s … 10 s) when it
  crashed or its browser died; the back-off resets once an agent has run 30 s;
- SIGTERM/SIGINT drains: every agent gets SIGTERM (it stops taking jobs, finishes running ones
  within `SEMANTEST_DRAIN_GRACE_S`, and gives the rest back to the queue), the pool waits for
  them, and an agent still alive after the grace + 15 s is killed (its jobs are then
  re-queued by the lease reaper). A second signal forwards SIGTERM again, which makes agents
  stop their attempts at once.

An agent keeps its name across restarts, so it keeps its browser profile (and login).
Children die with the pool (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from agents.worker import EXIT_RECYCLE
from semantest import metrics
from semantest.config import Settings, get_settings
from semantest.logs import configure_logging
from semantest.stack import die_with_parent

log = logging.getLogger(__name__)

BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 10.0
#: An agent that ran this long before exiting starts its next back-off from the minimum.
HEALTHY_AFTER_S = 30.0
KILL_MARGIN_S = 15.0


@dataclass
class Member:
    """One agent slot of the pool and the process that fills it now."""

    name: str
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    next_start: float = 0.0
    backoff_s: float = BACKOFF_MIN_S
    restarts: int = 0


class Pool:
    """Start, watch, restart and drain N agents."""

    def __init__(
        self,
        settings: Settings,
        count: int,
        slots: int | None = None,
        prefix: str = "agent",
        stagger_s: float = 0.5,
    ) -> None:
        self.settings = settings
        self.slots = slots
        self.stagger_s = stagger_s
        self.members = [Member(f"{prefix}-{i + 1}") for i in range(count)]
        self.signals: list[int] = []

    def argv(self, member: Member) -> list[str]:
        """The command line of one agent."""
        argv = [sys.executable, "-m", "agents", "--name", member.name]
        if self.slots is not None:
            argv += ["--slots", str(self.slots)]
        return argv

    def start(self, member: Member) -> None:
        """Start (or restart) one member's agent."""
        member.proc = subprocess.Popen(
            self.argv(member), stdin=subprocess.DEVNULL, preexec_fn=die_with_parent
        )
        member.started_at = time.monotonic()
        log.info("started %s (pid %d)", member.name, member.proc.pid)

    def run(self) -> int:
        """Supervise until a signal; returns the exit code."""
        signal.signal(signal.SIGTERM, lambda signum, _f: self.signals.append(signum))
        signal.signal(signal.SIGINT, lambda signum, _f: self.signals.append(signum))
        now = time.monotonic()
        for i, member in enumerate(self.members):
            member.next_start = now + i * self.stagger_s
        while not self.signals:
            self._tick(time.monotonic())
            time.sleep(0.1)
        return self.drain()

    def _tick(self, now: float) -> None:
        for member in self.members:
            if member.proc is None:
                if now >= member.next_start:
                    self.start(member)
                continue
            code = member.proc.poll()
            if code is None:
                continue
            ran = now - member.started_at
            member.proc = None
            member.restarts += 1
            metrics.AGENT_RESTARTS.labels("recycle" if code == EXIT_RECYCLE else "crash").inc()
            if code == EXIT_RECYCLE:
                log.info("%s recycled after %.0f s; starting a fresh one", member.name, ran)
                member.next_start, member.backoff_s = now, BACKOFF_MIN_S
                continue
            if ran >= HEALTHY_AFTER_S:
                member.backoff_s = BACKOFF_MIN_S
            log.warning(
                "%s exited with %s after %.1f s; restarting in %.0f s",
                member.name,
                code,
                ran,
                member.backoff_s,
            )
            member.next_start = now + member.backoff_s
            member.backoff_s = min(member.backoff_s * 2, BACKOFF_MAX_S)

    def drain(self) -> int:
        """SIGTERM every agent, wait for them to give their jobs back, kill the stragglers."""
        running = [m.proc for m in self.members if m.proc is not None and m.proc.poll() is None]
        log.info("draining %d agent(s)", len(running))
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        forwarded = 1
        deadline = time.monotonic() + self.settings.drain_grace_s + KILL_MARGIN_S
        while any(p.poll() is None for p in running) and time.monotonic() < deadline:
            if len(self.signals) > forwarded:  # asked again: agents stop their attempts now
                forwarded = len(self.signals)
                for proc in running:
                    if proc.poll() is None:
                        proc.send_signal(signal.SIGTERM)
            time.sleep(0.1)
        for proc in running:
            if proc.poll() is None:
                log.error("agent pid %d did not stop; killing it", proc.pid)
                proc.kill()
                proc.wait()
        return 0


def main() -> None:
    """Parse arguments and supervise until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m agents.pool", description=__doc__)
    parser.add_argument("--count", type=int, default=1, help="agents to keep running")
    parser.add_argument("--slots", type=int, help="tab slots per agent (default SEMANTEST_SLOTS)")
    parser.add_argument("--prefix", default="agent", help="agent names are <prefix>-<n>")
    parser.add_argument("--stagger", type=float, default=0.5, help="seconds between launches")
    args = parser.parse_args()
    if not 0 <= args.count <= 64:
        parser.error("--count must be between 0 and 64")
    if args.slots is not None and not 1 <= args.slots <= 16:
        parser.error("--slots must be between 1 and 16")
    settings = get_settings()
    configure_logging(settings.log_level, "pool", settings.log_format)
    metrics.serve(settings, "pool", f"{args.prefix}@{socket.gethostname()}")
    pool = Pool(settings, args.count, args.slots, args.prefix, max(0.0, args.stagger))
    sys.exit(pool.run())


if __name__ == "__main__":
    main()
