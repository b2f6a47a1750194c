"""ipa-energy's ground floor: the one data model every other package imports.

* :mod:`ipa_energy.spec` — pipeline → stage → variant, profile, plan;
* :mod:`ipa_energy.diff` — what changes between two plans;
* :mod:`ipa_energy.energy` — energy methods, the rule for joining them, energy readings;
* :mod:`ipa_energy.records` — run records: trace, request, replica sample, planner decision;
* :mod:`ipa_energy.messages` — what crosses the serving app's boundaries;
* :mod:`ipa_energy.files` — atomic writes of records;
* :mod:`ipa_energy.errors` — the error hierarchy.

Nothing here imports another package of the project (docs/architecture.md).
"""

__version__ = "0.1.0"
#: the Ray namespace of the project's named actors (energy, arrivals, planner)
RAY_NAMESPACE = "ipa-energy"
__all__ = ["RAY_NAMESPACE", "__version__"]
