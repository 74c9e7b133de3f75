"""Request body limit as ASGI middleware: a body over `max_bytes` is refused with 413 before any parsing.

It reads the body itself (bounded) and replays it to the app, so an oversized chunked upload is cut off as soon as
it passes the limit, and the 413 carries the same OpenAI-style error body as every other error.
"""

from __future__ import annotations

from imprint.serve.errors import APIError


class BodyLimit:
    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return await self._refuse(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await self._refuse(scope, receive, send)
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the client to disconnect, as the server would

        return await self.app(scope, replay, send)

    async def _refuse(self, scope, receive, send):
        error = APIError(413, f"The request body is larger than this server accepts ({self.max_bytes} bytes).",
                         code="request_too_large")  # fmt: skip
        await error.response()(scope, receive, send)
