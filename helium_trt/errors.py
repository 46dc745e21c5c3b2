"""The package's exception hierarchy; the gRPC layer maps each class to a status code."""


class HeliumError(Exception):
    """Base of every error helium_trt raises on purpose."""


class InvalidWorkflowError(HeliumError):
    """The workflow, its rows or its options are malformed (INVALID_ARGUMENT).

    ``op_id`` and ``field`` name the offending operator and field where known.
    """

    def __init__(self, message: str, *, op_id: str | None = None, field: str | None = None):
        where = ""
        if op_id is not None:
            where = f"operator {op_id!r}"
            if field is not None:
                where += f", field {field!r}"
        elif field is not None:
            where = f"field {field!r}"
        super().__init__(f"{where}: {message}" if where else message)
        self.op_id = op_id
        self.field = field
        self.detail = message


class InvalidRequestError(HeliumError):
    """An engine request is malformed: bad token ids, prompt too long (INVALID_ARGUMENT)."""


class ModelNotFoundError(HeliumError):
    """No engine serves the named model, or a model directory is missing (NOT_FOUND)."""


class ResourceExhaustedError(HeliumError):
    """A request exceeds a configured limit (RESOURCE_EXHAUSTED)."""


class UnauthenticatedError(HeliumError):
    """The client sent no credentials, or ones the server does not know (UNAUTHENTICATED)."""


class PermissionDeniedError(HeliumError):
    """An authenticated tenant asked for something its policy does not allow
    (PERMISSION_DENIED); the message names the field and the tenant's limit."""


class ConfigError(HeliumError):
    """A server configuration file (``serve --auth-tokens``, ``--public-workflow``) is
    malformed; the message names the file and the entry."""


class EngineUnavailableError(HeliumError):
    """An engine cannot be reached or has stopped (UNAVAILABLE)."""


class RequestCancelledError(HeliumError):
    """The request was cancelled by the client (CANCELLED)."""


class OptimizerError(HeliumError):
    """An optimizer rule produced an invalid plan: a bug in the rule, not the workflow (INTERNAL)."""
