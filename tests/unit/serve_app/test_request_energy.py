"""serve_app.request_energy: one ingress replica's energy book, and the sum over replicas."""

import pytest

from ipa_energy.energy import BatchEnergy, EnergyPart
from serve_app.request_energy import RequestEnergyBook, pipeline_energy, sum_dumps


def batch(j: float, method: str = "tdp-estimate") -> BatchEnergy:
    return BatchEnergy(j=j, parts={"cpu": EnergyPart(j=j, method=method)}, method=method)


def test_a_request_is_charged_its_stages_and_counted_once_rates_are_known():
    book = RequestEnergyBook(carbon_g=lambda j: j * 0.1)
    assert book.charge("p", {"a": batch(0.2), "b": None}) is None and not book  # a stage without rates yet
    e = book.charge("p", {"a": batch(0.2), "b": batch(0.3, "rapl-sysfs")})
    assert e.j == pytest.approx(0.5) and e.method == "rapl-sysfs+tdp-estimate" and e.carbon_g == pytest.approx(0.05)
    assert set(e.stages) == {"a", "b"}
    sent = book.dump()
    book.charge("p", {"a": batch(0.2), "b": batch(0.3, "rapl-sysfs")})
    assert sent == {"p": {"requests": 1, "energy_j": pytest.approx(0.5), "methods": ["rapl-sysfs+tdp-estimate"]}}
    assert book.dump()["p"]["requests"] == 2  # running totals; what was sent stays as it was


def test_replicas_dumps_add_up_to_pipeline_rows():
    total = sum_dumps([{"p": {"requests": 3, "energy_j": 1.5, "methods": ["tdp-estimate"]}},
                       {"p": {"requests": 1, "energy_j": 0.5, "methods": ["rapl-sysfs"]},
                        "q": {"requests": 0, "energy_j": 0.0, "methods": []}}])
    rows = pipeline_energy(total, carbon_g=lambda j: 2 * j)
    assert set(rows) == {"p"}  # a pipeline that answered nothing has no J/request
    assert rows["p"].requests == 4 and rows["p"].j_per_request == pytest.approx(0.5)
    assert rows["p"].methods == ["rapl-sysfs", "tdp-estimate"] and rows["p"].carbon_g == pytest.approx(4.0)
