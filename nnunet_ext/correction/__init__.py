"""Spatial label correction from trusted cases (Yao et al., ICLR 2023; METHODS.md §9).

- :mod:`~nnunet_ext.correction.boundary`: the pure numerics: signed distances in mm, the boundary offset of a
  prediction against a trusted reference and its pooling per class, the Gaussian logit shift and the per-class
  correction rule for sigmoid maps and softmax label maps (numpy/scipy only).

Submodules are not imported here, to keep ``import nnunet_ext.correction`` light.
"""
