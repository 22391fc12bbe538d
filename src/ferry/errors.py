"""Every error Ferry raises on purpose, and the HTTP status each one maps to.

The tree, drawn once::

    FerryError (500)
    ├── InvalidInput (400)                  the request is wrong; the message names the field
    │   ├── MalformedRequest (400)          not JSON, not the protocol's shape, a lying header
    │   ├── UnknownInput (400)              an input name the model does not have
    │   ├── MissingInput (400)              an input the model needs is absent
    │   ├── UnknownOutput (400)             a requested output the model does not have
    │   ├── ShapeMismatch (400)             shape vs signature, or data length vs shape
    │   ├── DatatypeMismatch (400)          datatype vs signature, or values vs datatype
    │   ├── BatchTooLarge (400)             more rows than the model's queue can hold
    │   ├── ReferenceMismatch (400)         reference data whose columns miss the signature
    │   ├── InvalidPolicy (400)             a routing policy naming a version not live, bad weights
    │   ├── SharedMemoryError (400)         a shared-memory key, offset or size that cannot be used
    │   │   └── RegionExists (400)          a region name registered already (gRPC ALREADY_EXISTS)
    │   └── InvalidValue (422)              well-formed but forbidden values (NaN, empty batch)
    ├── PayloadTooLarge (413)               body over the server's limit
    ├── NotFound (404)
    │   ├── ModelNotFound (404)
    │   ├── VersionNotFound (404)
    │   ├── RequestNotFound (404)           feedback for a request id the store never saw
    │   ├── RegionNotFound (404)            a shared-memory region name not registered
    │   └── PredictionsUnavailable (404)    batch predictions asked of a server without them
    ├── MethodNotAllowed (405)
    ├── Unauthorized (401)                  model control needs the admin token
    ├── Forbidden (403)                     model control is off, or not from loopback
    ├── RepositoryError (400)               a repository API call could not be carried out
    ├── Unavailable (503)
    │   ├── ModelNotReady (503)             the version exists but is not serving
    │   ├── ServerBusy (503)                the queue is full; carries ``retry_after``
    │   └── StoreUnavailable (503)          the evaluation store cannot be reached
    ├── DeadlineExceeded (504)              the request's deadline passed while it waited
    ├── ExtraNotInstalled (501)             a configured feature's optional extra is missing
    │                                       (ferry[s3], ferry[postgres], ferry[ray], ...)
    ├── ModelError (500)                    the model raised during predict
    └── ModelLoadError (500)                a version could not be loaded (never reaches a client
        ├── ManifestError                   as a response; it is reported in metadata instead)
        └── UntrustedArtifact

Protocols translate these at the edge, once each (``protocols/rest.py`` and, later,
``protocols/grpc.py``); nothing below the protocols imports a web framework.
"""

from __future__ import annotations


class FerryError(Exception):
    """Base of every Ferry error. ``http_status`` says how a protocol should answer it."""

    http_status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(FerryError):
    """The request does not fit the model's signature or the protocol."""

    http_status = 400


class MalformedRequest(InvalidInput):
    """The body is not valid JSON, or not shaped as the protocol says, or a header lies."""


class UnknownInput(InvalidInput):
    """An input name that the model's signature does not have."""


class MissingInput(InvalidInput):
    """An input that the model's signature needs is absent from the request."""


class UnknownOutput(InvalidInput):
    """A requested output name that the model's signature does not have."""


class ShapeMismatch(InvalidInput):
    """A tensor's shape does not match the signature, or its data does not match its shape."""


class DatatypeMismatch(InvalidInput):
    """A tensor's datatype does not match the signature, or its values are not of it."""


class BatchTooLarge(InvalidInput):
    """A request with more rows than the model's queue can ever hold (``max_queue_size``)."""


class ReferenceMismatch(InvalidInput):
    """Reference data that does not fit the model: the message names the missing or
    unexpected columns and lists the expected ones."""


class InvalidPolicy(InvalidInput):
    """A routing policy that cannot be applied: a version that is not loaded (the message
    lists the live ones), weights that are negative or all zero, an unknown kind or field."""


class SharedMemoryError(InvalidInput):
    """A system shared-memory object or reference that cannot be used: no such key, too
    small, an offset or size past the region's end, a size that does not fit the tensor."""


class RegionExists(SharedMemoryError):
    """A shared-memory region name that is registered already (unregister it first)."""


class InvalidValue(InvalidInput):
    """Well-formed values the model forbids: NaN where ``allow_nan`` is false, an empty batch."""

    http_status = 422


class PayloadTooLarge(FerryError):
    """The request body is larger than the server's ``max_body_bytes``."""

    http_status = 413


class NotFound(FerryError):
    """A path, model or version that does not exist."""

    http_status = 404


class ModelNotFound(NotFound):
    """No model of that name in the repository."""


class VersionNotFound(NotFound):
    """The model exists but has no such version."""


class RequestNotFound(NotFound):
    """Feedback for a request id that the evaluation store never recorded (nor buffered)."""


class RegionNotFound(NotFound):
    """A shared-memory region name that is not registered (or was unregistered)."""


class PredictionsUnavailable(NotFound):
    """Stored batch predictions asked of a server with no predictions database
    (``FERRY_PREDICTIONS_URL`` unset)."""


class MethodNotAllowed(FerryError):
    """The path exists but not with this HTTP method; ``allowed`` lists the methods it has
    (HTTP answers them in the ``Allow`` header)."""

    http_status = 405

    def __init__(self, message: str, allowed: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.allowed = allowed


class Unauthorized(FerryError):
    """A model-control call without the right admin token."""

    http_status = 401


class Forbidden(FerryError):
    """Model control is disabled, or allowed only from loopback and the caller is not."""

    http_status = 403


class RepositoryError(FerryError):
    """A load or unload request that could not be carried out (the reason says why)."""

    http_status = 400


class Unavailable(FerryError):
    """The server cannot take the request now; trying later may work."""

    http_status = 503
    retry_after: float | None = None


class ModelNotReady(Unavailable):
    """The version exists but is not live (loading, failed or unloaded)."""


class ServerBusy(Unavailable):
    """The model's queue is full. Answered with ``Retry-After``."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StoreUnavailable(Unavailable):
    """The evaluation store's database cannot be reached or migrated."""


class ExtraNotInstalled(FerryError):
    """A configured feature needs an optional package that is not installed (an ``s3://``
    repository, a ``postgresql://`` store, ``--engine ray``). One line names the extra:
    ``<feature> needs <package>: pip install 'ferry[<extra>]'`` (built by
    ``ferry._extras.require``). Commands raise it at start, before doing any work."""

    http_status = 501


class DeadlineExceeded(FerryError):
    """The request's deadline passed before the model could run it."""

    http_status = 504


class ModelError(FerryError):
    """The model raised during predict; only the requests of that batch fail."""

    http_status = 500


class ModelLoadError(FerryError):
    """A version could not be loaded; it stays unavailable and the reason is reported."""


class ManifestError(ModelLoadError):
    """A ``model.yaml`` that does not validate; the message names the file and the key."""


class UntrustedArtifact(ModelLoadError):
    """A pickle or joblib artifact in a repository not marked trusted (``--trust-pickles``)."""
