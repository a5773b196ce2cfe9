"""Dataset registry: offline datasets in their usual on-disk formats, loaders and mixup.

``build_data(cfg, seed=..., timesteps=...)`` -> DataBundle with three splits; ``make_loaders``
-> Loaders(train, val, test); ``make_mixup`` -> timm Mixup or None. Every data fault raises
DataError with one line.

The splits. ``val`` drives selection (pruning, the search objective, the checkpoint) and
``test`` is evaluated once, on the selected weights; both use the eval transform. Every carve
is per class (round(n_c x fraction), at least one from a class of two or more) and seeded by
the data seed, which the trial fixes, so every trial and seed of a study shares one split.

=============  ===========================  ====================================================
dataset        test                         val
=============  ===========================  ====================================================
cifar10/100    the official test batch      val_fraction (0.1) of each train class
mnist,         the official t10k files      val_fraction (0.1) of each train class
fashion_mnist
imagenet       the val folder (ImageNet's   val_fraction (0.1) of each train class
               test labels are not public)
digits         test_fraction (0.2) of each  val_fraction (0.1) of each class of the rest
               class of the 1,797 images
synthetic      test_fraction (0.2) of each  val_fraction (0.1) of each class of the rest
               class of 48 per class
cifar10_dvs    test_fraction (0.1: the      val_fraction (0.1) of each class of the rest
               usual 9:1) of each class
=============  ===========================  ====================================================

``data.val_fraction: 0`` is the papers' practice: val IS test (``bundle.selection_on_test``),
and every number selected on it is optimistically biased; results must say so.
``data.test_fraction`` on a dataset with an official test split is an error.
``bundle.split_rule`` says the rule in one line.
"""

from bkd_sweep.data.base import (DataBundle, DataError, build_data, dataset_needs_root,
                                 first_samples, list_datasets, register_dataset)
from bkd_sweep.data.loaders import Loaders, make_loaders, make_mixup

# importing the modules registers their datasets
from bkd_sweep.data import arrays, cifar, events, imagenet, mnist  # noqa: E402,F401  isort: skip

__all__ = ["DataBundle", "DataError", "Loaders", "build_data", "dataset_needs_root",
           "first_samples", "list_datasets", "make_loaders", "make_mixup", "register_dataset"]
