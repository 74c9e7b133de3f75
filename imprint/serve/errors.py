"""OpenAI-style error bodies for every failure: `{"error": {"message", "type", "param", "code"}}`.

Clients written for OpenAI read these fields (the `openai` package raises `BadRequestError`, `NotFoundError`,
`RateLimitError`... from the status and shows the message). Validation errors become 400 naming the field, as
OpenAI reports them, never FastAPI's default 422; unknown routes and methods get the same body shape; anything
unexpected is a 500 with a generic message and the traceback in the server log.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("imprint.serve")

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}


class APIError(Exception):
    """An error answered with `status` and an OpenAI-style body."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict:
        kind = TYPES.get(self.status, "invalid_request_error" if self.status < 500 else "server_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


TYPE_TAGS = {"str", "int", "float", "bool", "none", "list", "dict"}


def _field(loc: tuple) -> str | None:
    """`messages.0.content` from pydantic's location, without the union-member tags it adds ("list[TextPart]",
    "function-after[...]", model class names)."""
    parts = [
        str(p)
        for p in loc
        if p not in ("body", "query", "path", "header")
        and not (isinstance(p, str) and ("[" in p or "-" in p or p in TYPE_TAGS or p[:1].isupper()))
    ]
    return ".".join(parts) or None


def validation_error(exc: RequestValidationError) -> APIError:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
    if first.get("type") == "json_invalid":
        return APIError(400, "We could not parse the JSON body of your request: it is not valid JSON.")
    param = _field(tuple(first.get("loc", ())))
    if first.get("type") == "missing" and param:
        message = f"Missing required parameter: '{param}'."
    elif first.get("type") == "extra_forbidden" and param:
        message = f"Unrecognized request argument supplied: {param}"
    elif param:
        message = f"Invalid value for '{param}': {first.get('msg', 'invalid')}."
    else:
        message = f"Invalid request body: {first.get('msg', 'invalid')}."
    more = len(errors) - 1
    if more > 0:
        message += f" ({more} more problem{'s' if more > 1 else ''} in this request.)"
    return APIError(400, message, param=param, code="invalid_value" if param else None)


def install(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return validation_error(exc).response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            message = f"Unknown request URL: {request.method} {request.url.path}."
        elif exc.status_code == 405:
            message = f"Method {request.method} is not allowed on {request.url.path}."
        else:
            message = str(exc.detail)
        response = APIError(exc.status_code, message).response()
        response.headers.update(exc.headers or {})  # e.g. `Allow` on a 405
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return APIError(500, "The server had an error while processing your request.").response()
