"""Load every aspired version of a repository once and describe it (``ferry models``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from ferry.lifecycle.manager import ModelManager
from ferry.monitoring.metrics import Metrics


def inspect_repository(root: Path, trust_pickles: bool = False) -> list[dict[str, Any]]:
    """One row per model version (or per model that cannot be served)."""
    return asyncio.run(_inspect(root, trust_pickles))


async def _inspect(root: Path, trust_pickles: bool) -> list[dict[str, Any]]:
    manager = ModelManager(root, Metrics(), trust_pickles)
    await manager.load_all()
    rows = []
    for name in sorted(manager.models):
        served = manager.models[name]
        if not served.versions:
            rows.append({"model": name, "version": "-", "runtime": "", "state": "UNAVAILABLE",
                         "reason": served.entry.error or "no version folders",
                         "max_batch_size": 0, "sha256": "", "inputs": [], "outputs": []})
        for number in sorted(served.versions):
            h = served.versions[number]
            rows.append({"model": name, "version": number, "runtime": h.runtime_name,
                         "state": h.state.value, "reason": h.reason,
                         "max_batch_size": h.max_batch_size, "sha256": h.sha256,
                         "inputs": [t.metadata() for t in h.signature.inputs],
                         "outputs": [t.metadata() for t in h.signature.outputs]})
    await manager.close()
    return rows
