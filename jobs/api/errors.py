"""`ApiError`: every refusal of the job API, answered as JSON with its status code."""

from __future__ import annotations

from django.http import JsonResponse


class ApiError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field

    def within(self, where: str) -> ApiError:
        """This refusal of a part of the request (`jobs[3]`, `on_success`), its field named
        from the body's top: `kwargs.n` becomes `jobs[3].kwargs.n`."""
        field = where if self.field is None else f"{where}.{self.field}"
        return ApiError(self.status, self.message, field)

    def response(self) -> JsonResponse:
        body: dict[str, str] = {"error": self.message}
        if self.field:
            body["field"] = self.field
        response = JsonResponse(body, status=self.status)
        if self.status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="jobs"'
        return response
