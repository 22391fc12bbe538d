"""Profiles: a compact, mergeable summary of a table of features, for reference data and
live windows alike.

Per feature: type, row count, null count, and for numbers min/max/mean/std and an Apache
DataSketches KLL quantile sketch (mergeable, ~5 KB). For categories: their exact counts
while a feature has at most ``MAX_CATEGORIES`` distinct values; above that, an Apache
DataSketches **frequent items** sketch (``frequent_strings_sketch``, mergeable, each
estimate within ``epsilon x rows`` of the true count, ``epsilon = 0.0017``) instead
(``FeatureProfile.exact`` says which). Beside the sketches each feature keeps a bounded
**uniform reservoir sample** of its non-null values (``sample_size``, default 50,000),
because sketch-based tests miss small real shifts: drift tests run on the samples exactly
(``monitoring.drift``). A joint sample of whole rows (``joint_size``) feeds the
multivariate tests.

``Profile.merge`` combines two profiles (sketches merge, counts add, samples are re-drawn
with probabilities proportional to the rows each side saw), so windows merge and slide
without rescanning raw rows. Two exact category tables whose union has more than
``MAX_CATEGORIES`` values merge into a frequent items sketch.

``comparable_categories`` prepares a high-cardinality feature for the chi-square and
Jensen-Shannon tests: bins for the frequent items of both sides, the rest in ``<other>``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from ferry.errors import ReferenceMismatch
from ferry.evalstore import codec
from ferry.evalstore.features import FeatureLayout

MAX_CATEGORIES = 1000
"""Up to this many distinct values a categorical feature keeps exact counts."""
FREQUENT_LG_MAP = 11
"""log2 of the frequent items sketch's map: it tracks up to 1,536 items, with error
``epsilon = 3.5 / 2048`` of the rows per estimate."""
MAX_BINS = 50
"""High-cardinality features are compared over the top ``MAX_BINS`` items of each side."""
OTHER = "<other>"
REFERENCE_FILES = ("reference.parquet", "reference.csv")


def _kll() -> Any:
    import datasketches  # a default dependency, imported when first needed

    return datasketches.kll_doubles_sketch


def _frequent() -> Any:
    import datasketches

    return datasketches.frequent_strings_sketch


def frequent_sketch(counts: dict[str, int]) -> Any:
    """A frequent items sketch of exact counts (as if built from the rows)."""
    sketch = _frequent()(FREQUENT_LG_MAP)
    for key, count in counts.items():
        if key != OTHER and count > 0:
            sketch.update(key, int(count))
    return sketch


@dataclass
class FeatureProfile:
    """One feature's summary."""

    name: str
    kind: str
    count: int = 0
    """Rows seen, nulls included."""
    nulls: int = 0
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    kll: bytes | None = None
    categories: dict[str, int] = field(default_factory=dict)
    """Exact counts per category (when ``exact``); empty above ``MAX_CATEGORIES``."""
    sample: np.ndarray = field(default_factory=lambda: np.zeros(0))
    frequent: bytes | None = None
    """The frequent items sketch, for categorical features that are not ``exact``."""
    exact: bool = True
    """``categories`` holds every category's exact count."""

    @property
    def null_rate(self) -> float:
        return self.nulls / self.count if self.count else 0.0

    def sketch(self) -> Any:
        """The frequent items sketch (built from the exact counts when there is none)."""
        if self.frequent is not None:
            return _frequent().deserialize(self.frequent)
        return frequent_sketch(self.categories)

    def top_categories(self, k: int) -> dict[str, float]:
        """The ``k`` most frequent categories with their (estimated) counts."""
        if self.exact:
            ranked = sorted((c for c in self.categories.items() if c[0] != OTHER),
                            key=lambda c: -c[1])
            return dict(ranked[:k])
        import datasketches

        items = self.sketch().get_frequent_items(
            datasketches.frequent_items_error_type.NO_FALSE_NEGATIVES, 0)
        return {key: float(estimate) for key, estimate, _, _ in items[:k]}

    def quantiles(self, qs: list[float]) -> list[float]:
        if self.kll is None:
            return []
        return list(_kll().deserialize(self.kll).get_quantiles(qs))

    def summary(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"kind": self.kind, "count": self.count, "nulls": self.nulls,
                               "null_rate": round(self.null_rate, 6)}
        if self.kind == "numeric":
            doc.update(min=self.min, max=self.max, mean=self.mean, std=self.std)
        else:
            doc["categories"] = len(self.categories) if self.exact else None
            doc["categories_exact"] = self.exact
            if not self.exact:
                doc["frequent_items"] = {k: round(v) for k, v in self.top_categories(10).items()}
        return doc


@dataclass
class Profile:
    """A summary of a table: rows and features by name."""

    rows: int
    features: dict[str, FeatureProfile]
    joint: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    joint_names: list[str] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        tensors = {f"s:{n}": p.sample for n, p in self.features.items()}
        tensors["joint"] = self.joint
        meta = {"rows": self.rows, "joint_names": self.joint_names, "features": {
            n: {"kind": p.kind, "count": p.count, "nulls": p.nulls, "min": p.min, "max": p.max,
                "mean": p.mean, "std": p.std, "categories": p.categories,
                "kll": None if p.kll is None else p.kll.hex(), "exact": p.exact,
                "frequent": None if p.frequent is None else p.frequent.hex()}
            for n, p in self.features.items()}}
        head = orjson.dumps(meta)
        return len(head).to_bytes(4, "little") + head + codec.encode(tensors)

    @classmethod
    def from_bytes(cls, blob: bytes) -> Profile:
        size = int.from_bytes(blob[:4], "little")
        meta = orjson.loads(blob[4:4 + size])
        tensors = codec.decode(blob[4 + size:])
        features = {}
        for name, m in meta["features"].items():
            sample = tensors[f"s:{name}"]
            frequent = m.get("frequent")
            features[name] = FeatureProfile(
                name, m["kind"], m["count"], m["nulls"], m["min"], m["max"], m["mean"],
                m["std"], None if m["kll"] is None else bytes.fromhex(m["kll"]),
                m["categories"], sample, None if frequent is None else bytes.fromhex(frequent),
                # profiles stored before the sketch: top 1,000 exact counts and <other>
                m.get("exact", OTHER not in m["categories"]))
        return cls(meta["rows"], features, tensors["joint"], meta["joint_names"])

    def merge(self, other: Profile, seed: int = 0) -> Profile:
        """A profile of both tables together (see the module docstring)."""
        rng = np.random.default_rng(seed)
        merged: dict[str, FeatureProfile] = {}
        for name in self.features.keys() | other.features.keys():
            a, b = self.features.get(name), other.features.get(name)
            if a is None or b is None:
                merged[name] = a or b  # type: ignore[assignment]
                continue
            merged[name] = _merge_feature(a, b, rng)
        return Profile(self.rows + other.rows, merged, self.joint, self.joint_names)


def _merge_feature(a: FeatureProfile, b: FeatureProfile, rng: np.random.Generator
                   ) -> FeatureProfile:
    out = FeatureProfile(a.name, a.kind, a.count + b.count, a.nulls + b.nulls)
    if a.kind == "numeric":
        out.min = min(x for x in (a.min, b.min) if x is not None) if (a.min is not None or
                                                                       b.min is not None) else None
        out.max = max(x for x in (a.max, b.max) if x is not None) if (a.max is not None or
                                                                       b.max is not None) else None
        if a.kll and b.kll:
            sketch = _kll().deserialize(a.kll)
            sketch.merge(_kll().deserialize(b.kll))
            out.kll = sketch.serialize()
        else:
            out.kll = a.kll or b.kll
    elif a.exact and b.exact and len(a.categories.keys() | b.categories.keys()) <= \
            MAX_CATEGORIES:
        out.categories = dict(a.categories)
        for k, v in b.categories.items():
            out.categories[k] = out.categories.get(k, 0) + v
    else:
        sketch = a.sketch()
        sketch.merge(b.sketch())
        out.frequent, out.exact = sketch.serialize(), False
    size = max(len(a.sample), len(b.sample))
    na, nb = a.count - a.nulls, b.count - b.nulls
    if na + nb and size:
        take_a = min(len(a.sample), int(round(size * na / (na + nb))))
        take_b = min(len(b.sample), size - take_a)
        out.sample = np.concatenate([rng.choice(a.sample, take_a, replace=False),
                                     rng.choice(b.sample, take_b, replace=False)])
    return out


def _is_null(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f":
        return np.isnan(values)
    if values.dtype.kind == "O":
        return np.array([v is None or (isinstance(v, float) and v != v) for v in values],
                        dtype=bool)
    return np.zeros(len(values), dtype=bool)


def profile_feature(name: str, kind: str, values: np.ndarray, sample_size: int,
                    rng: np.random.Generator, sort: bool = False,
                    sketches: bool = True) -> FeatureProfile:
    """The profile of one column; without ``sketches`` numeric columns get no KLL sketch
    (a throwaway profile that only feeds an exact test on its sample)."""
    nulls = _is_null(values)
    present = values[~nulls] if nulls.any() else values
    p = FeatureProfile(name, kind, len(values), int(nulls.sum()))
    if kind == "numeric":
        x = np.asarray(present, dtype=np.float64)
        if len(x):
            p.min, p.max = float(x.min()), float(x.max())
            p.mean, p.std = float(x.mean()), float(x.std())
            if sketches:
                sketch = _kll()(200)
                sketch.update(x)
                p.kll = sketch.serialize()
        p.sample = x if len(x) <= sample_size else rng.choice(x, sample_size, replace=False)
        if sort:  # stored sorted: every drift test against it skips this sort
            p.sample = np.sort(p.sample)
    else:
        text = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in present],
                        dtype=object)
        if len(text):
            keys, counts = np.unique(text.astype(str), return_counts=True)
            table = dict(zip(keys.tolist(), counts.tolist(), strict=True))
            if len(keys) <= MAX_CATEGORIES:
                p.categories = table
            else:
                p.frequent, p.exact = frequent_sketch(table).serialize(), False
        p.sample = text if len(text) <= sample_size else rng.choice(text, sample_size,
                                                                    replace=False)
    return p


def build_profile(columns: dict[str, np.ndarray], kinds: dict[str, str],
                  sample_size: int = 50_000, joint_size: int = 1000, seed: int = 0,
                  sort: bool = False, sketches: bool = True) -> Profile:
    """The profile of a table given as columns of equal length; ``kinds`` names each
    column ``numeric`` or ``categorical`` (columns not in ``kinds`` are ignored). With
    ``joint_size`` 0 there is no joint sample; without ``sketches`` no KLL sketches."""
    rng = np.random.default_rng(seed)
    names = [n for n in kinds if n in columns]
    rows = len(columns[names[0]]) if names else 0
    features = {n: profile_feature(n, kinds[n], np.asarray(columns[n]), sample_size, rng,
                                    sort, sketches)
                for n in names}
    numeric = [n for n in names if kinds[n] == "numeric"]
    joint = np.zeros((0, len(numeric)))
    if numeric and rows and joint_size:
        # the complete rows, sampled, then stacked: only the sampled rows are copied (was
        # the whole table as float64 first: 0.25 s of a 1M x 20 report); same rows
        complete = np.ones(rows, dtype=bool)
        for n in numeric:
            column = np.asarray(columns[n])
            if column.dtype.kind not in "biu":
                complete &= ~np.isnan(column if column.dtype.kind == "f"
                                      else np.asarray(column, dtype=np.float64))
        keep = np.flatnonzero(complete)
        if len(keep) > joint_size:
            keep = keep[rng.choice(len(keep), joint_size, replace=False)]
        joint = np.column_stack([np.asarray(np.asarray(columns[n])[keep], dtype=np.float64)
                                 for n in numeric]).reshape(len(keep), len(numeric))
    return Profile(rows, features, joint, numeric)


def _sample_counts(sample: np.ndarray, keys: set[str]) -> dict[str, int]:
    values, counts = np.unique(np.asarray(sample).astype(str), return_counts=True)
    out = dict.fromkeys(sorted(keys), 0)
    out[OTHER] = 0
    for v, c in zip(values.tolist(), counts.tolist(), strict=True):
        out[v if v in keys else OTHER] += c
    return out


def comparable_categories(ref: FeatureProfile, cur: FeatureProfile
                          ) -> tuple[FeatureProfile, FeatureProfile, dict[str, Any]] | None:
    """For a categorical feature where either side is not ``exact`` (more than
    ``MAX_CATEGORIES`` distinct values): copies of both whose ``categories`` are counted
    over the same bins, and what was done (for the report). None when both are exact (the
    tests then run on the exact counts).

    Bins: the ``MAX_BINS`` most frequent items of each side (from the frequent items
    sketches, which see every row) and ``<other>``. Counts: each side's uniform sample put
    into those bins, so the chi-square p-value is that of a test on two uniform samples,
    as the numeric tests are.
    """
    if ref.kind != "categorical" or (ref.exact and cur.exact):
        return None
    keys = set(ref.top_categories(MAX_BINS)) | set(cur.top_categories(MAX_BINS))
    keys.discard(OTHER)
    a, b = _sample_counts(ref.sample, keys), _sample_counts(cur.sample, keys)
    if not a[OTHER] and not b[OTHER]:
        del a[OTHER], b[OTHER]
    note = {"counts": "samples", "bins": len(a), "reference_sample": int(len(ref.sample)),
            "window_sample": int(len(cur.sample))}
    return replace(ref, categories=a), replace(cur, categories=b), note


# -- reference data ----------------------------------------------------------------------
def read_table(data: bytes | Path, fmt: str | None = None) -> dict[str, np.ndarray]:
    """Columns of a Parquet or CSV table (``fmt`` ``parquet``/``csv``, else guessed)."""
    import pyarrow as pa  # a dependency of the default install
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    raw = data.read_bytes() if isinstance(data, Path) else data
    if fmt is None:
        fmt = "parquet" if raw[:4] == b"PAR1" else "csv"
    try:
        table = (pq.read_table(io.BytesIO(raw)) if fmt == "parquet"
                 else pacsv.read_csv(io.BytesIO(raw)))
    except (pa.ArrowInvalid, OSError) as exc:
        raise ReferenceMismatch(f"reference data is not a readable {fmt} table: {exc}") \
            from None
    out = {}
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_floating(column.type) or pa.types.is_integer(column.type):
            out[name] = column.to_numpy(zero_copy_only=False).astype(np.float64)
        else:
            out[name] = np.array(column.to_pylist(), dtype=object)
    return out


def reference_profile(columns: dict[str, np.ndarray], layout: FeatureLayout,
                      sample_size: int = 50_000) -> Profile:
    """The profile of reference data; every input feature must be a column.

    Raises ``ReferenceMismatch`` naming the missing columns and listing the expected ones.
    Output (prediction) columns are profiled when present; other columns are ignored.
    """
    expected = [f.name for f in layout.inputs]
    missing = [n for n in expected if n not in columns]
    if missing:
        raise ReferenceMismatch(
            f"reference data lacks column(s) {missing}; it has {sorted(columns)} and the "
            f"model's features are {expected} (name [-1, k] inputs' columns with the "
            f"manifest's 'features:' or as input[0]..input[k-1])")
    lengths = {len(v) for v in columns.values()}
    if not lengths or lengths == {0}:
        raise ReferenceMismatch("reference data has no rows")
    kinds = {f.name: f.kind for f in layout.features if f.name in columns}
    for f in layout.inputs:
        if f.kind == "numeric" and columns[f.name].dtype.kind not in "fiub":
            raise ReferenceMismatch(f"reference column {f.name!r} holds "
                                    f"{columns[f.name].dtype} values but the model's input "
                                    f"{f.tensor!r} is numeric")
    return build_profile(columns, kinds, sample_size, sort=True)


def find_reference_file(version_dir: Path) -> Path | None:
    for name in REFERENCE_FILES:
        if (version_dir / name).is_file():
            return version_dir / name
    return None
