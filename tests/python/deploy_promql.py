"""PromQL helpers for test_deploy.py: the metric names an expression reads, and the expression
with Grafana's variables replaced so promtool can parse it.

The name extraction is a small lexer, not a PromQL parser: it drops string literals, label
matchers {...}, ranges [...] and the label lists of by/without/on/ignoring/group_left/
group_right, then every remaining identifier that is not a function call, a keyword or part of a
number is a metric name. Expressions that select by __name__ are refused (they would hide a
name from this check).
"""
import re

KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
            "and", "or", "unless", "inf", "nan", "atan2"}
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
IDENT = re.compile(r"(?<![\w.$])[A-Za-z_:][\w:]*")
LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(.*?)\s*,\s*(\w+)\s*\)\s*$", re.S)

# Grafana variables -> values promtool accepts (regex matchers take ".*").
GRAFANA_SUBSTITUTIONS = [("$__rate_interval", "5m"), ("$__interval", "1m"),
                         ("$__range", "1h")]


def metric_names(expr):
    """The metric names `expr` (PromQL) reads, as a set."""
    if "__name__" in expr:
        raise ValueError(f"expression selects by __name__, which hides its metric: {expr}")
    s = STRING.sub('""', expr)
    s = re.sub(r"\{[^{}]*\}", " ", s)
    s = re.sub(r"\[[^\[\]]*\]", " ", s)
    s = GROUPING.sub(" ", s)
    names = set()
    for m in IDENT.finditer(s):
        word = m.group(0)
        rest = s[m.end():].lstrip()
        if rest.startswith("(") or word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


def variable_query_expr(query):
    """The PromQL inside a Grafana Prometheus variable query (label_values(EXPR, label))."""
    m = LABEL_VALUES.match(query)
    if not m:
        raise ValueError(f"unsupported variable query (want label_values(EXPR, label)): {query}")
    return m.group(1)


def for_promtool(expr):
    """`expr` with Grafana's variables replaced, for `promtool check rules`."""
    for var, value in GRAFANA_SUBSTITUTIONS:
        expr = expr.replace(var, value)
    expr = re.sub(r"\$\{?\w+\}?", ".*", expr)
    return expr


def allowed_names(exported):
    """Exported family names, their histogram series (_bucket/_sum/_count) and `up`."""
    allowed = {"up"}
    for n in exported:
        allowed.add(n)
        allowed.update(n + s for s in ("_bucket", "_sum", "_count"))
    return allowed
