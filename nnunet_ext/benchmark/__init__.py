"""Benchmarks through nnU-Net's Python API: run matrix (``spec``), runner, report, speed, label-update baseline.

Modules: :mod:`~nnunet_ext.benchmark.spec` (what to run), :mod:`~nnunet_ext.benchmark.runner` (train, predict,
evaluate; resumable), :mod:`~nnunet_ext.benchmark.report` (``results.csv``, ``report.md``, paired tests, box plots),
:mod:`~nnunet_ext.benchmark.speed` (per-iteration timing on shared batches), :mod:`~nnunet_ext.benchmark.label_update`
(COPLE Table IV baseline) and :mod:`~nnunet_ext.benchmark.datasets` (planning/preprocessing helpers).
"""
