"""Writing results: files replaced atomically, JSON with NaN as null, the package versions, and
the curves of finished points as a tidy table."""
from __future__ import annotations

import json
import os
import platform
import tempfile
from importlib import metadata

import numpy as np
import pandas as pd

#: the curve columns of a table, after the swept keys
COLUMNS = ("point", "t", "theory", "theory_spread", "sgd_mean", "sgd_sd", "sgd_robust_sd", "sgd_seeds", "pca_error_K")


def table(records, keys=()):
    """One row per point and time: columns `keys` (values of the points' `values`, lists and
    tables (an lr schedule) as JSON text), then COLUMNS. `records`: JSON-able point records (hash, values, curves)."""
    frames = []
    for r in records:
        frame = pd.DataFrame({"point": r["hash"], **{c: np.array(r["curves"][c], dtype=float) for c in COLUMNS[1:]}})
        frame["sgd_seeds"] = frame["sgd_seeds"].astype(int)
        for key in reversed(list(keys)):
            value = r["values"][key]
            frame.insert(0, key, json.dumps(value) if isinstance(value, (list, dict)) else value)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*keys, *COLUMNS])


def versions():
    """Versions of Python and of the packages a result depends on."""
    names = ("ae-dynamics", "numpy", "scipy", "dask", "distributed", "pandas")
    return {"python": platform.python_version(), **{n: metadata.version(n) for n in names}}


def jsonable(obj):
    """Arrays as lists, NaN and inf as None (valid JSON), numpy scalars as Python numbers."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.integer, np.bool_)):
        return obj.item()
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    return obj


def write_json(path, obj):
    """obj as indented JSON (see jsonable), atomically."""
    atomic(path, lambda f: f.write(json.dumps(jsonable(obj), indent=1).encode()))


def write_table(frame, csv, parquet=None):
    """A table as CSV (and Parquet), each atomically."""
    atomic(csv, lambda f: frame.to_csv(f, index=False))
    if parquet is not None:
        atomic(parquet, lambda f: frame.to_parquet(f, index=False))


def atomic(path, write):
    """write(binary file) into a temporary file next to `path`, then rename it to `path`: a
    reader never sees half a file, and a failure leaves the old file in place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
