"""One BLAS thread while the monitor computes (``one_blas_thread``).

The monitor's matrix work is small: dot products over 100,000 values (the Wasserstein
integral, as scipy computes it), a 600 x 600 kernel (MMD) and a logistic regression on
2,000 rows (the domain classifier). OpenBLAS splits even these over all cores, and its
threads wait for each other by spinning: when the other cores are busy (serving requests,
or other jobs on a shared machine) each BLAS call waits for a core to come free. On 2
shared cores the 100k x 20 report took 0.80 s with OpenBLAS's default 2 threads and
0.34 s with one. One thread is also kinder to a server: the monitor then takes one core,
not every core, away from request handling.

``threadpoolctl`` (a default dependency) sets the limit. An OpenBLAS built on pthreads (the
one NumPy and SciPy wheels ship) has one process-wide setting, and threadpoolctl lets one
thread at a time change it, so limited blocks run **one at a time** (a re-entrant lock): a
second report waits for the first instead of finding the setting half-restored. They would
compete for the same cores anyway. If some other code holds a limit of its own in another
thread, threadpoolctl leaves it alone and the report runs with that setting.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_serial = threading.RLock()


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block (or, as ``@one_blas_thread()``, the function) with one BLAS thread."""
    from threadpoolctl import threadpool_limits

    with _serial, threadpool_limits(limits=1, user_api="blas"):
        yield
