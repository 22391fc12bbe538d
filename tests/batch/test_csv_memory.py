"""A CSV input is read in bounded memory: Arrow's streaming reader reads ahead a fixed
number of blocks, so the block size bounds what it holds, whatever the file's size."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from ferry.batch.job import Location
from ferry.batch.readers import open_source


def test_a_slowly_consumed_csv_is_not_read_ahead_whole(tmp_path):
    rng = np.random.default_rng(0)
    rows = 500_000  # ~80 MB of text: below the ~128 MiB that 4 MiB blocks let Arrow hold
    table = pa.table({f"f{i}": rng.normal(size=rows) for i in range(8)})
    path = tmp_path / "big.csv"
    pacsv.write_csv(table, path)
    size = path.stat().st_size
    assert size > 64 << 20
    source = open_source(Location("file", "csv", paths=(str(path),), target=str(path)),
                         chunk_rows=10_000)
    base = pa.total_allocated_bytes()
    peak = 0
    seen = 0
    for _, batch in source.chunks([f"f{i}" for i in range(8)], set()):
        seen += batch.num_rows
        time.sleep(0.005)  # a busy scorer: the reader runs ahead meanwhile
        peak = max(peak, pa.total_allocated_bytes() - base)
    assert seen == rows
    # 32 blocks of 1 MiB read ahead plus the chunks being parsed and handed over: ~43 MiB
    # measured; with 4 MiB blocks the whole file was held (84 MiB measured)
    assert peak < 64 << 20, f"Arrow held {peak / 2**20:.0f} MiB of a {size / 2**20:.0f} MiB CSV"
