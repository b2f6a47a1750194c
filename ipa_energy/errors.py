"""A small error hierarchy shared by every package."""

__all__ = ["IpaEnergyError", "PayloadError", "PlanApplyError", "PlanRejected", "SpecError"]


class IpaEnergyError(Exception):
    """Base class of every error this project raises on purpose."""


class SpecError(IpaEnergyError, ValueError):
    """A pipeline, variant or plan specification is inconsistent."""


class PayloadError(IpaEnergyError):
    """A request payload was rejected; carries the HTTP status to answer with."""

    def __init__(self, status_code: int, message: str, field: str | None = None):
        super().__init__(status_code, message, field)  # all of them, so that pickling (Ray) round-trips
        self.status_code = status_code
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return self.message

    def to_json(self) -> dict:
        body = {"error": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body


class PlanRejected(SpecError):
    """A plan that does not fit the cluster: refused before anything starts (HTTP 422)."""


class PlanApplyError(IpaEnergyError):
    """A plan could not be applied to the running application (it stays on the old plan)."""
