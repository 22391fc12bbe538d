"""Every bundled example version ships its training data as ``reference.parquet``, named by
the model's feature layout, and a server over the examples has a reference profile for each
of them: ``ferry monitor`` has something to compare live traffic with from the start."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow.parquet as pq

EXAMPLE_VERSIONS = {"iris": [1, 2], "diabetes": [1], "tabular": [1], "mlp": [1],
                    "iris_features": [1]}
FIRST_COLUMNS = {"iris": ["sepal_length", "sepal_width", "petal_length", "petal_width"],
                 "iris_features": ["sepal_length", "sepal_width", "petal_length",
                                   "petal_width"],
                 "diabetes": [f"input[{i}]" for i in range(10)]}


def test_every_example_version_ships_a_reference(example_repo: Path) -> None:
    for model, versions in EXAMPLE_VERSIONS.items():
        for version in versions:
            table = pq.read_table(example_repo / model / str(version) / "reference.parquet")
            names = table.column_names
            assert table.num_rows >= 150, (model, version)
            assert names[-1] == "target"
            if model in FIRST_COLUMNS:
                assert names[:len(FIRST_COLUMNS[model])] == FIRST_COLUMNS[model]


def test_the_server_profiles_the_shipped_references(server) -> None:
    # the test repository copies these examples with their reference files
    for model in ("iris", "diabetes", "tabular", "iris_features"):
        deadline = time.monotonic() + 30  # profiles are written when the store connects
        while True:
            report = server.client.get(f"/ferry/v1/models/{model}/monitor").json()
            reference = report.get("drift", {}).get("reference")
            if reference or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert reference and reference.endswith("/reference.parquet"), (model, report)
