"""ipa-energy: IPA-style inference pipeline adaptation on Ray Serve, with energy telemetry.

The shared data model lives in :mod:`ipa_energy.spec`; the serving application in
:mod:`serve_app`; model variants in :mod:`workloads`; planning in :mod:`planner`.
"""

__version__ = "0.1.0"
