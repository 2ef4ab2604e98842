"""udfs.catalog: catalog records follow the id rules of udfs.events for their item_id."""

from __future__ import annotations

import json
import re

import pytest

from udfs.catalog import parse_catalog, validate_record

TOY = {"item_id": "1", "title": "Toy Story", "year": 1995, "genres": ["Animation", "Children's", "Comedy"]}
FORBIDDEN = [chr(c) for c in (*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029, 0xD800, 0xDFFF)]


def test_a_valid_record_is_normalised() -> None:
    assert validate_record({**TOY, "genres": ("Comedy",)}) == {**TOY, "genres": ["Comedy"]}
    assert parse_catalog(json.dumps({**TOY, "item_id": 1})) == TOY  # an integer id is its decimal string


@pytest.mark.parametrize("char", FORBIDDEN, ids=lambda c: f"U+{ord(c):04X}")
def test_item_ids_with_control_characters_are_refused(char: str) -> None:
    value = f"1{char}2"
    with pytest.raises(ValueError) as info:
        parse_catalog(json.dumps({**TOY, "item_id": value}))
    message = str(info.value)
    assert message.startswith(f"catalog record has a bad item_id {value!r}: it has ")
    assert f"U+{ord(char):04X} at index 1" in message and char not in message


@pytest.mark.parametrize(("value", "words"), [
    ("", "must be a non-empty string"),
    (None, "must be a non-empty string"),
    (1.5, "must be a non-empty string"),
    (" 1", "has surrounding white space"),
    ("1\u2003", "has surrounding white space"),
    (".", "is a URL dot segment"),
    ("..", "is a URL dot segment"),
])
def test_other_bad_item_ids_name_the_field_and_value(value: object, words: str) -> None:
    with pytest.raises(ValueError) as info:
        validate_record({**TOY, "item_id": value})
    assert f"bad item_id {value!r}" in str(info.value) and words in str(info.value)


@pytest.mark.parametrize("value", ["a/b", "../../etc/passwd", "?#%", "two words", "\u00e9t\u00e9", "zero\u200bwidth",
                                   "..."])
def test_reserved_characters_are_kept(value: str) -> None:
    assert parse_catalog(json.dumps({**TOY, "item_id": value}))["item_id"] == value


def test_a_long_bad_id_is_shown_truncated() -> None:
    with pytest.raises(ValueError) as info:
        validate_record({**TOY, "item_id": "x" * 500 + "\x00"})
    assert "U+0000 at index 500" in str(info.value) and len(str(info.value)) < 400


@pytest.mark.parametrize(("record", "words"), [
    ({"item_id": "1", "title": "T" * 501}, "title 'TTTT"),
    ({"item_id": "1", "title": "a\ud800b"}, "contains a lone surrogate"),
    ({"item_id": "1", "title": "t", "genres": ["g" * 65]}, "has 65 characters, more than 64"),
    ({"item_id": "1", "title": "t", "genres": ["x\udfff"]}, "contains a lone surrogate"),
    ({"item_id": "1", "title": "t", "genres": [f"g{k}" for k in range(31)]}, "31 genres, more than 30"),
])
def test_titles_and_genres_are_bounded_text(record: dict[str, object], words: str) -> None:
    with pytest.raises(ValueError, match=re.escape(words)):
        validate_record(record)
    assert validate_record({"item_id": "1", "title": "T" * 500, "genres": ["g" * 64] * 30})["title"] == "T" * 500
