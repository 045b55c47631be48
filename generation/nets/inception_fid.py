"""The Inception-v3 of pytorch-fid 0.3.0 (the "FID Inception"), returning the 2048-d pool3 features.

Heusel, Ramsauer, Unterthiner, Nessler, Hochreiter, "GANs Trained by a Two Time-Scale Update Rule Converge to a
Local Nash Equilibrium", NeurIPS 2017 (FID); Szegedy et al., "Rethinking the Inception Architecture for Computer
Vision", CVPR 2016 (Inception-v3). Reference code: mseitzer/pytorch-fid 0.3.0 ``src/pytorch_fid/inception.py``
(``fid_inception_v3``, ``FIDInceptionA/C/E_1/E_2``, ``InceptionV3``), which builds torchvision's
``models/inception.py`` ``inception_v3(num_classes=1008, aux_logits=False, weights=None)`` and swaps in patched
blocks; the weights ``pt_inception-2015-12-05-6726825d.pth`` are TensorFlow's ``inception-2015-12-05`` graph
ported to that layout (research notes metrics_models.md §5.1). Not a generator: nothing here registers with the
generator registry, and there is no file I/O (``generation/metrics/fid_weights.py`` loads the released file).

Faithful to the reference code (checked against pytorch-fid 0.3.0 itself:
``tests/generation/nets/test_inception_fid.py::test_features_equal_pytorch_fid_on_seeded_random_weights``)
-----------------------------------------------------------------------------------------------------------------
* Module names are torchvision's, so the state dict is the released file's without remapping:
  ``Conv2d_1a_3x3``, ``Conv2d_2a_3x3``, ``Conv2d_2b_3x3``, ``Conv2d_3b_1x1``, ``Conv2d_4a_3x3``, ``Mixed_5b..5d``
  (A), ``Mixed_6a`` (B), ``Mixed_6b..6e`` (C), ``Mixed_7a`` (D), ``Mixed_7b``, ``Mixed_7c`` (E), ``fc``; every
  conv is a ``BasicConv2d`` = ``conv`` (no bias) + ``bn`` (BatchNorm, eps 0.001) + ReLU, so its keys are
  ``<name>.conv.weight`` and ``<name>.bn.{weight,bias,running_mean,running_var,num_batches_tracked}``.
  566 tensors, 23,850,960 parameters with the default config.
* The FID patches: the pool branch of A, C and E_1 (Mixed_7b) is a 3x3 / stride 1 / pad 1 average pool with
  ``count_include_pad=False`` (TensorFlow's behaviour; torchvision counts the padding), and the pool branch of
  E_2 (Mixed_7c) is a 3x3 / stride 1 / pad 1 *max* pool (a quirk of the TF graph, kept by pytorch-fid).
  Mixed_6a (B) and Mixed_7a (D) are torchvision's (3x3 / stride 2 max pools).
* The feature path of pytorch-fid's ``InceptionV3(output_blocks=[3], resize_input=True, normalize_input=True)``:
  input (N, 3, H, W) RGB in [0, 1] -> ``F.interpolate(size=(299, 299), mode="bilinear", align_corners=False)``
  (no antialias, also when the input already is 299x299, where it is the identity) -> ``2x - 1`` -> stem with its
  two 3x3 / stride 2 max pools -> Mixed_5b .. Mixed_7c -> global average pool -> (N, 2048).

Not from the reference code (our choices)
-----------------------------------------
* ``fc`` (2048 -> 1008 logits) is built only so that the released file, which holds it, loads strictly; it is
  never used (FID uses pool3, and pytorch-fid's wrapper drops it too). No dropout module (also unused).
* Widths come from :class:`InceptionFIDConfig`; :data:`TINY` is a narrow net with the same layout and module
  names for fast tests. The input size (299) is the config's ``input_size``.
* Random initialisation is PyTorch's default (the net is only ever used with loaded weights; pytorch-fid skips
  torchvision's truncated-normal init too, ``init_weights=False``).

UNVERIFIED: the released file itself was not available here. The comparison with pytorch-fid uses seeded random
weights in the exact layout pytorch-fid loads the file into (same keys, shapes and order), so layout and arithmetic
are checked; that the file then gives the published FID values is not.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 0.001  # torchvision BasicConv2d (the TF graph's value)


@dataclass(frozen=True)
class InceptionFIDConfig:
    """Widths of the FID Inception-v3 (defaults: the released net).

    stem: output channels of Conv2d_1a_3x3, Conv2d_2a_3x3, Conv2d_2b_3x3, Conv2d_3b_1x1, Conv2d_4a_3x3.
    mixed_a: InceptionA widths (Mixed_5b/5c/5d): branch1x1, branch5x5_1, branch5x5_2, branch3x3dbl_1,
        branch3x3dbl_2 (= branch3x3dbl_3).
    pool_features: branch_pool width of Mixed_5b, Mixed_5c, Mixed_5d.
    mixed_b: InceptionB widths (Mixed_6a): branch3x3, branch3x3dbl_1, branch3x3dbl_2 (= branch3x3dbl_3).
    mixed_c: InceptionC output width of each of its four branches (Mixed_6b..6e).
    channels_7x7: InceptionC inner 7x7 width of Mixed_6b, 6c, 6d, 6e.
    mixed_d: InceptionD widths (Mixed_7a): branch3x3_1, branch3x3_2, branch7x7x3 (all four convs).
    mixed_e: InceptionE widths (Mixed_7b/7c): branch1x1, branch3x3 (_1, _2a, _2b), branch3x3dbl_1,
        branch3x3dbl (_2, _3a, _3b), branch_pool.
    num_classes: outputs of the (unused) ``fc``; 1008 in the TF graph.
    input_size: the side inputs are bilinearly resized to.
    """

    stem: tuple = (32, 32, 64, 80, 192)
    mixed_a: tuple = (64, 48, 64, 64, 96)
    pool_features: tuple = (32, 64, 64)
    mixed_b: tuple = (384, 64, 96)
    mixed_c: int = 192
    channels_7x7: tuple = (128, 160, 160, 192)
    mixed_d: tuple = (192, 320, 192)
    mixed_e: tuple = (320, 384, 448, 384, 192)
    num_classes: int = 1008
    input_size: int = 299

    def __post_init__(self) -> None:
        lengths = {"stem": 5, "mixed_a": 5, "pool_features": 3, "mixed_b": 3, "channels_7x7": 4, "mixed_d": 3,
                   "mixed_e": 5}
        for name, length in lengths.items():
            if len(getattr(self, name)) != length:
                raise ValueError(f"InceptionFIDConfig.{name} needs {length} entries, got {getattr(self, name)!r}")
        if self.input_size < 75:  # the smallest input that survives the stride-2 layers (torchvision min_size)
            raise ValueError(f"input_size must be at least 75, got {self.input_size}")

    @property
    def feature_dim(self) -> int:
        """Channels of Mixed_7c, i.e. of the pool3 features (2048 for the released net)."""
        e = self.mixed_e
        return e[0] + 2 * e[1] + 2 * e[3] + e[4]


DEFAULT = InceptionFIDConfig()
TINY = InceptionFIDConfig(stem=(4, 4, 8, 8, 12), mixed_a=(4, 4, 6, 4, 6), pool_features=(2, 4, 4), mixed_b=(8, 4, 6),
                          mixed_c=6, channels_7x7=(4, 4, 4, 6), mixed_d=(4, 6, 4), mixed_e=(4, 6, 6, 4, 4),
                          num_classes=10)
CONFIGS = {"default": DEFAULT, "tiny": TINY}


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 0.001) -> ReLU; keys ``conv.weight``, ``bn.*``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)  # in place on the fresh BN output, as torchvision


def tf_avg_pool_3x3(x: torch.Tensor) -> torch.Tensor:
    # TensorFlow's SAME average pool divides by the number of real (not padded) cells.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def max_pool_3x3(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


class InceptionA(nn.Module):
    """Mixed_5b/5c/5d: (N, C_in, 35, 35) -> (N, a0 + a2 + a4 + pool_features, 35, 35)."""

    def __init__(self, in_channels: int, widths: tuple, pool_features: int):
        super().__init__()
        w1, w5_1, w5_2, w3_1, w3_2 = widths
        self.branch1x1 = BasicConv2d(in_channels, w1, 1)
        self.branch5x5_1 = BasicConv2d(in_channels, w5_1, 1)
        self.branch5x5_2 = BasicConv2d(w5_1, w5_2, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, w3_1, 1)
        self.branch3x3dbl_2 = BasicConv2d(w3_1, w3_2, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(w3_2, w3_2, 3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1)
        self.out_channels = w1 + w5_2 + w3_2 + pool_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = self.branch_pool(tf_avg_pool_3x3(x))
        return torch.cat([self.branch1x1(x), branch5x5, branch3x3dbl, branch_pool], 1)


class InceptionB(nn.Module):
    """Mixed_6a (grid reduction): (N, C_in, 35, 35) -> (N, b0 + b2 + C_in, 17, 17)."""

    def __init__(self, in_channels: int, widths: tuple):
        super().__init__()
        w3, w3dbl_1, w3dbl_2 = widths
        self.branch3x3 = BasicConv2d(in_channels, w3, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, w3dbl_1, 1)
        self.branch3x3dbl_2 = BasicConv2d(w3dbl_1, w3dbl_2, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(w3dbl_2, w3dbl_2, 3, stride=2)
        self.out_channels = w3 + w3dbl_2 + in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([self.branch3x3(x), branch3x3dbl, branch_pool], 1)


class InceptionC(nn.Module):
    """Mixed_6b..6e (factorised 7x7): (N, C_in, 17, 17) -> (N, 4 * width, 17, 17)."""

    def __init__(self, in_channels: int, width: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, width, 1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, width, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, width, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, width, 1)
        self.out_channels = 4 * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            branch7x7dbl = conv(branch7x7dbl)
        branch_pool = self.branch_pool(tf_avg_pool_3x3(x))
        return torch.cat([self.branch1x1(x), branch7x7, branch7x7dbl, branch_pool], 1)


class InceptionD(nn.Module):
    """Mixed_7a (grid reduction): (N, C_in, 17, 17) -> (N, d1 + d2 + C_in, 8, 8)."""

    def __init__(self, in_channels: int, widths: tuple):
        super().__init__()
        w3_1, w3_2, w7 = widths
        self.branch3x3_1 = BasicConv2d(in_channels, w3_1, 1)
        self.branch3x3_2 = BasicConv2d(w3_1, w3_2, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, w7, 1)
        self.branch7x7x3_2 = BasicConv2d(w7, w7, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(w7, w7, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(w7, w7, 3, stride=2)
        self.out_channels = w3_2 + w7 + in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = self.branch7x7x3_1(x)
        for conv in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            branch7x7x3 = conv(branch7x7x3)
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([branch3x3, branch7x7x3, branch_pool], 1)


class InceptionE(nn.Module):
    """Mixed_7b/7c (expanded filter bank): (N, C_in, 8, 8) -> (N, e0 + 2 e1 + 2 e3 + e4, 8, 8).

    ``pool`` is the pool of the pool branch: :func:`tf_avg_pool_3x3` in Mixed_7b (pytorch-fid's FIDInceptionE_1),
    :func:`max_pool_3x3` in Mixed_7c (FIDInceptionE_2).
    """

    def __init__(self, in_channels: int, widths: tuple, pool):
        super().__init__()
        w1, w3, w3dbl_1, w3dbl, w_pool = widths
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, w1, 1)
        self.branch3x3_1 = BasicConv2d(in_channels, w3, 1)
        self.branch3x3_2a = BasicConv2d(w3, w3, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(w3, w3, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, w3dbl_1, 1)
        self.branch3x3dbl_2 = BasicConv2d(w3dbl_1, w3dbl, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(w3dbl, w3dbl, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(w3dbl, w3dbl, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, w_pool, 1)
        self.out_channels = w1 + 2 * w3 + 2 * w3dbl + w_pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], 1)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat([self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)], 1)
        branch_pool = self.branch_pool(self.pool(x))
        return torch.cat([self.branch1x1(x), branch3x3, branch3x3dbl, branch_pool], 1)


def resize_and_scale(images: torch.Tensor, size: int = DEFAULT.input_size) -> torch.Tensor:
    """pytorch-fid's input transform: (N, 3, H, W) in [0, 1] -> (N, 3, size, size) in [-1, 1].

    Bilinear, ``align_corners=False``, no antialiasing (so a downscale aliases, as in the reference), then 2x - 1.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"the FID Inception expects an image batch (N, 3, H, W), got {tuple(images.shape)}")
    resized = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    return 2 * resized - 1


class FIDInceptionV3(nn.Module):
    """The FID Inception-v3 of pytorch-fid 0.3.0, giving pool3 features.

    forward(images (N, 3, H, W) float RGB in [0, 1]) -> (N, feature_dim) (N, 2048 for the released net), the global
    average of Mixed_7c after the resize to ``input_size`` and the scaling to [-1, 1] (:func:`resize_and_scale`).
    :meth:`pool3` skips that transform. Use in eval mode (BatchNorm uses the file's running statistics).
    """

    def __init__(self, config: InceptionFIDConfig = DEFAULT):
        super().__init__()
        self.config = config
        s = config.stem
        self.Conv2d_1a_3x3 = BasicConv2d(3, s[0], 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(s[0], s[1], 3)
        self.Conv2d_2b_3x3 = BasicConv2d(s[1], s[2], 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(s[2], s[3], 1)
        self.Conv2d_4a_3x3 = BasicConv2d(s[3], s[4], 3)
        channels = s[4]
        for name, pool_features in zip(("Mixed_5b", "Mixed_5c", "Mixed_5d"), config.pool_features):
            block = InceptionA(channels, config.mixed_a, pool_features)
            setattr(self, name, block)
            channels = block.out_channels
        self.Mixed_6a = InceptionB(channels, config.mixed_b)
        channels = self.Mixed_6a.out_channels
        for name, c7 in zip(("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"), config.channels_7x7):
            block = InceptionC(channels, config.mixed_c, c7)
            setattr(self, name, block)
            channels = block.out_channels
        self.Mixed_7a = InceptionD(channels, config.mixed_d)
        self.Mixed_7b = InceptionE(self.Mixed_7a.out_channels, config.mixed_e, pool=tf_avg_pool_3x3)
        self.Mixed_7c = InceptionE(self.Mixed_7b.out_channels, config.mixed_e, pool=max_pool_3x3)
        # In the released file, unused here: the features are taken before it.
        self.fc = nn.Linear(self.Mixed_7c.out_channels, config.num_classes)

    @property
    def feature_dim(self) -> int:
        return self.Mixed_7c.out_channels

    def pool3(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) already resized and scaled to [-1, 1] -> (N, feature_dim)."""
        x = self.Conv2d_1a_3x3(x)  # (N, 32, 149, 149) for S = 299
        x = self.Conv2d_2a_3x3(x)  # (N, 32, 147, 147)
        x = self.Conv2d_2b_3x3(x)  # (N, 64, 147, 147)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (N, 64, 73, 73)
        x = self.Conv2d_3b_1x1(x)  # (N, 80, 73, 73)
        x = self.Conv2d_4a_3x3(x)  # (N, 192, 71, 71)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (N, 192, 35, 35)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d):
            x = block(x)  # (N, 256 | 288 | 288, 35, 35)
        x = self.Mixed_6a(x)  # (N, 768, 17, 17)
        for block in (self.Mixed_6b, self.Mixed_6c, self.Mixed_6d, self.Mixed_6e):
            x = block(x)  # (N, 768, 17, 17)
        x = self.Mixed_7a(x)  # (N, 1280, 8, 8)
        x = self.Mixed_7b(x)  # (N, 2048, 8, 8)
        x = self.Mixed_7c(x)  # (N, 2048, 8, 8)
        return F.adaptive_avg_pool2d(x, 1).flatten(1)  # (N, 2048)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool3(resize_and_scale(images, self.config.input_size))


def build_inception_fid(config: InceptionFIDConfig | str = DEFAULT) -> FIDInceptionV3:
    """The net with PyTorch's default random initialisation; ``config`` may name one of :data:`CONFIGS`."""
    if isinstance(config, str):
        if config not in CONFIGS:
            raise KeyError(f"no FID Inception config {config!r}; known: {sorted(CONFIGS)}")
        config = CONFIGS[config]
    return FIDInceptionV3(config)


def official_layout(config: InceptionFIDConfig = DEFAULT) -> dict[str, tuple[int, ...]]:
    """{key: shape} of the state dict (for the default config: the released file's). Built on the meta device."""
    with torch.device("meta"):
        model = FIDInceptionV3(config)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}
