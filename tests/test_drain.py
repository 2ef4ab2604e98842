"""jobs.recommend.caught_up: when a bounded run restored from a checkpoint (drain mode) has read everything."""

from __future__ import annotations

from jobs.recommend import caught_up


def test_every_partition_committed_to_its_end() -> None:
    assert caught_up({0: 10, 1: 7}, {0: 10, 1: 7}, settled=False)
    assert caught_up({0: 12, 1: 7}, {0: 10, 1: 7}, settled=True)


def test_a_partition_behind_its_end_is_waited_for() -> None:
    assert not caught_up({0: 9, 1: 7}, {0: 10, 1: 7}, settled=True)
    assert not caught_up({0: 9}, {0: 10, 1: 7}, settled=True)


def test_a_partition_never_committed_counts_only_once_the_job_has_settled() -> None:
    """A partition read to its end before the restored checkpoint has no split in the job, so no commit ever comes;
    before two checkpoints of the new job it may just not have committed yet."""
    assert not caught_up({0: 10}, {0: 10, 1: 7}, settled=False)
    assert caught_up({0: 10}, {0: 10, 1: 7}, settled=True)
