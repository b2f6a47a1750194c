"""Energy telemetry: meters (Zeus/NVML, RAPL, etrace2, TDP estimate), node actor, attribution.

Reserved for the energy issue; until it lands nothing here measures anything.
"""
