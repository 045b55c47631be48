"""The perceptual networks of the training losses: LPIPS (LPIPS-AttnWav2Lip) and VGG-19 (stabilized sync).

Both need released ImageNet backbones (``alexnet-owt-7be5be79.pth``, ``vgg19-dcbb9e9d.pth``) that syncmos cannot
download. A config says ``perceptual_backbone = "pretrained"`` (the published loss; a missing file stops the
run with the file's name) or ``"random"``: a fixed-seed random backbone, whatever is installed, so that an
offline run is reproducible — a structural loss, but not the published perceptual one (the demo recipes say so).
Our generators work in BGR; both networks expect RGB, so the channels are flipped here.
"""

from __future__ import annotations

import torch
from torch import nn

from generation.perceptual_weights import build_perceptual

BACKBONES = ("pretrained", "random")


def _random(backbone: str) -> bool:
    if backbone not in BACKBONES:
        from generation.training.config import ConfigError

        raise ConfigError(f"perceptual_backbone must be one of {BACKBONES}, not {backbone!r}")
    return backbone == "random"


def lpips_network(net: str = "alex", *, backbone: str = "pretrained") -> nn.Module:
    random = _random(backbone)
    return build_perceptual(f"lpips_{net}", pretrained=not random, allow_random_backbone=random)


def vgg19_features(taps: tuple[str, ...], *, backbone: str = "pretrained") -> nn.Module:
    random = _random(backbone)
    return build_perceptual("vgg19", pretrained=not random, allow_random_backbone=random, taps=taps)


def _rgb(faces: torch.Tensor, bgr: bool) -> torch.Tensor:
    return faces.flip(-3) if bgr else faces  # the channel axis of (..., 3, H, W)


def lpips_distance(lpips: nn.Module, generated: torch.Tensor, target: torch.Tensor, *, bgr: bool) -> torch.Tensor:
    """LPIPS of (N, 3, S, S) or (B, 3, T, S, S) faces in [0, 1]: (N,) or (B*T,) distances."""
    if generated.dim() == 5:
        generated = generated.transpose(1, 2).flatten(0, 1)  # (B*T, 3, S, S)
        target = target.transpose(1, 2).flatten(0, 1)
    distances = lpips(_rgb(generated, bgr), _rgb(target, bgr), normalize=True)  # [0, 1] -> [-1, 1] inside
    return distances.flatten()


def vgg_taps(vgg: nn.Module, faces: torch.Tensor, taps: tuple[str, ...], *, bgr: bool) -> list[torch.Tensor]:
    """The VGG activations of (N, 3, S, S) faces in [0, 1] at ``taps``, in that order."""
    features = vgg(_rgb(faces, bgr))
    return [features[t] for t in taps]
