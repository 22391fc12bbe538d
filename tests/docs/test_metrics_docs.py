"""docs/metrics.md's table names exactly the metrics Ferry exports: every family of the
server's registry (``ferry.monitoring.metrics.Metrics``) plus the schedule gauge the
scheduler registers in it (``ferry.batch.schedules.stale_gauge``), by the name a scrape
shows (counters with ``_total``)."""

from __future__ import annotations

from ferry.batch.schedules import stale_gauge
from ferry.monitoring.metrics import Metrics
from tests.conftest import ROOT
from tests.docs._markdown import table_rows

PAGE = (ROOT / "docs" / "metrics.md").read_text()


def exported() -> dict[str, str]:
    """Exposed name -> type of every metric family a Ferry server or scheduler exports."""
    metrics = Metrics()
    stale_gauge(metrics.registry)  # what `ferry serve` and `ferry scheduler` add
    found = {}
    for family in metrics.registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        found[name] = family.type
    return found


def documented() -> dict[str, str]:
    return {row[0].strip("`"): row[1] for row in table_rows(PAGE, "name (as exposed)")}


def test_every_exported_metric_is_documented_with_its_type():
    docs, code = documented(), exported()
    wrong = [f"{name} ({kind}): exported but not in the table" for name, kind in code.items()
             if name not in docs]
    wrong += [f"{name}: the table says {docs[name]!r}, it is a {kind}"
              for name, kind in code.items() if name in docs and docs[name] != kind]
    wrong += [f"{name}: in the table but not exported" for name in docs.keys() - code.keys()]
    assert not wrong, "docs/metrics.md 'Every metric' table:\n" + "\n".join(sorted(wrong))


def test_the_registry_walk_sees_the_hot_path_families():
    # the per-request families are made at scrape time by a collector; the walk must see
    # them, or the test above would pass on a table missing them
    code = exported()
    assert {"ferry_requests_total", "ferry_request_duration_seconds",
            "ferry_batch_size_rows", "ferry_batch_schedule_stale"} <= code.keys()
    assert code["ferry_request_duration_seconds"] == "histogram"


# names in the docs that start like a metric but are something else
NOT_METRICS = {"ferry_schema": "the evaluation store's schema-version table (evalstore.md)"}
_SUFFIXES = {"counter": ("_created",), "histogram": ("_bucket", "_sum", "_count", "_created"),
             "gauge": ()}


def test_every_metric_name_in_the_docs_is_exported():
    import re

    from tests.docs._markdown import PAGES

    series = set()
    for name, kind in exported().items():
        series.add(name)
        base = name.removesuffix("_total")
        series.update(base + suffix for suffix in _SUFFIXES[kind])
    wrong = []
    for page in PAGES:
        for n, line in enumerate(page.read_text().split("\n"), 1):
            for name in re.findall(r"\bferry_[a-z0-9_]*[a-z0-9]\b(?!\*)", line):
                if name not in series and name not in NOT_METRICS:
                    wrong.append(f"{page.relative_to(ROOT)}:{n}: {name}")
    assert not wrong, "metric names in the docs that Ferry does not export:\n" + "\n".join(wrong)


def test_every_promql_example_parses_and_names_exported_series():
    import re

    from tests.docs._markdown import PAGES
    from tests.docs._promql import selectors

    series = set()
    for name, kind in exported().items():
        series.add(name)
        series.update(name.removesuffix("_total") + s for s in _SUFFIXES[kind])
    wrong, checked = [], 0
    for page in PAGES:
        for block in re.findall(r"```promql\n(.*?)```", page.read_text(), re.S):
            # one expression per line; an indented line continues the one before
            for expr in re.sub(r"\n[ \t]+", " ", block).splitlines():
                expr = expr.split("#", 1)[0].strip()
                if not expr:
                    continue
                checked += 1
                try:
                    names = [s.name for s in selectors(expr)]
                except ValueError as exc:
                    wrong.append(f"{page.name}: {expr}\n    -> {exc}")
                    continue
                wrong += [f"{page.name}: {expr}\n    -> {n} is not exported"
                          for n in names if n not in series]
    assert checked >= 15, checked
    assert not wrong, "PromQL examples in the docs:\n" + "\n".join(wrong)
