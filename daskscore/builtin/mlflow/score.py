"""The built-in scoring script of MLflow models deployed without one.

Azure ML scores an MLflow model that a batch deployment gives without ``code_configuration``
("no-code deployment") with a scoring script of its own.  daskscore does the same with this
file: :func:`daskscore.config.loader.validate` points such a deployment's code folder here, and the
engine runs it like any user script (``init()`` once per worker, ``run(mini_batch)`` per
mini-batch, ``parallel_run_step.settings.json`` next to it making the append_row file
comma-separated).

What it does, per file of a mini-batch (``predict`` is called once per file):

* ``.csv``, ``.parquet`` (``.pq``, ``.pqt``): read into a DataFrame; the columns the model's
  signature names are converted to its types, in its order (other columns are dropped).  A
  value that cannot be converted fails the file with a message naming the file, the column,
  the row and the value; a file with no rows (a header only) fails too.
* images (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.tiff``, ``.tif``, ``.gif``): read with
  Pillow into a numpy array of one image, shaped by a tensor signature (``(-1, H, W)``,
  ``(-1, H, W, C)`` or ``(-1, C, H, W)``: converted to grey/RGB/RGBA, resized to ``H × W`` when
  they are fixed, cast to the signature's dtype; pixel values are not rescaled); without one,
  ``(1, H, W[, C])`` as Pillow reads it.
* anything else fails the file with a message naming it and the supported types.

``run()`` returns a DataFrame with the columns ``row`` (the row's index in its file; empty for
images), ``prediction`` and ``file`` (the input file's base name).

A file that fails contributes no rows and the others of its mini-batch are still scored, as
in Azure.  Its reason is logged (``logs/user/stdout/<worker>.txt``).  When *every* file of a
mini-batch fails, ``run()`` raises :class:`FileScoringError` listing each file and its reason,
so that the mini-batch is reported as failed (retried, its files counted as failed items, the
reasons in ``job_error.txt`` and ``job_summary.json``).  A failed file beside good ones is
named in ``df.attrs["daskscore_failed_items"]``, so daskscore counts it as a failed item.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TABULAR = (".csv", ".parquet", ".pq", ".pqt")
IMAGES = (".png", ".jpg", ".jpeg", ".bmp", ".tiff", ".tif", ".gif")
#: numpy dtype kinds of a tensor signature, as the column types this script converts to
_TENSOR_KINDS = {"f": "double", "i": "long", "u": "long", "b": "boolean"}
#: signature column types read from CSV as text (then converted exactly)
TEXT_KINDS = ("string", "long", "integer")
_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}

logger = logging.getLogger("daskscore.builtin.mlflow")

model: Any = None
schema: Any = None


class FileScoringError(ValueError):
    """A file (or every file of a mini-batch) could not be scored."""


def init() -> None:
    """Load the MLflow model under ``AZUREML_MODEL_DIR`` (once per worker process)."""
    global model, schema
    folder = model_folder(os.environ["AZUREML_MODEL_DIR"])
    # older mlflow (2.x, early 3.x) makes a tracking store (./mlruns) in the working folder when it
    # loads a model; give it a scratch one, removed right after
    scratch = None if "MLFLOW_TRACKING_URI" in os.environ else tempfile.mkdtemp()
    if scratch:
        os.environ["MLFLOW_TRACKING_URI"] = Path(scratch).as_uri()
    try:
        with warnings.catch_warnings():
            # mlflow warns about its own type hints while importing (seen with mlflow 3.x)
            warnings.filterwarnings("ignore", module=r"mlflow(\.|$)")
            import mlflow.pyfunc

            # resolved: the entry is a link, and mlflow refuses files that resolve outside it
            model = mlflow.pyfunc.load_model(str(folder.resolve()))
    finally:
        if scratch:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
            shutil.rmtree(scratch, ignore_errors=True)
    schema = model.metadata.get_input_schema()
    inputs = "none" if schema is None else f"{len(schema.inputs)} input(s)"
    logger.info("loaded the MLflow model %s; signature: %s", folder.resolve(), inputs)


def model_folder(root: str | os.PathLike[str]) -> Path:
    """The MLflow model folder under ``root``: ``root`` itself, or its single entry.

    Raises
    ------
    FileNotFoundError
        Neither ``root`` nor its single entry holds an ``MLmodel`` file.
    """
    base = Path(root)
    if (base / "MLmodel").is_file():
        return base
    entries = [p for p in base.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and (entries[0] / "MLmodel").is_file():
        return entries[0]
    raise FileNotFoundError(
        f"no MLflow model (a folder with an MLmodel file) in {base}: found "
        f"{sorted(p.name for p in entries) or 'nothing'}"
    )


def run(mini_batch: Any) -> pd.DataFrame:
    """Score each file of ``mini_batch``; return the rows of the files that could be scored.

    Parameters
    ----------
    mini_batch : list of str or pandas.DataFrame
        Paths of input files; in tabular mode (``--tabular``), a DataFrame of rows.

    Returns
    -------
    pandas.DataFrame
        Columns ``row``, ``prediction`` and ``file`` (in tabular mode ``row`` and
        ``prediction``: carry ``file`` with ``--carry-columns file``).

    Raises
    ------
    FileScoringError
        Every file of the mini-batch failed; the message gives each file's reason.
    """
    if isinstance(mini_batch, pd.DataFrame):
        rows = enforce_columns(mini_batch, "this mini-batch's rows")
        values = as_list(model.predict(rows), len(rows), "this mini-batch's rows")
        return pd.DataFrame(
            {"row": pd.array(mini_batch.index, dtype="Int64"), "prediction": values}
        )
    frames, failed = [], []
    for path in mini_batch:
        try:
            frames.append(score_file(str(path)))
        except Exception as exc:  # noqa: BLE001 - one bad file must not fail the others
            reason = str(exc) if isinstance(exc, FileScoringError) else repr(exc)
            if not reason.startswith(str(path)):
                reason = f"{path}: {reason}"
            failed.append(reason)
            logger.error("not scored: %s", reason)
    if failed and not frames:
        listed = "\n".join(f"  {reason}" for reason in failed)
        raise FileScoringError(f"no file of this mini-batch could be scored:\n{listed}")
    result = pd.concat(frames, ignore_index=True)
    if (
        failed
    ):  # daskscore counts these files as failed items (daskscore.protocol.FAILED_ITEMS_ATTR)
        result.attrs["daskscore_failed_items"] = failed
    return result


def score_file(path: str) -> pd.DataFrame:
    """The ``row``, ``prediction`` and ``file`` rows of one file (``predict`` called once)."""
    name = os.path.basename(path)
    suffix = Path(path).suffix.lower()
    if suffix in TABULAR:
        data = read_table(path, suffix)
        if not len(data):  # a failed item whatever its mini-batch holds (rows cannot tell)
            raise FileScoringError(
                f"{path}: the file has no rows (a header only): nothing to score"
            )
        rows = pd.array(np.arange(len(data)), dtype="Int64")
        values = as_list(model.predict(enforce_columns(data, path)), len(data), path)
    elif suffix in IMAGES:
        values = as_list(model.predict(read_image(path)), None, path)
        values = [values[0] if len(values) == 1 else values]
        rows = pd.array([pd.NA], dtype="Int64")
    else:
        raise FileScoringError(
            f"{path}: files of type '{suffix or name}' cannot be scored by the built-in MLflow "
            f"scorer; it reads {', '.join(TABULAR)} (tables) and {', '.join(IMAGES)} (images). "
            "Give the deployment a scoring script (code_configuration) for other inputs."
        )
    return pd.DataFrame({"row": rows, "prediction": pd.Series(values, dtype=None), "file": name})


def read_table(path: str, suffix: str) -> pd.DataFrame:
    """A CSV or Parquet file, its index the row number; the signature's string and integer
    columns of a CSV file are read as text (the text exact, the integers converted exactly)."""
    if suffix == ".csv":
        text = [s.name for s in _column_specs() if _kind(s.type) in TEXT_KINDS and s.name]
        return pd.read_csv(path, dtype=dict.fromkeys(text, str))
    return pd.read_parquet(path).reset_index(drop=True)


def enforce_columns(data: pd.DataFrame, where: str) -> Any:
    """``data`` with the signature's columns, converted to its types (a tensor signature gets
    a numpy array of its dtype)."""
    if schema is None:
        return data
    if schema.is_tensor_spec():
        spec = schema.inputs[0]
        kind = _TENSOR_KINDS.get(np.dtype(spec.type).kind)
        if kind:
            data = data.apply(lambda col: convert(col, kind, where, str(col.name)))
        return data.to_numpy(dtype=spec.type)
    specs = _column_specs()
    if not all(s.name for s in specs):  # an unnamed signature: positional columns
        return data
    out = {}
    for spec in specs:
        if spec.name not in data.columns:
            if getattr(spec, "required", True):
                raise FileScoringError(
                    f"{where}: column '{spec.name}' is missing; the model's signature needs "
                    f"{[s.name for s in specs]}, the file has {list(data.columns)}"
                )
            continue
        out[spec.name] = convert(data[spec.name], _kind(spec.type), where, spec.name)
    return pd.DataFrame(out, index=data.index)


def convert(column: pd.Series, kind: str, where: str, name: str) -> pd.Series:
    """``column`` as the signature type ``kind`` (``double``, ``long``, ``boolean``, ...).

    Raises
    ------
    FileScoringError
        A value cannot be converted; the message names ``where``, the column, the row and the
        value.
    """
    if kind in ("long", "integer"):
        bits = 32 if kind == "integer" else 64
        exact = [_exact_int(v) for v in column.tolist()]
        bad = [v is None or not -(2 ** (bits - 1)) <= v < 2 ** (bits - 1) for v in exact]
        _check(column, pd.Series(bad, index=column.index), kind, where, name)
        return pd.Series(exact, index=column.index, dtype=f"int{bits}", name=column.name)
    if kind in ("double", "float"):
        converted = pd.to_numeric(column, errors="coerce")
        bad = converted.isna() & column.notna()
        if kind == "float":  # beyond float32: it would become an infinity
            bad |= np.isfinite(converted) & (converted.abs() > np.finfo(np.float32).max)
        _check(column, bad, kind, where, name)
        return converted.astype("float64" if kind == "double" else "float32")
    if kind == "boolean":
        if pd.api.types.is_bool_dtype(column):
            return column
        converted = column.astype(str).str.strip().str.lower().map(_BOOLEANS)
        _check(column, converted.isna(), kind, where, name)
        return converted.astype(bool)
    if kind == "string":
        return column.where(column.isna(), column.astype(str))
    if kind == "datetime":
        converted = _datetimes(column)
        _check(column, converted.isna() & column.notna(), kind, where, name)
        return converted
    return column


def _datetimes(column: pd.Series) -> pd.Series:
    """``column`` parsed value by value (not in the format of its first value): as ISO 8601,
    else each value in whatever format it has; mixed UTC offsets (or offsets beside none) in
    UTC. A value that is no date is ``NaT``."""
    if pd.api.types.is_datetime64_any_dtype(column):
        return column

    def parse(values: pd.Series, fmt: str) -> pd.Series:
        try:
            return pd.to_datetime(values, errors="coerce", format=fmt)
        except ValueError:  # mixed time zones
            return pd.to_datetime(values, errors="coerce", format=fmt, utc=True)

    converted = parse(column, "ISO8601")
    if (converted.isna() & column.notna()).any():
        mixed = parse(column, "mixed")
        if mixed.isna().sum() < converted.isna().sum():
            converted = mixed
    return converted


def _exact_int(value: Any) -> int | None:
    """``value`` as a Python int, exactly (``"007"``, ``"1e3"``, ``3.0``), or None when it is
    missing or no whole number."""
    if isinstance(value, (bool, np.bool_, int, np.integer)):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())  # digits: exact, however many
        except ValueError:
            pass
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) and number == int(number) else None


def _check(column: pd.Series, bad: pd.Series, kind: str, where: str, name: str) -> None:
    if bad.any():
        row = bad.idxmax()
        value = column[row]
        value = value.item() if isinstance(value, np.generic) else value
        shown = "a missing value" if pd.isna(value) else f"value {value!r}"
        raise FileScoringError(
            f"{where}: column '{name}', row {row}: {shown} is not a {kind}, as the model's "
            f"signature requires ({int(bad.sum())} such value(s) in this column)"
        )


def read_image(path: str) -> np.ndarray:
    """One image as a batch of one, shaped and typed by a tensor signature if there is one."""
    try:
        from PIL import Image
    except ImportError:
        raise FileScoringError(
            f"{path}: reading images needs Pillow: pip install 'daskscore[mlflow]'"
        ) from None
    spec = schema.inputs[0] if schema is not None and schema.is_tensor_spec() else None
    with Image.open(path) as img:
        img.load()
        if spec is None:
            return np.asarray(img)[np.newaxis]
        shape = tuple(spec.shape)
        batched = len(shape) in (3, 4) and shape[0] == -1
        dims = shape[1:] if batched else shape
        first = len(dims) == 3 and dims[0] in (1, 3, 4) and dims[2] not in (1, 3, 4)
        channels = (dims[0] if first else dims[2]) if len(dims) == 3 else 1
        modes = {1: "L", 3: "RGB", 4: "RGBA"}
        if len(dims) == 2 or channels in modes:
            img = img.convert(modes.get(channels, "L"))
        height, width = (dims[1], dims[2]) if first else (dims[0], dims[1])
        if height > 0 and width > 0 and img.size != (width, height):
            img = img.resize((width, height))
        array = np.asarray(img)
    if len(dims) == 3 and array.ndim == 2:
        array = array[:, :, np.newaxis]
    if first:
        array = np.moveaxis(array, -1, 0)
    array = array.astype(spec.type, copy=False)
    return array[np.newaxis] if batched else array


def as_list(predicted: Any, expected: int | None, where: str) -> list[Any]:
    """The model's output as one value per input row (a row of several values: a list)."""
    if isinstance(predicted, dict):
        predicted = pd.DataFrame(predicted)
    if isinstance(predicted, pd.DataFrame):
        if predicted.shape[1] == 1:
            values = predicted.iloc[:, 0].tolist()
        else:
            values = predicted.to_numpy().tolist()
    elif isinstance(predicted, (pd.Series, np.ndarray)):
        values = np.asarray(predicted).tolist()
    elif isinstance(predicted, (list, tuple)):
        values = list(predicted)
    else:
        values = [predicted]
    if not isinstance(values, list):  # a 0-d array
        values = [values]
    if expected is not None and len(values) != expected:
        raise FileScoringError(
            f"{where}: the model returned {len(values)} predictions for {expected} rows"
        )
    return values


def _column_specs() -> list[Any]:
    if schema is None or schema.is_tensor_spec():
        return []
    return list(schema.inputs)


def _kind(dtype: Any) -> str:
    """The name of a column type of a signature (``double``, ``long``, ...)."""
    return str(getattr(dtype, "name", dtype))
