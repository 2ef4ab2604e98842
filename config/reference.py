"""The configuration reference (docs/configuration.md), generated from config/default.yaml.

``python -m config.reference`` writes docs/configuration.md: every key of ``config/default.yaml`` with its default
and its comment, one table per section. ``--check`` writes nothing and exits with status 1 when the file differs
from what the YAML generates now (tests/test_config_reference.py runs the same comparison in CI).

The comments are read from the YAML text: a key's comment is the ``#`` text on its line and on the comment-only
lines right after it. A mapping whose children are plain values without comments of their own (``model.weights``)
is one row with its value written inline; any other mapping is a subsection. A comment line that is not indented
past the key before it is refused (it would read as that key's comment).
"""

from __future__ import annotations

import argparse
import difflib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from config import DEFAULT_PATH, PROJECT_ROOT

OUTPUT_PATH = PROJECT_ROOT / "docs" / "configuration.md"


class ReferenceError(ValueError):
    """A line of the YAML that the reference cannot attribute to a key."""


@dataclass
class Entry:
    """One key of the YAML: its dotted path, the value text as written, its comment and its children."""

    path: str
    raw: str
    comment: list[str] = field(default_factory=list)
    children: list[Entry] = field(default_factory=list)


def _split_comment(text: str) -> tuple[str, str | None]:
    """``value  # comment`` -> (value, comment); a ``#`` inside quotes or glued to a word is part of the value."""
    quote: str | None = None
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1] in " \t"):
            return text[:i].rstrip(), text[i + 1 :].strip()
    return text.rstrip(), None


def parse(text: str) -> tuple[list[str], list[Entry]]:
    """The file's header comment (its lines before the first key) and its keys as a tree, in file order."""
    header: list[str] = []
    roots: list[Entry] = []
    stack: list[tuple[int, Entry]] = []  # (indent, entry) of the open keys
    last: Entry | None = None
    last_indent = 0
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped:
            if last is None and header and header[-1]:
                header.append("")
            continue
        indent = len(line) - len(line.lstrip(" "))
        if stripped.startswith("#"):
            comment = stripped[1:].strip()
            if last is None:
                header.append(stripped[2:] if stripped.startswith("# ") else stripped[1:])
            elif indent > last_indent:
                last.comment.append(comment)
            else:
                raise ReferenceError(f"line {number}: a comment on its own line belongs after its key, indented "
                                     f"past it: {line!r}")
            continue
        body, inline = _split_comment(stripped)
        key, sep, raw = body.partition(":")
        if not sep or not key or key.startswith("-"):
            raise ReferenceError(f"line {number}: expected 'key: value', got {line!r}")
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1] if stack else None
        entry = Entry(path=f"{parent.path}.{key}" if parent else key, raw=raw.strip(),
                      comment=[inline] if inline else [])
        (parent.children if parent else roots).append(entry)
        stack.append((indent, entry))
        last, last_indent = entry, indent
    while header and not header[-1]:
        header.pop()
    return header, roots


def _value(values: dict[str, Any], path: str) -> Any:
    node: Any = values
    for part in path.split("."):
        node = node[part]
    return node


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _default(entry: Entry, values: dict[str, Any]) -> str:
    if entry.children:
        value = _value(values, entry.path)
        text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, allow_unicode=True).strip()
    else:
        text = entry.raw
    return f"`{_cell(text)}`" if text else "(empty)"


def _is_inline(entry: Entry) -> bool:
    return all(not child.children and not child.comment for child in entry.children)


def _comment(entry: Entry) -> str:
    return _cell(" ".join(line for line in entry.comment if line))


def _section(entry: Entry, values: dict[str, Any], level: int, out: list[str]) -> None:
    out += [f"{'#' * level} `{entry.path}`", ""]
    if entry.comment:
        out += [" ".join(entry.comment), ""]
    rows = [child for child in entry.children if not child.children or _is_inline(child)]
    subsections = [child for child in entry.children if child not in rows]
    if rows:
        out += ["| key | default | meaning |", "|---|---|---|"]
        out += [f"| `{row.path}` | {_default(row, values)} | {_comment(row)} |" for row in rows]
        out.append("")
    for child in subsections:
        _section(child, values, level + 1, out)


def render(text: str, source: str = "config/default.yaml") -> str:
    """The Markdown reference of a configuration file's text."""
    values = yaml.safe_load(text)
    header, roots = parse(text)
    out = [
        "# Configuration reference",
        "",
        f"<!-- generated by `python -m config.reference` (make config-docs) from {source}: do not edit -->",
        "",
        f"Every key of [`{source}`](../{source}) with its default and its comment, by section.",
        "",
    ]
    if header:
        out += ["```text", *header, "```", ""]
    for root in roots:
        if not root.children:
            raise ReferenceError(f"top-level key {root.path!r} is not a section")
        _section(root, values, 2, out)
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m config.reference",
        description="Generate docs/configuration.md (every key of config/default.yaml with its default and comment).")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 and print the difference when the file is not up to date")
    parser.add_argument("--output", type=Path, default=OUTPUT_PATH, help=f"where to write (default {OUTPUT_PATH})")
    args = parser.parse_args(argv)
    expected = render(DEFAULT_PATH.read_text(encoding="utf-8"))
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current == expected:
            return 0
        diff = difflib.unified_diff(current.splitlines(keepends=True), expected.splitlines(keepends=True),
                                    str(args.output), "generated")
        sys.stdout.writelines(diff)
        print(f"{args.output} is not up to date: run `make config-docs`", file=sys.stderr)
        return 1
    args.output.write_text(expected, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
