"""Network definition for the digits-cnn example.

Kept in its own module so that both ``prepare.py`` (training) and ``batch_driver.py``
(scoring) use the exact same architecture; the scoring script imports it as a sibling
module (``from digits_net import DigitsNet``) because the code folder is on ``sys.path``.
"""

from __future__ import annotations

import torch
from torch import nn

#: Height and width (pixels) of the grayscale images the network expects.
IMAGE_SIZE = 16
#: Number of output classes (the digits 0-9).
NUM_CLASSES = 10


class DigitsNet(nn.Module):
    """A small CNN for 1x16x16 grayscale digit images: two conv blocks and a linear head.

    Input: a float tensor of shape ``(N, 1, 16, 16)`` with pixel values in ``[0, 1]``.
    Output: unnormalised logits of shape ``(N, 10)``.
    """

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        """Create the layers.

        Args:
            num_classes: number of output logits.
        """
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=3, padding=1),  # 16x16
            nn.ReLU(),
            nn.MaxPool2d(2),  # -> 8x8
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # -> 4x4
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(0.25),
            nn.Linear(32 * (IMAGE_SIZE // 4) ** 2, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits for a batch of images.

        Args:
            x: tensor of shape ``(N, 1, 16, 16)``.

        Returns:
            Logits of shape ``(N, num_classes)``.
        """
        return self.classifier(self.features(x))
