"""L1WGAN-GP: critic, gradient penalty and losses (generation/nets/l1wgan_gp.py).

Reference: "All's Well That FID's Well?" (Electronics 2025, seed 000_41145e614d4b5485.txt) §3 eqs. (3)-(5) and §5;
Gulrajani et al. 2017 for the penalty at interpolates.
"""

import math

import pytest
import torch
from torch import nn

from generation.nets import REFERENCE_FIRST, get_architecture
from generation.nets.l1wgan_gp import (
    CRITIC_DEFAULT,
    CRITIC_PAPER_COUNT,
    CRITIC_TINY,
    LAMBDA_GP,
    L1WGANGPCritic,
    critic_loss,
    generator_loss,
    gradient_penalty,
    reconstruction_loss,
)
from generation.nets.lipgan import LIPGAN_DEFAULT, LIPGAN_TINY, LipGANConfig, LipGANDiscriminatorConfig, LipGANGenerator


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def pairs(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    faces = torch.rand(batch, 3, 96, 96, generator=generator)
    mel = torch.rand(batch, 1, 80, 27, generator=generator) * 8 - 4
    return faces, mel


class LinearCritic(nn.Module):
    """critic(x, audio) = <w, x>: its gradient with respect to x is w, so ||grad|| = ||w|| everywhere."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, face: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        return (face * self.weight).flatten(1).sum(dim=1)  # (B,)


class HalfSquaredNormCritic(nn.Module):
    """critic(x, audio) = ||x||^2 / 2: its gradient at x is x itself."""

    def forward(self, face: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        return 0.5 * face.flatten(1).square().sum(dim=1)


@pytest.fixture(scope="module")
def default_critic() -> L1WGANGPCritic:
    torch.manual_seed(0)
    return L1WGANGPCritic(CRITIC_DEFAULT)


# --- registry and generator --------------------------------------------------------------------------------


def test_it_is_registered_with_lipgans_generator_and_configs():
    architecture = get_architecture("l1wgan_gp")
    assert architecture.config_class is LipGANConfig
    assert architecture.config("default") == LIPGAN_DEFAULT == get_architecture("lipgan").config("default")
    assert architecture.config("tiny") == LIPGAN_TINY
    assert architecture.remap_official is None
    torch.manual_seed(0)
    model = architecture.build_generator(architecture.config("tiny")).eval()
    assert type(model) is LipGANGenerator
    assert model.input_spec.face_order == REFERENCE_FIRST and model.input_spec.mel_frames == 27
    with torch.no_grad():
        frames = model(torch.rand(2, 1, 80, 27) * 8 - 4, torch.rand(2, 6, 96, 96))
    assert frames.shape == (2, 3, 96, 96) and 0 <= frames.min() and frames.max() <= 1


# --- critic ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["none", "keras_contrib"])
def test_it_has_no_batch_normalisation_anywhere_in_the_critic(norm):
    """§3: the penalty is per critic input, so no layer may use batch statistics (or keep running ones)."""
    critic = L1WGANGPCritic(LipGANDiscriminatorConfig(norm=norm))
    batch_layers = (nn.modules.batchnorm._BatchNorm, nn.modules.batchnorm._NormBase, nn.SyncBatchNorm)
    assert not [name for name, m in critic.named_modules() if isinstance(m, batch_layers)]
    assert not list(critic.buffers())  # no running mean/var of any kind


def test_it_scores_each_sample_independently_of_the_rest_of_the_batch(default_critic):
    default_critic.train()  # where batch normalisation would mix samples
    faces, mel = pairs(3)
    with torch.no_grad():
        together = default_critic(faces, mel)
        alone = default_critic(faces[:1], mel[:1])
        other_batch = default_critic(torch.cat([faces[:1], torch.rand(2, 3, 96, 96)]), torch.cat([mel[:1], -mel[1:]]))
    assert together.shape == (3,)
    torch.testing.assert_close(alone[0], together[0])
    torch.testing.assert_close(other_batch[0], together[0])


def test_it_scores_a_pair_by_the_inner_product_of_its_embeddings_unbounded():
    torch.manual_seed(0)
    critic = L1WGANGPCritic(CRITIC_TINY)
    faces, mel = pairs(4)
    scores = critic(faces, mel)
    expected = (critic.face_encoder(faces) * critic.audio_encoder(mel)).sum(dim=1)
    torch.testing.assert_close(scores, expected)
    with torch.no_grad():
        critic.face_encoder.embedding.weight.mul_(1000)  # no sigmoid, no normalisation: the score scales
    assert critic(faces, mel).abs().max() > 2


def test_it_has_as_many_critic_parameters_as_lipgans_discriminator(default_critic):
    """8,240,000 = LipGAN's discriminator without normalisation (arithmetic in test_lipgan.py); the paper's
    10,337,152 for "the discriminator" of both models is reached by CRITIC_PAPER_COUNT (a 3x3 last audio conv,
    UNVERIFIED which layer). The score adds no parameter, as the paper's unchanged total requires."""
    assert count(default_critic) == 8_240_000
    assert count(L1WGANGPCritic(CRITIC_PAPER_COUNT)) == 10_337_152
    assert count(L1WGANGPCritic(CRITIC_TINY)) == 13_428


# --- gradient penalty --------------------------------------------------------------------------------------


def test_it_computes_the_gradient_penalty_of_a_linear_critic_in_closed_form():
    """critic(x) = <w, x> has ||grad|| = ||w|| at every interpolate, so R_GP = lambda (||w|| - 1)^2."""
    torch.manual_seed(0)
    weight = torch.randn(3, 4, 4)
    critic = LinearCritic(weight.clone())
    real, fake, audio = torch.rand(5, 3, 4, 4), torch.rand(5, 3, 4, 4), torch.zeros(5, 1, 80, 27)
    penalty = gradient_penalty(critic, real, fake, audio, lambda_gp=10.0)
    expected = 10.0 * (weight.norm() - 1) ** 2
    torch.testing.assert_close(penalty, expected)

    unit = LinearCritic(weight / weight.norm())  # a 1-Lipschitz critic is not penalised
    assert gradient_penalty(unit, real, fake, audio).item() == pytest.approx(0.0, abs=1e-10)


def test_it_takes_the_penalty_at_per_sample_random_interpolates():
    """critic(x) = ||x||^2 / 2 has gradient x-hat: R_GP = mean_i (||eps_i r_i + (1 - eps_i) f_i|| - 1)^2."""
    real, fake, audio = torch.rand(4, 3, 4, 4), -torch.rand(4, 3, 4, 4), torch.zeros(4, 1, 80, 27)
    seeded = torch.Generator().manual_seed(3)
    penalty = gradient_penalty(HalfSquaredNormCritic(), real, fake, audio, lambda_gp=2.0, generator=seeded)
    eps = torch.rand(4, 1, 1, 1, generator=torch.Generator().manual_seed(3))  # the same draw, by hand
    interpolates = eps * real + (1 - eps) * fake
    expected = 2.0 * ((interpolates.flatten(1).norm(dim=1) - 1) ** 2).mean()
    torch.testing.assert_close(penalty, expected)
    assert len(set(eps.flatten().tolist())) == 4  # one eps per sample


def test_it_backpropagates_the_penalty_into_the_critic():
    """create_graph=True: d/dw lambda (||w|| - 1)^2 = 2 lambda (||w|| - 1) w / ||w||."""
    torch.manual_seed(0)
    weight = torch.randn(3, 4, 4)
    critic = LinearCritic(weight.clone())
    gradient_penalty(critic, torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4), torch.zeros(2, 1, 80, 27)).backward()
    norm = weight.norm()
    torch.testing.assert_close(critic.weight.grad, 2 * LAMBDA_GP * (norm - 1) * weight / norm)


def test_it_computes_a_finite_penalty_through_the_real_critic_and_its_parameters():
    """Double backprop through the real critic reaches every parameter except the face embedding's bias:
    the score is <W h(face) + b, a(audio)>, so its gradient with respect to the face does not contain b."""
    torch.manual_seed(0)
    critic = L1WGANGPCritic(CRITIC_TINY)
    real, mel = pairs(2)
    fake = torch.rand(2, 3, 96, 96)
    penalty = gradient_penalty(critic, real, fake, mel)
    assert penalty.ndim == 0 and torch.isfinite(penalty) and penalty >= 0
    penalty.backward()
    without_gradient = [name for name, p in critic.named_parameters() if p.grad is None]
    assert without_gradient == ["face_encoder.embedding.bias"]
    assert all(torch.isfinite(p.grad).all() for p in critic.parameters() if p.grad is not None)


# --- losses ------------------------------------------------------------------------------------------------


def test_it_computes_the_critic_loss_of_equation_5_without_touching_the_generator():
    torch.manual_seed(0)
    weight = torch.randn(3, 4, 4)
    critic = LinearCritic(weight.clone())
    real = torch.rand(3, 3, 4, 4)
    fake = torch.rand(3, 3, 4, 4, requires_grad=True)
    audio = torch.zeros(3, 1, 80, 27)
    loss = critic_loss(critic, real, fake, audio, lambda_gp=10.0)
    wasserstein = (fake.detach() * weight).flatten(1).sum(1).mean() - (real * weight).flatten(1).sum(1).mean()
    torch.testing.assert_close(loss, wasserstein + 10.0 * (weight.norm() - 1) ** 2)
    loss.backward()
    assert fake.grad is None  # a critic step: the generator's output is detached
    assert critic.weight.grad is not None


def test_it_computes_the_l1_reconstruction_loss_of_equation_3_per_sample():
    """L_re = 1/N sum_i ||S_i - G(S'_i, A_i)||_1: the L1 norm over each sample's 3*96*96 values, batch-averaged."""
    real = torch.zeros(2, 3, 96, 96)
    fake = torch.stack([torch.full((3, 96, 96), 0.5), torch.full((3, 96, 96), 0.25)])
    expected = (0.5 * 27_648 + 0.25 * 27_648) / 2
    assert reconstruction_loss(fake, real).item() == pytest.approx(expected)
    assert reconstruction_loss(real, fake).item() == pytest.approx(expected)  # symmetric


def test_it_computes_the_generator_loss_as_adversarial_plus_weighted_l1():
    torch.manual_seed(0)
    weight = torch.randn(3, 4, 4)
    critic = LinearCritic(weight.clone())
    real = torch.rand(2, 3, 4, 4)
    fake = torch.rand(2, 3, 4, 4, requires_grad=True)
    audio = torch.zeros(2, 1, 80, 27)
    loss = generator_loss(critic, fake, real, audio, reconstruction_weight=0.1)
    adversarial = -(fake * weight).flatten(1).sum(1).mean()
    l1 = (real - fake).abs().flatten(1).sum(1).mean()
    torch.testing.assert_close(loss, adversarial + 0.1 * l1)
    loss.backward()
    assert fake.grad is not None  # a generator step: gradients reach the generator's output
    assert math.isclose(generator_loss(critic, fake, real, audio, 0.0).item(), adversarial.item(), rel_tol=1e-6)


# --- state ---------------------------------------------------------------------------------------------------


def test_it_round_trips_the_critic_state_dict():
    torch.manual_seed(4)
    critic = L1WGANGPCritic(CRITIC_TINY)
    fresh = L1WGANGPCritic(CRITIC_TINY)
    fresh.load_state_dict(critic.state_dict(), strict=True)
    faces, mel = pairs(2)
    with torch.no_grad():
        assert torch.equal(fresh(faces, mel), critic(faces, mel))


def test_it_builds_the_same_critic_under_the_same_seed():
    torch.manual_seed(5)
    first = L1WGANGPCritic(CRITIC_TINY)
    torch.manual_seed(5)
    second = L1WGANGPCritic(CRITIC_TINY)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
    faces, mel = pairs(2)
    with torch.no_grad():
        assert torch.equal(first(faces, mel), second(faces, mel))
