"""`--repeat K`: interleaved run order, per-folder idempotency, mean and min–max, paired ratios, report."""

import io
import json
import shutil

import pytest
from rich.console import Console

from experiments.repeats import (
    NUMERIC_FIELDS, REPEAT_HEADERS, RunSlot, pending_runs, ratio_note, repeat_rows, repeat_stats, run_dir_name,
    run_label, run_order, stat,
)
from experiments.report import build_report, collect, group_repeat_stats, has_repeats, run_labels
from experiments.schema import ExperimentMeta, RunMeta, RunSummary

# ------------------------------------------------------------------------------------------
# Order and layout
# ------------------------------------------------------------------------------------------


def test_run_order_interleaves_repeats():
    order = run_order(["ipa", "ipa-energy", "rim"], 3)
    assert [(s.policy, s.repeat) for s in order] == [
        ("ipa", 1), ("ipa-energy", 1), ("rim", 1),
        ("ipa", 2), ("ipa-energy", 2), ("rim", 2),
        ("ipa", 3), ("ipa-energy", 3), ("rim", 3),
    ]
    assert [s.folder for s in order[:6]] == ["ipa", "ipa-energy", "rim", "ipa.r2", "ipa-energy.r2", "rim.r2"]


def test_single_run_layout_is_unchanged():
    assert run_order(["ipa", "ipa-energy", "ipa"], 1) == [RunSlot("ipa", None, "ipa"),
                                                         RunSlot("ipa-energy", None, "ipa-energy")]
    assert run_dir_name("ipa", None) == run_dir_name("ipa", 1) == "ipa" and run_dir_name("ipa", 2) == "ipa.r2"
    assert run_label("ipa", None) == "ipa" and run_label("ipa", 2) == "ipa r2"
    with pytest.raises(ValueError):
        run_order(["ipa"], 0)


def _run_folder(synthetic, src: str, dest, **meta_update):
    """A copy of a synthetic run folder with run.json fields replaced."""
    shutil.copytree(synthetic / src, dest, dirs_exist_ok=True)
    meta = json.loads((dest / "run.json").read_text())
    meta.update(meta_update)
    (dest / "run.json").write_text(json.dumps(meta))
    return dest


def test_pending_runs_skip_complete_folders_unless_forced(synthetic):
    # synthetic holds complete ipa and ipa-energy (repeat 1); add a complete ipa.r2, a failed ipa-energy.r2
    _run_folder(synthetic, "ipa", synthetic / "ipa.r2", repeat=2)
    _run_folder(synthetic, "ipa-energy", synthetic / "ipa-energy.r2", repeat=2, status="failed", error="x")
    (synthetic / "ipa.r3").mkdir()  # an empty folder: a run that never wrote run.json
    order = run_order(["ipa", "ipa-energy"], 3)
    pending = pending_runs(synthetic, order)
    assert [s.folder for s in pending] == ["ipa-energy.r2", "ipa.r3", "ipa-energy.r3"]
    assert pending_runs(synthetic, order, force=True) == order
    assert pending_runs(synthetic, run_order(["ipa", "ipa-energy"], 1)) == []  # K = 1 keeps the same runs


def test_run_experiment_keeps_complete_repeats_without_starting_ray(synthetic, monkeypatch):
    from experiments import runner

    def no_session(*args, **kwargs):
        raise AssertionError("nothing was pending: no Ray session may start")

    monkeypatch.setattr(runner, "Session", no_session)
    _run_folder(synthetic, "ipa", synthetic / "ipa.r2", repeat=2)
    _run_folder(synthetic, "ipa-energy", synthetic / "ipa-energy.r2", repeat=2)
    exp = ExperimentMeta.model_validate_json((synthetic / "experiment.json").read_text())
    cfg = runner.ExperimentConfig(name="synthetic", pipeline=exp.pipeline, policies=["ipa", "ipa-energy"], repeat=2,
                                  trace=exp.trace, tier=exp.tier, out=synthetic.parent)
    out = io.StringIO()
    assert runner.run_experiment(cfg, Console(file=out, width=200)) == synthetic
    kept = out.getvalue()
    assert "ipa r1: complete in" in kept and "ipa-energy r2: complete in" in kept and kept.count("kept") == 4


def test_old_files_without_repeat_still_load(synthetic):
    assert RunMeta.model_validate_json((synthetic / "ipa" / "run.json").read_text()).repeat is None
    assert ExperimentMeta.model_validate_json((synthetic / "experiment.json").read_text()).repeat == 1


# ------------------------------------------------------------------------------------------
# Aggregation (RunSummary objects built by hand)
# ------------------------------------------------------------------------------------------


def _summary(policy: str, **figures) -> RunSummary:
    base = dict(experiment="e", pipeline="video", policy=policy, trace="constant", rate_factor=1.0, duration_s=20.0,
                requests=10, failed=0, shed=0, throughput_rps=0.5, p50_ms=100.0, p99_ms=200.0, sla_ms=500.0,
                slo_attainment=1.0, accuracy=0.5, cost_units=1.0, j_per_request=1.0,
                j_per_request_method="tdp-estimate", energy_j=100.0, system_j_per_request=10.0, mean_power_w=5.0,
                energy_method="tdp-estimate", carbon_g=0.01, plan_changes=0, weights="random")
    return RunSummary(**(base | figures))


def test_stat_ignores_none():
    assert stat([]) is None and stat([None, None]) is None
    s = stat([1.0, None, 4.0, 2.5])
    assert (s.mean, s.min, s.max, s.n) == (2.5, 1.0, 4.0, 3)


def test_mean_min_max_per_policy():
    summaries = [
        _summary("ipa", p99_ms=300.0, slo_attainment=0.8, shed=1, failed=0, plan_changes=2, accuracy=None),
        _summary("ipa", p99_ms=600.0, slo_attainment=0.6, shed=3, failed=2, plan_changes=3, accuracy=0.7),
        _summary("ipa", p99_ms=450.0, slo_attainment=0.7, shed=2, failed=1, plan_changes=2, accuracy=0.8,
                 requests=20),
    ]
    (st,) = repeat_stats(summaries)
    assert st.policy == "ipa" and st.n == 3 and st.repeats == [1, 2, 3] and st.vs_reference == {}
    p99 = st.fields["p99_ms"]
    assert (p99.mean, p99.min, p99.max, p99.n) == (450.0, 300.0, 600.0, 3)
    assert st.fields["accuracy"].mean == pytest.approx(0.75) and st.fields["accuracy"].n == 2
    assert st.fields["plan_changes"].mean == pytest.approx(7 / 3)
    shed = st.fields["shed_share"]  # 1/10, 3/10, 2/20
    assert shed.mean == pytest.approx(0.5 / 3) and shed.min == pytest.approx(0.1) and shed.max == pytest.approx(0.3)
    assert st.fields["failed_share"].max == pytest.approx(0.2)
    assert st.fields["loadgen_energy_j"] is None  # no run had it
    assert {"j_per_request", "system_j_per_request", "p99_ms", "slo_attainment", "shed", "failed",
            "plan_changes", "energy_j", "carbon_g"} <= set(NUMERIC_FIELDS)
    assert "weights" not in NUMERIC_FIELDS and "policy" not in NUMERIC_FIELDS


def test_ratios_pair_repeat_r_with_repeat_r():
    ipa = [_summary("ipa", j_per_request=j, system_j_per_request=s) for j, s in ((1.0, 10.0), (2.0, None), (4.0, 40.0))]
    ours = [_summary("ipa-energy", j_per_request=j, system_j_per_request=s)
            for j, s in ((2.0, 20.0), (0.9, 9.0), (1.2, 12.0), (5.0, 5.0))]
    # ipa-energy given in the order r3, r1, r2, r4: pairing by position would be wrong
    stats = repeat_stats(ipa + ours, [1, 2, 3, 3, 1, 2, 4])
    assert [s.policy for s in stats] == ["ipa", "ipa-energy"]
    mine = stats[1]
    assert mine.repeats == [1, 2, 3, 4]
    dyn = mine.vs_reference["j_per_request"]  # r1 0.9/1, r2 1.2/2, r3 2.0/4; r4 has no ipa
    assert dyn.n == 3 and dyn.min == pytest.approx(0.5) and dyn.max == pytest.approx(0.9)
    assert dyn.mean == pytest.approx((0.9 + 0.6 + 0.5) / 3)
    system = mine.vs_reference["system_j_per_request"]  # r1 9/10, r2 unpaired (ipa None), r3 20/40
    assert system.n == 2 and system.mean == pytest.approx(0.7) and system.min == pytest.approx(0.5)
    # None repeat numbers (single runs) count as repeat 1
    assert repeat_stats([ipa[0], ours[1]], [None, None])[1].vs_reference["j_per_request"].mean == pytest.approx(0.9)


def test_repeat_table_cells():
    ipa = [_summary("ipa", j_per_request=j, slo_attainment=a) for j, a in ((1.0, 0.6), (2.0, 0.8))]
    ours = [_summary("ipa-energy", j_per_request=j, system_j_per_request=None, weights="checkpoint")
            for j in (0.5, 1.5)]
    stats = repeat_stats(ipa + ours)
    rows = dict((r[0], r) for r in repeat_rows(stats))
    col = dict(zip(REPEAT_HEADERS, rows["ipa*"]))
    assert col["runs"] == "2"
    assert col["J/request"] == "1.50 (1.00–2.00) [tdp-estimate]"
    assert col["SLO attainment"] == "70.0% (60.0–80.0%)"
    assert col["J/request ÷ ipa"] == "—" and col["p99 ms"] == "200 (200–200)"
    mine = dict(zip(REPEAT_HEADERS, rows["ipa-energy"]))  # checkpoint weights: no *
    assert mine["J/request ÷ ipa"] == "0.625 (0.500–0.750)"  # 0.5/1, 1.5/2
    assert mine["system J/request"] == "n/a" and mine["system J/request ÷ ipa"] == "n/a"
    note = ratio_note(stats)
    assert note.startswith("**ipa-energy / ipa J/request = 0.625 (0.500–0.750)**: mean (min–max) over 2 paired repeats")
    assert "System J/request" not in note
    partial = repeat_stats([_summary("ipa", p99_ms=None), _summary("ipa", p99_ms=300.0)])
    assert dict(zip(REPEAT_HEADERS, repeat_rows(partial)[0]))["p99 ms"] == "300 (300–300) [1 of 2]"
    assert ratio_note(repeat_stats(ipa)) is None


# ------------------------------------------------------------------------------------------
# Report on repeat folders (copies of the synthetic runs with other energy figures)
# ------------------------------------------------------------------------------------------


def _scale_energy(run_dir, factor: float) -> None:
    rows = [json.loads(line) for line in (run_dir / "requests.jsonl").read_text().splitlines() if line.strip()]
    for row in rows:
        if row.get("energy_j") is not None:
            row["energy_j"] *= factor
    (run_dir / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def repeated(synthetic):
    """synthetic plus repeat 2 of each policy: ipa's J/request ×2 (1.375 J), ipa-energy's ×1.5 (0.6 J)."""
    _scale_energy(_run_folder(synthetic, "ipa", synthetic / "ipa.r2", repeat=2), 2.0)
    _scale_energy(_run_folder(synthetic, "ipa-energy", synthetic / "ipa-energy.r2", repeat=2), 1.5)
    return synthetic


def test_collect_finds_repeat_folders(repeated):
    (group,) = collect([repeated])
    assert has_repeats(group)
    assert [(r.meta.policy, r.meta.repeat) for r in group.runs] == [("ipa", None), ("ipa", 2), ("ipa-energy", None),
                                                                    ("ipa-energy", 2)]
    assert run_labels(group) == ["ipa r1", "ipa r2", "ipa-energy r1", "ipa-energy r2"]
    ipa, mine = group_repeat_stats(group)
    j = ipa.fields["j_per_request"]
    assert (j.mean, j.min, j.max) == pytest.approx((1.03125, 0.6875, 1.375))
    ratio = mine.vs_reference["j_per_request"]  # r1 0.4 / 0.6875, r2 0.6 / 1.375
    assert (ratio.min, ratio.max, ratio.n) == pytest.approx((0.6 / 1.375, 0.4 / 0.6875, 2))
    system = mine.vs_reference["system_j_per_request"]  # node energy unchanged: the same ratio twice
    assert system.min == pytest.approx(system.max) and system.n == 2


def test_single_run_group_has_no_repeats(synthetic):
    (group,) = collect([synthetic])
    assert not has_repeats(group) and run_labels(group) == ["ipa", "ipa-energy"]


def test_report_shows_repeats_table_then_runs(repeated, tmp_path):
    text = build_report([repeated], tmp_path / "r").read_text()
    assert "| policy | runs | J/request | system J/request | J/request ÷ ipa | system J/request ÷ ipa |" in text
    assert "| ipa* | 2 | 1.03 (0.688–1.38) [tdp-estimate] |" in text
    assert text.index("| policy | runs |") < text.index("| policy | J/request |")  # repeats first
    assert "| ipa r2* | 1.38 (tdp-estimate) |" in text and "| ipa-energy r1* | 0.400 (tdp-estimate) |" in text
    assert "**ipa-energy / ipa J/request = 0.509 (0.436–0.582)**: mean (min–max) over 2 paired repeats" in text
    assert "ipa-energy / ipa J/request = 0.582 (" not in text  # not the single-run note
    assert "(first run of each policy)" in text
    # notes name each policy once, not once per run
    assert "**Energy method `tdp-estimate`** (ipa, ipa-energy)" in text and "Weights: random (ipa, ipa-energy)." in text
    html = build_report([repeated], tmp_path / "h", fmt="html").read_text()
    assert "<th>J/request ÷ ipa</th>" in html and "<td>ipa-energy r2*</td>" in html


def test_report_lists_missing_and_failed_repeats(repeated, tmp_path):
    meta = json.loads((repeated / "experiment.json").read_text())
    (repeated / "experiment.json").write_text(json.dumps(meta | {"repeat": 3}))
    run = json.loads((repeated / "ipa-energy.r2" / "run.json").read_text())
    (repeated / "ipa-energy.r2" / "run.json").write_text(json.dumps(run | {"status": "failed", "error": "Locust exited 1"}))
    (group,) = collect([repeated])
    assert group.skipped == {"ipa-energy r2": "status failed (Locust exited 1)", "ipa r3": "no run folder",
                             "ipa-energy r3": "no run folder"}
    text = build_report([repeated], tmp_path / "r").read_text()
    assert "Not in the table: ipa-energy r2 (status failed (Locust exited 1))." in text


def test_print_report_prints_the_repeats_table(repeated, tmp_path, capsys):
    from cli.experiment import print_report

    console_out = io.StringIO()
    assert print_report([repeated], tmp_path / "r", "md", Console(file=console_out, width=300)) == 0
    printed = capsys.readouterr().out
    assert "| policy | runs | J/request |" in printed and "| ipa-energy r2* |" in printed
    assert "0.509 (0.436–0.582)" in console_out.getvalue()
