"""
Fusion 'mmvae_plus' (MMVAE+, Palumbo et al. 2023): a mixture with private latents.

The shared latent is fused like 'moe'; each modality has a private latent of `private_dim`
entries (required, >= 1).

Objective: as moe, with latents (z, w_m) ~ q(z|x_m) q(w_m|x_m) per component m; a cross-modal
decoder n != m gets w_n sampled from its auxiliary prior r_n = N(0, I); log w adds
beta (log p(w_m) - log q(w_m|x_m)).
"""
from __future__ import annotations

import torch

from llmos_ros.errors import ConfigError
from llmos_ros.models.fusion import Mixture, moe
from llmos_ros.models.fusions.base import Fusion
from llmos_ros.models.objectives import (
    cross_log_likelihoods,
    diag_normal_log_prob,
    dreg,
    kl_weight,
    log_q_mixture,
    masked_mean,
    std_normal_log_prob,
)


def mmvae_plus_loss(model, xs, mask, step):
    mus, logvars, pmus, plvs = model.experts(xs, mask)
    m, b, d = mus.shape
    p = pmus.shape[-1]
    k = max(1, int(model.cfg.model.k_samples))
    beta = kl_weight(step, model.cfg.model.beta, model.cfg.model.warmup_steps)
    zs = mus.unsqueeze(1) + torch.exp(0.5 * logvars).unsqueeze(1) * torch.randn(
        m, k, b, d, dtype=mus.dtype, device=mus.device)
    ws = pmus.unsqueeze(1) + torch.exp(0.5 * plvs).unsqueeze(1) * torch.randn(
        m, k, b, p, dtype=mus.dtype, device=mus.device)  # own private latent of component m
    own = torch.eye(m, dtype=torch.bool, device=mus.device)[:, :, None, None, None]
    zins = []
    for n in range(m):
        aux = torch.randn(m, k, b, p, dtype=mus.dtype, device=mus.device)  # r_n = N(0, I)
        w_n = torch.where(own[n], ws, aux)  # component n uses its own w_n, others sample r_n
        zins.append(torch.cat([zs, w_n], -1))
    lpx = cross_log_likelihoods(model, zins, xs, mask)  # [M, K, B]
    lqz = log_q_mixture(zs, mus.detach(), logvars.detach(), mask)
    lqw = diag_normal_log_prob(ws, pmus.detach().unsqueeze(1), plvs.detach().unsqueeze(1))
    lw = lpx + beta * (std_normal_log_prob(zs) - lqz + std_normal_log_prob(ws) - lqw)
    return dreg(lw, [zs, ws], mask, {'recon': masked_mean(lpx.mean(1), mask), 'beta': beta})


class MMVAEPlus(Fusion):
    """Mixture of experts with modality-private latents (module doc)."""

    name = 'mmvae_plus'
    objective = staticmethod(mmvae_plus_loss)

    def private_size(self, mcfg) -> int:
        """Always `private_dim`."""
        return int(mcfg.private_dim)

    def check(self, mcfg) -> None:
        """The private latents need at least one entry."""
        if int(mcfg.private_dim) < 1:
            raise ConfigError('model.private_dim must be >= 1 for mmvae_plus')

    def posterior(self, mus: torch.Tensor, logvars: torch.Tensor, mask: torch.Tensor
                  ) -> Mixture:
        """The shared latent: uniform mixture of the present experts."""
        return moe(mus, logvars, mask)
