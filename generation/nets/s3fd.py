"""S3FD, the single-shot scale-invariant face detector (Zhang et al., ICCV 2017), as its PyTorch ports run it.

A face *detector*, not a generator: it is not registered with the generator registry. Detection
(preprocessing, prior boxes, decoding, NMS, weight loading) lives in ``generation/s3fd_detect.py``;
this module is only the network, built from :class:`S3FDConfig`. No Django, no file I/O.

Two released weight files matter to syncmos, and they come from two different ports:

``s3fd-619a316812.pth`` (face-alignment; Wav2Lip ships it as ``face_detection/detection/sfd/s3fd.pth``)
    The authors' Caffe model converted to PyTorch. The module below follows face-alignment's
    ``face_alignment/detection/sfd/net_s3fd.py`` (1adrianb/face-alignment @03257a8; identical copy in
    Rudrabha/Wav2Lip @db7bc44), and its state-dict keys are exactly that file's: ``conv1_1`` …
    ``conv5_3``, ``fc6``, ``fc7``, ``conv6_1`` … ``conv7_2``, ``conv{3,4,5}_3_norm`` and the twelve
    ``*_mbox_conf`` / ``*_mbox_loc`` heads. Config: :data:`DEFAULT` (``CONFIGS["default"]``).

``sfd_face.pth`` (joonson/syncnet_python ``detectors/s3fd``, taken from cs-giung/face-detection-pytorch,
whose README credits yxlijun/S3FD.pytorch, a re-training of S3FD on WIDER FACE in PyTorch)
    The same layers under other names — ``vgg.{0,2,5,…,33}``, ``L2Norm{3,4,5}_3``, ``extras.{0..3}``,
    ``loc.{0..5}``, ``conf.{0..5}`` — loaded with a strict ``load_state_dict`` by syncnet_python, so
    the file has exactly those keys. :func:`remap_sfd_face` renames them to this module's keys.
    Its network differs in two places that do not change any weight shape: fc6 is dilated
    (``padding=6, dilation=6``, syncnet_python ``detectors/s3fd/nets.py``) and pool3 rounds up
    (``ceil_mode=True``). Config: :data:`SFD_FACE` (``CONFIGS["sfd_face"]``).

Architecture (both ports):

* VGG16 conv1_1 … conv5_3 (3×3, pad 1, ReLU), 2×2 max-pools after blocks 1–5;
* fc6 3×3 conv 512→1024 and fc7 1×1 conv 1024→1024 (ReLU) after pool5;
* extras conv6_1 1×1 1024→256, conv6_2 3×3 stride 2 256→512, conv7_1 1×1 512→128, conv7_2 3×3
  stride 2 128→256 (all ReLU);
* L2Norm with learned per-channel scales initialised to 10 / 8 / 5 on conv3_3 / conv4_3 / conv5_3;
* six detection levels — conv3_3, conv4_3, conv5_3, fc7, conv6_2, conv7_2 at strides 4 … 128 — each
  with a 3×3 ``loc`` head (4 box offsets) and a 3×3 ``conf`` head (2 logits: background, face). The
  conv3_3 conf head has 4 channels, 3 background logits and 1 face logit, and the background logit
  is their maximum ("max-out background label", paper §3.3) — done inside ``forward`` in both ports.

What I could and could not check:

* Layer list, widths, paddings, L2Norm scales and init, the max-out and the key names: read from
  the code of both ports (face-alignment ``net_s3fd.py``; syncnet_python ``detectors/s3fd/nets.py``
  @cdd20ba, identical to cs-giung's). The key names of the two released files follow from their
  strict loads; I did not have either file to list its keys.
* fc6 in face-alignment's port is ``Conv2d(512, 1024, 3, padding=3)`` with **no dilation**, so the
  fc7 map is 4 cells wider and taller than pool5's (640×480 input → 19×24, not 15×20) and the
  upper three levels grow with it. Whether the authors' Caffe prototxt dilates fc6 (yxlijun's code
  has used ``padding=3, dilation=3`` and ``padding=6, dilation=6`` at different commits) is
  **UNVERIFIED** — I did not have the prototxt. The default reproduces what face-alignment (and so
  Wav2Lip) actually runs; ``fc6_dilation`` / ``fc6_padding`` select the other variants.
* Which fc6 dilation yxlijun trained ``sfd_face.pth`` with is **UNVERIFIED**; :data:`SFD_FACE` uses
  syncnet_python's (6), which is how that file is used for LSE-D/LSE-C.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# The VGG16 blocks: number of 3×3 convs per block. Fixed, because the checkpoint keys spell it out
# (conv1_1, conv1_2, conv2_1, …, conv5_3) and the heads hang off conv3_3 / conv4_3 / conv5_3.
VGG_BLOCK_DEPTHS = (2, 2, 3, 3, 3)

# The six detection levels, named as in the checkpoint (head keys are f"{name}_mbox_conf/loc").
LEVEL_NAMES = ("conv3_3_norm", "conv4_3_norm", "conv5_3_norm", "fc7", "conv6_2", "conv7_2")


@dataclass(frozen=True)
class S3FDConfig:
    in_channels: int = 3
    # Output channels of the five VGG16 blocks (conv1_x … conv5_x).
    vgg_widths: tuple[int, int, int, int, int] = (64, 128, 256, 512, 512)
    # fc6 (3×3) and fc7 (1×1) width, the "fully connected" layers of VGG16 made convolutional.
    fc_width: int = 1024
    # face-alignment: Conv2d(512, 1024, 3, padding=3), no dilation; syncnet_python: padding=6, dilation=6.
    fc6_padding: int = 3
    fc6_dilation: int = 1
    # syncnet_python / yxlijun round pool3's output size up (ceil_mode=True); face-alignment floors.
    pool3_ceil_mode: bool = False
    # conv6_1 (1×1) → conv6_2 (3×3, stride 2); conv7_1 (1×1) → conv7_2 (3×3, stride 2).
    conv6_widths: tuple[int, int] = (256, 512)
    conv7_widths: tuple[int, int] = (128, 256)
    # Initial L2Norm scales on conv3_3, conv4_3, conv5_3 (learned per channel afterwards).
    l2norm_scales: tuple[float, float, float] = (10.0, 8.0, 5.0)
    l2norm_eps: float = 1e-10
    # Background logits of the conv3_3 conf head that are max-pooled into one ("max-out background label").
    conv3_3_background_logits: int = 3
    # Square anchor side = anchor_scale × stride (16, 32, …, 512 px), one anchor per cell.
    anchor_scale: float = 4.0
    # Box-offset variances of the SSD encoding (centre, size).
    variances: tuple[float, float] = (0.1, 0.2)

    def __post_init__(self) -> None:
        if len(self.vgg_widths) != 5:
            raise ValueError(f"vgg_widths needs one width per VGG16 block (5), got {self.vgg_widths!r}")
        if len(self.l2norm_scales) != 3:
            raise ValueError(f"l2norm_scales needs 3 values (conv3_3, conv4_3, conv5_3), got {self.l2norm_scales!r}")
        if self.conv3_3_background_logits < 1:
            raise ValueError("conv3_3_background_logits must be ≥ 1")

    @property
    def strides(self) -> tuple[int, ...]:
        """Pixel stride of each detection level: 4, 8, 16 (conv3_3 … conv5_3), 32 (fc7), 64, 128 (extras)."""
        return (4, 8, 16, 32, 64, 128)

    @property
    def level_channels(self) -> tuple[int, ...]:
        """Channels of the feature map each level's heads read."""
        _, _, c3, c4, c5 = self.vgg_widths
        return (c3, c4, c5, self.fc_width, self.conv6_widths[1], self.conv7_widths[1])


DEFAULT = S3FDConfig()  # face-alignment's port: s3fd-619a316812.pth, Wav2Lip's s3fd.pth
SFD_FACE = S3FDConfig(fc6_padding=6, fc6_dilation=6, pool3_ceil_mode=True)  # syncnet_python's sfd_face.pth
TINY = S3FDConfig(vgg_widths=(4, 8, 8, 16, 16), fc_width=16, conv6_widths=(8, 16), conv7_widths=(8, 8))
CONFIGS = {"default": DEFAULT, "sfd_face": SFD_FACE, "tiny": TINY}


class L2Norm(nn.Module):
    """x / (‖x‖₂ over channels + eps) · weight, weight initialised to ``scale`` (ParseNet / SSD "Normalize").

    State key: ``weight`` (C,). The eps is added to the norm after the square root, as in both ports.
    """

    def __init__(self, channels: int, scale: float, eps: float = 1e-10):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + self.eps  # (B, 1, H, W)
        return x / norm * self.weight.view(1, -1, 1, 1)  # (B, C, H, W)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1)


class S3FD(nn.Module):
    """The S3FD network. ``forward(x) -> [(cls, reg)] * 6``, one pair per level, finest first.

    ``x`` is (B, 3, H, W) float32: a colour image with the mean already subtracted (see
    ``generation.s3fd_detect.preprocess``; no scaling to [0, 1]). ``cls`` (B, 2, H_l, W_l) are raw
    logits (background, face) — softmax over dim 1 gives the face probability —, ``reg`` (B, 4, H_l, W_l)
    the SSD box offsets (dcx, dcy, dw, dh) relative to the level's anchors. With the default config,
    H_l = H/4, H/8, H/16 (floors) for the first three levels, then fc7 = ⌊H/32⌋ + 4, and the two
    stride-2 extras halve (rounding up) from there.
    """

    def __init__(self, config: S3FDConfig = DEFAULT):
        super().__init__()
        self.config = c = config

        # VGG16 body. Registration order = face-alignment's, so state_dict() lists keys in its order.
        cin = c.in_channels
        for block, (width, depth) in enumerate(zip(c.vgg_widths, VGG_BLOCK_DEPTHS), start=1):
            for i in range(1, depth + 1):
                self.add_module(f"conv{block}_{i}", _conv3x3(cin, width))
                cin = width
        self.fc6 = nn.Conv2d(cin, c.fc_width, kernel_size=3, padding=c.fc6_padding, dilation=c.fc6_dilation)
        self.fc7 = nn.Conv2d(c.fc_width, c.fc_width, kernel_size=1)

        self.conv6_1 = nn.Conv2d(c.fc_width, c.conv6_widths[0], kernel_size=1)
        self.conv6_2 = _conv3x3(c.conv6_widths[0], c.conv6_widths[1], stride=2)
        self.conv7_1 = nn.Conv2d(c.conv6_widths[1], c.conv7_widths[0], kernel_size=1)
        self.conv7_2 = _conv3x3(c.conv7_widths[0], c.conv7_widths[1], stride=2)

        _, _, c3, c4, c5 = c.vgg_widths
        s3, s4, s5 = c.l2norm_scales
        self.conv3_3_norm = L2Norm(c3, s3, c.l2norm_eps)
        self.conv4_3_norm = L2Norm(c4, s4, c.l2norm_eps)
        self.conv5_3_norm = L2Norm(c5, s5, c.l2norm_eps)

        # Heads, conf before loc per level (face-alignment's order).
        for level, (name, channels) in enumerate(zip(LEVEL_NAMES, c.level_channels)):
            conf_channels = c.conv3_3_background_logits + 1 if level == 0 else 2
            self.add_module(f"{name}_mbox_conf", _conv3x3(channels, conf_channels))
            self.add_module(f"{name}_mbox_loc", _conv3x3(channels, 4))

    def _vgg_block(self, h: torch.Tensor, block: int) -> torch.Tensor:
        for i in range(1, VGG_BLOCK_DEPTHS[block - 1] + 1):
            h = F.relu(getattr(self, f"conv{block}_{i}")(h))
        return h

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        c = self.config
        h = self._vgg_block(x, 1)  # (B, 64, H, W)
        h = F.max_pool2d(h, 2, 2)  # (B, 64, H/2, W/2)
        h = self._vgg_block(h, 2)  # (B, 128, H/2, W/2)
        h = F.max_pool2d(h, 2, 2)  # (B, 128, H/4, W/4)
        f3_3 = self._vgg_block(h, 3)  # (B, 256, H/4, W/4)                 stride 4
        h = F.max_pool2d(f3_3, 2, 2, ceil_mode=c.pool3_ceil_mode)  # (B, 256, H/8, W/8)
        f4_3 = self._vgg_block(h, 4)  # (B, 512, H/8, W/8)                 stride 8
        h = F.max_pool2d(f4_3, 2, 2)  # (B, 512, H/16, W/16)
        f5_3 = self._vgg_block(h, 5)  # (B, 512, H/16, W/16)               stride 16
        h = F.max_pool2d(f5_3, 2, 2)  # (B, 512, H/32, W/32)

        h = F.relu(self.fc6(h))  # (B, 1024, H/32 + 2·pad − 2·dil, …)
        f_fc7 = F.relu(self.fc7(h))  # (B, 1024, same)                      stride 32
        h = F.relu(self.conv6_1(f_fc7))  # (B, 256, same)
        f6_2 = F.relu(self.conv6_2(h))  # (B, 512, ⌈·/2⌉)                    stride 64
        h = F.relu(self.conv7_1(f6_2))  # (B, 128, same)
        f7_2 = F.relu(self.conv7_2(h))  # (B, 256, ⌈·/2⌉)                    stride 128

        features = (
            self.conv3_3_norm(f3_3),
            self.conv4_3_norm(f4_3),
            self.conv5_3_norm(f5_3),
            f_fc7,
            f6_2,
            f7_2,
        )
        outputs = []
        for name, feature in zip(LEVEL_NAMES, features):
            cls = getattr(self, f"{name}_mbox_conf")(feature)  # (B, 2, H_l, W_l); level 0: (B, 3 + 1, …)
            reg = getattr(self, f"{name}_mbox_loc")(feature)  # (B, 4, H_l, W_l)
            outputs.append((cls, reg))

        # Max-out background label: conv3_3's background logit is the max of its first k logits.
        cls, reg = outputs[0]
        k = c.conv3_3_background_logits
        background = cls[:, :k].amax(dim=1, keepdim=True)  # (B, 1, H/4, W/4)
        outputs[0] = (torch.cat([background, cls[:, k:]], dim=1), reg)  # (B, 2, H/4, W/4)
        return outputs


# --- the sfd_face.pth (syncnet_python / yxlijun) layout ---------------------------------------------
#
# syncnet_python's S3FDNet keeps the VGG body in one ModuleList ``vgg`` with the ReLUs and pools as
# entries, so the convs sit at indices 0, 2 | 5, 7 | 10, 12, 14 | 17, 19, 21 | 24, 26, 28 | 31 (fc6),
# 33 (fc7); the extras, loc and conf heads are ModuleLists in level order.

SFD_FACE_MODULES: dict[str, str] = {
    "vgg.0": "conv1_1", "vgg.2": "conv1_2",
    "vgg.5": "conv2_1", "vgg.7": "conv2_2",
    "vgg.10": "conv3_1", "vgg.12": "conv3_2", "vgg.14": "conv3_3",
    "vgg.17": "conv4_1", "vgg.19": "conv4_2", "vgg.21": "conv4_3",
    "vgg.24": "conv5_1", "vgg.26": "conv5_2", "vgg.28": "conv5_3",
    "vgg.31": "fc6", "vgg.33": "fc7",
    "extras.0": "conv6_1", "extras.1": "conv6_2", "extras.2": "conv7_1", "extras.3": "conv7_2",
    "L2Norm3_3": "conv3_3_norm", "L2Norm4_3": "conv4_3_norm", "L2Norm5_3": "conv5_3_norm",
    **{f"loc.{i}": f"{name}_mbox_loc" for i, name in enumerate(LEVEL_NAMES)},
    **{f"conf.{i}": f"{name}_mbox_conf" for i, name in enumerate(LEVEL_NAMES)},
}

LAYOUT_FACE_ALIGNMENT = "face_alignment"
LAYOUT_SFD_FACE = "sfd_face"


def checkpoint_layout(keys) -> str | None:
    """Which released layout a state dict's keys follow: ``"face_alignment"``, ``"sfd_face"`` or None."""
    keys = set(keys)
    if "conv1_1.weight" in keys and "conv3_3_norm_mbox_conf.weight" in keys:
        return LAYOUT_FACE_ALIGNMENT
    if "vgg.0.weight" in keys and "conf.0.weight" in keys:
        return LAYOUT_SFD_FACE
    return None


def remap_sfd_face(state_dict: dict) -> dict:
    """Rename an ``sfd_face.pth`` state dict (``vgg.14.weight`` …) to this module's keys (``conv3_3.weight`` …).

    Keys that are not in the sfd_face layout are passed through unchanged, so a strict load still
    reports them.
    """
    remapped = {}
    for key, value in state_dict.items():
        module, _, param = key.rpartition(".")
        remapped[f"{SFD_FACE_MODULES[module]}.{param}" if module in SFD_FACE_MODULES else key] = value
    return remapped
