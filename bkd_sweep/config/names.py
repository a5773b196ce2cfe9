"""The registries' built-in names and the one dataset fact a driver needs, readable without
importing the registries (they import torch, spikingjelly and timm: 1.6 s that ``validate``,
``plan`` and a sweep's driver never need otherwise).

A name found here is known at once; any other name is looked up in the registries themselves
(a dataset or architecture registered by one's own code is still accepted), so these lists
only make the common case fast. tests/study/test_names.py keeps them equal to the registries.
"""

from __future__ import annotations

DATASETS = frozenset({
    "cifar10", "cifar100", "cifar10_dvs", "digits", "fashion_mnist", "imagenet", "mnist",
    "synthetic"})
# ship with the code or are generated: no data.root (the data registry takes it from here)
BUNDLED_DATASETS = frozenset({"digits", "synthetic"})
STUDENTS = frozenset({
    "sew_resnet18", "sew_resnet18_cifar", "sew_resnet34", "sew_resnet34_cifar", "sew_resnet50",
    "sew_resnet50_cifar", "sew_resnet_dvs", "spikformer_2_256", "spikformer_2_256_dvs",
    "spikformer_2_384", "spikformer_4_256", "spikformer_4_384", "spikformer_8_384",
    "spikformer_8_512", "spikformer_8_768", "spiking_cnn_small", "spiking_resnet19",
    "spikingformer_2_256", "spikingformer_2_256_dvs", "spikingformer_2_384",
    "spikingformer_4_256", "spikingformer_4_384", "spikingformer_8_384", "spikingformer_8_512",
    "spikingformer_8_768"})
TEACHERS = frozenset({
    "cnn_small", "resnet18", "resnet18_cifar", "resnet34", "resnet34_cifar", "resnet50",
    "resnet50_cifar"})
# timm's models the paper's teachers are (ViT-S/16, ViT-B/16) and their neighbours: any other
# timm name is looked up in timm (importing it costs ~3 s of `plan` on the ImageNet study)
TIMM_TEACHERS = frozenset({
    "vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224",
    "vit_large_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224"})
