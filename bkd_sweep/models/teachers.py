"""Teachers: build a network by name, load its weights, wrap it frozen with a feature tap.

Names resolve in order: our registry (``cnn_small``, torchvision ResNets, ``*_cifar`` stems),
then any timm model. A TeacherConfig with ``timesteps`` makes an SNN teacher from the student
registry (the paper's CIFAR10-DVS setup). The feature is ``pre_logits`` (a vector) or the output
map of a named module, caught by a forward hook (library code is never patched).
"""

from __future__ import annotations

import difflib
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from bkd_sweep.models.base import SpikingStudent, Teacher, TeacherOutput
from bkd_sweep.models.neurons import reset
from bkd_sweep.models.weights import CheckpointError, load_weights  # noqa: F401 (re-exported)
from bkd_sweep.models.students import create_student
from bkd_sweep.registry import Registry, UnknownNameError
from bkd_sweep.config import NeuronConfig, TeacherConfig

TEACHERS: Registry[nn.Module] = Registry("teacher")

TeacherBuilder = Callable[..., nn.Module]
"""builder(*, num_classes, in_channels, image_size) -> an untrained nn.Module."""


def register_teacher(name: str) -> Callable[[TeacherBuilder], TeacherBuilder]:
    """Decorator: add a teacher builder under ``name`` (duplicates raise)."""
    return TEACHERS.register(name)


def list_teachers() -> list[str]:
    """Our registered teacher names (any timm model name is accepted as well)."""
    return TEACHERS.names()


# --------------------------------------------------------------------------------------
# Registered networks


class CNNSmall(nn.Module):
    """A small ANN CNN for tiny images: conv(32)-conv(64)-conv(128), each BN-ReLU, a 2x2 max-pool
    after a conv while the map is >= 16 px (8x8 digits keep an 8x8x128 map), mean-pool, linear.
    timm-style ``forward_features`` / ``forward_head(pre_logits=...)``."""

    def __init__(self, *, num_classes: int, in_channels: int, image_size: int,
                 widths: tuple[int, ...] = (32, 64, 128)):
        super().__init__()
        layers: list[nn.Module] = []
        c_in, size = in_channels, image_size
        for width in widths:
            layers += [nn.Conv2d(c_in, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True)]
            if size >= 16:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            c_in = width
        self.features = nn.Sequential(*layers)
        self.num_features = c_in
        self.fc = nn.Linear(c_in, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(-2, -1))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_teacher("cnn_small")
def cnn_small(*, num_classes: int, in_channels: int, image_size: int) -> CNNSmall:
    return CNNSmall(num_classes=num_classes, in_channels=in_channels, image_size=image_size)


def _torchvision_resnet(depth: int, *, cifar_stem: bool, num_classes: int, in_channels: int,
                        image_size: int) -> nn.Module:
    """torchvision ResNet (weights=None); the CIFAR stem is conv3x3/1 without max-pool."""
    import torchvision

    net = getattr(torchvision.models, f"resnet{depth}")(weights=None, num_classes=num_classes)
    if cifar_stem:
        net.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    if cifar_stem or in_channels != 3:
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    return net


def _register_resnet(depth: int, cifar_stem: bool) -> None:
    name = f"resnet{depth}" + ("_cifar" if cifar_stem else "")

    @register_teacher(name)
    def build(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
        return _torchvision_resnet(depth, cifar_stem=cifar_stem, num_classes=num_classes,
                                   in_channels=in_channels, image_size=image_size)

    build.__doc__ = f"torchvision ResNet-{depth}{' with a CIFAR stem' if cifar_stem else ''}."


for _depth in (18, 34, 50):
    for _cifar in (False, True):
        _register_resnet(_depth, _cifar)


# --------------------------------------------------------------------------------------
# Building and loading


def _timm_model(name: str, *, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    import timm

    kwargs: dict[str, Any] = dict(pretrained=False, num_classes=num_classes, in_chans=in_channels)
    try:  # ViT-like models take their input size; CNNs do not accept the argument
        return timm.create_model(name, img_size=image_size, **kwargs)
    except TypeError:
        return timm.create_model(name, **kwargs)


def _unknown_teacher(arch: str) -> UnknownNameError:
    import timm

    ours = list_teachers()
    close = difflib.get_close_matches(arch, ours + timm.list_models(), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return UnknownNameError(f"unknown teacher {arch!r}{hint}; valid: {', '.join(ours)}, or any "
                            f"timm model name (timm.list_models()), or a student name with "
                            f"teacher.timesteps set")


def build_teacher_network(cfg: TeacherConfig, *, num_classes: int, in_channels: int,
                          image_size: int, student_neuron: NeuronConfig | None = None
                          ) -> nn.Module:
    """The raw, trainable teacher network (random weights) for ``cfg.arch``.

    Its input size is ``cfg.input_size`` or else ``image_size``. With ``cfg.timesteps`` set the
    network is a spiking student at that T, using the student's neuron config.
    """
    size = cfg.input_size or image_size
    if cfg.timesteps is not None:
        return create_student(cfg.arch, num_classes=num_classes, in_channels=in_channels,
                              image_size=size, timesteps=cfg.timesteps, neuron=student_neuron)
    if cfg.arch in TEACHERS:
        return TEACHERS.create(cfg.arch, num_classes=num_classes, in_channels=in_channels,
                               image_size=size)
    import timm

    if timm.is_model(cfg.arch):
        return _timm_model(cfg.arch, num_classes=num_classes, in_channels=in_channels,
                           image_size=size)
    raise _unknown_teacher(cfg.arch)


class _Capture:
    """A picklable forward hook keeping the last output (or, as a pre-hook, the first input)."""

    def __init__(self, take_input: bool = False):
        self.take_input = take_input
        self.active = False  # only the owning teacher's forward records (no stray references)
        self.value: torch.Tensor | None = None

    def __call__(self, module: nn.Module, inputs: tuple, output: Any = None) -> None:
        if not self.active:
            return
        value = inputs[0] if self.take_input else output
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"feature module {type(module).__name__} returned "
                            f"{type(value).__name__}, not a tensor")
        self.value = value


def _first_conv_in_channels(net: nn.Module) -> int | None:
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.Conv1d, nn.Conv3d)):
            return module.in_channels
    return None


class FrozenTeacher(Teacher):
    """A teacher network in eval mode with no gradients, returning logits and its feature.

    Inputs are prepared for the network: event frames ``[B,T',C,H,W]`` are summed over frames
    for an ANN, images are resized (bilinear) to ``input_size`` when set, and a 1-channel input
    is repeated to 3 channels when the network's first conv wants 3. ``train()`` is a no-op:
    the teacher stays in eval mode even when a parent module is put in training mode.
    """

    def __init__(self, net: nn.Module, cfg: TeacherConfig, *, image_size: int):
        super().__init__()
        self.net = net
        self.arch = cfg.arch
        self.feature_name = cfg.feature
        self.input_size = cfg.input_size
        self.is_snn = isinstance(net, SpikingStudent)
        self.in_channels = _first_conv_in_channels(net)
        self._capture: _Capture | None = None
        self._use_timm_head = False
        self.renormalize: tuple[torch.Tensor, torch.Tensor] | None = None  # (scale, shift)
        if cfg.feature != "pre_logits":
            modules = dict(net.named_modules())
            if cfg.feature not in modules:
                close = difflib.get_close_matches(cfg.feature, list(modules), n=3)
                tops = [n for n, _ in net.named_children()]
                raise ValueError(
                    f"teacher {cfg.arch!r} has no module {cfg.feature!r}"
                    + (f" (did you mean {', '.join(map(repr, close))}?)" if close else "")
                    + f"; use 'pre_logits' or a module name such as {', '.join(tops)}")
            self._capture = _Capture()
            modules[cfg.feature].register_forward_hook(self._capture)
        elif not self.is_snn:
            if callable(getattr(net, "forward_head", None)) and callable(
                    getattr(net, "forward_features", None)):
                self._use_timm_head = True
            else:  # e.g. torchvision: the classifier's input is the pre-logits vector
                linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
                if not linears:
                    raise ValueError(f"teacher {cfg.arch!r}: no forward_head and no Linear "
                                     f"classifier to take pre_logits from; name a module")
                self._capture = _Capture(take_input=True)
                linears[-1].register_forward_pre_hook(self._capture)
        self._freeze()
        size = cfg.input_size or image_size
        channels = self.in_channels or 3
        dry = self(torch.zeros(1, channels, size, size,
                               device=next(net.parameters()).device))
        if dry.feature.dim() == 2:
            self.feature_kind = "vector"
        elif dry.feature.dim() == 4:
            self.feature_kind = "map"
        else:
            raise ValueError(f"teacher {cfg.arch!r} feature {cfg.feature!r} has shape "
                             f"{tuple(dry.feature.shape)}; expected [B,C] or [B,C,h,w] "
                             f"(use 'pre_logits' for token models)")
        self.feature_channels = int(dry.feature.shape[1])
        self.feature_size = tuple(dry.feature.shape[2:])
        self.num_classes = int(dry.logits.shape[1])

    def _freeze(self) -> None:
        self.net.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> "FrozenTeacher":
        """Always eval: a frozen teacher's BatchNorm statistics and dropout never change."""
        return super().train(False)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Fit the input to the network: frames, size and channels (see the class docstring)."""
        if x.dim() == 5 and not self.is_snn:
            x = x.sum(1)
        if self.input_size is not None and tuple(x.shape[-2:]) != (self.input_size,) * 2:
            lead = x.shape[:-3]
            x = F.interpolate(x.reshape(-1, *x.shape[-3:]), size=(self.input_size,) * 2,
                              mode="bilinear", align_corners=False)
            x = x.reshape(*lead, *x.shape[-3:])
        if self.in_channels is not None and x.shape[-3] == 1 and self.in_channels > 1:
            x = x.expand(*x.shape[:-3], self.in_channels, *x.shape[-2:])
        if self.renormalize is not None:
            scale, shift = self.renormalize
            x = x * scale.to(x) + shift.to(x)
        return x

    def set_input_normalization(self, data_mean: tuple[float, ...], data_std: tuple[float, ...],
                                mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        """Feed the network inputs normalized its own way: the batch the student sees carries
        the data's (mean, std); x_teacher = (x * data_std + data_mean - mean) / std, per
        channel (a one-channel statistic serves every channel)."""
        channels = max(len(data_mean), len(mean))
        device = next(self.net.parameters()).device  # made once where the teacher runs
        d_mean, d_std, t_mean, t_std = (torch.tensor(v if len(v) == channels else v * channels,
                                                     dtype=torch.float32,
                                                     device=device).view(-1, 1, 1)
                                        for v in (data_mean, data_std, mean, std))
        self.renormalize = (d_std / t_std, (d_mean - t_mean) / t_std)

    def _classify(self, features: torch.Tensor, pre_logits: torch.Tensor) -> torch.Tensor:
        """A timm net's logits from its pre-logits: the classifier alone when it is one Linear
        (the last op of every such timm head; its dropout is off in eval), so the head's
        pooling and convolutions run, and count in the teacher's energy, once; else the
        whole head again (a two-headed distilled ViT)."""
        get = getattr(self.net, "get_classifier", None)
        head = get() if callable(get) else None
        if isinstance(head, (nn.Linear, nn.Identity)) and not self.net.training:
            return head(pre_logits)
        return self.net.forward_head(features)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> TeacherOutput:  # type: ignore[override]
        x = self.prepare(x)
        if self._capture is not None:
            self._capture.active = True
        try:
            if self.is_snn:
                features = self.net.forward_features(x)
                logits = self.net.forward_head(features)
                # the SNN's modules all output [T,B,...]: time-average whatever was tapped
                tapped = features if self._capture is None else self._capture.value
                if tapped is None:
                    raise RuntimeError(f"teacher {self.arch!r}: feature module "
                                       f"{self.feature_name!r} did not run in forward")
                feature = tapped.mean(0)
            elif self._use_timm_head:
                features = self.net.forward_features(x)
                feature = self.net.forward_head(features, pre_logits=True)
                logits = self._classify(features, feature)
            else:
                logits = self.net(x)
                feature = self._capture.value  # type: ignore[union-attr]
                if feature is None:
                    raise RuntimeError(f"teacher {self.arch!r}: feature module "
                                       f"{self.feature_name!r} did not run in forward")
                if self.feature_name == "pre_logits":
                    feature = feature.flatten(1)
        finally:
            if self._capture is not None:
                self._capture.active, self._capture.value = False, None
            if self.is_snn:
                reset(self.net)
        return TeacherOutput(logits=logits, feature=feature)


def wrap_teacher(net: nn.Module, cfg: TeacherConfig, *, image_size: int) -> FrozenTeacher:
    """Freeze ``net`` (eval, no grads) and give it the Teacher interface."""
    return FrozenTeacher(net, cfg, image_size=image_size)


def create_teacher(cfg: TeacherConfig, *, num_classes: int, in_channels: int, image_size: int,
                   student_neuron: NeuronConfig | None = None) -> FrozenTeacher:
    """Build, load ``cfg.checkpoint`` when it is a path (not ``train`` or None), and wrap."""
    net = build_teacher_network(cfg, num_classes=num_classes, in_channels=in_channels,
                                image_size=image_size, student_neuron=student_neuron)
    if cfg.checkpoint not in (None, "train"):
        load_weights(net, cfg.checkpoint)
    return wrap_teacher(net, cfg, image_size=image_size)
