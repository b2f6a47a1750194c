"""The report on the synthetic experiment: table, notes, figures, HTML, partial runs."""

import json

from experiments.report import build_report, collect, headline_table

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PNGS = ("synthetic-timeseries.png", "synthetic-latency-cdf.png", "synthetic-energy-accuracy.png")


def _assert_pngs(out):
    for name in PNGS:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name


def test_markdown_report(synthetic, tmp_path):
    out = tmp_path / "report"
    path = build_report([synthetic], out)
    text = path.read_text()
    assert path == out / "report.md"
    assert "| policy | J/request | system J/request | mean W | total J | g CO2e | accuracy |" in text
    assert "| ipa* | 0.688 (tdp-estimate) | 27.1 (tdp-estimate) | 12.2 (tdp-estimate) | 244 (tdp-estimate) | 0.0407 (tdp-estimate) | 0.5144 |" in text
    assert "| 250 | 968 | 70.0% | 0 / 10 | 1 / 10 | 2 |" in text  # shed, failed
    assert "ipa-energy / ipa J/request = 0.582" in text  # 0.4 / 0.6875
    assert "System J/request (all node energy, idle included, less the load generator's share): **0.590**" in text
    assert "(16.0 J vs 27.1 J, tdp-estimate)" in text  # every energy figure names its method
    assert "not a measurement" in text and "Weights: random" in text
    for name in PNGS:
        assert f"]({name})" in text
    _assert_pngs(out)
    assert (synthetic / "ipa" / "summary.json").is_file() and (synthetic / "ipa-energy" / "summary.json").is_file()


def test_html_report_from_run_folders(synthetic, tmp_path):
    out = tmp_path / "html"
    text = build_report([synthetic / "ipa", synthetic / "ipa-energy"], out, fmt="html").read_text()
    assert text.startswith("<!doctype html>") and "<table>" in text and '<img src="synthetic-timeseries.png"' in text
    assert "<strong>not a measurement</strong>" in text
    _assert_pngs(out)


def test_headline_table_text(synthetic):
    (group,) = collect([synthetic])
    lines = headline_table(group.summaries).splitlines()
    assert len(lines) == 4 and lines[2].startswith("| ipa* |") and lines[3].startswith("| ipa-energy* |")


def test_partial_run_is_listed_not_summarized(synthetic, tmp_path):
    meta = json.loads((synthetic / "ipa-energy" / "run.json").read_text())
    meta.update(status="failed", error="Locust exited 1")
    (synthetic / "ipa-energy" / "run.json").write_text(json.dumps(meta))
    text = build_report(synthetic, tmp_path / "r").read_text()
    assert "Not in the table: ipa-energy (status failed (Locust exited 1))." in text
    assert "| ipa-energy" not in text and "ipa-energy / ipa" not in text
    assert not (synthetic / "ipa-energy" / "summary.json").exists()
