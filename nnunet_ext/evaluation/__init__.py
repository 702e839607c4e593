"""Evaluation in mm against clean references (METHODS.md §7).

- :mod:`~nnunet_ext.evaluation.metrics`: Dice, HD95, ASSD, RVE, sensitivity, specificity (pure numpy/scipy).
- :mod:`~nnunet_ext.evaluation.lesions`: lesion-size groups by reference volume in cc (3-D) or area in mm² (2-D).
- :mod:`~nnunet_ext.evaluation.stats`: paired t-test and Wilcoxon signed-rank test by case id.
- :mod:`~nnunet_ext.evaluation.evaluate`: folder evaluation writing ``metrics.csv`` and nnU-Net-style ``summary.json``.
- :mod:`~nnunet_ext.evaluation.io`: label-map reading/writing (SimpleITK) and label definitions (``LabelManager``).

Submodules are not imported here, to keep ``import nnunet_ext.evaluation`` light.
"""
