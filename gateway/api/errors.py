"""Rendering errors as OpenAI-shaped JSON answers, whatever raised them."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.errors import GatewayError, InternalError, InvalidRequest, NotFound

log = logging.getLogger("gateway.api")


def error_response(error: GatewayError) -> JSONResponse:
    return JSONResponse(error.http_body(), error.http_status, headers=error.http_headers())


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GatewayError)
    async def _gateway_error(_: Request, exc: GatewayError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = first.get("msg", "Invalid request.")
        return error_response(
            InvalidRequest(f"{message} ({where})" if where else message, param=where or None)
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error_response(NotFound("Unknown route."))
        error = InvalidRequest(str(exc.detail))
        return JSONResponse(error.http_body(), exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error", exc_info=exc)
        return error_response(InternalError("The gateway had an internal error."))
