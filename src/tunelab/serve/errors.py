"""Errors in OpenAI's shape.

Every failure a client can cause is an `APIError`, rendered by the app as

    HTTP <status>  {"error": {"message": ..., "type": ..., "param": ..., "code": ...}}

with `type` one of invalid_request_error (400, 404, 409, 413, 422), authentication_error (401),
permission_error (403), rate_limit_error (429), server_error (5xx: only a fault of the server).
"""

from __future__ import annotations

TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
         404: "invalid_request_error", 409: "invalid_request_error", 413: "invalid_request_error",
         422: "invalid_request_error", 429: "rate_limit_error"}


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def not_found(kind: str, ident: str, param: str | None = None) -> APIError:
    """The 404 of an unknown id, also what another tenant's id gets (its existence is not disclosed)."""
    return APIError(404, f"No such {kind}: '{ident}'", param=param, code=f"{kind}_not_found")
