"""
Fusion 'mopoe' (MoPoE-VAE, Sutter et al. 2021): a mixture of products of experts.

The default. A uniform mixture over every non-empty subset of the present modalities of the
subset's product of experts, without prior expert, so singletons are the unimodal posteriors.
With `private_latents` (the default), each modality also has a private latent of `private_dim`
entries, as in MMVAE+.

Objective: the average over all valid subsets of the subset ELBO (z from the subset's PoE,
reconstructing every present modality, KL of the subset posterior); with private latents,
modality-specific w_m as in MMVAE+ (see `mopoe_loss`).
"""
from __future__ import annotations

import torch

from llmos_ros.models.fusion import Mixture, subset_matrix, subset_poe, uniform_weights
from llmos_ros.models.fusions.base import Fusion
from llmos_ros.models.objectives import (
    finish_loss,
    kl_std_normal,
    kl_weight,
    log_likelihoods,
    masked_mean,
    reparameterize,
)


def mopoe(mus: torch.Tensor, logvars: torch.Tensor, mask: torch.Tensor) -> Mixture:
    """Uniform mixture over all non-empty subsets of present modalities of their PoE (no prior)."""
    mat = subset_matrix(mus.shape[0], device=mus.device)  # [S, M]
    # expert mask per subset and sample: member of the subset and present
    emask = mat.unsqueeze(-1) & mask.unsqueeze(0)  # [S, M, B]
    # a subset is valid for a sample when all its members are present
    valid = (~mat.unsqueeze(-1) | mask.unsqueeze(0)).all(1)  # [S, B]
    mu, logvar = subset_poe(mus, logvars, emask, prior_expert=False)
    return Mixture(mu, logvar, uniform_weights(valid))


def mopoe_loss(model, xs, mask, step):
    """
    MoPoE ELBO (Sutter et al. 2021): E_{q_mix}[log p(X|z)] - beta * sum_S w_S KL(q_S || p).

    The reconstruction expectation under the subset mixture is estimated with one subset per
    sample, drawn with the mixture weights (as the paper's implementation does), so each step
    decodes every modality once rather than once per subset; the KL term is exact.

    With private latents (`model.private_dim` > 0), modality m's decoder reads (z, w_m), w_m drawn
    from q(w_m | x_m) when m is in the drawn subset. When it is not, `model.cross_private` says
    where w_m comes from: 'prior' (default; N(0, I), as MMVAE+ does for its cross-modal terms):
    whatever one modality says about another must pass through the shared z; or 'own'
    (q(w_m | x_m) as well, the modality-specific subspaces of Sutter et al. 2020): what the
    subset cannot know about x_m (a word's timing, a digit's handwriting) comes from x_m's own
    private latent, which sharpens the reconstruction but lets a modality bypass z (on vt60 its
    camera -> tactile coherence fell to chance; see README, "What the latent learns"). The KL of
    w_m is weighted by the probability that w_m is used ('prior': P(m in S) = sum_S w_S [m in S];
    'own': 1), which keeps it exact in expectation.
    """
    mus, logvars, pmus, plvs = model.experts(xs, mask)
    beta = kl_weight(step, model.cfg.model.beta, model.cfg.model.warmup_steps)
    mix = mopoe(mus, logvars, mask)  # components [S, B, D]
    logs = {}
    if pmus is None:
        lp = log_likelihoods(model, mix.rsample().unsqueeze(0), xs)[:, 0]  # [M, B]
        kl_private = torch.zeros_like(mask[0], dtype=mus.dtype)
    else:
        idx = mix.select()
        rows = torch.arange(mus.shape[1], device=mus.device)
        z = reparameterize(mix.mus[idx, rows], mix.logvars[idx, rows])
        mat = subset_matrix(mask.shape[0], device=mask.device)  # [S, M]
        if model.cfg.model.cross_private == 'own':
            w = reparameterize(pmus, plvs)
            p_member = torch.ones_like(mask, dtype=mix.weights.dtype)
        else:
            member = mat[idx].t().unsqueeze(-1)  # [M, B, 1]: m is in the drawn subset
            w = torch.where(member, reparameterize(pmus, plvs), torch.randn_like(pmus))
            p_member = mat.t().to(mix.weights.dtype) @ mix.weights  # [M, B]
        lp = log_likelihoods(model, torch.cat([z] + list(w.unbind(0)), -1).unsqueeze(0),
                              xs)[:, 0]
        kl_w = kl_std_normal(pmus, plvs)  # [M, B]
        kl_private = (torch.where(mask, p_member * kl_w, torch.zeros_like(kl_w))).sum(0)
        logs['kl_private'] = masked_mean(kl_private, mask.any(0))
    recon = (lp * mask.float()).sum(0)  # [B]
    kl_s = kl_std_normal(mix.mus, mix.logvars)  # [S, B]
    kl = (mix.weights * torch.where(mix.valid, kl_s, torch.zeros_like(kl_s))).sum(0)
    elbo = recon - beta * (kl + kl_private)
    counts = mask.any(0)
    return finish_loss(elbo, counts, {'recon': masked_mean(recon, counts),
                                  'kl': masked_mean(kl, counts), 'beta': beta,
                                  'subsets': subset_matrix(mask.shape[0]).shape[0], **logs})


class MoPoE(Fusion):
    """Mixture of products of experts (module doc)."""

    name = 'mopoe'
    objective = staticmethod(mopoe_loss)

    def private_size(self, mcfg) -> int:
        """`private_dim` with `private_latents`, else 0."""
        return int(mcfg.private_dim) if mcfg.private_latents else 0

    def posterior(self, mus: torch.Tensor, logvars: torch.Tensor, mask: torch.Tensor
                  ) -> Mixture:
        """Mixture over the subsets of present modalities of their products."""
        return mopoe(mus, logvars, mask)
