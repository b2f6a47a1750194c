"""The TDP tables of the tdp-estimate method: the vendored CPU table, name normalisation, lookups."""

import csv

import pytest

from energy.meters.tdp_tables import (
    CPU_TABLE,
    cpu_tdp_w,
    gpu_tdp_w,
    host_cpu_model,
    match_cpu,
    match_gpu,
    normalise_cpu_name,
)


# ---- the vendored CPU table ---------------------------------------------------------------


def test_cpu_table_is_the_vendored_codecarbon_file():
    with CPU_TABLE.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert set(rows[0]) == {"Name", "TDP"}
    assert len(rows) == 4918  # codecarbon 3.3.2; see energy/data/README.md
    names = {r["Name"] for r in rows}
    assert {"Intel Xeon Platinum 8375C", "AMD EPYC 7R13", "AMD EPYC 9654"} <= names
    assert "AMD EPYC" not in names


# ---- normalisation -----------------------------------------------------------------------


@pytest.mark.parametrize("raw, norm", [
    ("Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", "intel xeon platinum 8375c"),
    ("AMD EPYC 7R13 Processor", "amd epyc 7r13"),
    ("AMD EPYC 9654 96-Core Processor", "amd epyc 9654"),
    ("Intel(R) Xeon(R) CPU E5-2686 v4 @ 2.30GHz", "intel xeon e5-2686 v4"),
    ("13th Gen Intel(R) Core(TM) i5-1335U", "intel core i5-1335u"),
    ("AMD Ryzen 7 PRO 4750U with Radeon Graphics", "amd ryzen 7 pro 4750u"),
    ("  Intel®  Xeon™   Gold 6248  ", "intel xeon gold 6248"),
    ("AMD EPYC", "amd epyc"),
])
def test_normalise_cpu_name(raw, norm):
    assert normalise_cpu_name(raw) == norm


# ---- CPU lookups -------------------------------------------------------------------------


@pytest.mark.parametrize("model, table_name, tdp", [
    ("Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", "Intel Xeon Platinum 8375C", 300.0),
    ("AMD EPYC 7R13 Processor", "AMD EPYC 7R13", 225.0),
    ("AMD EPYC 9654 96-Core Processor", "AMD EPYC 9654", 360.0),
    ("Intel(R) Xeon(R) CPU E5-2686 v4 @ 2.30GHz", "Intel Xeon E5-2686 v4", 145.0),
    ("Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz", "Intel Xeon Gold 6248", 150.0),
    ("AMD EPYC 7763 64-Core Processor", "AMD EPYC 7763", 280.0),
])
def test_cpu_lookup_exact(model, table_name, tdp):
    hit = match_cpu(model)
    assert hit is not None and hit.exact
    assert (hit.name, hit.tdp_w) == (table_name, tdp)
    assert cpu_tdp_w(model) == tdp


def test_cpu_lookup_token_fallback_tolerates_extra_or_missing_words():
    for model in ("Genuine Intel(R) Xeon(R) CPU E5-2686 v4", "Xeon E5-2686 v4"):
        hit = match_cpu(model)
        assert hit is not None and not hit.exact
        assert (hit.name, hit.tdp_w) == ("Intel Xeon E5-2686 v4", 145.0)


@pytest.mark.parametrize("model", [
    "AMD EPYC",  # what this project's development machine reports: no model number
    "Intel(R) Xeon(R) CPU @ 2.20GHz",  # cloud VMs that hide the SKU
    "Intel Xeon Processor (Icelake)",
    "Common KVM processor",
    "QEMU Virtual CPU version 2.5+",
    "AMD EPYC 7B13",  # not in the table: must not borrow 7R13's or 7713's TDP
    "AMD EPYC 7763P",  # 7763 exists, 7763P does not: a different part
    "Intel Xeon Platinum 6248",  # 6248 exists as Gold only: different family
    "7763",  # a bare number names no family
    "AMD Phenom II X4 945",  # table has 945 (95W) and 945 (125W): ambiguous
    "",
])
def test_cpu_lookup_returns_none_when_unsure(model):
    assert match_cpu(model) is None
    assert cpu_tdp_w(model) is None


def test_host_cpu_model_reads_proc_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n\n"
                    "processor\t: 1\nmodel name\t: AMD EPYC\n")
    assert host_cpu_model(info) == "AMD EPYC"
    assert isinstance(host_cpu_model(tmp_path / "missing"), str)  # platform.processor() fallback


# ---- GPU lookups -------------------------------------------------------------------------


@pytest.mark.parametrize("nvml_name, model, tdp", [
    ("NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM", 700.0),
    ("NVIDIA H100 PCIe", "NVIDIA H100 PCIe", 350.0),
    ("NVIDIA H100 NVL", "NVIDIA H100 NVL", 400.0),
    ("NVIDIA H200", "NVIDIA H200 SXM", 700.0),
    ("NVIDIA H200 NVL", "NVIDIA H200 NVL", 600.0),
    ("NVIDIA A100-SXM4-40GB", "NVIDIA A100 SXM4 40GB", 400.0),
    ("NVIDIA A100-SXM4-80GB", "NVIDIA A100 SXM4 80GB", 400.0),
    ("NVIDIA A100-PCIE-40GB", "NVIDIA A100 PCIe 40GB", 250.0),
    ("NVIDIA A100 80GB PCIe", "NVIDIA A100 PCIe 80GB", 300.0),
    ("NVIDIA L4", "NVIDIA L4", 72.0),
    ("NVIDIA L40S", "NVIDIA L40S", 350.0),
    ("Tesla T4", "NVIDIA T4", 70.0),
    ("Tesla V100-SXM2-16GB", "NVIDIA V100 SXM2", 300.0),
    ("Tesla V100-PCIE-32GB", "NVIDIA V100 PCIe", 250.0),
])
def test_gpu_lookup(nvml_name, model, tdp):
    hit = match_gpu(nvml_name)
    assert hit is not None and (hit.name, hit.tdp_w) == (model, tdp)
    assert hit.idle_w is None  # no published idle figures in the table
    assert gpu_tdp_w(nvml_name) == tdp


@pytest.mark.parametrize("nvml_name", [
    "NVIDIA A10G",  # no citable TDP found: not in the table
    "NVIDIA A10", "NVIDIA L40", "Tesla V100S-PCIE-32GB", "NVIDIA GH200 480GB", "", "NVIDIA",
])
def test_gpu_lookup_returns_none_for_unknown_parts(nvml_name):
    assert gpu_tdp_w(nvml_name) is None
