"""Triton's system shared memory extension: tensors passed through POSIX shared memory
objects (``/dev/shm/<key>``) that a client on the same host created and registered.

``SharedMemoryRegistry`` holds the registered regions, each an ``mmap`` of part of one
object. Promises:

- **Nothing is created or removed in /dev/shm.** Register opens an existing object
  (``O_RDWR | O_NOFOLLOW``, a regular file only) and maps ``[offset, offset+byte_size)``;
  the client owns the object and unlinks it.
- **A failed call leaves nothing mapped**, and one bad call never touches another region.
- **Reference counting**: an inference writing outputs into a region holds a lease on it
  (``lease_outputs`` .. ``release``). Unregistering a leased region takes its name away at
  once (later requests naming it get ``RegionNotFound``); its mapping is closed when the
  last lease ends. ``close()`` (server stop) unmaps everything.
- **Inputs are copied out of the region** while the request is decoded (one ``memcpy``, no
  lease): the tensor may outlive the response (merged into a batch, held by the evaluation
  store's writer), while the client is free to write its next request into the region as
  soon as the response arrives. Outputs are written into the region in place.
- All methods run on the event loop thread (HTTP and gRPC share it); a lock keeps the
  registry consistent should another thread call in.

The pure checks (``check_key``, ``tensor_ref``, ``check_span``, ``check_caller``) raise
``FerryError`` subclasses naming the field; they are tested by enumeration.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import mmap
import os
import stat
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ferry.datatypes import V2_TO_NUMPY, v2_datatype
from ferry.errors import (Forbidden, MalformedRequest, RegionExists, RegionNotFound,
                          ShapeMismatch, SharedMemoryError, Unauthorized)
from ferry.protocols._arrays import from_binary, to_binary
from ferry.types import RequestedOutput, Tensors

log = logging.getLogger("ferry.shared_memory")

SHM_DIR = Path("/dev/shm")
REGION, BYTE_SIZE, OFFSET = ("shared_memory_region", "shared_memory_byte_size",
                             "shared_memory_offset")
_KEYS = frozenset((REGION, BYTE_SIZE, OFFSET))
_NAME_MAX = 255


# -- pure checks ---------------------------------------------------------------------------
def check_key(key: Any) -> str:
    """The file name under /dev/shm for a POSIX shared memory ``key`` (``/in0`` -> ``in0``):
    one leading ``/`` at most, then a name without ``/`` (never a path elsewhere)."""
    if not isinstance(key, str) or not key:
        raise SharedMemoryError(f"key must be a non-empty string like '/input0', got {key!r}")
    name = key[1:] if key.startswith("/") else key
    if not name or "/" in name or name in (".", "..") or "\0" in name or len(name) > _NAME_MAX:
        raise SharedMemoryError(f"key {key!r} is not a POSIX shared memory name: '/' then 1 to "
                                f"{_NAME_MAX} characters without '/'")
    return name


def _int(value: Any, what: str, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise SharedMemoryError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class TensorRef:
    """Where a tensor's bytes are: ``byte_size`` bytes at ``offset`` in ``region``."""

    region: str
    offset: int
    byte_size: int

    def parameters(self) -> dict[str, Any]:
        """The parameters a response's output carries instead of data (as Triton's)."""
        params: dict[str, Any] = {REGION: self.region, BYTE_SIZE: self.byte_size}
        if self.offset:
            params[OFFSET] = self.offset
        return params


def tensor_ref(params: Mapping[str, Any] | None, field: str) -> TensorRef | None:
    """The shared-memory reference in a tensor's parameters, or None when it has none.
    Triton's rules: ``shared_memory_region`` and ``shared_memory_byte_size`` go together,
    ``shared_memory_offset`` is optional (default 0) and never alone."""
    if not params or _KEYS.isdisjoint(params):
        return None
    region = params.get(REGION)
    if region is None:
        raise MalformedRequest(f"{field}: {BYTE_SIZE} and {OFFSET} need {REGION}")
    if not isinstance(region, str) or not region:
        raise MalformedRequest(f"{field}: {REGION} must be a region name (string), "
                               f"got {region!r}")
    if BYTE_SIZE not in params:
        raise MalformedRequest(f"{field}: {REGION} needs {BYTE_SIZE}")
    try:
        size = _int(params[BYTE_SIZE], f"{field}: {BYTE_SIZE}", 0)
        offset = _int(params.get(OFFSET, 0), f"{field}: {OFFSET}", 0)
    except SharedMemoryError as exc:
        raise MalformedRequest(exc.message) from None
    return TensorRef(region, offset, size)


def check_span(region: str, region_size: int, offset: int, byte_size: int, field: str) -> None:
    """``[offset, offset + byte_size)`` must lie inside a region of ``region_size`` bytes."""
    if offset >= region_size:
        raise SharedMemoryError(f"{field}: {OFFSET} {offset} is past the end of region "
                                f"{region!r} ({region_size} bytes)")
    if offset + byte_size > region_size:
        raise SharedMemoryError(f"{field}: {OFFSET} {offset} + {BYTE_SIZE} {byte_size} runs "
                                f"past the end of region {region!r} ({region_size} bytes)")


def tensor_byte_size(datatype: str, shape: list[int]) -> int | None:
    """Bytes of a fixed-size tensor; None for BYTES (its size depends on the values)."""
    dtype = V2_TO_NUMPY.get(datatype)
    if dtype is None or datatype == "BYTES":
        return None
    return math.prod(shape) * dtype.itemsize


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def check_caller(client_host: str | None, authorization: str | None,
                 admin_token: str | None) -> None:
    """Who may register, unregister and list regions: shared memory is a same-host
    feature, so callers on loopback, or anyone presenting the admin token."""
    if client_host is not None and _is_loopback(client_host):
        return
    if admin_token is None:
        raise Forbidden(f"system shared memory is allowed only from loopback (caller "
                        f"{client_host}); set --admin-token to allow it from elsewhere")
    import hmac

    if authorization is None or not hmac.compare_digest(authorization,
                                                        f"Bearer {admin_token}"):
        raise Unauthorized("system shared memory from outside loopback needs "
                           "'Authorization: Bearer <admin token>'")


# -- regions -------------------------------------------------------------------------------
class Region:
    """One registered region: an mmap of ``byte_size`` bytes at ``offset`` in ``key``."""

    __slots__ = ("name", "key", "offset", "byte_size", "_map", "_base", "leases", "retired")

    def __init__(self, name: str, key: str, offset: int, byte_size: int, mapped: mmap.mmap,
                 base: int) -> None:
        self.name, self.key, self.offset, self.byte_size = name, key, offset, byte_size
        self._map = mapped
        self._base = base
        """Where the region starts in ``_map`` (the map starts on a page boundary)."""
        self.leases = 0
        self.retired = False

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "key": self.key, "offset": self.offset,
                "byte_size": self.byte_size}

    def read(self, offset: int, byte_size: int) -> bytes:
        start = self._base + offset
        return self._map[start:start + byte_size]

    def write(self, offset: int, data: bytes) -> None:
        start = self._base + offset
        self._map[start:start + len(data)] = data

    def close(self) -> None:
        try:
            self._map.close()
        except BufferError:  # a view still exported; the mapping goes when it is collected
            log.warning("shared memory region %r: mapping still in use at close", self.name)


def _map(name: str, key: str, offset: int, byte_size: int) -> Region:
    """Open and map an existing object; raises ``SharedMemoryError`` with nothing left
    open or mapped."""
    path = SHM_DIR / check_key(key)
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SharedMemoryError(
            f"failed to register shared memory region {name!r}: no shared memory object "
            f"{key!r} ({path} does not exist); the client creates it first") from None
    except OSError as exc:
        raise SharedMemoryError(f"failed to register shared memory region {name!r}: cannot "
                                f"open {key!r}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SharedMemoryError(f"failed to register shared memory region {name!r}: "
                                    f"{key!r} is not a shared memory object")
        if offset + byte_size > info.st_size:
            raise SharedMemoryError(
                f"failed to register shared memory region {name!r}: object {key!r} has "
                f"{info.st_size} bytes, fewer than offset {offset} + byte_size {byte_size}")
        start = offset - offset % mmap.ALLOCATIONGRANULARITY
        try:
            mapped = mmap.mmap(fd, byte_size + offset - start, mmap.MAP_SHARED,
                               mmap.PROT_READ | mmap.PROT_WRITE, offset=start)
        except OSError as exc:
            raise SharedMemoryError(f"failed to register shared memory region {name!r}: "
                                    f"cannot map {key!r}: {exc.strerror}") from None
    finally:
        os.close(fd)
    return Region(name, key, offset, byte_size, mapped, offset - start)


@dataclass(frozen=True, slots=True)
class OutputLease:
    """A requested output to be written into a leased region."""

    name: str
    region: Region
    ref: TensorRef


class SharedMemoryRegistry:
    """The server's registered system shared memory regions (see the module docstring)."""

    def __init__(self, enabled: bool = True, admin_token: str | None = None) -> None:
        self.enabled = enabled
        self.admin_token = admin_token
        self._regions: dict[str, Region] = {}
        self._lock = threading.Lock()

    # -- the extension's API -------------------------------------------------------------
    def authorize(self, client_host: str | None, authorization: str | None) -> None:
        if not self.enabled:
            raise Forbidden("system shared memory is turned off on this server "
                            "(--no-shared-memory)")
        check_caller(client_host, authorization, self.admin_token)

    def register(self, name: str, key: Any, offset: Any, byte_size: Any) -> None:
        if not isinstance(name, str) or not name:
            raise SharedMemoryError("the region name must be a non-empty string")
        offset = _int(offset, "offset", 0)
        byte_size = _int(byte_size, "byte_size", 1)
        check_key(key)
        with self._lock:
            if name in self._regions:
                raise RegionExists(f"shared memory region {name!r} is already registered "
                                   f"(key {self._regions[name].key!r}); unregister it first")
            self._regions[name] = _map(name, key, offset, byte_size)
        log.info("registered shared memory region %r: key %r, offset %d, %d bytes",
                 name, key, offset, byte_size)

    def unregister(self, name: str | None = None) -> None:
        """Unregister one region (an unknown name is a no-op, as in Triton) or all."""
        with self._lock:
            names = list(self._regions) if not name else [name]
            for each in names:
                region = self._regions.pop(each, None)
                if region is not None:
                    region.retired = True
                    if region.leases == 0:
                        region.close()

    def status(self, name: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            if not name:
                return [r.status() for r in self._regions.values()]
            return [self._get(name).status()]

    def close(self) -> None:
        """Unmap every region, leased or not (the server is stopping)."""
        with self._lock:
            regions, self._regions = list(self._regions.values()), {}
        for region in regions:
            region.retired = True
            region.close()

    # -- inference -----------------------------------------------------------------------
    def _get(self, name: str) -> Region:
        region = self._regions.get(name)
        if region is None:
            raise RegionNotFound(f"Unable to find system shared memory region: {name!r}")
        return region

    def read_input(self, ref: TensorRef, datatype: str, shape: list[int], field: str
                   ) -> np.ndarray:
        """Copy an input tensor out of its region and decode it like a binary tensor."""
        expected = tensor_byte_size(datatype, shape)
        if expected is not None and expected != ref.byte_size:
            raise ShapeMismatch(f"{field}: {BYTE_SIZE} is {ref.byte_size} bytes but shape "
                                f"{shape} of {datatype} needs {expected}")
        with self._lock:
            region = self._get(ref.region)
            check_span(ref.region, region.byte_size, ref.offset, ref.byte_size, field)
            data = region.read(ref.offset, ref.byte_size)
        return from_binary(memoryview(data), datatype, shape, field)

    def lease_outputs(self, outputs: Iterable[RequestedOutput]) -> list[OutputLease] | None:
        """Leases on the regions of the outputs asked for in shared memory (None if none);
        the caller must ``release`` them, whatever happens."""
        wanted = [(o.name, ref) for o in outputs
                  if (ref := tensor_ref(o.parameters, f"output {o.name!r}")) is not None]
        if not wanted:
            return None
        leases: list[OutputLease] = []
        with self._lock:
            try:
                for name, ref in wanted:
                    region = self._get(ref.region)
                    check_span(ref.region, region.byte_size, ref.offset, ref.byte_size,
                               f"output {name!r}")
                    region.leases += 1
                    leases.append(OutputLease(name, region, ref))
            except BaseException:
                self._release(leases)
                raise
        return leases

    def write_outputs(self, leases: list[OutputLease], outputs: Tensors) -> None:
        """Write each leased output's bytes into its region; all sizes are checked first,
        so a too-small region writes nothing."""
        encoded = []
        for lease in leases:
            arr = outputs[lease.name]
            raw = to_binary(arr, v2_datatype(arr.dtype))
            if len(raw) > lease.ref.byte_size:
                raise SharedMemoryError(
                    f"output {lease.name!r}: {BYTE_SIZE} {lease.ref.byte_size} is too small "
                    f"for the result ({len(raw)} bytes, shape {list(arr.shape)})")
            encoded.append((lease, raw))
        for lease, raw in encoded:
            lease.region.write(lease.ref.offset, raw)

    def release(self, leases: list[OutputLease]) -> None:
        with self._lock:
            self._release(leases)

    @staticmethod
    def _release(leases: list[OutputLease]) -> None:
        for lease in leases:
            region = lease.region
            region.leases -= 1
            if region.leases == 0 and region.retired:
                region.close()
