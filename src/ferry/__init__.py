"""Ferry: from a trained model file to a fast, monitored, safely rolled-out service.

The public API is what ``__all__`` lists; everything else may change.
"""

from ferry.errors import (FerryError, InvalidInput, ModelError, ModelLoadError, NotFound,
                          Unavailable)
from ferry.manifest import ModelManifest
from ferry.runtimes.base import Runtime
from ferry.settings import ServerSettings
from ferry.types import (InferRequest, InferResponse, ModelRef, RequestedOutput, Signature,
                         TensorSpec)

__version__ = "0.1.0"

__all__ = [
    "FerryError",
    "InferRequest",
    "InferResponse",
    "InvalidInput",
    "ModelError",
    "ModelLoadError",
    "ModelManifest",
    "ModelRef",
    "NotFound",
    "RequestedOutput",
    "Runtime",
    "ServerSettings",
    "Signature",
    "TensorSpec",
    "Unavailable",
    "__version__",
]
