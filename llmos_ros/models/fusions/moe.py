"""
Fusion 'moe' (MMVAE, Shi et al. 2019): a mixture of experts.

The uniform mixture of the present unimodal posteriors; no private latents.

Objective: the stratified importance-weighted bound, K = `model.k_samples` samples per present
component, log w = log p(X|z) + beta (log p(z) - log q_mix(z|X)), averaged over components
("looser" IWAE), with DReG gradients (q parameters stopped in log w, squared normalised weights
on the reparameterisation path). At the default K=1 it is the stratified ELBO with
path-derivative gradients.
"""
from __future__ import annotations

import torch

from llmos_ros.models.fusion import Mixture, moe
from llmos_ros.models.fusions.base import Fusion
from llmos_ros.models.objectives import (
    cross_log_likelihoods,
    dreg,
    kl_weight,
    log_q_mixture,
    masked_mean,
    std_normal_log_prob,
)


def mmvae_loss(model, xs, mask, step):
    mus, logvars, _, _ = model.experts(xs, mask)
    m, b, d = mus.shape
    k = max(1, int(model.cfg.model.k_samples))
    beta = kl_weight(step, model.cfg.model.beta, model.cfg.model.warmup_steps)
    zs = mus.unsqueeze(1) + torch.exp(0.5 * logvars).unsqueeze(1) * torch.randn(
        m, k, b, d, dtype=mus.dtype, device=mus.device)  # [M, K, B, D]
    lpx = cross_log_likelihoods(model, [zs] * m, xs, mask)  # [M, K, B]
    lqz = log_q_mixture(zs, mus.detach(), logvars.detach(), mask)
    lw = lpx + beta * (std_normal_log_prob(zs) - lqz)
    return dreg(lw, [zs], mask, {'recon': masked_mean(lpx.mean(1), mask), 'beta': beta})


class MoE(Fusion):
    """Mixture of experts (module doc)."""

    name = 'moe'
    objective = staticmethod(mmvae_loss)

    def posterior(self, mus: torch.Tensor, logvars: torch.Tensor, mask: torch.Tensor
                  ) -> Mixture:
        """Uniform mixture of the present experts."""
        return moe(mus, logvars, mask)
