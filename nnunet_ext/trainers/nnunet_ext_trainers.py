"""Every ``-tr`` trainer of nnunet_ext: declarations over ``ExtTrainerBase``, nothing overridden.

nnU-Net imports this file as the top-level module ``nnunet_ext_trainers`` when it scans ``nnUNet_extTrainer``, so it
uses absolute imports only and has no side effects. Names are API (results folders, checkpoints): never rename.

| trainer | loss | add-ons |
|---|---|---|
| NRDiceTrainer | noise-robust Dice, gamma 1.5, linear denominator (authors' code) | - |
| CETrainer, FocalCETrainer (gamma 2), FocalCE05Trainer (gamma 0.5), MAETrainer, GCETrainer (q 0.7) | CE fam. | - |
| DiceTrainer (Milletari), SorensenDiceTrainer, FocalDiceTrainer (beta 0.5), CEDiceTrainer, MAEDiceTrainer | Dice | - |
| DiceMTTrainer, DiceMTAdaTTrainer, DiceMTAdaSTrainer, DiceAdaptiveMTTrainer | Dice | mean teacher (COPLE Table III) |
| NRDiceMTTrainer, NRDiceAdaptiveMTTrainer (flagship) | NR-Dice | mean teacher / adaptive mean teacher |
| DiceReweightTrainer | Dice, per sample | data re-weighting (COPLE Table IV) |
| RegionDiceTrainer, RegionDiceAdamTrainer | BraTS region Dice | - (Adam variant: lr 1e-4, cosine after half) |
| RegionDiceSWATrainer, NRDiceSWATrainer, NRDiceAdaptiveMTSWATrainer | region Dice / NR-Dice | SWA fine-tuning |
| RegionDiceRangerTrainer, RegionDiceRangerSWATrainer | region Dice | Ranger, cosine after half (+ SWA with Adam) |
| SpatialCorrectionTrainer, NRDiceAdaptiveMTSpatialCorrectionTrainer | CE + Dice / NR-Dice | trusted-case correction |
| EarlyLearningTrainer, NRDiceAdaptiveMTEarlyLearningTrainer | CE + Dice / NR-Dice | ADELE early-learning correction |
"""

from nnunet_ext.training.base import ExtTrainerBase, LossSpec, OptimizerSpec
from nnunet_ext.training.consistency import MeanTeacherConfig
from nnunet_ext.training.correction import SpatialCorrectionConfig
from nnunet_ext.training.early_learning import EarlyLearningConfig
from nnunet_ext.training.reweight import ReweightConfig
from nnunet_ext.training.swa import SWAConfig

# --- losses (COPLE Table I) ------------------------------------------------------------------------------------


class NRDiceTrainer(ExtTrainerBase):
    """Noise-robust Dice (gamma 1.5) replaces nnU-Net's Dice + CE.

    The trainers use the denominator of the authors' released code (PyMIC, linear: sum p + sum g), not the squared
    one printed as Eq. 3: with gamma < 2 the squared form rewards false positives when a batch holds little or no
    foreground (its value falls as every probability rises), and nnU-Net training collapsed to "everything is
    foreground" on small lesions (demo data: Dice 0.02). Eq. 3 is one plans entry away:
    ``"nnunet_ext": {"loss": {"denominator": "squared"}}``.
    """

    loss_spec = LossSpec("noise_robust_dice", {"gamma": 1.5, "denominator": "linear"})


class CETrainer(ExtTrainerBase):
    """Cross-entropy alone (binary cross-entropy per region for region datasets)."""

    loss_spec = LossSpec("ce")


class FocalCETrainer(ExtTrainerBase):
    """Focal cross-entropy, gamma 2.0."""

    loss_spec = LossSpec("focal_ce", {"gamma": 2.0})


class FocalCE05Trainer(ExtTrainerBase):
    """Focal cross-entropy, gamma 0.5."""

    loss_spec = LossSpec("focal_ce", {"gamma": 0.5})


class MAETrainer(ExtTrainerBase):
    """Mean absolute error between probabilities and one-hot labels."""

    loss_spec = LossSpec("mae")


class GCETrainer(ExtTrainerBase):
    """Generalised cross-entropy, q 0.7."""

    loss_spec = LossSpec("gce", {"q": 0.7})


class DiceTrainer(ExtTrainerBase):
    """Milletari (V-Net) Dice, squared denominator."""

    loss_spec = LossSpec("dice")


class SorensenDiceTrainer(ExtTrainerBase):
    """Sørensen soft Dice, linear denominator."""

    loss_spec = LossSpec("sorensen_dice")


class FocalDiceTrainer(ExtTrainerBase):
    """Focal Dice, beta 0.5."""

    loss_spec = LossSpec("focal_dice", {"beta": 0.5})


class CEDiceTrainer(ExtTrainerBase):
    """Cross-entropy + Sørensen Dice, 1:1."""

    loss_spec = LossSpec("ce_dice")


class MAEDiceTrainer(ExtTrainerBase):
    """MAE + Sørensen Dice, 1:1."""

    loss_spec = LossSpec("mae_dice")


# --- adaptive self-ensembling (COPLE Table III) ----------------------------------------------------------------


class DiceMTTrainer(DiceTrainer):
    """Plain mean teacher: scheduled EMA every step, constant consistency weight 0.1."""

    mean_teacher = MeanTeacherConfig(adaptive_teacher=False, adaptive_student=False)


class DiceMTAdaTTrainer(DiceTrainer):
    """Mean teacher with the adaptive teacher gate (AdaT) only."""

    mean_teacher = MeanTeacherConfig(adaptive_teacher=True, adaptive_student=False)


class DiceMTAdaSTrainer(DiceTrainer):
    """Mean teacher with the adaptive student weight (AdaS) only."""

    mean_teacher = MeanTeacherConfig(adaptive_teacher=False, adaptive_student=True)


class DiceAdaptiveMTTrainer(DiceTrainer):
    """Mean teacher with AdaT and AdaS, Dice loss."""

    mean_teacher = MeanTeacherConfig(adaptive_teacher=True, adaptive_student=True)


class NRDiceMTTrainer(NRDiceTrainer):
    """Plain mean teacher with the noise-robust Dice student loss."""

    mean_teacher = MeanTeacherConfig(adaptive_teacher=False, adaptive_student=False)


class NRDiceAdaptiveMTTrainer(NRDiceTrainer):
    """Flagship: NR-Dice student, adaptive teacher (AdaT) and adaptive student (AdaS); the teacher is exported."""

    mean_teacher = MeanTeacherConfig(adaptive_teacher=True, adaptive_student=True)


# --- noise-robust baselines (COPLE Table IV) -------------------------------------------------------------------


class DiceReweightTrainer(DiceTrainer):
    """Data re-weighting: per-sample Dice losses above the 90th percentile of the previous 100 steps get weight 0."""

    reweight = ReweightConfig()


# --- BraTS 2020 pipeline ---------------------------------------------------------------------------------------


class RegionDiceTrainer(ExtTrainerBase):
    """BraTS region Dice 1 - (2 sum SR + 1)/(sum S^2 + sum R^2 + 1), batch-pooled, mean over regions."""

    loss_spec = LossSpec("region_dice", {"batch_dice": True})  # batch-pooled as in open_brats, whatever the plans say


class RegionDiceAdamTrainer(RegionDiceTrainer):
    """Region Dice with the paper's optimizer: Adam lr 1e-4, no weight decay, cosine after half of the epochs."""

    optimizer_spec = OptimizerSpec("adam", lr=1e-4, weight_decay=0.0, schedule="constant_then_cosine")


class RegionDiceSWATrainer(RegionDiceTrainer):
    """Region Dice, then SWA fine-tuning (5 cycles x 30 epochs, snapshot every 3 epochs)."""

    swa = SWAConfig()


class RegionDiceRangerTrainer(RegionDiceTrainer):
    """Region Dice with pipeline A's optimizer: Ranger (RAdam + Lookahead k 6, alpha 0.5 + gradient centralisation,
    betas (0.95, 0.999), eps 1e-5) at lr 1e-4 without weight decay; constant, then cosine after half of the epochs
    (open_brats2020's schedule)."""

    optimizer_spec = OptimizerSpec("ranger", lr=1e-4, weight_decay=0.0, schedule="open_brats_ranger")


class RegionDiceRangerSWATrainer(RegionDiceRangerTrainer):
    """Pipeline A in full: the Ranger main schedule, then SWA fine-tuning with a fresh Adam per cycle (lr 5e-5, no
    weight decay; 5 cycles x 30 epochs, snapshot every 3 epochs)."""

    swa = SWAConfig(optimizer="adam")


class NRDiceSWATrainer(NRDiceTrainer):
    """Noise-robust Dice, then SWA fine-tuning."""

    swa = SWAConfig()


class NRDiceAdaptiveMTSWATrainer(NRDiceAdaptiveMTTrainer):
    """Adaptive mean teacher with NR-Dice, then SWA fine-tuning; the SWA average of the student is exported."""

    swa = SWAConfig()


# --- biased labels: trusted-case spatial label correction (Yao et al., ICLR 2023) ---------------------------------


class SpatialCorrectionTrainer(ExtTrainerBase):
    """nnU-Net's Dice + CE; at half of the epochs the training labels are corrected by the boundary offset measured
    on held-out trusted cases (``nnunet-ext trust``), then the network is re-initialised and retrained on them."""

    spatial_correction = SpatialCorrectionConfig()


class NRDiceAdaptiveMTSpatialCorrectionTrainer(NRDiceAdaptiveMTTrainer):
    """The flagship (NR-Dice + adaptive mean teacher) with trusted-case spatial label correction; the teacher
    predicts the correction pass."""

    spatial_correction = SpatialCorrectionConfig()


# --- noisy labels: adaptive early-learning label correction (ADELE, Liu et al., CVPR 2022) -----------------------


class EarlyLearningTrainer(ExtTrainerBase):
    """nnU-Net's Dice + CE; per class, once the fitted training-IoU curve flattens (ADELE), the training labels are
    replaced where the prediction is confident (p > 0.7), then again every 10 epochs; training continues."""

    early_learning = EarlyLearningConfig()


class NRDiceAdaptiveMTEarlyLearningTrainer(NRDiceAdaptiveMTTrainer):
    """The flagship (NR-Dice + adaptive mean teacher) with ADELE's early-learning label correction; the teacher
    predicts the correction pass."""

    early_learning = EarlyLearningConfig()
