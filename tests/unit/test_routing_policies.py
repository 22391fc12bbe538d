"""The routing deciders (``ferry.routing.policies``), by enumeration: parsing, validation
against live versions, plans over live versions, routing of draws, sticky points."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys

import pytest

from ferry.errors import InvalidPolicy
from ferry.routing.policies import (DEFAULT, Pin, Split, describe, from_json, plan, point,
                                    route, shares, validate)


@pytest.mark.parametrize(("doc", "expected"), [
    ({"kind": "pin"}, Pin(None)),
    ({"kind": "pin", "version": None}, Pin(None)),
    ({"kind": "pin", "version": "latest"}, Pin(None)),
    ({"kind": "pin", "version": 3}, Pin(3)),
    ({"kind": "pin", "version": "3"}, Pin(3)),
    ({"kind": "split", "weights": {"3": 10, "2": 90}}, Split(((2, 90.0), (3, 10.0)))),
    ({"kind": "split", "weights": {"2": 1.5}, "sticky_header": " X-User-Id "},
     Split(((2, 1.5),), "x-user-id")),
])
def test_from_json(doc, expected):
    assert from_json(doc) == expected
    assert from_json(expected.to_json()) == expected  # the stored form reads back


@pytest.mark.parametrize(("doc", "says"), [
    ([1, 2], "must be a JSON object"),
    ({"kind": "canary"}, "not known; kinds: pin, split"),
    ({"kind": "pin", "version": -1}, "version must be a version number"),
    ({"kind": "pin", "version": True}, "version must be a version number"),
    ({"kind": "pin", "version": "two"}, "version must be a version number"),
    ({"kind": "pin", "version": 2, "weights": {}}, "unknown field(s) ['weights']"),
    ({"kind": "split"}, 'split needs "weights"'),
    ({"kind": "split", "weights": {}}, 'split needs "weights"'),
    ({"kind": "split", "weights": {"x": 1}}, "weights key 'x'"),
    ({"kind": "split", "weights": {"2": "90"}}, "weights['2'] must be a number"),
    ({"kind": "split", "weights": {"2": True}}, "weights['2'] must be a number"),
    ({"kind": "split", "weights": {"2": 1}, "sticky_header": ""}, "sticky_header"),
])
def test_from_json_rejects(doc, says):
    with pytest.raises(InvalidPolicy) as err:
        from_json(doc)
    assert says in err.value.message


LIVE_SETS = [(), (1,), (2,), (1, 2), (1, 2, 3)]


@pytest.mark.parametrize("live", LIVE_SETS)
@pytest.mark.parametrize("policy", [Pin(None), Pin(1), Pin(2), Pin(3),
                                    Split(((1, 90.0), (2, 10.0))), Split(((2, 1.0), (3, 1.0)))])
def test_validate_names_live_versions_only(policy, live):
    named = (() if policy.version is None else (policy.version,)) if isinstance(policy, Pin) \
        else policy.versions()
    if all(v in live for v in named):
        valid, _ = validate(policy, live)
        assert type(valid) is type(policy)
    else:
        with pytest.raises(InvalidPolicy) as err:
            validate(policy, live)
        assert f"live versions: {list(live) or 'none'}" in err.value.message


@pytest.mark.parametrize("weights", [(-1.0, 1.0), (0.0, 0.0), (math.nan, 1.0),
                                     (math.inf, 1.0), (-0.5, -0.5)])
def test_validate_rejects_bad_weights(weights):
    with pytest.raises(InvalidPolicy) as err:
        validate(Split(((1, weights[0]), (2, weights[1]))), [1, 2])
    assert "weights" in err.value.message


@pytest.mark.parametrize(("weights", "normal", "noted"), [
    ((90.0, 10.0), (0.9, 0.1), True),
    ((0.9, 0.1), (0.9, 0.1), False),
    ((1.0, 1.0), (0.5, 0.5), True),
    ((0.0, 5.0), (0.0, 1.0), True),
])
def test_validate_normalises_and_says_so(weights, normal, noted):
    valid, notes = validate(Split(((1, weights[0]), (2, weights[1]))), [1, 2])
    assert [w for _, w in valid.weights] == pytest.approx(normal)
    assert bool(notes) is noted


WEIGHTS = [((1, 0.5), (2, 0.5)), ((1, 0.9), (2, 0.1)), ((1, 0.2), (2, 0.3), (3, 0.5)),
           ((1, 0.0), (2, 1.0)), ((3, 1.0),)]


@pytest.mark.parametrize("weights", WEIGHTS)
@pytest.mark.parametrize("live", [None, *LIVE_SETS])
def test_plan_gives_gone_shares_to_the_live_in_proportion(weights, live):
    bounds, versions = plan(weights, live)
    kept = [(v, w) for v, w in weights if w > 0 and (live is None or v in live)]
    assert versions == tuple(v for v, _ in kept)
    if not kept:
        assert bounds == ()
        assert route((bounds, versions), 0.3) is None
        return
    total = sum(w for _, w in kept)
    widths = [b - a for a, b in zip((0.0, *bounds), bounds, strict=False)]
    assert widths == pytest.approx([w / total for _, w in kept])
    assert bounds[-1] == 1.0


@pytest.mark.parametrize("weights", WEIGHTS)
def test_route_covers_every_draw_by_share(weights):
    p = plan(weights)
    n = 10_000
    counts: dict[int, int] = {}
    for i in range(n):  # an even grid of draws over [0, 1)
        v = route(p, i / n)
        counts[v] = counts.get(v, 0) + 1
    for v, w in weights:
        assert counts.get(v, 0) == pytest.approx(w * n, abs=1)


@pytest.mark.parametrize("weights", WEIGHTS[:3])
@pytest.mark.parametrize("gone", [1, 2])
def test_keys_on_live_versions_keep_them_when_another_leaves(weights, gone):
    """The split reroutes only draws that land on a gone version (routing/split.py)."""
    full = plan(weights)
    live = [v for v, _ in weights if v != gone]
    degraded = plan(weights, live)
    for i in range(1000):
        draw = i / 1000
        first = route(full, draw)
        final = first if first != gone else route(degraded, draw)
        if first != gone:
            assert final == first
        else:
            assert final in live or not live


def test_point_is_stable_uniform_and_process_independent():
    keys = [f"user-{i}" for i in range(20_000)]
    values = [point(k) for k in keys]
    assert all(0.0 <= v < 1.0 for v in values)
    assert values == [point(k) for k in keys]
    # spread: each tenth of [0, 1) holds about a tenth of the keys
    tenths = [sum(1 for v in values if i / 10 <= v < (i + 1) / 10) for i in range(10)]
    assert all(1800 < t < 2200 for t in tenths), tenths
    # another interpreter (another hash seed) gives the same points
    out = subprocess.run([sys.executable, "-c", "from ferry.routing.policies import point; "
                          "print(repr(point('user-1')), repr(point('ü')))"],
                         capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "12345", **__import__("os").environ})
    assert out.stdout.split() == [repr(point("user-1")), repr(point("ü"))]


@pytest.mark.parametrize(("policy", "live", "latest", "expected"), [
    (DEFAULT, [1, 2], 2, {2: 1.0}),
    (DEFAULT, [], None, {}),
    (Pin(1), [1, 2], 2, {1: 1.0}),
    (Pin(3), [1, 2], 2, {2: 1.0}),  # a pinned version that is gone: the latest answers
    (Split(((1, 0.9), (2, 0.1))), [1, 2], 2, {1: 0.9, 2: 0.1}),
    (Split(((1, 0.5), (2, 0.25), (3, 0.25))), [1, 2], 2, {1: 2 / 3, 2: 1 / 3}),
    (Split(((3, 1.0),)), [1, 2], 2, {2: 1.0}),
])
def test_shares(policy, live, latest, expected):
    assert shares(policy, live, latest) == pytest.approx(expected)


def test_describe():
    assert describe(DEFAULT) == "pin latest"
    assert describe(Pin(3)) == "pin 3"
    assert describe(Split(((2, 0.9), (3, 0.1)), "x-user-id")) == \
        "split 2=90% 3=10% sticky by x-user-id"


def test_every_combination_of_two_weights_validates_or_names_the_reason():
    grid = [-1.0, 0.0, 0.5, 1.0, 90.0]
    for a, b in itertools.product(grid, grid):
        policy = Split(((1, a), (2, b)))
        if a < 0 or b < 0 or a + b == 0:
            with pytest.raises(InvalidPolicy):
                validate(policy, [1, 2])
        else:
            valid, _ = validate(policy, [1, 2])
            assert sum(w for _, w in valid.weights) == pytest.approx(1.0)
