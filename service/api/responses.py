"""Response classes: JSON through orjson (numpy arrays included), without a second validation pass."""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from service.jsonio import dumps


class JSONBody(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)


def error_body(message: str, status: int, headers: dict[str, str] | None = None) -> JSONBody:
    return JSONBody({"error": message}, status_code=status, headers=headers)
