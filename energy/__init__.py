"""Energy telemetry: what each node's devices draw, and which replica it goes to.

Devices apart from accounting, as ml-energy/zeus keeps ``device/`` apart from ``monitor/``:

* :mod:`energy.meters` — one cumulative energy counter per device source
  (:mod:`~energy.meters.base` the interface; :mod:`~energy.meters.zeus` NVIDIA GPUs via NVML and
  CPUs via Zeus's RAPL; :mod:`~energy.meters.rapl` powercap sysfs; :mod:`~energy.meters.tdp` the
  ``tdp-estimate`` fallback, with its TDP tables in :mod:`~energy.meters.tdp_tables`;
  :mod:`~energy.meters.select` picks the best meter per device class);
* :mod:`energy.accounting` — splitting a node's energy among the processes that used it
  (:mod:`~energy.accounting.attribution`) and the node's sampling history, rates and totals
  (:mod:`~energy.accounting.node`, plain Python);
* :mod:`energy.actor` — one detached Ray actor per node that samples its meters;
  :mod:`energy.replica` — what a Serve replica charges each request from that actor's rates;
* :mod:`energy.etrace2` — Chameleon's etrace2 report format and measuring a command;
  :mod:`energy.config` — the settings.

Readings cross the actor and replica boundaries as the models of :mod:`ipa_energy.energy`
(energy in J, power in W, each figure with its method; ``tdp-estimate`` is never a measurement).
"""
