"""A fake Telegram Bot API server on loopback (aiohttp), for the bot's tests.

It answers the methods kopir's bot calls the way the real Bot API does (``{"ok": true,
"result": ...}``), records every request (method, form fields, uploaded files), and hands the
updates a test feeds it to ``getUpdates`` (long polling, honouring ``offset``). Nothing here
ever reaches Telegram: PTB's ``base_url`` points at ``http://127.0.0.1:<port>/bot``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

BOT_USER = {"id": 4242, "is_bot": True, "first_name": "kopir", "username": "kopir_test_bot"}
MAX_WAIT = 30.0
"""The longest any helper waits for the bot, in seconds (loops stay bounded)."""


@dataclass(frozen=True)
class Call:
    method: str
    params: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def chat(self) -> int:
        return int(self.params.get("chat_id", 0))

    @property
    def text(self) -> str:
        return str(self.params.get("text") or self.params.get("caption") or "")


def _field(value: str) -> Any:
    """PTB sends objects JSON-encoded inside form fields; plain strings as they are."""
    if value[:1] in "[{":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class FakeBotApi:
    def __init__(self, token: str = "123456:TEST-TOKEN") -> None:
        self.token = token
        self.calls: list[Call] = []
        self.updates: list[dict[str, Any]] = []
        self._news = asyncio.Condition()
        self._ids = itertools.count(1)
        self._messages = itertools.count(1000)
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    async def __aenter__(self) -> FakeBotApi:
        app = web.Application(client_max_size=16 << 20)
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    # -- what a test does -----------------------------------------------------------------------

    async def feed(self, update: dict[str, Any]) -> int:
        update_id = next(self._ids)
        async with self._news:
            self.updates.append({"update_id": update_id, **update})
            self._news.notify_all()
        return update_id

    async def say(self, user: int, text: str, language: str = "en", **extra: Any) -> int:
        """A private message from ``user``."""
        message = {
            "message_id": next(self._messages),
            "date": int(time.time()),
            "chat": {"id": user, "type": "private", "first_name": "U"},
            "from": {"id": user, "is_bot": False, "first_name": "U", "language_code": language},
            "text": text,
            **extra,
        }
        return await self.feed({"message": message})

    async def press(self, user: int, data: str, message_id: int = 1) -> int:
        """``user`` presses an inline button carrying ``data``."""
        query = {
            "id": str(next(self._ids)),
            "from": {"id": user, "is_bot": False, "first_name": "U"},
            "chat_instance": "1",
            "data": data,
            "message": {
                "message_id": message_id,
                "date": int(time.time()),
                "chat": {"id": user, "type": "private"},
                "text": "…",
            },
        }
        return await self.feed({"callback_query": query})

    def sent(self, chat: int | None = None) -> list[Call]:
        """Messages and photos the bot sent (to ``chat``), in order."""
        return [
            c
            for c in self.calls
            if c.method in ("sendMessage", "sendPhoto") and (chat is None or c.chat == chat)
        ]

    async def wait_sent(self, chat: int, count: int) -> list[Call]:
        """Wait until the bot sent ``count`` messages to ``chat`` in all; return them all."""
        deadline = time.monotonic() + MAX_WAIT
        while len(self.sent(chat)) < count:
            assert time.monotonic() < deadline, f"the bot sent {self.sent(chat)}"
            await asyncio.sleep(0.02)
        return self.sent(chat)

    async def wait_call(self, method: str) -> Call:
        deadline = time.monotonic() + MAX_WAIT
        while True:
            found = [c for c in self.calls if c.method == method]
            if found:
                return found[-1]
            assert time.monotonic() < deadline, f"no {method} in {[c.method for c in self.calls]}"
            await asyncio.sleep(0.02)

    # -- the Bot API ------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return _answer({"ok": False, "error_code": 401, "description": "Unauthorized"}, 401)
        method = request.match_info["method"]
        params, files = await _read(request)
        self.calls.append(Call(method, params, files))
        if method == "getUpdates":
            return _answer({"ok": True, "result": await self._updates(params)})
        return _answer({"ok": True, "result": self._result(method, params)})

    async def _updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = int(params.get("offset") or 0)
        timeout = min(float(params.get("timeout") or 0), 2.0)

        def ready() -> list[dict[str, Any]]:
            return [u for u in self.updates if u["update_id"] >= offset]

        async with self._news:
            if not ready() and timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._news.wait_for(lambda: bool(ready())), timeout)
            return ready()

    def _result(self, method: str, params: dict[str, Any]) -> Any:
        if method == "getMe":
            return {**BOT_USER, "can_join_groups": False, "supports_inline_queries": False}
        if method in ("sendMessage", "sendPhoto"):
            message = {
                "message_id": next(self._messages),
                "date": int(time.time()),
                "chat": {"id": int(params["chat_id"]), "type": "private"},
                "from": {k: v for k, v in BOT_USER.items()},
            }
            if method == "sendMessage":
                message["text"] = params.get("text", "")
            else:
                message["photo"] = [
                    {"file_id": "p", "file_unique_id": "p", "width": 100, "height": 100}
                ]
            return message
        return True


async def _read(request: web.Request) -> tuple[dict[str, Any], dict[str, bytes]]:
    params: dict[str, Any] = dict(request.query)
    files: dict[str, bytes] = {}
    if request.content_type == "application/json":
        params.update(await request.json())
        return params, files
    if request.can_read_body:
        form = await request.post()
        for key, value in form.items():
            if isinstance(value, web.FileField):
                files[key] = value.file.read()
            else:
                params[key] = _field(str(value))
    return params, files


def _answer(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(body, status=status)
