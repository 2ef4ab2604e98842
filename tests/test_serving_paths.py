"""serving.paths: ids as one percent-encoded path segment (pure: no services)."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from serving.paths import IdConvertor, IdPathMiddleware, route_path


@pytest.mark.parametrize(("raw", "path"), [
    (b"/items/242", "/items/242"),
    (b"/items/a%2Fb/similar", "/items/a%2Fb/similar"),
    (b"/items/a%2fb", "/items/a%2Fb"),
    (b"/items/100%25", "/items/100%25"),
    (b"/items/%25252F", "/items/%25252F"),
    (b"/items/caf%C3%A9%20%3F%23", "/items/caf\u00e9 ?#"),
    (b"/items/caf\xc3\xa9", "/items/caf\u00e9"),  # raw UTF-8, not escaped
    (b"/items/%FF", "/items/\ufffd"),
    (b"/items/..%2F..%2Fetc", "/items/..%2F..%2Fetc"),
    (b"/items/%2E%2E", "/items/.."),
])
def test_route_path_keeps_percent_and_slash_escaped(raw: bytes, path: str) -> None:
    assert route_path(raw) == path


@settings(max_examples=2000, deadline=None)
@given(st.text(st.characters(codec="utf-8"), min_size=1, max_size=40))
def test_any_id_is_one_segment_and_comes_back(value: str) -> None:
    segment = route_path(quote(value, safe="").encode("ascii"))
    assert "/" not in segment
    assert IdConvertor().convert(segment) == value
    assert IdConvertor().to_string(value) == segment


def call(app: Any, raw_path: bytes) -> tuple[int, Any]:
    """One GET through the ASGI interface with exactly this raw path (HTTP clients resolve literal dot
    segments before sending; servers pass them on)."""
    from urllib.parse import unquote_to_bytes

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": unquote_to_bytes(raw_path).decode("utf-8", "replace"), "raw_path": raw_path,
             "query_string": b"", "root_path": "", "headers": [], "server": ("test", 80), "client": ("test", 1)}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], body.decode()


def test_dot_segments_and_escaped_slashes_stay_in_their_route() -> None:
    async def item(request: Request) -> JSONResponse:
        return JSONResponse({"item": request.path_params["item_id"]})

    async def similar(request: Request) -> JSONResponse:
        return JSONResponse({"similar": request.path_params["item_id"]})

    async def users(request: Request) -> JSONResponse:
        return JSONResponse({"users": True})

    app = IdPathMiddleware(Starlette(routes=[Route("/items/{item_id:id}", item),
                                             Route("/items/{item_id:id}/similar", similar),
                                             Route("/users", users)]))
    assert call(app, b"/items/x%2Fsimilar") == (200, '{"item":"x/similar"}')
    assert call(app, b"/items/x/similar") == (200, '{"similar":"x"}')
    assert call(app, b"/items/..%2Fusers") == (200, '{"item":"../users"}')
    assert call(app, b"/items/..") == (200, '{"item":".."}')  # a literal dot segment is not resolved
    assert call(app, b"/items/../users")[0] == 404
    assert call(app, b"/users") == (200, '{"users":true}')
