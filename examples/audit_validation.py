"""Validate ``nnunet-ext audit`` on known corruption: does the disagreement score find the corrupted labels?

Steps (each skipped when its output exists, so re-running resumes):

1. a clean CT-like lesion dataset (``nnunet_ext.synthetic.make_lesion_dataset``, the demo's generator, anisotropic
   2.5 × 0.8 × 0.8 mm);
2. label noise of known, per-case different strength with the simulate-noise machinery: two calibrated levels
   (:class:`~nnunet_ext.noise.levels.NoiseLevel`) are simulated on the whole dataset, ``graded`` (per-case target
   Dice uniform in 0.75-0.99: mixed drops, spurious blobs, boundary noise, dilation/erosion) and ``wrong`` (target
   Dice 0.35-0.55, the mistakes an audit should catch); 10 % of the cases, drawn with the seed, take the ``wrong``
   label, the others the ``graded`` one. The merged ``noise_manifest.json`` keeps each case's record (its level and
   its achieved noisy-vs-clean Dice); ``labelsTr_clean`` keeps the clean labels;
3. nnU-Net planning and 2d preprocessing, a CPU-sized network (the demo's shrink: narrow, batch 8);
4. stock ``nnUNetTrainer``, 5-fold cross-validation through nnU-Net's Python API with a short budget set on the
   trainer instance (as the benchmark runner does), each fold followed by nnU-Net's own validation with
   probabilities (``perform_actual_validation(True)``, what ``nnUNetv2_train ... --npz`` runs);
5. ``run_audit`` on the cross-validation, then for every score of :mod:`nnunet_ext.audit.scores` the Spearman ρ
   (``scipy.stats.spearmanr``) between the score and the true corruption 1 − Dice(noisy, clean) of the manifest,
   and the precision of the top 10 %: the share of the ⌈0.1 n⌉ highest-scored cases that are among the ⌈0.1 n⌉ most
   corrupted ones (here: the ``wrong`` cases). Targets: ρ ≥ 0.6 and precision ≥ 0.6.

Usage::

    python examples/audit_validation.py --work-dir W [--quick] [--seed 0]

Results: ``W/audit_validation.json`` and a Markdown table on stdout; the audit files in the model folder's ``audit/``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import sys
import time
from pathlib import Path

CLEAN_ID, NOISY_ID = 971, 972
TRAINER, CONFIGURATION, PLANS = "nnUNetTrainer", "2d", "nnUNetPlans"
FOLDS = (0, 1, 2, 3, 4)
WRONG_FRACTION = 0.1
TOP_FRACTION = 0.1
TARGETS = {"spearman_rho": 0.6, "precision_at_10pct": 0.6}
SETTINGS = {
    # cases, shape (z, y, x), epochs, iterations per epoch, validation iterations per epoch
    "full": {"num_train": 40, "shape": (16, 64, 64), "epochs": 25, "iterations": 25, "val": 2},
    "quick": {"num_train": 20, "shape": (8, 48, 48), "epochs": 2, "iterations": 4, "val": 1},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", required=True, help="folder for the nnU-Net folders and all outputs")
    parser.add_argument("--quick", action="store_true", help="tiny data and budget (smoke run, not a result)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data, noise, case choice and training (0)")
    return parser.parse_args(argv)


def setup_environment(work: Path) -> None:
    for key in ("raw", "preprocessed", "results"):
        (work / f"nnUNet_{key}").mkdir(parents=True, exist_ok=True)
        os.environ[f"nnUNet_{key}"] = str(work / f"nnUNet_{key}")
    os.environ.setdefault("nnUNet_compile", "f")
    os.environ.setdefault("nnUNet_n_proc_DA", "0")
    os.environ.setdefault("nnUNet_def_n_proc", "1")


def levels():
    from nnunet_ext.noise.levels import NoiseLevel

    graded = NoiseLevel(
        "graded", 0.87, target_jitter=0.12, drop_prob=0.1, spurious_prob=0.1, boundary_steps=3, boundary_flip_prob=0.3
    )
    wrong = NoiseLevel(
        "wrong", 0.45, target_jitter=0.1, drop_prob=0.5, spurious_prob=0.5, boundary_steps=4, boundary_flip_prob=0.4
    )
    return graded, wrong


def make_noisy_dataset(work: Path, clean: Path, noisy: Path, seed: int) -> dict:
    """Simulate both levels on the whole clean dataset, then give each case the label of its drawn level."""
    import numpy as np

    from nnunet_ext.noise.simulate import CLEAN_LABELS_DIR, MANIFEST_NAME, simulate_noisy_dataset

    parts = work / "noise_levels"
    graded, wrong = levels()
    manifests = {}
    for level in (graded, wrong):
        target = parts / f"Dataset000_{level.name}"
        if (target / MANIFEST_NAME).is_file():
            manifests[level.name] = json.loads((target / MANIFEST_NAME).read_text())
        else:
            manifests[level.name] = simulate_noisy_dataset(clean, target, level, seed, overwrite=True)
    records = {r["case"]: r for r in manifests["graded"]["cases"]}
    cases = sorted(records)
    n_wrong = max(1, round(WRONG_FRACTION * len(cases)))
    chosen = sorted(np.random.default_rng([seed, 7]).choice(len(cases), size=n_wrong, replace=False).tolist())
    wrong_cases = [cases[i] for i in chosen]

    tmp = noisy.parent / f".{noisy.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(parts / "Dataset000_graded", tmp, copy_function=os.link)
    wrong_records = {r["case"]: r for r in manifests["wrong"]["cases"]}
    ending = json.loads((clean / "dataset.json").read_text())["file_ending"]
    for case in wrong_cases:
        label = tmp / "labelsTr" / f"{case}{ending}"
        label.unlink()
        shutil.copy2(parts / "Dataset000_wrong" / "labelsTr" / f"{case}{ending}", label)
        records[case] = wrong_records[case]
    per_case = [{**records[c], "level": "wrong" if c in wrong_cases else "graded"} for c in cases]
    manifest = {
        "source": str(clean),
        "target": str(noisy),
        "seed": seed,
        "levels": {name: m["parameters"] for name, m in manifests.items()},
        "rule": f"{n_wrong} of {len(cases)} cases (rng [seed, 7]) take the 'wrong' level, the others 'graded'",
        "wrong_cases": wrong_cases,
        "mean_dice": float(np.mean([r["foreground_mean_dice"] for r in per_case])),
        "n_cases": len(per_case),
        "cases": per_case,
    }
    dataset_json = json.loads((tmp / "dataset.json").read_text())
    dataset_json["name"] = noisy.name.split("_", 1)[1]
    (tmp / "dataset.json").write_text(json.dumps(dataset_json, indent=4))
    (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    assert (tmp / CLEAN_LABELS_DIR).is_dir()
    tmp.rename(noisy)
    return manifest


def train_folds(cfg: dict, seed: int, log_dir: Path) -> dict[int, float]:
    """Stock nnUNetTrainer on each fold with the short budget, then nnU-Net's validation with probabilities."""
    from nnunet_ext.benchmark.provenance import console_to, seed_everything
    from nnunet_ext.benchmark.spec import TrainingBudget
    from nnunet_ext.benchmark.train import build_trainer

    budget = TrainingBudget(cfg["epochs"], cfg["iterations"], cfg["val"])
    results = Path(os.environ["nnUNet_results"])
    walls = {}
    for fold in FOLDS:
        fold_dir = results / f"Dataset{NOISY_ID}_AuditNoisy" / f"{TRAINER}__{PLANS}__{CONFIGURATION}" / f"fold_{fold}"
        if (fold_dir / "validation" / "summary.json").is_file():
            print(f"   fold {fold}: trained and validated, reused", flush=True)
            continue
        start = time.perf_counter()
        with console_to(log_dir / f"fold_{fold}.log"):
            seed_everything(seed + fold)
            trainer = build_trainer(
                TRAINER, str(NOISY_ID), CONFIGURATION, fold, plans=PLANS, device="cpu", budget=budget
            )
            trainer.run_training()
            trainer.perform_actual_validation(True)
            del trainer
        walls[fold] = time.perf_counter() - start
        print(f"   fold {fold}: {walls[fold]:.0f} s", flush=True)
    return walls


def precision_at(scores, corruption, fraction: float) -> float:
    """Share of the ⌈f n⌉ highest scores among the ⌈f n⌉ largest corruptions (ties: case order)."""
    import numpy as np

    n = len(scores)
    k = max(1, math.ceil(fraction * n - 1e-9))
    flagged = set(np.argsort(-np.asarray(scores), kind="stable")[:k].tolist())
    relevant = set(np.argsort(-np.asarray(corruption), kind="stable")[:k].tolist())
    return len(flagged & relevant) / k


def evaluate_scores(rows: list[dict], truth: dict[str, float]) -> dict[str, dict]:
    import numpy as np
    from scipy.stats import spearmanr

    from nnunet_ext.audit.scores import SCORES, disagreement_scores

    corruption = np.array([truth[r["case"]] for r in rows])
    out = {}
    for score in SCORES:
        values = disagreement_scores(rows, score)
        finite = np.isfinite(values)
        if not finite.all():
            out[score] = {"spearman_rho": math.nan, "p_value": math.nan, "precision_at_10pct": math.nan}
            continue
        rho, p = spearmanr(values, corruption)
        out[score] = {
            "spearman_rho": float(rho),
            "p_value": float(p),
            "precision_at_10pct": precision_at(values, corruption, TOP_FRACTION),
        }
    return out


def cpu_seconds() -> float:
    """CPU time of this process and of its finished child processes (nnU-Net's spawned workers), user + system."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def step(message: str) -> float:
    print(f"\n== {message}", flush=True)
    return time.perf_counter()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = SETTINGS["quick" if args.quick else "full"]
    work = Path(args.work_dir).resolve()
    setup_environment(work)
    start_all = time.perf_counter()

    import numpy as np

    from nnunet_ext.audit.audit import run_audit
    from nnunet_ext.benchmark.datasets import plan_and_preprocess, shrink_plans
    from nnunet_ext.evaluation.io import read_label_image
    from nnunet_ext.evaluation.metrics import dice
    from nnunet_ext.noise.simulate import CLEAN_LABELS_DIR, MANIFEST_NAME
    from nnunet_ext.synthetic import make_lesion_dataset

    raw = work / "nnUNet_raw"
    clean, noisy = raw / f"Dataset{CLEAN_ID}_AuditClean", raw / f"Dataset{NOISY_ID}_AuditNoisy"
    t = step(f"1/5 clean dataset: {cfg['num_train']} volumes {cfg['shape']}")
    if not (clean / "dataset.json").is_file():
        make_lesion_dataset(
            raw, CLEAN_ID, "AuditClean", cfg["num_train"], 0, cfg["shape"], (2.5, 0.8, 0.8), seed=args.seed
        )
    print(f"   {time.perf_counter() - t:.0f} s")

    t = step("2/5 known corruption: 'graded' (target Dice 0.75-0.99) and 10 % 'wrong' (0.35-0.55) cases")
    if not (noisy / MANIFEST_NAME).is_file():
        manifest = make_noisy_dataset(work, clean, noisy, args.seed)
    else:
        manifest = json.loads((noisy / MANIFEST_NAME).read_text())
    truth = {r["case"]: 1.0 - float(r["foreground_mean_dice"]) for r in manifest["cases"]}
    ending = ".nii.gz"
    for case, value in truth.items():  # the manifest's Dice is that of the labels written
        given, _ = read_label_image(noisy / "labelsTr" / f"{case}{ending}")
        reference, _ = read_label_image(noisy / CLEAN_LABELS_DIR / f"{case}{ending}")
        assert abs((1.0 - dice(given > 0, reference > 0)) - value) < 1e-9, case
    print(
        f"   mean noisy-vs-clean Dice {manifest['mean_dice']:.3f}; wrong cases {manifest['wrong_cases']}; "
        f"{time.perf_counter() - t:.0f} s"
    )

    t = step("3/5 nnU-Net planning and 2d preprocessing (CPU-sized network)")
    marker = work / "nnUNet_preprocessed" / noisy.name / ".audit_validation_plans_ready"
    if not marker.is_file():
        plan_and_preprocess(NOISY_ID, ("2d",))
        shrink_plans(NOISY_ID, "2d", batch_size=8, feature_divisor=4, max_features=32)
        marker.write_text("planned, preprocessed and shrunk by examples/audit_validation.py\n")
    print(f"   {time.perf_counter() - t:.0f} s")

    t = step(
        f"4/5 {TRAINER} 5-fold cross-validation: {cfg['epochs']} epochs x {cfg['iterations']} iterations per fold, "
        "then nnU-Net's validation with probabilities"
    )
    walls = train_folds(cfg, args.seed, work / "logs")
    train_s = time.perf_counter() - t
    print(f"   {train_s:.0f} s")

    t = step("5/5 audit and agreement with the known corruption")
    result = run_audit(NOISY_ID, CONFIGURATION, TRAINER, FOLDS, PLANS, top=10)
    audit_s = time.perf_counter() - t
    rows = [r for r in result.rows if r["rank"] is not None]
    by_score = evaluate_scores(rows, truth)
    wrong = set(manifest["wrong_cases"])
    top_cases = [r["case"] for r in rows[: max(1, math.ceil(TOP_FRACTION * len(rows) - 1e-9))]]
    default = result.settings["score"]
    met = {k: by_score[default][k] >= v for k, v in TARGETS.items()}
    summary = {
        "settings": {**cfg, "shape": list(cfg["shape"]), "seed": args.seed, "trainer": TRAINER, "folds": list(FOLDS)},
        "n_cases": len(rows),
        "mean_noisy_vs_clean_dice": manifest["mean_dice"],
        "wrong_cases": sorted(wrong),
        "top_10pct_by_default_score": top_cases,
        "default_score": default,
        "scores": by_score,
        "targets": TARGETS,
        "targets_met_by_default_score": met,
        "oof_dice_vs_noisy_label_mean": float(np.mean([r["Dice"] for r in rows])),
        "cpu_s": cpu_seconds(),
        "wall_s": {
            "train_and_validate_per_fold": walls,
            "train_total": train_s,
            "audit": audit_s,
            "total": time.perf_counter() - start_all,
        },
        "audit_files": {k: str(v) for k, v in result.files.items()},
    }
    (work / "audit_validation.json").write_text(json.dumps(summary, indent=2))

    print("\n| score | Spearman ρ vs 1 − Dice(noisy, clean) | p | precision of the top 10 % |")
    print("|---|---|---|---|")
    for score, m in by_score.items():
        mark = " (default)" if score == default else ""
        print(f"| `{score}`{mark} | {m['spearman_rho']:.3f} | {m['p_value']:.2g} | {m['precision_at_10pct']:.2f} |")
    print(f"\ntop 10 % by {default}: {top_cases}; wrong cases: {sorted(wrong)}")
    print(f"targets (rho >= 0.6, precision >= 0.6) met by the default score: {met}")
    print(f"audit files: {', '.join(str(p) for p in result.files.values())}")
    print(f"total time {time.perf_counter() - start_all:.0f} s wall, {cpu_seconds():.0f} s CPU")
    return 0


if __name__ == "__main__":  # nnU-Net's spawned worker processes re-import this file
    sys.exit(main())
