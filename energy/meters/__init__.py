"""Energy meters: one cumulative counter per device (cpu:N, dram:N, gpu:N), by method.

Measured: Zeus/NVML and Zeus/RAPL (:mod:`.zeus`), powercap sysfs (:mod:`.rapl`); estimated:
TDP x utilisation (:mod:`.tdp`, tables in :mod:`.tdp_tables`). :mod:`.select` picks per node.
"""
