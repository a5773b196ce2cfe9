"""Dataset registry: offline datasets in their usual on-disk formats, loaders and mixup.

``build_data(cfg, seed=..., timesteps=...)`` -> DataBundle; ``make_loaders`` -> (train, val);
``make_mixup`` -> timm Mixup or None. Every data fault raises DataError with one line.
"""

from bkd_sweep.data.base import (DataBundle, DataError, build_data, first_samples, list_datasets,
                                 register_dataset)
from bkd_sweep.data.loaders import make_loaders, make_mixup

# importing the modules registers their datasets
from bkd_sweep.data import arrays, cifar, events, imagenet, mnist  # noqa: E402,F401  isort: skip

__all__ = ["DataBundle", "DataError", "build_data", "first_samples", "list_datasets", "make_loaders",
           "make_mixup", "register_dataset"]
