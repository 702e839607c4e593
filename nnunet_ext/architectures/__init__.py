"""Plugin networks selected through the plans' ``architecture`` block (never through a trainer override).

- ``nnunet_ext.architectures.coplenet.COPLENet``: 2-D COPLE-Net (Wang et al., IEEE TMI 2020), official-code layout,
  ablation flags of the paper's Table II, optional deep-supervision heads.
- ``nnunet_ext.architectures.dilated_unet.DilatedUNet3D``: dilated 3-D U-Net of the BraTS 2020 solution (Henry et al.,
  arXiv:2011.01045), ``EquiUnet`` / ``Att_EquiUnet`` with four deep-supervision heads.
- :mod:`nnunet_ext.architectures.plans`: the configuration blocks written by ``nnunet-ext add-config``.

Kept import-light: the submodules import torch, this package does not.
"""
