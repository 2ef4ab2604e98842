"""docs/configuration.md is what ``python -m config.reference`` generates from config/default.yaml now."""

from __future__ import annotations

import pytest
import yaml

from config import DEFAULT_PATH
from config.reference import OUTPUT_PATH, ReferenceError, main, parse, render


def _leaves(node: dict, prefix: str = "") -> set[str]:
    out: set[str] = set()
    for key, value in node.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out |= _leaves(value, f"{path}.")
        else:
            out.add(path)
    return out


def test_checked_in_reference_is_up_to_date() -> None:
    expected = render(DEFAULT_PATH.read_text(encoding="utf-8"))
    current = OUTPUT_PATH.read_text(encoding="utf-8")
    assert current == expected, "docs/configuration.md differs from config/default.yaml: run `make config-docs`"


def test_check_flag_reports_drift(tmp_path, capsys) -> None:
    stale = tmp_path / "configuration.md"
    stale.write_text(OUTPUT_PATH.read_text(encoding="utf-8").replace("`kafka.bootstrap`", "`kafka.brokers`"))
    assert main(["--check", "--output", str(stale)]) == 1
    assert "kafka.brokers" in capsys.readouterr().out
    fresh = tmp_path / "fresh.md"
    assert main(["--output", str(fresh)]) == 0
    assert main(["--check", "--output", str(fresh)]) == 0


def test_every_key_has_a_row_or_an_inline_parent_with_its_default() -> None:
    text = DEFAULT_PATH.read_text(encoding="utf-8")
    doc = render(text)
    for path in _leaves(yaml.safe_load(text)):
        parent = path.rsplit(".", 1)[0]
        assert f"| `{path}` |" in doc or f"| `{parent}` |" in doc, path
    assert "| `job.shards` | `8` | virtual shards" in doc
    assert "| `model.weights` | `{view: 1.0, click: 2.0, cart: 3.0, purchase: 5.0}` |" in doc
    assert "## `model`" in doc and "### `model.hybrid`" in doc


def test_comment_lines_after_a_key_belong_to_it() -> None:
    text = "a:\n  b: 1   # first line\n       # second line\n  c: 'x # y'  # of c\n"
    header, roots = parse(text)
    assert header == []
    (a,) = roots
    assert [(e.path, e.raw, e.comment) for e in a.children] == [
        ("a.b", "1", ["first line", "second line"]), ("a.c", "'x # y'", ["of c"])]
    doc = render(text)
    assert "| `a.b` | `1` | first line second line |" in doc


def test_a_comment_line_not_under_a_key_is_refused() -> None:
    with pytest.raises(ReferenceError, match="line 3"):
        parse("a:\n  b: 1\n  # about c\n  c: 2\n")
