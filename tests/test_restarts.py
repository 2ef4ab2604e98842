"""The restart strategy (job.restart_attempts, job.restart_delay_ms): a failure that does not clear ends the job
with its cause after the configured restarts, instead of restarting forever."""

from __future__ import annotations

import uuid

import pytest
from pyflink.common import Types

from config import PROJECT_ROOT, load_config
from jobs.flink_env import make_env, restart_strategy

pytestmark = pytest.mark.flink


def test_the_strategy_follows_the_config() -> None:
    job = load_config(env={})["job"]
    conf = restart_strategy(job)
    assert conf["restart-strategy.type"] == "exponential-delay"
    assert conf["restart-strategy.exponential-delay.attempts-before-reset-backoff"] == str(job["restart_attempts"])
    assert conf["restart-strategy.exponential-delay.initial-backoff"] == f"{job['restart_delay_ms']} ms"
    assert restart_strategy({**job, "restart_attempts": 0}) == {"restart-strategy.type": "none"}


def test_a_failure_that_does_not_clear_ends_the_job_with_its_cause() -> None:
    calls_file = str(PROJECT_ROOT / "var" / "test-artifacts" / f"restarts-{uuid.uuid4().hex[:8]}.count")
    cfg = load_config(overrides=["job.checkpoint_interval_ms=0", "job.restart_attempts=2", "job.restart_delay_ms=50"],
                      env={})
    env = make_env(cfg, kafka=False, parallelism=1)

    def broken(value: int) -> int:
        import os

        os.makedirs(os.path.dirname(calls_file), exist_ok=True)
        with open(calls_file, "a") as f:
            f.write("x")
        raise RuntimeError(f"a sink bug on record {value}")

    env.from_collection([1], type_info=Types.INT()).map(broken, output_type=Types.INT())
    with pytest.raises(Exception) as failure:
        env.execute("restarts")
    text = str(failure.value)
    assert "Recovery is suppressed by ExponentialDelayRestartBackoffTimeStrategy" in text
    assert "attemptsBeforeResetBackoff=2" in text and "a sink bug on record 1" in text
    with open(calls_file) as f:
        assert len(f.read()) == 3  # the first try and two restarts
