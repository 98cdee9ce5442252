"""Regenerate ``model/`` and ``sample-inputs/`` for the mlflow-breast-cancer example.

Trains a small scikit-learn classifier (``StandardScaler`` then ``LogisticRegression``) on
scikit-learn's bundled breast-cancer data set (no download), on a stratified 75 % split,
prints the accuracy on the held-out 25 %, saves it as an MLflow model with a signature
inferred from the training features (``mlflow.sklearn.save_model`` into ``model/``), and
writes the first held-out rows, feature columns only, to ``sample-inputs/`` as CSV files
(``patients_<k>.csv``).

Deterministic and idempotent: rerunning overwrites the outputs (MLflow stamps ``MLmodel``
with a new ``model_uuid`` and time).  Run from any directory::

    pip install -e ".[mlflow]" scikit-learn
    python configs/mlflow-breast-cancer/train.py
"""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow.sklearn
from mlflow.models import infer_signature
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

HERE = Path(__file__).resolve().parent
MODEL_DIR = HERE / "model"
SAMPLES_DIR = HERE / "sample-inputs"

SEED = 0
TEST_SIZE = 0.25
FILES = 6
ROWS_PER_FILE = 10


def main() -> None:
    """Train, report the held-out accuracy, and write ``model/`` and ``sample-inputs/``."""
    features, labels = load_breast_cancer(return_X_y=True, as_frame=True)
    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=TEST_SIZE, stratify=labels, random_state=SEED
    )
    model = Pipeline(
        [("scale", StandardScaler()), ("classify", LogisticRegression(max_iter=1000))]
    ).fit(x_train, y_train)
    print(f"held-out accuracy: {model.score(x_test, y_test):.3f} on {len(x_test)} rows")

    shutil.rmtree(MODEL_DIR, ignore_errors=True)
    mlflow.sklearn.save_model(
        model,
        str(MODEL_DIR),
        signature=infer_signature(x_train, model.predict(x_train)),
        # cloudpickle: loads with scikit-learn alone (the default, skops, needs skops)
        serialization_format="cloudpickle",
    )
    shutil.rmtree(SAMPLES_DIR, ignore_errors=True)
    SAMPLES_DIR.mkdir()
    rows = x_test.reset_index(drop=True)
    for k in range(FILES):
        part = rows.iloc[k * ROWS_PER_FILE : (k + 1) * ROWS_PER_FILE]
        part.to_csv(SAMPLES_DIR / f"patients_{k}.csv", index=False)
    print(f"wrote {MODEL_DIR} and {FILES} files of {ROWS_PER_FILE} rows in {SAMPLES_DIR}")


if __name__ == "__main__":
    main()
