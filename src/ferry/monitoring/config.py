"""Per-model monitoring settings: the ``monitoring:`` section of ``model.yaml``.

Drift thresholds (per model and per feature), data-quality overrides and alerts, validated
strictly as part of the manifest (an unknown key is an error that names the key and the
file, and the model does not load). Example::

    monitoring:
      sample_rate: 0.25               # record a quarter of the inferences in the store
      retention_days: 7               # keep this model's predictions a week
      drift:
        alpha: 0.01
        wasserstein: 0.15            # numeric features: distance in reference sigmas
        jensen_shannon: 0.1          # categorical features
        min_rows: 100
        multivariate: [mmd, classifier]
        classifier_auc: 0.6
        features:
          age: {wasserstein: 0.3}
          session_id: {ignore: true}
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

``<model>/monitoring.yaml`` (the same settings, without the ``monitoring:`` key) is still
read when ``model.yaml`` has no ``monitoring:`` section; it is deprecated.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo,
                      field_validator)

from ferry.errors import FerryError, ManifestError

if TYPE_CHECKING:
    from ferry.manifest import ModelManifest

LEGACY_FILE = "monitoring.yaml"

log = logging.getLogger("ferry.monitoring")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureDrift(_Strict):
    """One feature's drift settings; unset values take the model's."""

    alpha: Annotated[float, Field(gt=0, lt=1)] | None = None
    wasserstein: Annotated[float, Field(ge=0)] | None = None
    jensen_shannon: Annotated[float, Field(ge=0, le=1)] | None = None
    min_rows: Annotated[int, Field(ge=2)] | None = None
    ignore: bool = False
    """Leave this feature out of the drift section (and of ``feature_share``)."""


class DriftConfig(_Strict):
    alpha: Annotated[float, Field(gt=0, lt=1)] = 0.01
    """Significance level of the KS / chi-square tests (p-values are always reported)."""
    wasserstein: Annotated[float, Field(ge=0)] = 0.1
    """Numeric drift threshold: Wasserstein distance in reference standard deviations."""
    jensen_shannon: Annotated[float, Field(ge=0, le=1)] = 0.1
    """Categorical drift threshold: Jensen-Shannon distance (base 2)."""
    min_rows: Annotated[int, Field(ge=2)] = 50
    """Windows with fewer non-null rows per feature are not judged."""
    multivariate: list[Literal["mmd", "classifier"]] = ["mmd", "classifier"]
    """Multivariate tests on the numeric inputs' joint samples."""
    classifier_auc: Annotated[float, Field(ge=0.5, le=1)] = 0.55
    """Domain classifier: drift when its cross-validated AUC reaches this (and p < alpha)."""
    features: dict[str, FeatureDrift] = {}
    """Per-feature overrides, by feature name (inputs or prediction columns)."""


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

    @field_validator("when", "window")
    @classmethod
    def _parses(cls, value: str, info: ValidationInfo) -> str:
        """The rule and the window parse as the alert loop will parse them."""
        from ferry.evalstore.windows import parse_duration
        from ferry.monitoring.alerts import parse_rule

        try:
            (parse_rule if info.field_name == "when" else parse_duration)(value)
        except FerryError as exc:
            raise ValueError(exc.message) from None
        return value


class MonitoringConfig(_Strict):
    sample_rate: Annotated[float, Field(ge=0, le=1)] | None = None
    """Share of this model's inferences the evaluation store records (default: the
    server's ``--store-sample-rate``; a server per-model setting overrides this one)."""
    retention_days: Annotated[float, Field(gt=0)] | None = None
    """Days this model's recorded predictions are kept (default: the server's
    ``store_retention_days``; a server per-model setting overrides this one)."""
    drift: DriftConfig = DriftConfig()
    quality: QualityConfig = QualityConfig()
    alerts: list[AlertRule] = []
    webhook: str | None = None
    """POSTed a JSON body with the evidence when an alert fires or resolves."""

    def feature_names(self) -> set[str]:
        """Every feature name the settings mention."""
        return set(self.drift.features) | set(self.quality.features)


def load_config(model_dir: Path, manifest: ModelManifest | None = None) -> MonitoringConfig:
    """The monitoring settings of the model in ``model_dir``: ``manifest.monitoring`` (read
    from ``model_dir/model.yaml`` when no manifest is given) or, when the manifest has no
    ``monitoring:`` section, the deprecated ``model_dir/monitoring.yaml``.

    Raises ``ManifestError`` naming the file and the key."""
    from ferry.manifest import MANIFEST_FILE, load_manifest

    if manifest is None:
        manifest = load_manifest(model_dir / MANIFEST_FILE)
    legacy = model_dir / LEGACY_FILE
    if "monitoring" in manifest.model_fields_set:
        if legacy.is_file():
            log.warning("%s is ignored: %s has a monitoring: section", legacy,
                        model_dir / MANIFEST_FILE)
        return manifest.monitoring
    if not legacy.is_file():
        return MonitoringConfig()
    log.warning("%s is deprecated: move its settings under 'monitoring:' in %s", legacy,
                model_dir / MANIFEST_FILE)
    try:
        raw = yaml.safe_load(legacy.read_text()) or {}
        return MonitoringConfig.model_validate(raw)
    except yaml.YAMLError as exc:
        raise ManifestError(f"{legacy}: not valid YAML: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in exc.errors())
        raise ManifestError(f"{legacy}: {problems}") from None
