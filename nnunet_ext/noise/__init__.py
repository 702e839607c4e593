"""Simulated label noise for nnU-Net raw datasets.

- :mod:`~nnunet_ext.noise.corruptions`: pure mask operations (ball dilation/erosion in mm, Markov boundary noise,
  dropped lesions, spurious blobs); randomness only through a passed ``np.random.Generator``.
- :mod:`~nnunet_ext.noise.levels`: noise levels (mild/moderate/severe, Dice ≈ 0.9/0.8/0.7) and the per-mask
  calibrated corruption of label maps and nested region datasets.
- :mod:`~nnunet_ext.noise.simulate`: raw dataset → noisy dataset with clean labels kept and a manifest.
"""
