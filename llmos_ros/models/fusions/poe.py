"""
Fusion 'poe' (MVAE, Wu & Goodman 2018): a product of experts.

The product of the present experts and a standard-normal prior expert; no private latents.

Objective: the sum of the ELBOs of the full present set, of each single present modality and of
one random subset of the present modalities (each ELBO reconstructs only its own subset's
modalities), PoE posteriors with a prior expert.
"""
from __future__ import annotations

import torch

from llmos_ros.models.fusion import Mixture, poe, subset_poe
from llmos_ros.models.fusions.base import Fusion
from llmos_ros.models.objectives import (
    finish_loss,
    kl_std_normal,
    kl_weight,
    log_likelihoods,
    masked_mean,
    reparameterize,
)


def mvae_loss(model, xs, mask, step):
    mus, logvars, _, _ = model.experts(xs, mask)
    m, b = mask.shape
    beta = kl_weight(step, model.cfg.model.beta, model.cfg.model.warmup_steps)
    eye = torch.eye(m, dtype=torch.bool, device=mask.device)
    rand = torch.rand(m, b, device=mask.device) < 0.5
    terms = torch.cat([mask.unsqueeze(0), eye.unsqueeze(-1) & mask.unsqueeze(0),
                       (mask & rand).unsqueeze(0)], 0)  # [T, M, B]
    mu, lv = subset_poe(mus, logvars, terms, prior_expert=True)
    lp = log_likelihoods(model, reparameterize(mu, lv), xs)  # [M, T, B]
    recon = (lp * terms.transpose(0, 1).float()).sum(0)  # [T, B]
    kl = kl_std_normal(mu, lv)
    valid = terms.any(1)  # [T, B]
    elbo = torch.where(valid, recon - beta * kl, torch.zeros_like(recon)).sum(0)
    return finish_loss(elbo, mask.any(0), {'recon': masked_mean(recon, valid),
                                       'kl': masked_mean(kl, valid), 'beta': beta})


class PoE(Fusion):
    """Product of experts with a prior expert (module doc)."""

    name = 'poe'
    objective = staticmethod(mvae_loss)

    def posterior(self, mus: torch.Tensor, logvars: torch.Tensor, mask: torch.Tensor
                  ) -> Mixture:
        """The exact product, as a one-component mixture."""
        mu, logvar = poe(mus, logvars, mask, prior_expert=True)
        return Mixture(mu.unsqueeze(0), logvar.unsqueeze(0),
                       torch.ones(1, mus.shape[1], dtype=mus.dtype, device=mus.device))

    def measurement(self, mus: torch.Tensor, logvars: torch.Tensor, mask: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The product of the present experts without the prior expert."""
        return poe(mus, logvars, mask, prior_expert=False)
