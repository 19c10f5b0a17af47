"""JSON answers, encoded by orjson (app.codec) rather than the standard library Starlette uses."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from app import codec


class JsonResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        # What the API answers comes from validated input or stored records, which never hold
        # NaN or infinities (app.codec refuses them on the way in).
        return codec.dumps(content)
