"""The metric names a PromQL expression selects, by a real PromQL parser (promql-parser)."""

from __future__ import annotations

import re

import promql_parser

# Grafana's built-in range variables, as Grafana substitutes them before Prometheus sees the
# query; any other `$` outside a label value is left in and fails to parse
_RANGES = re.compile(r"\$(__rate_interval|__interval|__range)\b|\$\{(__rate_interval|"
                     r"__interval|__range)\}")


def selectors(expr: str) -> list[promql_parser.VectorSelector]:
    """Every vector selector in ``expr`` (raises ValueError when it does not parse)."""
    ast = promql_parser.parse(_RANGES.sub("5m", expr))
    found: list[promql_parser.VectorSelector] = []
    promql_parser.walk(ast, lambda node: found.append(node)
                       if isinstance(node, promql_parser.VectorSelector) else None)
    return found
