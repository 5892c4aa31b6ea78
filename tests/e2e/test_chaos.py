"""Chaos: 300 jobs on 3 agents x 2 slots while agents are SIGKILLed every few seconds and Redis
is restarted once — nothing lost, nothing duplicated, every stored byte right.

One run of the shared driver (`bench/chaos.py`, which also runs standalone at any size)
serves every test of this module; each test checks one promise, so a broken one names itself.
About a minute on 2 cores.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# bench/ scripts import their siblings by name, as `python bench/chaos.py` runs them
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from chaos import ChaosResult, run_chaos

from semantest import keys

pytestmark = pytest.mark.e2e

#: The longest a dead agent's job may wait before its next attempt takes its lease.
RERUN_WITHIN_S = 20


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> ChaosResult:
    result = run_chaos(
        jobs=300,
        agents=3,
        slots=2,
        kill_every=6.0,
        latency_ms=300,
        redis_restart=True,
        timeout_s=150,
        stall_s=30,  # a stranded job (see below) never finishes: do not wait the full 150 s
        data_dir=Path(tmp_path_factory.mktemp("chaos")),
        seed=7,
    )
    print(result.summary())
    return result


def test_every_job_succeeded_once_with_its_own_image(chaos: ChaosResult) -> None:
    assert chaos.duplicated == 0, chaos.summary()
    assert not chaos.timed_out, chaos.summary()
    assert chaos.lost == 0, chaos.summary()
    assert chaos.succeeded == chaos.jobs == 300


def test_every_stored_file_holds_the_sandbox_png(chaos: ChaosResult) -> None:
    assert chaos.bad_bytes == 0, chaos.summary()
    assert chaos.orphan_files == 0, chaos.summary()


def test_the_chaos_happened_while_jobs_ran(chaos: ChaosResult) -> None:
    assert chaos.kills_mid_job >= 2, chaos.summary()
    assert chaos.redis_restarts == 1, chaos.summary()
    assert chaos.max_attempts_seen >= 2, chaos.summary()


def test_the_reaper_notices_dead_agents_within_the_lease(chaos: ChaosResult) -> None:
    """Kill → the record says `AGENT_LOST`: the heartbeat's TTL plus a reaper pass or two."""
    assert chaos.rerun_missing == 0, chaos.summary()
    assert chaos.longest_detection_s <= keys.LEASE_TTL_S + 5, chaos.summary()


def test_dead_agents_jobs_are_rerun_within_20_s(chaos: ChaosResult) -> None:
    """Kill → the job's next attempt takes its lease, with 300 jobs queued at the start."""
    assert chaos.rerun_missing == 0, chaos.summary()
    assert chaos.longest_rerun_wait_s <= RERUN_WITHIN_S, chaos.summary()
