"""LPIPS v0.1, the learned perceptual image patch similarity, as a torch module (no torchvision, no file I/O).

Zhang, Isola, Efros, Shechtman, Wang, "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric",
CVPR 2018. Reference code: richzhang/PerceptualSimilarity ``lpips/lpips.py`` (``LPIPS``, ``ScalingLayer``,
``NetLinLayer``), ``lpips/pretrained_networks.py`` and ``lpips/__init__.py`` (``normalize_tensor``), as released in
the PyPI package ``lpips`` 0.1.4; facts in ``shared/research/metrics_models.md`` §7. The weights are loaded by
``generation/perceptual_weights.py``: the backbone from torchvision's released file, the heads from the
``lpips`` package's ``weights/v0.1/{alex,vgg}.pth`` (read as files; the package itself is never imported
because it imports torchvision).

Faithful to the reference code (``LPIPS(net=..., version='0.1', lpips=True, spatial=False)``)
----------------------------------------------------------------------------------------------
1. Inputs in [-1, 1] (``normalize=True`` maps [0, 1] inputs with 2x - 1), RGB.
2. ScalingLayer: ``(x - shift) / scale`` with shift (-0.030, -0.088, -0.188) and scale (0.458, 0.448, 0.450),
   i.e. ImageNet mean/std carried over to [-1, 1].
3. Backbone taps: ``net='alex'`` relu1..relu5 (64, 192, 384, 256, 256 channels), ``net='vgg'`` (vgg16) relu1_2,
   relu2_2, relu3_3, relu4_3, relu5_3 (64, 128, 256, 512, 512). The backbone is frozen (``pnet_tune=False``).
4. Each tap unit-normalised over channels, ``f / (sqrt(sum_c f^2) + 1e-10)``; squared difference of the two
   images' normalised features.
5. Per tap a 1x1 conv to one channel without bias (``NetLinLayer``), preceded by ``Dropout`` (``use_dropout=True``,
   the default), so its weight key is ``lin{k}.model.1.weight`` of shape (1, C_k, 1, 1); that is exactly what the
   heads files hold (checked against the installed ``lpips`` 0.1.4 files).
6. Spatial mean per tap (or, with ``spatial=True``, bilinear upsampling to the input size, align_corners=False),
   summed over taps: (N, 1, 1, 1) (or (N, 1, H, W)).

Not from the reference code (our choices)
-----------------------------------------
* The channel norm takes its square root only where the sum of squares is positive (elsewhere the feature
  vector is zero and so is its normalised value). The forward numbers are the reference's for every input, but
  the gradient stays finite: the reference's ``torch.sqrt`` of an all-zero feature vector (a dead ReLU region)
  back-propagates NaN into the generator (PerceptualSimilarity issues #69, #121).
* The module is a fixed metric/loss: its parameters do not require gradients and ``train()`` keeps it in eval
  mode, so a training loop that calls ``.train()`` on a parent module does not switch on the heads' dropout
  (the reference's LPIPS would then randomly zero half of each head's inputs). Gradients still flow to the
  inputs.
* The backbone's keys are ``net.features.*`` (torchvision's ``features`` indices) instead of the reference's
  ``net.slice{k}.*``; no file stores whole LPIPS modules, so nothing depends on it.
* Only v0.1 with linear heads (``lpips=True``); no v0.0, no SqueezeNet, no head training.
* Widths come from the backbone config in :class:`LPIPSConfig`, so tests can build a narrow LPIPS.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from generation.nets import alexnet as alexnet_nets
from generation.nets import vgg as vgg_nets

LPIPS_SHIFT = (-0.030, -0.088, -0.188)  # ImageNet mean (0.485, 0.456, 0.406) mapped to [-1, 1]: 2m - 1
LPIPS_SCALE = (0.458, 0.448, 0.450)  # ImageNet std (0.229, 0.224, 0.225) mapped to [-1, 1]: 2s
NORM_EPS = 1e-10  # added to the channel norm, as normalize_tensor does
NETS = ("alex", "vgg")
HEAD_KEY = "lin{k}.model.1.weight"  # the key of head k in the heads files and in this module


@dataclass(frozen=True)
class LPIPSConfig:
    """Which LPIPS: the backbone (``"alex"``, the reference's default, or ``"vgg"`` = vgg16) and its widths.

    backbone: an :class:`~generation.nets.alexnet.AlexNetConfig` for ``alex`` or a
    :class:`~generation.nets.vgg.VGGConfig` for ``vgg``; ``None`` means the released one.
    """

    net: str = "alex"
    backbone: object = None

    def __post_init__(self) -> None:
        if self.net not in NETS:
            raise ValueError(f"LPIPS net must be one of {NETS}, not {self.net!r}")
        expected = alexnet_nets.AlexNetConfig if self.net == "alex" else vgg_nets.VGGConfig
        if self.backbone is not None and not isinstance(self.backbone, expected):
            raise ValueError(f"LPIPS net {self.net!r} needs a {expected.__name__}, got {type(self.backbone).__name__}")

    @property
    def backbone_config(self):
        if self.backbone is not None:
            return self.backbone
        return alexnet_nets.ALEXNET if self.net == "alex" else vgg_nets.VGG16

    @property
    def channels(self) -> tuple[int, ...]:
        """Channels of the five taps; each is the width of its conv (one tap per AlexNet conv / VGG block)."""
        return tuple(self.backbone_config.widths)


LPIPS_ALEX = LPIPSConfig("alex")
LPIPS_VGG = LPIPSConfig("vgg")


def heads_layout(config: LPIPSConfig) -> dict[str, tuple[int, ...]]:
    """{``lin{k}.model.1.weight``: (1, C_k, 1, 1)}: the exact contents of a heads file for ``config``."""
    return {HEAD_KEY.format(k=k): (1, c, 1, 1) for k, c in enumerate(config.channels)}


class ScalingLayer(nn.Module):
    """(N, 3, H, W) in [-1, 1] -> ``(x - shift) / scale`` (constants as non-persistent buffers)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


class NetLinLayer(nn.Module):
    """One LPIPS head: Dropout (``model.0``) -> 1x1 conv C -> 1 without bias (``model.1``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, kernel_size=1, stride=1, padding=0, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def normalize_channels(features: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """(N, C, H, W) -> each feature vector divided by (its L2 norm over C + eps), as ``normalize_tensor``.

    The square root is taken of 1 instead of 0 for all-zero vectors: their value is 0 either way, and
    ``sqrt``'s infinite slope at 0 would otherwise turn the gradient into NaN.
    """
    squares = torch.sum(features ** 2, dim=1, keepdim=True)  # (N, 1, H, W)
    norm = torch.sqrt(torch.where(squares > 0, squares, torch.ones_like(squares)))
    return features / (norm + eps)


def build_backbone(config: LPIPSConfig) -> nn.Module:
    """The LPIPS trunk: AlexNet or VGG16 with LPIPS' taps and *without* the ImageNet normalisation (the
    ScalingLayer does it on [-1, 1] inputs)."""
    if config.net == "alex":
        return alexnet_nets.AlexNet(config.backbone_config, taps=alexnet_nets.DEFAULT_TAPS, normalize_input=False)
    backbone = config.backbone_config
    return vgg_nets.VGG(backbone, taps=vgg_nets.default_taps(backbone), normalize_input=False)


class LPIPS(nn.Module):
    """LPIPS v0.1 distance between two image batches.

    forward(in0 (N, 3, H, W), in1 (N, 3, H, W), normalize=False) -> (N, 1, 1, 1) distances (>= 0 with the
    released heads, whose weights are non-negative); inputs RGB in [-1, 1], or in [0, 1] with
    ``normalize=True``. With ``spatial=True`` -> (N, 1, H, W), the per-pixel map whose mean is the distance.
    With ``per_layer=True`` also the list of the five per-tap terms.

    Build it with random weights here; ``generation.perceptual_weights.load_lpips`` loads the released
    backbone and heads. :meth:`load_heads` takes the state dict of a heads file.
    """

    def __init__(self, config: LPIPSConfig = LPIPS_ALEX, *, spatial: bool = False):
        super().__init__()
        self.config = config
        self.spatial = spatial
        self.scaling_layer = ScalingLayer()
        self.net = build_backbone(config)
        # lin0..lin4 as direct attributes (not in a ModuleList) so that the keys are the heads files' own.
        for k, channels in enumerate(config.channels):
            self.add_module(f"lin{k}", NetLinLayer(channels))
        self.requires_grad_(False)
        self.eval()

    @property
    def heads(self) -> list[NetLinLayer]:
        return [getattr(self, f"lin{k}") for k in range(len(self.config.channels))]

    def train(self, mode: bool = True) -> LPIPS:
        # A fixed metric: stay in eval mode (no head dropout) whatever a parent module is switched to.
        return super().train(False)

    def heads_layout(self) -> dict[str, tuple[int, ...]]:
        return heads_layout(self.config)

    def load_heads(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load the five heads from a heads file's state dict, strictly: exactly the keys and shapes of
        :meth:`heads_layout`, nothing else. Raises ValueError naming what differs."""
        expected = self.heads_layout()
        missing = sorted(set(expected) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(expected))
        wrong = sorted(f"{k} {tuple(state_dict[k].shape)} (expected {expected[k]})"
                       for k in set(expected) & set(state_dict) if tuple(state_dict[k].shape) != expected[k])
        if missing or unexpected or wrong:
            raise ValueError(f"not LPIPS heads for net={self.config.net!r} with channels {self.config.channels}: "
                             f"missing {missing or 'none'}; unexpected {unexpected or 'none'}; "
                             f"other shapes {wrong or 'none'}")
        for k, head in enumerate(self.heads):
            head.model.load_state_dict({"1.weight": state_dict[HEAD_KEY.format(k=k)]}, strict=True)

    def forward(self, in0: torch.Tensor, in1: torch.Tensor, *, normalize: bool = False,
                per_layer: bool = False):
        if in0.shape != in1.shape:
            raise ValueError(f"LPIPS compares images of one shape, got {tuple(in0.shape)} and {tuple(in1.shape)}")
        vgg_nets.check_image_batch(in0, "LPIPS")
        if normalize:  # [0, 1] -> [-1, 1]
            in0, in1 = 2 * in0 - 1, 2 * in1 - 1
        feats0 = self.net(self.scaling_layer(in0))  # {tap: (N, C_k, h_k, w_k)}
        feats1 = self.net(self.scaling_layer(in1))
        terms = []
        for head, tap in zip(self.heads, self.net.taps):
            diff = (normalize_channels(feats0[tap]) - normalize_channels(feats1[tap])) ** 2  # (N, C_k, h_k, w_k)
            weighted = head(diff)  # (N, 1, h_k, w_k)
            if self.spatial:
                terms.append(F.interpolate(weighted, size=tuple(in0.shape[2:]), mode="bilinear", align_corners=False))
            else:
                terms.append(weighted.mean(dim=(2, 3), keepdim=True))  # (N, 1, 1, 1)
        total = terms[0]
        for term in terms[1:]:
            total = total + term
        return (total, terms) if per_layer else total


def build_lpips(config: LPIPSConfig = LPIPS_ALEX, **kwargs) -> LPIPS:
    return LPIPS(config, **kwargs)
