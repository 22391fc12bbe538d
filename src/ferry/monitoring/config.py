"""``<model>/monitoring.yaml``: per-model drift thresholds, data-quality overrides and
alerts, validated strictly (unknown keys are errors naming the key).

Example::

    drift: {alpha: 0.01, wasserstein: 0.15, jensen_shannon: 0.1, min_rows: 100}
    quality:
      min_rows: 100                 # fewer rows per window is a violation
      max_null_rate: 0.02           # default allowance above the reference's null rate
      features:
        age: {max_null_rate: 0.05, min: 0, max: 120}
        country: {categories: [FR, DE, US]}
    alerts:
      - {name: inputs-drifted, when: "drift.feature_share > 0.3", window: 1h}
      - {name: slow, when: "latency.p99_ms > 50", window: 5m}
    webhook: http://127.0.0.1:9000/hooks/ferry
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ferry.errors import ManifestError

CONFIG_FILE = "monitoring.yaml"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DriftConfig(_Strict):
    alpha: Annotated[float, Field(gt=0, lt=1)] = 0.01
    """Significance level of the KS / chi-square tests (p-values are always reported)."""
    wasserstein: Annotated[float, Field(ge=0)] = 0.1
    """Numeric drift threshold: Wasserstein distance in reference standard deviations."""
    jensen_shannon: Annotated[float, Field(ge=0, le=1)] = 0.1
    """Categorical drift threshold: Jensen-Shannon distance (base 2)."""
    min_rows: Annotated[int, Field(ge=2)] = 50
    """Windows with fewer non-null rows per feature are not judged."""


class FeatureRule(_Strict):
    max_null_rate: Annotated[float, Field(ge=0, le=1)] | None = None
    """Largest allowed share of nulls (default: reference null rate + the model's allowance)."""
    min: float | None = None
    """Smallest allowed value (default: the reference's minimum minus 10% of its range)."""
    max: float | None = None
    """Largest allowed value (default: the reference's maximum plus 10% of its range)."""
    categories: list[str] | None = None
    """Allowed categories (default: those seen in the reference)."""


class QualityConfig(_Strict):
    min_rows: Annotated[int, Field(ge=0)] = 0
    """Fewer rows in a window than this is a violation (0: no rule)."""
    max_null_rate: Annotated[float, Field(ge=0, le=1)] = 0.02
    """Allowance added to each feature's reference null rate."""
    max_out_of_range: Annotated[float, Field(ge=0, le=1)] = 0.01
    """Share of rows outside the range above which the range rule is violated."""
    max_unknown_categories: Annotated[float, Field(ge=0, le=1)] = 0.001
    """Share of rows with unseen categories above which the category rule is violated."""
    features: dict[str, FeatureRule] = {}


class AlertRule(_Strict):
    name: Annotated[str, Field(min_length=1)]
    when: str
    """``METRIC OP NUMBER``, e.g. ``drift.feature_share > 0.3``, ``perf.accuracy < 0.8``."""
    window: str = "1h"
    """The window the condition is evaluated over."""


class MonitoringConfig(_Strict):
    drift: DriftConfig = DriftConfig()
    quality: QualityConfig = QualityConfig()
    alerts: list[AlertRule] = []
    webhook: str | None = None
    """POSTed a JSON body with the evidence when an alert fires or resolves."""


def load_config(model_dir: Path) -> MonitoringConfig:
    path = model_dir / CONFIG_FILE
    if not path.is_file():
        return MonitoringConfig()
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        return MonitoringConfig.model_validate(raw)
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in exc.errors())
        raise ManifestError(f"{path}: {problems}") from None
