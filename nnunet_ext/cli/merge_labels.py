"""``nnunet-ext merge-labels``: the BraTS two-pass merge of two folders of label maps.

For every case, ``OUT = A`` except where A and B both say background or edema, where B's label is taken
(:func:`nnunet_ext.inference.merge_two_pass`): A keeps its enhancing tumour and NCR/NET, B decides the edema::

    nnunet-ext merge-labels pred_pipelineA pred_pipelineB pred_merged            # nnU-Net labels 1 ed, 2 NCR, 3 ET
    nnunet-ext merge-labels A B OUT --convention brats                           # BraTS labels 2 ed, 1 NCR, 4 ET

Cases are matched by file name; both folders must hold the same cases with the same geometry (size, spacing,
origin, direction). The output keeps A's geometry; A's ``dataset.json`` (if any) is copied so that the folder can be
evaluated like a prediction folder, and ``merge_labels.json`` records the inputs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

GEOMETRY_ATOL = 1e-4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", metavar="A", help="label maps of the first model (its ET and NCR/NET are kept)")
    parser.add_argument("b", metavar="B", help="label maps of the second model (decides background vs edema)")
    parser.add_argument("out", metavar="OUT", help="output folder (created if missing)")
    parser.add_argument(
        "--convention",
        choices=("nnunet", "brats"),
        default="nnunet",
        help="label values: nnunet (0 bg, 1 edema, 2 NCR/NET, 3 ET; default) or brats (0, 2 edema, 1 NCR/NET, 4 ET)",
    )
    parser.add_argument(
        "--file-ending", default=None, help="case file ending (default: A's dataset.json file_ending, else .nii.gz)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing files in OUT")


def _file_ending(folder: Path, given: str | None) -> str:
    if given:
        return given
    dataset_json = folder / "dataset.json"
    if dataset_json.is_file():
        return json.loads(dataset_json.read_text()).get("file_ending", ".nii.gz")
    return ".nii.gz"


def _cases(folder: Path, ending: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"folder {folder} does not exist; check the path")
    return {p.name[: -len(ending)]: p for p in sorted(folder.iterdir()) if p.is_file() and p.name.endswith(ending)}


def _header(path: Path):
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader


def _check_geometry(case: str, a, b) -> None:
    import numpy as np

    checks = (
        ("size", a.GetSize(), b.GetSize()),
        ("spacing", a.GetSpacing(), b.GetSpacing()),
        ("origin", a.GetOrigin(), b.GetOrigin()),
        ("direction", a.GetDirection(), b.GetDirection()),
    )
    for name, va, vb in checks:
        if len(va) != len(vb) or not np.allclose(va, vb, rtol=0, atol=GEOMETRY_ATOL):
            raise ValueError(
                f"case {case!r}: {name} differs between A {tuple(va)} and B {tuple(vb)}; merge predictions of the "
                "same images (resample B onto A's grid first)"
            )


def merge_folders(
    a: str | os.PathLike,
    b: str | os.PathLike,
    out: str | os.PathLike,
    convention: str = "nnunet",
    file_ending: str | None = None,
    overwrite: bool = False,
) -> list[str]:
    """Merge every case of folders ``a`` and ``b`` into ``out``; returns the case names.

    Raises:
        FileNotFoundError: a folder is missing or empty.
        ValueError: the folders hold different cases, a geometry differs, label values do not fit the convention,
            or an output exists without ``overwrite``.
    """
    a, b, out = Path(a), Path(b), Path(out)
    ending = _file_ending(a, file_ending)
    cases_a, cases_b = _cases(a, ending), _cases(b, ending)
    import numpy as np
    import SimpleITK as sitk

    from nnunet_ext.inference import merge_two_pass

    if not cases_a:
        raise FileNotFoundError(f"no '*{ending}' label maps in A = {a}; check the folder or set --file-ending")
    only_a, only_b = sorted(set(cases_a) - set(cases_b)), sorted(set(cases_b) - set(cases_a))
    if only_a or only_b:
        raise ValueError(
            f"A and B hold different cases (missing in B: {only_a}, missing in A: {only_b}); give two folders with "
            "the same case files"
        )
    targets = {c: out / f"{c}{ending}" for c in cases_a}
    existing = [str(p) for p in targets.values() if p.exists()]
    if existing and not overwrite:
        raise ValueError(f"{len(existing)} output file(s) exist, e.g. {existing[0]}; pass --overwrite to replace them")

    for case in cases_a:  # headers only: refuse before writing anything
        _check_geometry(case, _header(cases_a[case]), _header(cases_b[case]))
    out.mkdir(parents=True, exist_ok=True)
    for case in cases_a:
        img_a, img_b = sitk.ReadImage(str(cases_a[case])), sitk.ReadImage(str(cases_b[case]))
        try:
            merged = merge_two_pass(sitk.GetArrayFromImage(img_a), sitk.GetArrayFromImage(img_b), convention)
        except ValueError as err:
            raise ValueError(f"case {case!r}: {err}") from None
        result = sitk.GetImageFromArray(merged.astype(np.uint8))
        result.CopyInformation(img_a)
        sitk.WriteImage(result, str(targets[case]), useCompression=True)

    if (a / "dataset.json").is_file():
        shutil.copyfile(a / "dataset.json", out / "dataset.json")
    manifest = {
        "a": str(a.resolve()),
        "b": str(b.resolve()),
        "convention": convention,
        "rule": "A, except where A and B are both background or edema: B",
        "cases": sorted(cases_a),
    }
    (out / "merge_labels.json").write_text(json.dumps(manifest, indent=2))
    return sorted(cases_a)


def run(args: argparse.Namespace) -> int:
    cases = merge_folders(args.a, args.b, args.out, args.convention, args.file_ending, args.overwrite)
    print(f"Merged {len(cases)} case(s) into {args.out} ({args.convention} labels).")
    return 0
