"""AlexNet as torchvision builds it (the "one weird trick" variant), as a perceptual feature extractor.

Krizhevsky, "One weird trick for parallelizing convolutional neural networks", arXiv:1404.5997 (2014).
Reference code: torchvision ``torchvision/models/alexnet.py`` (``AlexNet``); LPIPS taps it as in
richzhang/PerceptualSimilarity ``lpips/pretrained_networks.py`` (``alexnet``: relu1..relu5, the outputs of
``features[1]``, ``[4]``, ``[7]``, ``[9]``, ``[11]``; metrics_models.md §7). Not a generator: nothing here
registers with the generator registry, and there is no file I/O (``generation/perceptual_weights.py`` loads the
released file).

Faithful to the reference code
------------------------------
* ``features`` is one ``nn.Sequential`` with torchvision's indices, hence its state-dict keys:

  =====  ==========================================  ======  ===========
  index  layer                                       name    channels
  =====  ==========================================  ======  ===========
  0      Conv2d(3, 64, k11, stride 4, padding 2)     conv1   64
  1      ReLU                                        relu1
  2      MaxPool2d(k3, stride 2)                     pool1
  3      Conv2d(64, 192, k5, padding 2)              conv2   192
  4      ReLU                                        relu2
  5      MaxPool2d(k3, stride 2)                     pool2
  6      Conv2d(192, 384, k3, padding 1)             conv3   384
  7      ReLU                                        relu3
  8      Conv2d(384, 256, k3, padding 1)             conv4   256
  9      ReLU                                        relu4
  10     Conv2d(256, 256, k3, padding 1)             conv5   256
  11     ReLU                                        relu5
  12     MaxPool2d(k3, stride 2)                     pool5
  =====  ==========================================  ======  ===========

* With ``classifier=True``: ``avgpool`` (adaptive, 6x6) and ``classifier`` = Dropout, Linear(256*6*6, 4096), ReLU,
  Dropout, Linear(4096, 4096), ReLU, Linear(4096, 1000): keys ``classifier.{1,4,6}.{weight,bias}``. That is
  the whole of the released ``alexnet-owt-7be5be79.pth`` (and the older ``alexnet-owt-4df8aa71.pth``);
  61,100,840 parameters.
* Default PyTorch initialisation (torchvision's AlexNet does not initialise explicitly).

Not from the reference code (our choices)
-----------------------------------------
The same as for ``generation/nets/vgg.py``: ``forward`` returns named taps (default relu1..relu5) and stops at
the deepest; ImageNet mean/std normalisation of [0, 1] RGB inputs inside (non-persistent buffers, switchable off
for LPIPS); ReLUs not in-place, so conv taps survive; widths from :class:`AlexNetConfig`. The smallest input
that reaches relu5 is 31x31 (conv1 7x7, pool1 3x3, pool2 1x1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from generation.nets.vgg import ImageNetNormalize, TappedBackbone, tap_indices

# (kernel, stride, padding) of conv1..conv5; tied to the released weights' geometry, so not config fields.
CONV_GEOMETRY = ((11, 4, 2), (5, 1, 2), (3, 1, 1), (3, 1, 1), (3, 1, 1))
POOL_AFTER = (1, 2, 5)  # a 3x3 / stride 2 max-pool follows conv1, conv2 and conv5
CLASSIFIER_POOL = 6  # the adaptive average pool in front of the classifier: 6x6 cells
LAYER_NAMES = ("conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "conv3", "relu3", "conv4", "relu4",
               "conv5", "relu5", "pool5")
DEFAULT_TAPS = ("relu1", "relu2", "relu3", "relu4", "relu5")  # LPIPS' five AlexNet taps


@dataclass(frozen=True)
class AlexNetConfig:
    """Widths of torchvision's AlexNet (defaults: the released net).

    widths: output channels of conv1..conv5.
    classifier_hidden: width of the two hidden fully connected layers (only built with ``classifier=True``).
    num_classes: outputs of the last fully connected layer.
    """

    widths: tuple = (64, 192, 384, 256, 256)
    classifier_hidden: int = 4096
    num_classes: int = 1000

    def __post_init__(self) -> None:
        if len(self.widths) != 5:
            raise ValueError(f"AlexNetConfig.widths needs 5 entries (conv1..conv5), got {self.widths!r}")


ALEXNET = AlexNetConfig()


def build_features(config: AlexNetConfig) -> nn.Sequential:
    layers: list[nn.Module] = []
    cin = 3
    for conv, (width, (kernel, stride, padding)) in enumerate(zip(config.widths, CONV_GEOMETRY), start=1):
        layers += [nn.Conv2d(cin, width, kernel_size=kernel, stride=stride, padding=padding), nn.ReLU()]
        if conv in POOL_AFTER:
            layers.append(nn.MaxPool2d(kernel_size=3, stride=2))
        cin = width
    return nn.Sequential(*layers)


class AlexNet(TappedBackbone):
    """AlexNet (torchvision layout) returning the activations at named taps.

    forward(x (N, 3, H, W) RGB in [0, 1]) -> {tap: (N, C, h, w)} in the order of ``taps``; for a 224x224 input
    relu1 (N, 64, 55, 55), relu2 (N, 192, 27, 27), relu3 (N, 384, 13, 13), relu4 (N, 256, 13, 13),
    relu5 (N, 256, 13, 13). Parameters as :class:`generation.nets.vgg.VGG` (taps from :data:`LAYER_NAMES`).
    """

    net_name = "AlexNet"

    def __init__(self, config: AlexNetConfig = ALEXNET, *, taps: tuple[str, ...] | None = None,
                 normalize_input: bool = True, classifier: bool = False):
        super().__init__()
        self.config = config
        self.taps = tuple(taps) if taps is not None else DEFAULT_TAPS
        self._tap_indices = tap_indices(LAYER_NAMES, self.taps, "AlexNet")
        self.normalize = ImageNetNormalize() if normalize_input else nn.Identity()
        self.features = build_features(config)
        if classifier:
            hidden = config.classifier_hidden
            self.avgpool = nn.AdaptiveAvgPool2d((CLASSIFIER_POOL, CLASSIFIER_POOL))
            self.classifier = nn.Sequential(
                nn.Dropout(),
                nn.Linear(config.widths[4] * CLASSIFIER_POOL * CLASSIFIER_POOL, hidden),  # classifier.1
                nn.ReLU(),
                nn.Dropout(),
                nn.Linear(hidden, hidden),  # classifier.4
                nn.ReLU(),
                nn.Linear(hidden, config.num_classes),  # classifier.6
            )
        else:
            self.avgpool = None
            self.classifier = None


def build_alexnet(config: AlexNetConfig = ALEXNET, **kwargs) -> AlexNet:
    return AlexNet(config, **kwargs)
