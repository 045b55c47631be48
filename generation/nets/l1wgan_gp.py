"""L1WGAN-GP: LipGAN's generator trained as a Wasserstein GAN with gradient penalty plus an L1 reconstruction loss.

Geldhauser, Liljegren, Nordqvist, "All's Well That FID's Well?", Electronics 2025, 14(17), 3487 (seed
000_41145e614d4b5485.txt): §3 "L1WGAN-GP", equations (3)-(5), and §5 / §5.2. WGAN-GP itself: Gulrajani,
Ahmed, Arjovsky, Dumoulin, Courville, "Improved Training of Wasserstein GANs", NeurIPS 2017 (the paper's [66]).

From the paper
--------------
* The generator is LipGAN's (the same class and configs as ``lipgan``; the paper: "the number of trainable
  parameters stayed the same", 37,087,763 for the generator and 10,337,152 for the discriminator, for both
  models -- see generation/nets/lipgan.py for how these compare with this port).
* The critic has no batch normalisation: the penalty is computed per critic input, and batch normalisation
  would make each output depend on the whole batch (§3). Here it is LipGAN's discriminator trunk
  (:class:`~generation.nets.lipgan.DiscriminatorFaceEncoder` / ``DiscriminatorAudioEncoder``) built from a
  :class:`~generation.nets.lipgan.LipGANDiscriminatorConfig`, default ``norm="none"``: no normalisation
  layers at all. ``norm="keras_contrib"`` (LipGAN's per-sample InstanceNormalization) is also accepted,
  since it uses no batch statistics.
* Eq. (3), the reconstruction loss: L_re(G) = 1/N sum_i ||S_i - G(S'_i, A_i)||_1 -- the L1 norm of each
  sample's difference (summed over its pixels and channels), averaged over the N samples.
  Note: Keras' ``'mae'`` (LipGAN's L1) is the per-pixel mean, 3*96*96 = 27,648 times smaller.
* Eq. (4), the penalty: R_GP = E[(||grad_x D(x)||_2 - 1)^2]; eq. (5), the critic objective
  E[D(fake)] - E[D(real)] + lambda * R_GP.
* Training (§5, §5.2): Adam lr 1e-4, betas (0.5, 0.9) for both networks, batch 128, 20 epochs, the critic
  updated every step and the generator every 5th step.

Our decisions (the paper is silent; UNVERIFIED)
-----------------------------------------------
* The critic's score for a (face, audio) pair is the inner product of the face and audio embeddings, not
  normalised: ``<f(face), a(audio)>``, unbounded in both directions, so the audio conditions the score (the
  projection-discriminator form of Miyato & Koyama, ICLR 2018, without its unconditional term). It adds no
  parameter, as the paper's unchanged parameter count requires (a linear head on the concatenated
  embeddings would add 1,025). LipGAN's own output, the distance between L2-normalised embeddings, is
  bounded in [0, 2], which a Wasserstein critic should not be.
* Eq. (4) as printed samples x-hat from the generator; we follow [66] and take the penalty at random
  interpolates eps * real + (1 - eps) * fake, eps ~ U[0, 1] per sample, with the audio held fixed (it is the
  condition, not the critic's variable) and the gradient taken with respect to the face only.
* lambda = 10 (the value of [66]; the paper gives none). The adversarial and reconstruction terms of the
  generator are added with a weight on L_re that defaults to 1 (the paper gives none).

Weights: none released; ``remap_official`` is None (see lipgan.py for why LipGAN's Keras .h5 is not converted).
"""

from __future__ import annotations

import torch
from torch import nn

from generation.nets import Architecture, register
from generation.nets.lipgan import (
    DISCRIMINATOR_DEFAULT,
    DISCRIMINATOR_PAPER_COUNT,
    DISCRIMINATOR_TINY,
    LIPGAN_DEFAULT,
    LIPGAN_TINY,
    DiscriminatorAudioEncoder,
    DiscriminatorFaceEncoder,
    LipGANConfig,
    LipGANDiscriminatorConfig,
    LipGANGenerator,
    check_input_shape,
)

LAMBDA_GP = 10.0
ADAM_LR = 1e-4
ADAM_BETAS = (0.5, 0.9)
BATCH_SIZE = 128
GENERATOR_EVERY = 5  # the generator is updated on every 5th critic step

CRITIC_DEFAULT = DISCRIMINATOR_DEFAULT  # 8,240,000 parameters
CRITIC_PAPER_COUNT = DISCRIMINATOR_PAPER_COUNT  # 10,337,152, the paper's figure (which layer differs: UNVERIFIED)
CRITIC_TINY = DISCRIMINATOR_TINY


class L1WGANGPCritic(nn.Module):
    """``forward(face (B,3,96,96), mel (B,1,80,27)) -> score (B,)``, unbounded; higher = more like real, in sync."""

    def __init__(self, config: LipGANDiscriminatorConfig = CRITIC_DEFAULT):
        super().__init__()
        self.config = config
        self.face_encoder = DiscriminatorFaceEncoder(config)
        self.audio_encoder = DiscriminatorAudioEncoder(config)

    def forward(self, face: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        check_input_shape("face", face, (3, self.config.face_size, self.config.face_size))
        check_input_shape("mel", mel, (1, self.config.mel_bins, self.config.mel_frames))
        face_embedding = self.face_encoder(face)  # (B, 512)
        audio_embedding = self.audio_encoder(mel)  # (B, 512)
        return (face_embedding * audio_embedding).sum(dim=1)  # (B,)


def reconstruction_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Eq. (3): L_re = 1/N sum_i ||real_i - fake_i||_1, the per-sample L1 norm averaged over the batch."""
    return (real - fake).abs().flatten(1).sum(dim=1).mean()  # (B, 3*96*96) -> (B,) -> ()


def gradient_penalty(
    critic,
    real: torch.Tensor,
    fake: torch.Tensor,
    audio: torch.Tensor,
    lambda_gp: float = LAMBDA_GP,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """lambda * E[(||grad_x critic(x, audio)||_2 - 1)^2] at x = eps * real + (1 - eps) * fake, eps ~ U[0, 1].

    One eps per sample (from ``generator`` if given); ``fake`` is detached; the graph is kept
    (``create_graph=True``) so that the penalty can be backpropagated into the critic.
    """
    eps = torch.rand(real.shape[0], 1, 1, 1, generator=generator, device=real.device, dtype=real.dtype)
    interpolates = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)  # (B, 3, 96, 96)
    scores = critic(interpolates, audio)  # (B,)
    (gradients,) = torch.autograd.grad(scores.sum(), interpolates, create_graph=True)  # (B, 3, 96, 96)
    norms = gradients.flatten(1).norm(2, dim=1)  # (B,)
    return lambda_gp * (norms - 1).square().mean()


def critic_loss(
    critic,
    real: torch.Tensor,
    fake: torch.Tensor,
    audio: torch.Tensor,
    lambda_gp: float = LAMBDA_GP,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Eq. (5): E[critic(fake)] - E[critic(real)] + lambda * R_GP; ``fake`` is detached (a critic step)."""
    wasserstein = critic(fake.detach(), audio).mean() - critic(real, audio).mean()
    return wasserstein + gradient_penalty(critic, real, fake, audio, lambda_gp, generator)


def generator_loss(
    critic,
    fake: torch.Tensor,
    real: torch.Tensor,
    audio: torch.Tensor,
    reconstruction_weight: float = 1.0,
) -> torch.Tensor:
    """-E[critic(fake, audio)] + reconstruction_weight * L_re(fake, real) (eq. (3))."""
    return -critic(fake, audio).mean() + reconstruction_weight * reconstruction_loss(fake, real)


register(
    Architecture(
        name="l1wgan_gp",
        config_class=LipGANConfig,
        build_generator=LipGANGenerator,
        configs={"default": LIPGAN_DEFAULT, "tiny": LIPGAN_TINY},
        remap_official=None,
        description=(
            "L1WGAN-GP ('All's Well That FID's Well?', 2025): LipGAN's generator trained against a "
            "normalisation-free WGAN-GP critic with an L1 reconstruction loss."
        ),
    )
)
