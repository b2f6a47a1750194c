"""docs/grafana/ipa-energy.json: a well-formed Grafana dashboard whose queries use only series the code exports.

No Ray and no Grafana: the JSON is read as data, and the metric definitions are found by parsing
the project's Python sources (everything under the repository root but .venv, tests and hidden
folders). Ray exports a custom metric `name` as `ray_<name>` (gauge), `ray_<name>_total` (Counter)
and `ray_<name>_bucket/_sum/_count` (Histogram); see docs/observability.md.
"""

from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docs" / "grafana" / "ipa-energy.json"
SKIP_DIRS = {".venv", "venv", "tests", "node_modules", "build", "dist", "__pycache__"}

METRIC = re.compile(r"\bray_ipa_energy_[a-z0-9_]+")
OUR_NAME = re.compile(r"ipa_energy_[a-z0-9_]+")
METHODS = ("zeus-nvml", "zeus-rapl", "rapl-sysfs", "etrace2", "tdp-estimate")
ENERGY_SERIES = re.compile(r"ray_ipa_energy_(node_power_watts|node_energy_joules|attributed_joules|request_joules)")
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range", "__range_s", "__interval_ms"}
SUFFIX_KIND = {"_total": "Counter", "_bucket": "Histogram", "_sum": "Histogram", "_count": "Histogram"}


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels(dashboard: dict) -> list[dict]:
    """Every panel, the ones nested in collapsed rows too."""
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def _query_panels(dashboard: dict) -> list[dict]:
    return [p for p in _panels(dashboard) if p.get("type") != "row"]


def _uses_datasource_variable(ds) -> bool:
    if isinstance(ds, str):
        return ds in ("${datasource}", "$datasource")
    return isinstance(ds, dict) and ds.get("type") == "prometheus" and ds.get("uid") in ("${datasource}", "$datasource")


def _python_sources() -> list[Path]:
    files = []
    for folder, dirs, names in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(".") and not d.endswith(".egg-info")]
        files.extend(Path(folder) / n for n in names if n.endswith(".py"))
    return files


def _metric_definitions() -> tuple[set[str], dict[str, str]]:
    """(every string literal that is a whole ipa_energy_* name, {name: Counter|Gauge|Histogram} where the
    defining call is visible: metrics.Counter("name", ...) or NAME = "..." then Counter(NAME, ...))."""
    names: set[str] = set()
    kinds: dict[str, str] = {}
    for path in _python_sources():
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except (SyntaxError, UnicodeDecodeError):  # a file someone is halfway through editing
            continue
        constants: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and OUR_NAME.fullmatch(node.value):
                names.add(node.value)
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                for t in node.targets:
                    if isinstance(t, ast.Name):
                        constants[t.id] = node.value.value
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            kind = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
            if kind not in ("Counter", "Gauge", "Histogram"):
                continue
            arg = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "name"), None)
            value = arg.value if isinstance(arg, ast.Constant) else constants.get(arg.id) if isinstance(arg, ast.Name) else None
            if isinstance(value, str) and OUR_NAME.fullmatch(value):
                kinds[value] = kind
    return names, kinds


def _expected(series: str) -> tuple[str, str]:
    """Prometheus series → (metric name in the code, the kind that exports it under that series name)."""
    name = series.removeprefix("ray_")
    for suffix, kind in SUFFIX_KIND.items():
        if name.endswith(suffix):
            return name.removesuffix(suffix), kind
    return name, "Gauge"


# -- structure ---------------------------------------------------------------------------


def test_is_a_dashboard_with_a_datasource_variable():
    d = _dashboard()
    assert d["schemaVersion"] >= 36
    assert d["title"] and d["uid"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    ds = variables.get("datasource")
    assert ds is not None and ds["type"] == "datasource" and ds["query"] == "prometheus"
    for name in ("pipeline", "variant"):
        assert name in variables, f"no ${name} template variable"
    for v in variables.values():
        if v["type"] == "query":
            assert _uses_datasource_variable(v["datasource"]), f"variable {v['name']} does not use ${{datasource}}"


def test_panels_have_unique_ids_and_do_not_overlap():
    d = _dashboard()
    panels = _panels(d)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(i for i in ids if ids.count(i) > 1)}"
    cells: dict[tuple[int, int], str] = {}
    for p in d["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, f"panel {p['title']!r} is wider than the grid"
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panels {cells[(x, y)]!r} and {p['title']!r} overlap"
                cells[(x, y)] = p["title"]


def test_every_target_has_an_expr_and_uses_the_datasource_variable():
    d = _dashboard()
    variables = {v["name"] for v in d["templating"]["list"]} | BUILTIN_VARIABLES
    for p in _query_panels(d):
        assert p.get("title") and p.get("description"), f"panel {p.get('id')} needs a title and a description"
        assert _uses_datasource_variable(p.get("datasource")), f"panel {p['title']!r}: datasource is not ${{datasource}}"
        assert p.get("targets"), f"panel {p['title']!r} has no targets"
        ref_ids = [t.get("refId") for t in p["targets"]]
        assert len(set(ref_ids)) == len(ref_ids), f"panel {p['title']!r}: duplicate refIds {ref_ids}"
        for t in p["targets"]:
            expr = t.get("expr", "")
            assert expr.strip(), f"panel {p['title']!r}: target {t.get('refId')} has no expr"
            if "datasource" in t:
                assert _uses_datasource_variable(t["datasource"]), f"panel {p['title']!r}: target datasource"
            for opening, closing in ("()", "{}", "[]"):
                assert expr.count(opening) == expr.count(closing), f"unbalanced {opening}{closing} in {expr}"
            used = set(re.findall(r"\$\{?(\w+)", expr))
            assert used <= variables, f"panel {p['title']!r} uses undefined variables {used - variables}"


def test_energy_panels_name_their_unit_and_the_methods():
    for p in _query_panels(_dashboard()):
        if not any(ENERGY_SERIES.search(t["expr"]) for t in p["targets"]):
            continue
        text = f"{p['title']} {p['description']}"
        assert re.search(r"\b(W|J)\b|watts|joules", text), f"energy panel {p['title']!r} does not name its unit"
        missing = [m for m in METHODS if m not in p["description"]]
        assert not missing, f"energy panel {p['title']!r}: description does not name methods {missing}"
        assert "measured" in p["description"] and "estimated" in p["description"]


# -- the series exist in the code ---------------------------------------------------------


def test_definitions_are_found_in_the_sources():
    # the scanner itself: the series the app exported when this test was written are found, with their kind
    names, kinds = _metric_definitions()
    assert {"ipa_energy_node_power_watts", "ipa_energy_requests"} <= names
    assert kinds.get("ipa_energy_node_power_watts") == "Gauge"
    assert kinds.get("ipa_energy_requests") == "Counter"


def test_every_metric_in_the_dashboard_is_defined_in_the_code():
    """Fails, listing them, while the dashboard uses series the code does not export yet
    (ipa_energy_plan_changes, ipa_energy_slo_requests, ipa_energy_pipeline_latency_ms are
    proposed in docs/observability.md)."""
    names, kinds = _metric_definitions()
    used: dict[str, set[str]] = {}
    for p in _query_panels(_dashboard()):
        for t in p["targets"]:
            for series in METRIC.findall(t["expr"]):
                used.setdefault(series, set()).add(p["title"])
    assert used, "the dashboard queries no ray_ipa_energy_* series"

    problems = []
    for series, titles in sorted(used.items()):
        name, kind = _expected(series)
        where = f"(panels: {', '.join(sorted(titles))})"
        if name not in names:
            problems.append(f"{series}: no {kind} named {name!r} in the Python sources {where}")
        elif name in kinds and kinds[name] != kind:
            exported = {"Counter": f"ray_{name}_total", "Gauge": f"ray_{name}",
                        "Histogram": f"ray_{name}_bucket/_sum/_count"}[kinds[name]]
            problems.append(f"{series}: {name!r} is a {kinds[name]}, exported as {exported} {where}")
    if problems:
        pytest.fail("dashboard series the code does not export:\n  " + "\n  ".join(problems))
