"""VGG-16 / VGG-19 as torchvision builds them, as a perceptual feature extractor.

Simonyan, Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition", ICLR 2015.
Reference code: torchvision ``torchvision/models/vgg.py`` (``VGG``, ``make_layers``, configs "D" = vgg16 and
"E" = vgg19, without batch norm). Not a generator: nothing here registers with the generator registry, and
there is no file I/O (``generation/perceptual_weights.py`` loads the released files).

Faithful to the reference code
------------------------------
* ``features`` is one ``nn.Sequential`` in which every conv (3x3, padding 1, with bias) is followed by a ReLU
  and every block ends in a 2x2 / stride 2 max-pool, so the indices, and with them the state-dict keys
  ``features.{N}.weight`` / ``features.{N}.bias``, are torchvision's:

  ==========  ====================================================  ===========================
  net         conv indices N                                        pools
  ==========  ====================================================  ===========================
  vgg16 (D)   0 2 | 5 7 | 10 12 14 | 17 19 21 | 24 26 28            4 9 16 23 30
  vgg19 (E)   0 2 | 5 7 | 10 12 14 16 | 19 21 23 25 | 28 30 32 34   4 9 18 27 36
  ==========  ====================================================  ===========================

* With ``classifier=True`` the head is built too: ``avgpool`` (adaptive, 7x7; no weights) and ``classifier``
  = Linear(512*7*7, 4096), ReLU, Dropout, Linear(4096, 4096), ReLU, Dropout, Linear(4096, 1000), i.e. the keys
  ``classifier.{0,3,6}.{weight,bias}``. The released files ``vgg16-397923af.pth`` / ``vgg19-dcbb9e9d.pth``
  hold exactly ``features.*`` + ``classifier.*``; parameter counts 138,357,544 (vgg16) and 143,667,240 (vgg19).
* Random initialisation as torchvision's ``VGG._initialize_weights``: convs Kaiming-normal (fan_out, ReLU
  gain) with zero bias, linears N(0, 0.01) with zero bias.

Not from the reference code (our choices)
-----------------------------------------
* ``forward`` returns the activations at named *taps* (``relu3_4``, ``conv5_4``, ``pool2``, ...) as a dict, and
  stops after the deepest requested tap; the classification forward is :meth:`VGG.classify`.
* The ImageNet normalisation the released weights were trained with is applied *inside* (``normalize_input``,
  default on): inputs are RGB in [0, 1], ``(x - mean) / std`` with mean (0.485, 0.456, 0.406) and std
  (0.229, 0.224, 0.225). The constants are non-persistent buffers, so the state dict stays torchvision's.
  LPIPS switches it off and applies its own scaling layer (``generation/nets/lpips.py``).
* ReLUs are not in-place (torchvision's are), so a tap on a conv (pre-activation, e.g. ``conv5_4``) is not
  overwritten by the ReLU after it. Same numbers, a little more memory.
* Widths and conv counts come from :class:`VGGConfig`, so tests can build a narrow net with the same layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB, of images in [0, 1]; torchvision's ImageNet training transforms
IMAGENET_STD = (0.229, 0.224, 0.225)
CLASSIFIER_POOL = 7  # the adaptive average pool in front of the classifier: 7x7 cells, as torchvision


class ImageNetNormalize(nn.Module):
    """(N, 3, H, W) RGB in [0, 1] -> ``(x - IMAGENET_MEAN) / IMAGENET_STD``.

    The constants are non-persistent buffers: they follow ``.to(device)`` but are not in the state dict, so a
    backbone holding this module still loads torchvision's files strictly.
    """

    def __init__(self, mean: tuple = IMAGENET_MEAN, std: tuple = IMAGENET_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def check_image_batch(x: torch.Tensor, who: str) -> None:
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{who} expects an image batch (N, 3, H, W), got {tuple(x.shape)}")


@dataclass(frozen=True)
class VGGConfig:
    """Layout of a VGG without batch norm (defaults: torchvision ``vgg16``, config "D").

    convs_per_block: number of 3x3 convs in each of the 5 blocks (vgg16 (2, 2, 3, 3, 3), vgg19 (2, 2, 4, 4, 4)).
    widths: output channels of the convs of each block.
    classifier_hidden: width of the two hidden fully connected layers (only built with ``classifier=True``).
    num_classes: outputs of the last fully connected layer.
    """

    convs_per_block: tuple = (2, 2, 3, 3, 3)
    widths: tuple = (64, 128, 256, 512, 512)
    classifier_hidden: int = 4096
    num_classes: int = 1000

    def __post_init__(self) -> None:
        for name in ("convs_per_block", "widths"):
            if len(getattr(self, name)) != 5:
                raise ValueError(f"VGGConfig.{name} needs 5 entries (one per block), got {getattr(self, name)!r}")
        if min(self.convs_per_block) < 1:
            raise ValueError(f"every VGG block needs at least one conv, got {self.convs_per_block!r}")


VGG16 = VGGConfig()
VGG19 = VGGConfig(convs_per_block=(2, 2, 4, 4, 4))
CONFIGS = {"vgg16": VGG16, "vgg19": VGG19}


def layer_names(config: VGGConfig) -> tuple[str, ...]:
    """The name of every entry of ``features``, by index: ``conv{b}_{i}``, ``relu{b}_{i}``, ``pool{b}``.

    vgg16: ('conv1_1', 'relu1_1', 'conv1_2', 'relu1_2', 'pool1', 'conv2_1', ...), 31 names; vgg19: 37 names.
    """
    names = []
    for block, count in enumerate(config.convs_per_block, start=1):
        for i in range(1, count + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return tuple(names)


def default_taps(config: VGGConfig) -> tuple[str, ...]:
    """The last ReLU of every block: vgg16 relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (the LPIPS taps);
    vgg19 relu1_2, relu2_2, relu3_4, relu4_4, relu5_4."""
    return tuple(f"relu{block}_{count}" for block, count in enumerate(config.convs_per_block, start=1))


def build_features(config: VGGConfig) -> nn.Sequential:
    """torchvision's ``make_layers`` without batch norm: [conv, ReLU] x count, max-pool, per block."""
    layers: list[nn.Module] = []
    cin = 3
    for count, width in zip(config.convs_per_block, config.widths):
        for _ in range(count):
            layers += [nn.Conv2d(cin, width, kernel_size=3, padding=1), nn.ReLU()]
            cin = width
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


def tap_indices(names: tuple[str, ...], taps: tuple[str, ...], net: str) -> dict[str, int]:
    """{tap: index into ``features``}, refusing unknown or repeated names."""
    if not taps:
        raise ValueError(f"{net} needs at least one tap")
    if len(set(taps)) != len(taps):
        raise ValueError(f"{net} taps are repeated: {taps!r}")
    unknown = [t for t in taps if t not in names]
    if unknown:
        raise ValueError(f"{net} has no layers {unknown}; known: {', '.join(names)}")
    return {t: names.index(t) for t in taps}


def run_taps(features: nn.Sequential, x: torch.Tensor, indices: dict[str, int]) -> dict[str, torch.Tensor]:
    """Run ``features`` up to the deepest tap and return the tapped activations, in the order of ``indices``."""
    wanted = {index: name for name, index in indices.items()}
    last = max(wanted)
    found: dict[str, torch.Tensor] = {}
    for index, layer in enumerate(features):
        x = layer(x)
        if index in wanted:
            found[wanted[index]] = x
        if index == last:
            break
    return {name: found[name] for name in indices}


class TappedBackbone(nn.Module):
    """What VGG and AlexNet share: ``forward`` returns the activations at the named taps, ``classify`` the
    ImageNet logits (when built with the classifier). Subclasses set ``features``, ``normalize``, ``avgpool``,
    ``classifier`` and ``_tap_indices``."""

    net_name = "backbone"

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        check_image_batch(x, self.net_name)
        return run_taps(self.features, self.normalize(x), self._tap_indices)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1] -> (N, num_classes) ImageNet logits (needs ``classifier=True``)."""
        if self.classifier is None:
            raise RuntimeError(f"this {self.net_name} was built without its classifier (classifier=False)")
        check_image_batch(x, self.net_name)
        x = self.avgpool(self.features(self.normalize(x)))  # (N, C5, pool, pool)
        return self.classifier(torch.flatten(x, 1))


class VGG(TappedBackbone):
    """VGG-16/19 (torchvision layout) returning the activations at named taps.

    forward(x (N, 3, H, W) RGB in [0, 1]) -> {tap: (N, C, h, w)}, in the order of ``taps``; e.g. for vgg19 and a
    224x224 input relu1_2 (N, 64, 224, 224), relu2_2 (N, 128, 112, 112), relu3_4 (N, 256, 56, 56),
    relu4_4 (N, 512, 28, 28), relu5_4 (N, 512, 14, 14). With ``normalize_input=False`` the input must already be
    normalised (ImageNet mean/std, or LPIPS' scaling).

    Parameters
    ----------
    config : VGGConfig
        :data:`VGG16` (default), :data:`VGG19`, or a narrower variant.
    taps : tuple of str, optional
        Layer names from :func:`layer_names`; default :func:`default_taps`.
    normalize_input : bool
        Apply the ImageNet mean/std normalisation to [0, 1] inputs (default True).
    classifier : bool
        Also build ``avgpool`` and ``classifier`` (the whole torchvision net, e.g. to load or inspect a released
        file in full). A perceptual loss does not need them (they are 120M of vgg19's 144M parameters).
    init_weights : bool
        Apply torchvision's initialisation (default). Pass False when released weights replace it anyway, as
        torchvision does for ``pretrained=True``.
    """

    net_name = "VGG"

    def __init__(self, config: VGGConfig = VGG16, *, taps: tuple[str, ...] | None = None,
                 normalize_input: bool = True, classifier: bool = False, init_weights: bool = True):
        super().__init__()
        self.config = config
        self.taps = tuple(taps) if taps is not None else default_taps(config)
        self._tap_indices = tap_indices(layer_names(config), self.taps, "VGG")
        self.normalize = ImageNetNormalize() if normalize_input else nn.Identity()
        self.features = build_features(config)
        if classifier:
            hidden = config.classifier_hidden
            self.avgpool = nn.AdaptiveAvgPool2d((CLASSIFIER_POOL, CLASSIFIER_POOL))
            self.classifier = nn.Sequential(
                nn.Linear(config.widths[4] * CLASSIFIER_POOL * CLASSIFIER_POOL, hidden),  # classifier.0
                nn.ReLU(),
                nn.Dropout(),
                nn.Linear(hidden, hidden),  # classifier.3
                nn.ReLU(),
                nn.Dropout(),
                nn.Linear(hidden, config.num_classes),  # classifier.6
            )
        else:
            self.avgpool = None
            self.classifier = None
        if init_weights:
            self._initialize_weights()

    def _initialize_weights(self) -> None:
        # torchvision's VGG init; it only matters for a random backbone (the released weights replace it).
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)


def build_vgg(config: VGGConfig = VGG16, **kwargs) -> VGG:
    return VGG(config, **kwargs)
