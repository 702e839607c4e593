"""Benchmarks through nnU-Net's Python API: run matrix (``spec``), runner, report, speed, label-update baseline.

Modules:

- :mod:`~nnunet_ext.benchmark.spec`: what to run (cells of dataset x configuration x trainer x fold x seed);
- :mod:`~nnunet_ext.benchmark.runner`: orchestration (every cell in this process, one cell by index, report only;
  resumable);
- :mod:`~nnunet_ext.benchmark.train`: one model through nnU-Net's trainer;
- :mod:`~nnunet_ext.benchmark.predict`: nnU-Net's predictor on a folder of test images;
- :mod:`~nnunet_ext.benchmark.provenance`: versions, hardware, seeding, scoped environment;
- :mod:`~nnunet_ext.benchmark.slurm`: SLURM job-array scripts, one task per cell;
- :mod:`~nnunet_ext.benchmark.report`: ``results.csv``, ``report.md``, paired tests, box plots;
- :mod:`~nnunet_ext.benchmark.speed`: per-iteration timing on shared batches;
- :mod:`~nnunet_ext.benchmark.label_update`: COPLE Table IV baseline;
- :mod:`~nnunet_ext.benchmark.datasets`: planning/preprocessing helpers.
"""
