"""The one atomic JSON writer of the plugin (manifests, trusted cases, splits, offsets, plans)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_json_atomic(obj: Any, path: str | os.PathLike, indent: int = 2, default: Any = None) -> None:
    """Temp file in the same folder, then ``os.replace``: readers see the old or the new file, never half of one.

    The folder is created if missing; ``default`` is passed to ``json.dump`` (e.g. ``str`` for paths).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}_", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=indent, default=default)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
