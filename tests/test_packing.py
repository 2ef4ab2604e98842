"""operators.records.pack: the records between the operators travel as bytes with the shard in front."""

from __future__ import annotations

import pytest

from config import MAX_SHARDS, ConfigError, load_config
from operators.records import pack, packed_shard, unpack


@pytest.mark.parametrize("shard", [0, 1, 7, 255, 256, 4097, MAX_SHARDS])
def test_the_shard_is_read_without_unpickling_and_the_record_comes_back(shard: int) -> None:
    record = (shard, {"i1": 2.5}, {"i1": {"i2": -1.0}}, [("i1", "u", 17, True, 1.0, 0.0, 4.0, 1)])
    data = pack(shard, record)
    assert isinstance(data, bytes)
    assert packed_shard(data) == shard
    assert unpack(data) == record
    assert unpack(bytearray(data)) == record


def test_a_shard_count_that_does_not_fit_two_bytes_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"job\.shards must be at most 65535"):
        load_config(overrides=[f"job.shards={MAX_SHARDS + 1}"])
