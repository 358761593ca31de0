"""The extension points are contracts: a metric, a mechanism or a backend declared in one file is
picked up by planning, workers, the run summary, the report, the equivalence tests and the memory
predictor with no harness edit, and everything registered is checked against its contract here."""
from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from rich.console import Console

import mechanisms
from attnbench import metrics as metric_registry
from attnbench.case import Case
from attnbench.metrics import Metric, MetricContext
from attnbench.results_schema import CORE, schema
from attnbench.suite import validate_suite

HELPERS = Path(__file__).parent / "helpers"
if str(HELPERS) not in sys.path:
    sys.path.insert(0, str(HELPERS))

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def plugins():
    """Register the test-only metric and mechanism for this module only (other tests keep the built-ins)."""
    if "contract_plugins" in sys.modules:
        mod = importlib.reload(sys.modules["contract_plugins"])
    else:
        mod = importlib.import_module("contract_plugins")
    yield mod
    metric_registry.unregister("probe")
    mechanisms.unregister("test_chunked")


# ------------------------------------------------------------------------------------- metrics
@pytest.mark.parametrize("name", metric_registry.names())
def test_every_metric_meets_the_contract(name):
    m = metric_registry.get(name)
    assert isinstance(m, Metric) and m.name == name and m.doc
    names = [c.name for c in m.columns]
    assert names and len(names) == len(set(names)), "columns must be declared once each"
    assert not set(names) & set(CORE), "a metric may not redeclare an identifying or run column"
    assert all(c.kind in ("str", "int", "float", "bool", "json") for c in m.columns)
    shown = {c.column for c in m.summary} | {t.column for t in m.report_tables} | {c for c, _ in m.report_scaling}
    assert shown <= set(names), f"summary/report read undeclared columns {shown - set(names)}"
    if m.options is not None:
        assert m.make_options() is not None  # every option has a default
    if m.options_key:
        others = [o for o in metric_registry.all_metrics() if o.options_key == m.options_key]
        assert others == [m], "one options block per metric"
    assert importlib.import_module(m.module)
    assert int(m.steps(m.make_options())) >= 0 and float(m.seconds(m.make_options())) >= 0


TINY_OPTIONS = {"accuracy": {"steps": 2, "n_train": 32, "n_test": 16, "batch_size": 8, "eval_batch": 16, "depth": 1},
                "receptive_field": {"erf_seeds": 1, "erf_batch": 2, "depth": 1}, "time": {"min_run_time": 0.01},
                "flops": {"fvcore": False}}


@pytest.mark.parametrize("name", list(metric_registry.BUILTIN))
def test_builtin_metric_writes_only_declared_columns(name):
    m = metric_registry.get(name)
    case = Case("global", "global", (), 4, 4, 1, 16, 2, "float32", "cpu", "train",
                task="pairmatch" if name == "accuracy" else None)
    ctx = MetricContext(case=case, options=m.make_options(TINY_OPTIONS.get(name)), device=torch.device("cpu"),
                        dtype=torch.float32, env={"matmul_peak_gflops": {"float32": 100.0}})
    row = m.measure(ctx)
    assert row and set(row) <= {c.name for c in m.columns}, set(row) - {c.name for c in m.columns}


def test_metric_registry_refuses_what_is_not_a_metric():
    with pytest.raises(TypeError, match="takes a Metric declaration"):
        metric_registry.register({"name": "x"})
    flops = metric_registry.get("flops")
    with pytest.raises(ValueError, match="already registered"):
        metric_registry.register(Metric(name="flops", measure=lambda ctx: {}, doc="d", columns=flops.columns))
    with pytest.raises(ValueError, match="suite key 'timing' is already the options block of metric 'time'"):
        metric_registry.register(Metric(name="other", measure=lambda ctx: {}, doc="d", columns=flops.columns,
                                        options=flops.options, options_key="timing"))
    assert "other" not in metric_registry.names()


def _probe_suite() -> dict:
    return {"name": "contract", "device": "cpu", "metrics": ["params", "probe"], "probe": {"repeats": 2},
            "resolutions": [6], "dim": 16, "num_heads": 2,
            "mechanisms": ["global", {"name": "test_chunked", "backend": "chunked", "chunk": 8, "label": "chunked"}]}


def test_test_only_metric_is_planned_run_summarised_and_reported(plugins, tmp_path):
    from attnbench.report import write_report
    from attnbench.runner import dry_run, run_suite
    from attnbench.store import load_run
    from attnbench.summary import print_summary

    suite = validate_suite(_probe_suite())
    assert suite.options_for("probe").repeats == 2
    with pytest.raises(Exception, match="probe.repeat"):
        validate_suite({**_probe_suite(), "probe": {"repeat": 2}})

    console = Console(width=200, record=True, color_system=None)
    dry_run(suite, console=console)
    plan_text = console.export_text()
    assert "+ 2 steps at the matmul peak" in plan_text and "probe: 4 extra forwards in all" in plan_text

    run_dir = run_suite(suite, out=tmp_path, console=Console(file=open("/dev/null", "w")))
    run = load_run(run_dir)
    rows = run.results.set_index("label")
    assert list(rows["status"]) == ["ok", "ok"]
    for label, case in zip(["global", "chunked"], suite.expand(["cpu"])):
        ctx = MetricContext(case=case, options=plugins.ProbeOptions(repeats=2), device=torch.device("cpu"),
                            dtype=torch.float32)
        assert rows.loc[label, "probe_norm"] == pytest.approx(plugins.measure_probe(ctx)["probe_norm"], rel=1e-6)
        assert rows.loc[label, "probe_repeats"] == 2
    # chunked and native global attention compute the same function with the same weights
    assert rows.loc["chunked", "probe_norm"] == pytest.approx(rows.loc["global", "probe_norm"], rel=1e-5)
    assert str(run.results["probe_repeats"].dtype) == "Int64"  # typed by the metric's declared columns

    console = Console(width=200, record=True, color_system=None)
    print_summary(run.results, console)
    assert "out norm" in console.export_text()
    write_report(run_dir, plots=False)
    report = (run_dir / "report.md").read_text()
    assert "### Output norm (probe)" in report
    assert (run_dir / "tables" / "probe_norm__cpu_float32_forward.csv").exists()


# ---------------------------------------------------------------------------------- mechanisms
def test_register_refuses_a_class_that_breaks_the_mechanism_contract():
    class NotAMechanism(nn.Module):
        backends = ("native",)

        def forward(self, x):
            return x

    with pytest.raises(TypeError, match=r"missing pattern, flops, linear_macs, dense_form, unavailable_reason, configured_unavailable_reason, "
                                        r"deploy, layer_options, attention_memory_bytes\); subclass mechanisms.AttentionBase"):
        mechanisms.register("broken")(NotAMechanism)
    with pytest.raises(TypeError, match="is not an nn.Module class"):
        mechanisms.register("broken")(object)
    assert "broken" not in mechanisms.available()


def test_test_only_backend_is_picked_up_by_the_equivalence_tests(plugins):
    from test_mechanisms import configs, test_gradients_match_reference, test_matches_reference

    found = [p.values for p in configs() if p.values[0] == "test_chunked"]
    assert ("test_chunked", {}, "chunked") in found
    test_matches_reference("test_chunked", {}, "chunked")
    test_gradients_match_reference("test_chunked", {}, "chunked")


def test_test_only_backend_is_costed_by_the_memory_predictor(plugins):
    from attnbench.predict import predict

    def case(backend: str, mode: str = "forward") -> Case:
        return Case("test_chunked", backend, (("backend", backend), ("chunk", 8)), 16, 16, 2, 32, 4, "float32", "cpu",
                    mode)

    N, elt = 256, 4
    native, chunked = predict(case("native")), predict(case("chunked"))
    assert chunked.memory_bytes - native.memory_bytes == 2 * 4 * 8 * N * elt * 2
    assert predict(case("chunked", "train")).memory_bytes - predict(case("native", "train")).memory_bytes == 2 * 4 * N * N * elt * 2


def test_unavailable_backends_come_from_the_mechanism():
    from attnbench.runner import unsupported_reason

    xf = Case("global", "g", (("backend", "xformers"),), 8, 8, 1, 16, 2, "float32", "cpu", "forward")
    assert "xformers has no cpu kernels" in unsupported_reason(xf)
    assert unsupported_reason(Case("global", "g", (), 8, 8, 1, 16, 2, "float32", "cpu", "forward")) is None


def test_swin_alternation_comes_from_its_contract():
    swin = mechanisms.get("swin")
    assert [swin.layer_options({"window_size": 4, "shift": 2}, i)["shift"] for i in range(3)] == [0, 2, 0]
    assert mechanisms.get("pale").layer_options({"pale_size": 3}, 1) == {"pale_size": 3}


def test_harness_tests_no_mechanism_or_backend_by_name():
    pattern = re.compile(r'"xformers"|DENSE_BACKENDS|hasattr\(.*linear_macs')
    hits = [f"{p}:{i}" for p in (REPO / "attnbench").rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []


def test_results_round_trip_in_their_declared_types(tmp_path):
    """Written by the store and read back: text stays text, ints stay ints with an empty cell among
    them, booleans are booleans whether the column had empty cells or not."""
    from attnbench import store
    from attnbench.case import Case

    # Whole rows (identity columns and a matching case_key): read_results keeps only rows it can trust.
    cases = [Case(mechanism="swin", label=label, options=(), height=14, width=14, batch_size=1, dim=32, num_heads=2,
                  dtype="float32", device="cpu", mode="forward") for label in ("7", "swin")]
    ident = [{"case_key": c.key(), **c.id_row()} for c in cases]
    rows = [{**ident[0], "status": "ok", "macs": 10**12, "macs_mismatch": True, "fid_pass": False, "latency_ms": 1.5},
            {**ident[1], "status": "oom", "macs": None, "macs_mismatch": None, "fid_pass": True, "latency_ms": None}]
    store.write_results(tmp_path, rows)
    out = store.read_results(tmp_path)
    assert list(out["label"]) == ["7", "swin"]
    assert str(out["macs"].dtype) == "Int64" and out["macs"][0] == 10**12 and out["macs"].isna()[1]
    assert out["macs_mismatch"][0] is True or out["macs_mismatch"][0] == True  # noqa: E712 (pandas' nullable bool)
    assert out["macs_mismatch"].isna()[1]
    assert list(out["fid_pass"]) == [False, True]
    assert out["latency_ms"][0] == 1.5 and str(out["latency_ms"].dtype) == "float64"


def test_plugin_metric_from_an_entry_point_is_listed_and_a_broken_one_is_named(monkeypatch, plugins):
    """The `attnbench.metrics` entry-point group: a Metric object registers; a plugin that fails to import
    is named in the unknown-metric error instead of crashing the registry."""
    from importlib import metadata

    class EP:
        def __init__(self, name, obj=None, exc=None):
            self.name, self._obj, self._exc = name, obj, exc

        def load(self):
            if self._exc:
                raise self._exc
            return self._obj

    probe = metric_registry.get("probe")
    metric_registry.unregister("probe")
    eps = [EP("probe", probe), EP("broken_metric", exc=ImportError("no module named 'gone'"))]
    monkeypatch.setattr(metadata, "entry_points", lambda group=None: eps if group == "attnbench.metrics" else [])
    monkeypatch.setattr(metric_registry, "_entry_points_loaded", False)
    monkeypatch.setattr(metric_registry, "_entry_point_errors", {})
    assert "probe" in metric_registry.names()
    with pytest.raises(ValueError, match=r"unknown metric 'broken_metric' \(its plugin failed to load: ImportError: "
                                         r"no module named 'gone'\)"):
        metric_registry.get("broken_metric")
