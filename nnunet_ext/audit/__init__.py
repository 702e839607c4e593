"""Label audit: rank training cases by how much their labels disagree with nnU-Net's out-of-fold predictions.

- :mod:`~nnunet_ext.audit.measures`: the per-case numbers (pure numpy/scipy): Dice, HD95, ASSD, signed boundary
  offset of the label against the prediction, volume ratio, per class/region and aggregated per case.
- :mod:`~nnunet_ext.audit.scores`: disagreement scores and ranks.
- :mod:`~nnunet_ext.audit.loss`: the trainer's own loss evaluated on a saved prediction.
- :mod:`~nnunet_ext.audit.folds`: nnU-Net's cross-validation output (which folds, which validation predictions), with
  refusals that name the command producing what is missing.
- :mod:`~nnunet_ext.audit.audit`: the audit of a trained model folder (``audit.csv``, ``audit.md``, ``audit.json``,
  montage of the worst cases).
- :mod:`~nnunet_ext.audit.report`: the CSV, Markdown and PNG writers.
- :mod:`~nnunet_ext.audit.prune`: a copy of a raw dataset without the flagged cases (BraTS "patients removal").

Submodules are not imported here, to keep ``import nnunet_ext.audit`` light.
"""
