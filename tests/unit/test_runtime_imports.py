"""Ferry's run-time import graph: ``tritonclient`` is a test dependency only (issue #20)."""

from __future__ import annotations

import json
import subprocess
import sys


def _modules_after(*imports: str) -> set[str]:
    code = ("import json, sys\n" + "".join(f"import {m}\n" for m in imports)
            + "print(json.dumps(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    return set(json.loads(out.stdout))


def test_serving_never_imports_tritonclient() -> None:
    loaded = _modules_after("ferry.server", "ferry.protocols.grpc", "ferry.protocols.grpc_codec",
                            "ferry.cli.main", "ferry.repository.triton_config")
    assert "ferry._pb.grpc_service_pb2" in loaded  # the modules Ferry ships
    assert not {m for m in loaded if m.split(".")[0] == "tritonclient"}


def test_shipped_messages_are_tritons_on_the_wire() -> None:
    """Same file, package, service and messages as tritonclient's: byte-identical
    descriptors, so both can be imported in one process and speak the same protocol."""
    from tritonclient.grpc import model_config_pb2 as triton_config
    from tritonclient.grpc import service_pb2 as triton_service

    from ferry._pb import grpc_service_pb2, model_config_pb2

    assert grpc_service_pb2.DESCRIPTOR.serialized_pb == triton_service.DESCRIPTOR.serialized_pb
    assert model_config_pb2.DESCRIPTOR.serialized_pb == triton_config.DESCRIPTOR.serialized_pb
    service = grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    assert {"ModelInfer", "ModelStatistics", "ModelConfig", "RepositoryModelLoad",
            "SystemSharedMemoryRegister"} <= set(service.methods_by_name)
