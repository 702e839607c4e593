"""Simulated label noise for nnU-Net raw datasets.

- :mod:`~nnunet_ext.noise.corruptions`: pure mask operations (ball dilation/erosion in mm, Markov boundary noise,
  Yao et al.'s Markov expand/shrink noise, random dilation/erosion, dropped lesions, spurious blobs); randomness
  only through a passed ``np.random.Generator``.
- :mod:`~nnunet_ext.noise.levels`: noise levels (mild/moderate/severe, Dice ≈ 0.9/0.8/0.7) and the per-mask
  calibrated corruption of label maps and nested region datasets; the published, uncalibrated noise of Yao et al.
  (j1/j2: outward/inward Markov drift, j3: random dilation or erosion); size change and boundary shift per mask.
- :mod:`~nnunet_ext.noise.simulate`: raw dataset → noisy dataset with clean labels kept and a manifest.
"""
