"""operators.front.event_batches (the JVM front): user shard, event time and one batch per shard and window.

Each test runs the front alone in the mini-cluster, with a Python keyed operator that records what it receives:
(the key, the raw records, the watermark recorded at each one's arrival).
"""

from __future__ import annotations

import json
import time
import zlib
from collections import Counter
from typing import Any

import pytest
from pyflink.common import Types
from pyflink.datastream import KeyedProcessFunction

from config import load_config
from jobs.flink_env import make_env
from operators.front import event_batches
from udfs.dlq import payload_bytes
from udfs.events import Limits
from udfs.shard import shard_of

pytestmark = pytest.mark.flink

SHARDS = 4
NO_WATERMARK = -(2**63)
OOO_MS = 1000


def run_front(raws: list[str], parallelism: int, pace_s: float = 0.0) -> list[tuple[int, list[str], list[int]]]:
    # defined here, not at module level: the Python workers cannot import this test module, so these are
    # pickled by value
    class Record(KeyedProcessFunction):
        def process_element(self, value, ctx):  # type: ignore[no-untyped-def]
            yield ctx.get_current_key(), list(value[0]), list(value[1])

    def slow(raw: str) -> str:
        """Paces the input (a collection is read in milliseconds), so periodic watermarks fall between records."""
        time.sleep(pace_s)
        return raw

    env = make_env(load_config(overrides=["job.checkpoint_interval_ms=0"], env={}), kafka=False,
                   parallelism=parallelism)
    source = env.from_collection(raws, type_info=Types.STRING()).set_parallelism(1)
    if pace_s:
        source = source.map(slow, output_type=Types.STRING()).set_parallelism(1)
    batches = event_batches(source, shards=SHARDS, window_ms=200, max_out_of_orderness_ms=OOO_MS, limits=Limits(),
                            parallelism=1)
    out = batches.process(Record(), output_type=Types.PICKLED_BYTE_ARRAY())
    with out.execute_and_collect() as records:
        return [(k, raws_, marks) for k, raws_, marks in records]


def event(i: int, user: Any, ts: Any = None) -> str:
    return json.dumps({"event_id": f"e{i}", "user_id": user, "item_id": f"i{i % 7}", "type": "view",
                       "ts": 1_000_000 + i if ts is None else ts})


def expected_shard(raw: str) -> int:
    """The user's shard as the Python side names users (integer ids as their decimal string), else the record's."""
    try:
        obj = json.loads(raw)
    except ValueError:
        obj = None
    user = obj.get("user_id") if isinstance(obj, dict) else None
    if isinstance(user, bool) or not isinstance(user, (str, int)) or (isinstance(user, int) and user < 0):
        return zlib.crc32(raw.encode()) % SHARDS
    return shard_of(str(user), SHARDS)


RAWS = [event(i, f"u{i % 9}") for i in range(60)] + [
    event(100, 196), event(101, "196"),  # one user, written two ways: one shard
    "not json", "[1, 2]", event(102, True), event(103, -5), event(104, "u1", ts="soon"), "",
]


@pytest.mark.parametrize("parallelism", [1, 2])
def test_every_record_reaches_its_users_shard_once_in_order(parallelism: int) -> None:
    got = run_front(RAWS, parallelism)
    assert Counter(r for _, raws, _ in got for r in raws) == Counter(RAWS)  # nothing lost, nothing twice
    for key, raws, marks in got:
        assert len(raws) == len(marks)
        assert all(expected_shard(r) == key for r in raws), key
    assert expected_shard(event(100, 196)) == expected_shard(event(101, "196"))
    for key in {k for k, _, _ in got}:  # each shard's records in input order (one source subtask)
        seen = [r for k, raws, _ in got if k == key for r in raws]
        assert seen == [r for r in RAWS if expected_shard(r) == key]


def test_watermarks_come_from_valid_timestamps_only() -> None:
    """A ts outside limits.min_ts_ms..max_ts_ms (or not a number) must not move the watermark: else every later
    event would look late. The recorded watermarks trail the largest earlier ts by the out-of-orderness bound."""
    far = Limits().max_ts_ms + 1
    raws = [event(0, "u0", ts=far), event(1, "u1", ts="x")] + [event(i, f"u{i % 5}") for i in range(2, 400)]
    got = run_front(raws, 1, pace_s=0.004)  # ~1.6 s of input: several periodic watermarks
    marks = {r: m for _, rs, ms in got for r, m in zip(rs, ms, strict=True)}
    assert set(marks) == set(raws)
    advanced = [m for m in marks.values() if m != NO_WATERMARK]
    assert advanced, "no watermark reached the buffer: the test input is too fast to check anything"
    highest = 1_000_000
    for raw in raws[2:]:
        # Flink's bounded-out-of-orderness watermark: the largest timestamp seen - bound - 1
        assert marks[raw] <= highest - OOO_MS - 1, (raw, marks[raw])
        highest = max(highest, json.loads(raw)["ts"])


def test_texts_that_python_would_not_receive_as_they_are_arrive_as_base64() -> None:
    """Strings starting with U+FEFF or U+FFFE lose (or byte-swap) their first character on the way from the JVM to
    Python; the front's rows carry them (and strings starting with the marker U+0000) as Base64 of their UTF-8."""
    texts = ["\ufeff{}", "\ufffex", "\x00abc", "x\ufeffy", "\U0001f600", "plain"]
    got = {r for _, raws, _ in run_front(texts, 1) for r in raws}
    assert {payload_bytes(r) for r in got} == {t.encode() for t in texts}
    assert {r for r in got if r[:1] != "\x00"} == {"x\ufeffy", "\U0001f600", "plain"}
