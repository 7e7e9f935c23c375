"""Metric names in PromQL expressions and in Prometheus' text exposition, for the tests that check
that the dashboard and the alert rules name only series a real hub or feed exposes.

Not a PromQL parser: enough of the grammar to find the series names of the expressions in docker/
(selectors with label matchers, ranges, functions, aggregations with `by`/`without`, binary
operators with `on`/`ignoring`, Grafana's `$variables`). tests/test_grafana.py checks it on
examples, so that a name it misses does not pass unchecked.
"""

from __future__ import annotations

import re

# words of PromQL that are not series names when they are not followed by "("
KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
    }
)
_STRING = re.compile(r'"(?:\\.|[^"\\])*"' + r"|'(?:\\.|[^'\\])*'")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The series names an expression selects: `rate(x_total{a="b"}[5m])` -> {"x_total"}."""
    expr = _STRING.sub('""', expr)
    expr = _MATCHERS.sub("", expr)
    expr = _RANGE.sub("", expr)
    expr = _GROUPING.sub("", expr)
    names = set()
    for match in _IDENTIFIER.finditer(expr):
        name = match.group()
        if name.lower() in KEYWORDS or expr[match.end() :].lstrip().startswith("("):
            continue  # a keyword, or a function or aggregation
        names.add(name)
    return names


def exposed_names(exposition: str) -> set[str]:
    """The series names a scrape of this text can give, from its `# TYPE` lines (so that a labelled
    family with no series yet counts) and its samples: a counter `x` gives `x_total`, a histogram
    `x` gives `x_bucket`, `x_sum`, `x_count`. (`x_created` only where a sample shows it: the hub
    and feed turn those series off.)"""
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("", "_sum", "_count"),
        "gauge": ("",),
        "untyped": ("",),
    }
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", exposition, re.M):
        base = name.removesuffix("_total") if kind == "counter" else name
        names |= {base + suffix for suffix in suffixes.get(kind, ("",))}
    names |= set(re.findall(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{| )", exposition, re.M))
    return names


_SELECTOR = re.compile(r"(?<![\w.$])([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^{}]*)\}")
_MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!=|!~|=)\s*"((?:\\.|[^"\\])*)"')
_GROUPING_LABELS = re.compile(r"\b(?:by|without)\s*\(([^()]*)\)")
_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})? \S+", re.M)


def selectors(expr: str) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """(name, [(label, operator, value)]) of each selector with label matchers."""
    return [(m.group(1), _MATCHER.findall(m.group(2))) for m in _SELECTOR.finditer(expr)]


def grouping_labels(expr: str) -> set[str]:
    """The labels of every `by (...)` and `without (...)` of an expression."""
    return {label.strip() for group in _GROUPING_LABELS.findall(expr) for label in group.split(",") if label.strip()}


def exposed_series(exposition: str) -> dict[str, list[dict[str, str]]]:
    """Series name -> the label sets of its samples."""
    series: dict[str, list[dict[str, str]]] = {}
    for name, labels in _SAMPLE.findall(exposition):
        series.setdefault(name, []).append(dict(_MATCHER_VALUE.findall(labels)))
    return series


_MATCHER_VALUE = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:\\.|[^"\\])*)"')
