"""MovieLens-100K from the recbole wheel: counts, ordering, catalog parsing, error messages."""

from __future__ import annotations

import importlib.util
import itertools
from collections import Counter
from pathlib import Path

import pytest

from config import load_config
from ingest import movielens
from ingest.movielens import DatasetFormatError, DatasetNotFound, find_dataset_dir, load_catalog, load_events
from udfs.events import Event, event_to_json, parse_event


@pytest.fixture(scope="module")
def events() -> list[Event]:
    return load_events()


@pytest.fixture(scope="module")
def catalog() -> list[dict]:
    return load_catalog()


def _write(dirpath: Path, inter: str, item: str = "item_id:token\tmovie_title:token_seq\trelease_year:token\t"
           "class:token_seq\n1\tToy Story\t1995\tAnimation Children's Comedy\n") -> Path:
    dirpath.mkdir(parents=True, exist_ok=True)
    (dirpath / "ml-100k.inter").write_text(inter, encoding="utf-8")
    (dirpath / "ml-100k.item").write_text(item, encoding="utf-8")
    return dirpath


INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"


def test_dataset_comes_from_the_recbole_wheel_without_importing_it() -> None:
    import sys

    d = find_dataset_dir()
    assert d.parts[-3:] == ("recbole", "dataset_example", "ml-100k")
    assert "recbole" not in sys.modules


def test_counts(events: list[Event]) -> None:
    assert len(events) == 100_000
    assert len({e.user_id for e in events}) == 943
    assert len({e.item_id for e in events}) == 1682
    assert {e.type for e in events} == {"rate"}
    assert Counter(e.weight for e in events) == {1.0: 6110, 2.0: 11370, 3.0: 27145, 4.0: 34174, 5.0: 21201}


def test_event_ids_are_file_rows(events: list[Event]) -> None:
    ids = [e.event_id for e in events]
    assert len(set(ids)) == len(ids)
    assert {int(i.removeprefix("ml-")) for i in ids} == set(range(1, 100_001))
    first_row = next(e for e in events if e.event_id == "ml-1")
    assert first_row == Event("ml-1", "196", "242", "rate", 3.0, 881250949000)


def test_timestamp_order_is_stable(events: list[Event]) -> None:
    keys = [(e.ts, int(e.event_id.removeprefix("ml-"))) for e in events]
    assert keys == sorted(keys)  # by time, ties by file row
    assert any(a.ts == b.ts for a, b in itertools.pairwise(events))  # ties do exist in ML-100K
    assert events[0].ts == 874724710000
    assert events[-1].ts == 893286638000


def test_limit(events: list[Event]) -> None:
    assert load_events(limit=500) == events[:500]
    assert load_events(limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        load_events(limit=-1)


def test_every_event_is_valid_on_the_wire(events: list[Event]) -> None:
    for e in events[::97]:
        assert parse_event(event_to_json(e)) == e


def test_catalog(catalog: list[dict]) -> None:
    assert len(catalog) == 1682
    assert [c["item_id"] for c in catalog] == [str(i) for i in range(1, 1683)]
    by_id = {c["item_id"]: c for c in catalog}
    assert by_id["1"] == {"item_id": "1", "title": "Toy Story", "year": 1995,
                          "genres": ["Animation", "Children's", "Comedy"]}
    assert by_id["2"]["genres"] == ["Action", "Adventure", "Thriller"]
    assert by_id["543"]["title"] == "Misérables, Les"
    assert by_id["267"]["year"] is None and by_id["267"]["genres"] == []  # the "unkonwn" row
    assert by_id["1412"]["title"] == "Land Before Time III: The Time of the Great Giving"  # "(1995)" + year "V"
    assert by_id["1412"]["year"] == 1995
    assert by_id["1373"]["genres"] == []  # only the placeholder genre "unknown"
    genres = Counter(g for c in catalog for g in c["genres"])
    assert set(genres) == set(movielens.GENRES)
    assert genres["Children's"] == 122 and genres["Film-Noir"] == 24 and genres["Sci-Fi"] == 101
    assert all(isinstance(c["year"], int) for c in catalog if c["item_id"] != "267")


def test_events_and_catalog_agree(events: list[Event], catalog: list[dict]) -> None:
    assert {e.item_id for e in events} == {c["item_id"] for c in catalog}


def test_explicit_path_and_stable_ties(tmp_path: Path) -> None:
    d = _write(tmp_path / "ml", INTER_HEADER + "1\t10\t4\t200\n2\t11\t5\t100\n3\t12\t1\t200\n4\t13\t2.5\t100\n")
    got = load_events(d)
    assert [e.event_id for e in got] == ["ml-2", "ml-4", "ml-1", "ml-3"]
    assert got[1] == Event("ml-4", "4", "13", "rate", 2.5, 100_000)
    assert load_events(d / "ml-100k.inter") == got  # a file inside the directory works too
    assert load_catalog(d)[0]["title"] == "Toy Story"


def test_config_directory(tmp_path: Path) -> None:
    d = _write(tmp_path / "ml", INTER_HEADER + "7\t8\t3\t1\n")
    cfg = load_config(overrides=[f"data.movielens_dir={d}"], env={})
    assert load_events(cfg=cfg) == [Event("ml-1", "7", "8", "rate", 3.0, 1000)]


def test_missing_files_name_the_path_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFound) as info:
        load_events(tmp_path / "nowhere")
    msg = str(info.value)
    assert str(tmp_path / "nowhere") in msg and "ml-100k.inter" in msg
    assert "pip install --no-deps recbole==1.2.1" in msg and "make venv" in msg


def test_recbole_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(DatasetNotFound, match=r"recbole package is not installed.*pip install --no-deps recbole"):
        find_dataset_dir()


def test_format_errors_name_line_and_field(tmp_path: Path) -> None:
    d = _write(tmp_path / "a", "user_id:token\titem_id:token\tstars:float\ttimestamp:float\n1\t2\t3\t4\n")
    with pytest.raises(DatasetFormatError, match=r"missing column.*rating"):
        load_events(d)
    d = _write(tmp_path / "b", INTER_HEADER + "1\t2\t3\t4\n1\t2\tNaN\t4\n")
    with pytest.raises(DatasetFormatError, match=r"ml-100k.inter:3: rating 'NaN'"):
        load_events(d)
    d = _write(tmp_path / "c", INTER_HEADER + "1\t2\t3\n")
    with pytest.raises(DatasetFormatError, match=r":2: expected 4 tab-separated fields, got 3"):
        load_events(d)
