"""Every error Semantest reports, as one class hierarchy mapped to the API's error envelope.

::

    SemantestError                       (500 INTERNAL_ERROR)
    ├── ValidationError                  422 VALIDATION_ERROR  (details name each field)
    ├── Unauthorized                     401 UNAUTHORIZED
    ├── Forbidden                        403 FORBIDDEN
    │   └── DomainNotAllowed             403 DOMAIN_NOT_ALLOWED
    ├── NotFound                         404 NOT_FOUND
    │   ├── JobNotFound                  404 JOB_NOT_FOUND
    │   ├── AddonNotFound                404 ADDON_NOT_FOUND
    │   └── ImageNotFound                404 IMAGE_NOT_FOUND
    ├── Conflict                         409 CONFLICT
    ├── PayloadTooLarge                  413 PAYLOAD_TOO_LARGE
    ├── RateLimited                      429 RATE_LIMITED      (+ Retry-After)
    ├── Unavailable                      503 UNAVAILABLE       (+ Retry-After)
    └── JobFailure                       a job's own `error` (never an HTTP status)
        ├── GenerationFailed             GENERATION_FAILED, not retryable (refusal, bad output)
        └── RetryableFailure             retryable: provider timeout, agent crash, bridge loss

The controller has one exception handler that turns any `SemantestError` into
`{"error": {"code", "message", "details", "requestId"}}` with `status` and `headers()`.
"""

from __future__ import annotations

from typing import Any, ClassVar


class SemantestError(Exception):
    """Base of every error we raise on purpose."""

    code: ClassVar[str] = "INTERNAL_ERROR"
    status: ClassVar[int] = 500

    def __init__(self, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []

    def headers(self) -> dict[str, str]:
        """Extra HTTP headers this error carries (e.g. Retry-After)."""
        return {}

    def envelope(self, request_id: str | None = None) -> dict[str, Any]:
        """The JSON body of the error envelope."""
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "details": self.details,
                "requestId": request_id,
            }
        }


class ValidationError(SemantestError):
    """Bad input; `details` holds `{"field": "...", "reason": "..."}` per problem."""

    code = "VALIDATION_ERROR"
    status = 422


class Unauthorized(SemantestError):
    """No credentials, or credentials we do not know."""

    code = "UNAUTHORIZED"
    status = 401


class Forbidden(SemantestError):
    """Known caller, not allowed to do this."""

    code = "FORBIDDEN"
    status = 403


class DomainNotAllowed(Forbidden):
    """A page URL outside the addon allowlist."""

    code = "DOMAIN_NOT_ALLOWED"


class NotFound(SemantestError):
    """Generic missing resource."""

    code = "NOT_FOUND"
    status = 404


class JobNotFound(NotFound):
    """No job with that id for this tenant."""

    code = "JOB_NOT_FOUND"


class AddonNotFound(NotFound):
    """No addon with that id (or version)."""

    code = "ADDON_NOT_FOUND"


class ImageNotFound(NotFound):
    """No stored image under that key for this tenant."""

    code = "IMAGE_NOT_FOUND"


class Conflict(SemantestError):
    """The request conflicts with the resource's current state."""

    code = "CONFLICT"
    status = 409


class PayloadTooLarge(SemantestError):
    """Request body over the limit."""

    code = "PAYLOAD_TOO_LARGE"
    status = 413


class _RetryAfter(SemantestError):
    def __init__(
        self, message: str, retry_after_s: int = 1, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message, details)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class RateLimited(_RetryAfter):
    """Too many requests for this tenant and endpoint."""

    code = "RATE_LIMITED"
    status = 429


class Unavailable(_RetryAfter):
    """No capacity right now (queue full, Redis down)."""

    code = "UNAVAILABLE"
    status = 503


class JobFailure(SemantestError):
    """A job could not produce its images; recorded in the job's `error`, not an HTTP reply."""

    retryable: ClassVar[bool] = False

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.job_code = code or self.code


class GenerationFailed(JobFailure):
    """The provider refused or produced nothing usable: fail at once, no retry."""

    code = "GENERATION_FAILED"


class RetryableFailure(JobFailure):
    """A failure another attempt may cure: provider timeout, agent crash, lost bridge."""

    code = "AGENT_ERROR"
    retryable = True
