"""Per-request charges made inside a replica, from the node's rates."""

import asyncio
import pickle
from types import SimpleNamespace

import pytest

from energy.replica import ReplicaEnergy
from ipa_energy.energy import BASIS, BatchEnergy, EnergyRates
from ipa_energy.errors import PayloadError


def replica(gpu_devices=(), share=0.0, rates=None) -> ReplicaEnergy:
    r = ReplicaEnergy.__new__(ReplicaEnergy)  # no Ray: set what __init__ would
    r.gpu_share, r.gpu_devices, r.actor, r.consumer, r.rates = share, list(gpu_devices), None, "c", rates
    return r


# as the node actor sends them: a dumped EnergyRates, validated by the replica on receipt
RATES = EnergyRates.model_validate({"time_s": 100.0, "j_per_cpu_s": 10.0, "gpu_j_per_busy_s": {"gpu:0": 200.0},
                                    "methods": {"cpu:0": "tdp-estimate", "gpu:0": "zeus-nvml"}})


def test_cpu_and_gpu_parts_each_with_its_method():
    e = replica(["gpu:0"], 0.5, RATES).charge(cpu_s=0.2, wall_s=0.5, requests=2, now=101.0)
    assert isinstance(e, BatchEnergy)
    assert e.parts["cpu"].model_dump() == {"j": pytest.approx(1.0), "method": "tdp-estimate"}
    assert e.parts["gpu:0"].model_dump() == {"j": pytest.approx(25.0), "method": "zeus-nvml"}
    assert e.j == pytest.approx(26.0) and e.method == "tdp-estimate+zeus-nvml" and "dynamic" in e.basis
    assert e.basis == BASIS
    assert BatchEnergy.model_validate(e.model_dump()) == e  # what crosses the replica boundary


def test_no_rates_or_stale_rates_charge_nothing():
    assert replica().charge(0.1, 0.1, 1) is None
    assert replica(rates=RATES).charge(0.1, 0.1, 1, now=100.0 + 31) is None
    assert replica(rates=RATES).charge(0.1, 0.1, 0, now=100.0) is None


def test_cpu_only_replica_has_no_gpu_part():
    e = replica(rates=RATES).charge(cpu_s=1.0, wall_s=1.0, requests=4, now=100.0)
    assert set(e.parts) == {"cpu"} and e.method == "tdp-estimate"


class Remote:
    """An actor method as the replica calls it: ``.remote()`` gives something to await."""

    def __init__(self, value):
        self.value = value

    def remote(self):
        async def reply():
            return self.value

        return reply()


def test_refresh_validates_the_actors_dumped_rates():
    r = replica()
    r.actor = SimpleNamespace(rates=Remote(RATES.model_dump()))
    asyncio.run(r._refresh())
    assert r.rates == RATES
    r.actor = SimpleNamespace(rates=Remote({"time_s": 101.0}))  # not an EnergyRates: the last good rates stay
    asyncio.run(r._refresh())
    assert r.rates == RATES


class Died:
    """An actor method of an actor that died."""

    def remote(self):
        from ray.exceptions import ActorDiedError

        async def reply():
            raise ActorDiedError()

        return reply()


def test_a_dead_energy_actor_is_replaced_and_the_replica_registers_with_the_next(monkeypatch):
    r = replica()
    r.labels = {"deployment": "a.s.0", "variant": "v2"}  # relabelled since it first registered
    r.actor = SimpleNamespace(rates=Died())
    registered = []
    successor = SimpleNamespace(rates=Remote(RATES.model_dump()),
                                register=SimpleNamespace(remote=lambda *a: registered.append(a)))
    monkeypatch.setattr("energy.actor.node_actor", lambda config=None: successor)
    r._config = None
    asyncio.run(r._refresh())
    assert r.actor is successor and registered
    consumer, _, labels, gpus, share = registered[0]
    assert (consumer, labels, gpus, share) == ("c", r.labels, [], 0.0)
    asyncio.run(r._refresh())  # and its rates are read from the successor
    assert r.rates == RATES


def test_payload_error_survives_pickling():
    """Ray pickles a replica's exception back to the ingress: status and field must survive."""
    e = pickle.loads(pickle.dumps(PayloadError(422, "image: cannot be decoded", "image")))
    assert (e.status_code, e.message, e.field, str(e)) == (422, "image: cannot be decoded", "image", "image: cannot be decoded")
