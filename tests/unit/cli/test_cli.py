"""The `ipa-energy` command line (parts that need no Ray)."""

import sys

import pytest

from energy.etrace2 import parse_etrace2
from cli.main import main


def test_energy_run_prints_etrace2_and_keeps_the_exit_code(capsys):
    code = main(["energy", "run", "--estimate", "--interval", "0.1", "--", sys.executable, "-c", "import sys; sys.exit(3)"])
    assert code == 3
    m = parse_etrace2(capsys.readouterr().out)
    assert m.method == "tdp-estimate" and not m.measured and m.total_j >= 0


def test_energy_import_reads_etrace2_files(tmp_path, capsys):
    f = tmp_path / "run.etrace2"
    f.write_text("# ETRACE2_VERSION=0.1\n# ELAPSED=10.0\n# ENERGY=0.0\n# ENERGY_SOCKET0=300.0\n# ENERGY_DRAM0=20.0\n")
    assert main(["energy", "import", str(f)]) == 0
    err = capsys.readouterr().err
    assert "etrace2" in err and "300.000" in err


def test_catalog_lists_sources(capsys):
    assert main(["catalog"]) == 0
    assert "resnet18-mini" in capsys.readouterr().out


def test_bad_arguments_are_reported_not_raised(capsys, tmp_path):
    (tmp_path / "p.json").write_text("{not json")
    assert main(["apply-plan", str(tmp_path / "p.json")]) == 2
    assert "cannot read plans" in capsys.readouterr().err


def test_plan_prints_a_plan_per_policy_as_json(capsys):
    import json

    assert main(["plan", "--pipeline", "video", "--load", "5", "--policy", "ipa,ipa-energy", "--json",
                 "--hardware", "cpu-amd-epyc-2c"]) == 0
    out = capsys.readouterr()
    plans = json.loads(out.out)
    assert "measured with tdp-estimate" in out.err
    assert [p["policy"] for p in plans] == ["ipa", "ipa-energy"]
    assert plans[1]["predicted_power_w"] <= plans[0]["predicted_power_w"]
    assert set(plans[0]["stages"]) == {"detector", "classifier"}


def test_plan_without_profiles_for_the_hardware_is_a_clear_error(capsys):
    assert main(["plan", "--pipeline", "video", "--load", "5", "--hardware", "gpu-imaginary"]) == 2
    assert "no profiles" in capsys.readouterr().err


def test_experiment_repeat_reaches_the_runner(monkeypatch, tmp_path):
    from experiments import runner

    seen = []
    monkeypatch.setattr(runner, "run_experiment", lambda cfg, console: seen.append(cfg) or tmp_path)
    argv = ["experiment", "--trace", "constant:1", "--seconds", "5", "--out", str(tmp_path), "--policies", "ipa,ipa-energy"]
    assert main(argv + ["--repeat", "3"]) == 0
    assert main(argv) == 0
    assert [cfg.repeat for cfg in seen] == [3, 1]


def test_experiment_repeat_below_one_is_refused(monkeypatch, capsys, tmp_path):
    from experiments import runner

    monkeypatch.setattr(runner, "run_experiment", lambda cfg, console: pytest.fail("must not run"))
    assert main(["experiment", "--trace", "constant:1", "--seconds", "5", "--out", str(tmp_path), "--repeat", "0"]) == 2
    assert "repeat" in capsys.readouterr().err


def test_experiment_objective_weights_reach_the_runner_and_bad_ones_are_refused(monkeypatch, capsys, tmp_path):
    from experiments import runner
    from planner.terms import Weights

    seen = []
    monkeypatch.setattr(runner, "run_experiment", lambda cfg, console: seen.append(cfg) or tmp_path)
    argv = ["experiment", "--trace", "constant:1", "--seconds", "5", "--out", str(tmp_path)]
    assert main(argv + ["--gamma", "1", "--accuracy-budget", "0.01"]) == 0
    assert main(argv) == 0
    assert main(argv + ["--gamma-relative", "0.2", "--accuracy-budget", "1"]) == 0
    # a weight per watt asked for decides alone; the elasticity is the default
    assert seen[0].weights == Weights(gamma=1.0, gamma_relative=None, accuracy_budget=0.01)
    assert seen[1].weights == Weights() and seen[1].weights.gamma_relative == 0.1
    assert seen[2].weights == Weights(gamma_relative=0.2, accuracy_budget=1.0)
    assert main(argv + ["--accuracy-budget", "2"]) == 2  # a fraction of accuracy: at most 1
    assert "accuracy_budget" in capsys.readouterr().err
