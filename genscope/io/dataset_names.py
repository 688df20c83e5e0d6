"""Names of the datasets ``--data`` accepts by name, with what they are (torch-free).

The engine's loader (:func:`genscope.io.datasets.load_dataset`) builds or reads these; the
service lists and validates them from here without importing torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

#: Sets the engine builds itself (scikit-learn, fixed seeds), with their descriptions.
BUILTIN_DATASETS: Mapping[str, str] = MappingProxyType(
    {
        "digits": "scikit-learn 8x8 digits, 10 classes, stratified 80/20 split (seed 0)",
        "moons": "two interleaving half-circles, 2-D, 2 classes (seed 0)",
        "blobs": "Gaussian blobs, low-dimensional, several classes (seed 0)",
        "linear": "linearly separable 2-class set (seed 0)",
    }
)
#: The built-in sets made by :func:`genscope.io.datasets.synthetic` (the others: ``digits``).
SYNTHETIC_DATASETS = ("moons", "blobs", "linear")
#: torchvision sets read from the data directory (downloaded only with ``GENSCOPE_DOWNLOAD=1``).
TORCHVISION_DATASETS = ("mnist", "fashion-mnist", "cifar10", "cifar100", "svhn")
