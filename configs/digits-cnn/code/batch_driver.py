"""Azure ML batch-deployment scoring script for the digits-cnn model.

Follows the Azure ML batch-endpoint contract: ``init()`` is called once per worker
process and loads the model found under ``$AZUREML_MODEL_DIR``; ``run(mini_batch)`` is
called once per mini-batch with a list of input file paths and returns one row per file.
With ``output_action: append_row`` the returned rows are appended to ``predictions.csv``.
"""

from __future__ import annotations

import glob
import logging
import os

import numpy as np
import pandas as pd
import torch
from digits_net import IMAGE_SIZE, DigitsNet
from PIL import Image

logger = logging.getLogger(__name__)

model: DigitsNet | None = None


def init() -> None:
    """Load the trained network once per worker process.

    ``AZUREML_MODEL_DIR`` points at a directory that contains the registered model's
    folder (here ``model/``), so the weights file is found one level down.
    """
    global model

    model_path = glob.glob(os.path.join(os.environ["AZUREML_MODEL_DIR"], "*", "*.pt"))[0]
    net = DigitsNet()
    net.load_state_dict(torch.load(model_path, map_location="cpu", weights_only=True))
    net.eval()
    model = net
    logger.info("Loaded digits-cnn weights from %s", model_path)


def _load_image(path: str) -> np.ndarray:
    """Read one image file as a ``(16, 16)`` float32 array with values in ``[0, 1]``.

    Args:
        path: path of an image file readable by Pillow (any mode; converted to grayscale).

    Returns:
        The grayscale pixels, resized to 16x16 if the file has another size.
    """
    with Image.open(path) as img:
        gray = img.convert("L")
        if gray.size != (IMAGE_SIZE, IMAGE_SIZE):
            gray = gray.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
        return np.asarray(gray, dtype=np.float32) / 255.0


def run(mini_batch: list[str]) -> pd.DataFrame:
    """Classify every image file in the mini-batch.

    Args:
        mini_batch: paths of the image files to score.

    Returns:
        A DataFrame with one row per input file and the columns ``file`` (base name),
        ``class`` (predicted digit) and ``probability`` (softmax probability of the
        predicted digit, rounded to 4 decimals).
    """
    if model is None:
        raise RuntimeError("init() must be called before run()")

    paths = [os.fspath(p) for p in mini_batch]
    if not paths:
        return pd.DataFrame(
            {
                "file": pd.Series(dtype=str),
                "class": pd.Series(dtype="int64"),
                "probability": pd.Series(dtype="float64"),
            }
        )

    batch = torch.from_numpy(np.stack([_load_image(p) for p in paths])).unsqueeze(1)
    with torch.no_grad():
        probs = torch.softmax(model(batch), dim=1)
    top_prob, top_class = probs.max(dim=1)

    logger.info("Scored mini-batch of %d file(s)", len(paths))
    return pd.DataFrame(
        {
            "file": [os.path.basename(p) for p in paths],
            "class": top_class.numpy().astype("int64"),
            "probability": np.round(top_prob.numpy().astype("float64"), 4),
        }
    )
