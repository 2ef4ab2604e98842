"""Ids in URL paths: each id is one percent-encoded path segment, whatever characters it holds.

The rule for clients: put the id's UTF-8 bytes in the path percent-encoded, at least ``%`` as ``%25``,
``/`` as ``%2F``, ``?`` as ``%3F`` and ``#`` as ``%23`` (``encodeURIComponent`` in JavaScript,
``urllib.parse.quote(id, safe="")`` in Python do this), e.g. item ``a/b c`` is ``/items/a%2Fb%20c``.
The ids ``.`` and ``..`` cannot be sent this way (clients drop such segments, browsers even when written
``%2E``), so :mod:`udfs.events` does not accept them.

Why the server needs help: ASGI servers decode the escapes of ``scope["path"]``, so ``%2F`` arrives as a
``/`` and an id holding ``/`` would spill over into the next segments (``GET /items/a%2Fsimilar`` would
look like the neighbours of ``a``). :class:`IdPathMiddleware` rebuilds the path from ``scope["raw_path"]``
(the bytes as received) with every segment decoded except ``%`` and ``/``, which stay ``%25`` and
``%2F``; a route parameter ``{name:id}`` (:class:`IdConvertor`, one segment) turns those two back. So
the segments the router sees are the client's segments: a ``..`` or ``%2F`` inside an id never reaches
another route, and ``/items/{item_id:id}`` and ``/items/{item_id:id}/similar`` cannot be confused.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.convertors import Convertor, register_url_convertor

_ESCAPED = re.compile("%25|%2F")
_UNESCAPED = {"%25": "%", "%2F": "/"}


def escape_segment(value: str) -> str:
    """A decoded path segment with ``%`` and ``/`` escaped, the form the router matches on."""
    return value.replace("%", "%25").replace("/", "%2F")


class IdConvertor(Convertor[str]):
    """``{name:id}``: one path segment (no ``/``), its ``%25`` and ``%2F`` turned back into ``%`` and ``/``."""

    regex = "[^/]+"

    def convert(self, value: str) -> str:
        return _ESCAPED.sub(lambda m: _UNESCAPED[m.group()], value)

    def to_string(self, value: str) -> str:
        return escape_segment(value)


register_url_convertor("id", IdConvertor())


def _decode(raw: bytes) -> str:
    """Percent-decoded UTF-8 with invalid bytes as U+FFFD: how ASGI servers decode ``scope["path"]``."""
    return unquote_to_bytes(raw).decode("utf-8", "replace")


def route_path(raw_path: bytes) -> str:
    """The path the router matches on: each segment of ``raw_path`` decoded, with ``%`` and ``/`` inside a
    segment left escaped."""
    return "/".join(escape_segment(_decode(seg)) for seg in raw_path.split(b"/"))


class IdPathMiddleware:
    """Pure ASGI middleware: ``scope["path"]`` rebuilt from ``scope["raw_path"]`` by :func:`route_path`.

    ASGI servers give in ``raw_path`` the path bytes as received, of which ``path`` is the decoding. Left as
    it is when the path has no percent-escapes (the decoded path is then the raw one) or the server gives
    no ``raw_path``. (Starlette's ``TestClient`` decodes ``path`` twice, ``%252F`` to ``/``; its
    ``raw_path`` is right.)
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        raw = scope.get("raw_path") if scope["type"] in ("http", "websocket") else None
        if raw and b"%" in raw:
            scope = {**scope, "path": route_path(raw)}
        await self.app(scope, receive, send)
