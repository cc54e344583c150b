"""
Training objectives of the fusions, as their papers define them.

Every objective takes the model, the sanitised inputs `xs` (list in modality order, a missing
modality's values already replaced so they cannot leak) and the presence mask [M, B], and
returns (loss, logs). Only modalities present in a sample are encoded into or reconstructed
for that sample; samples with no modality at all do not count. Likelihoods are Gaussian with a
learned per-modality log-scale, weighted by `ModelConfig.likelihood_scale[name]` (default 1).
The KL weight warms up linearly from 0 to `beta` over `warmup_steps`.

* poe (MVAE, Wu & Goodman 2018): sum of the ELBOs of the full present set, of each single
  present modality and of one random subset of the present modalities (each ELBO reconstructs
  only its own subset's modalities), PoE posteriors with a prior expert.
* mopoe (MoPoE-VAE, Sutter et al. 2021): the average over all valid subsets of the subset ELBO
  (z from the subset's PoE, reconstructing every present modality, KL of the subset posterior);
  with private latents, modality-specific w_m as in MMVAE+ (see `mopoe_loss`).
* moe (MMVAE, Shi et al. 2019): stratified importance-weighted bound, K samples per present
  component, log w = log p(X|z) + beta (log p(z) - log q_mix(z|X)), averaged over components
  ("looser" IWAE), with DReG gradients (q parameters stopped in log w, squared normalised
  weights on the reparameterisation path).
* mmvae_plus (MMVAE+, Palumbo et al. 2023): as moe, with latents (z, w_m) ~ q(z|x_m) q(w_m|x_m)
  per component m; a cross-modal decoder n != m gets w_n sampled from its auxiliary prior
  r_n = N(0, I); log w adds beta (log p(w_m) - log q(w_m|x_m)).
"""
from __future__ import annotations

import math

import torch

from llmos_ros.models.fusion import mopoe, poe, subset_matrix

LOG_2PI = math.log(2 * math.pi)
# Rows per decoder pass in the importance-sampled objectives (moe, mmvae_plus): conv decoders
# slow down per row well beyond ~100 rows on CPU (activations leave the cache).
DECODE_ROWS = 64


def kl_weight(step: int, beta: float, warmup_steps: int) -> float:
    """Linear KL warm-up: 0 at step 0, beta from `warmup_steps` on."""
    if warmup_steps <= 0:
        return float(beta)
    return float(beta) * min(1.0, max(0, step) / warmup_steps)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor,
                      event_dims: int = 3) -> torch.Tensor:
    """Log-density N(x | mean, exp(log_scale)^2) summed over the last `event_dims` dimensions."""
    z = (x - mean) * torch.exp(-log_scale)
    lp = -0.5 * z * z - log_scale - 0.5 * LOG_2PI
    return lp.flatten(-event_dims).sum(-1)


def diag_normal_log_prob(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Log-density N(z | mu, diag(exp(logvar))) summed over the last dimension."""
    d = (z - mu) * torch.exp(-0.5 * logvar)
    return (-0.5 * (d * d + logvar + LOG_2PI)).sum(-1)


def std_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    return (-0.5 * (z * z + LOG_2PI)).sum(-1)


def kl_std_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over the last dimension (finite for |lv|<=80)."""
    return 0.5 * (torch.exp(logvar) + mu * mu - 1.0 - logvar).sum(-1)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


def _log_likelihoods(model, z: torch.Tensor, xs: list[torch.Tensor]) -> torch.Tensor:
    """Scaled log p(x_m | z) for every modality: z [N, B, D] -> [M, N, B]."""
    n, b = z.shape[:2]
    flat = z.reshape(n * b, -1)
    out = []
    for i, name in enumerate(model.names):
        mean, log_scale = model.decode_modality(name, model.decoder_input(flat, name))
        lp = gaussian_log_prob(xs[i], mean.reshape((n, b) + mean.shape[1:]), log_scale)
        out.append(model.likelihood_scale[name] * lp)
    return torch.stack(out, 0)


def _cross_log_likelihoods(model, zins: list[torch.Tensor], xs: list[torch.Tensor],
                           mask: torch.Tensor) -> torch.Tensor:
    """
    Scaled log p(x_n | zin_n) summed over the modalities n present in each sample: [M, K, B].

    zins[n] [M, K, B, Din_n] is decoder n's input for component m's k-th importance sample.
    Decoding runs in passes of about DECODE_ROWS rows (whole [B] slices), which keeps the conv
    activations cache-sized: the same values as one pass over all M*K*B rows, in half the time
    on CPU. A modality absent from the whole batch is not decoded (its terms are zero).
    """
    m, k, b = zins[0].shape[:3]
    per_pass = max(1, DECODE_ROWS // b)
    terms = []
    for n, name in enumerate(model.names):
        if not bool(mask[n].any()):
            terms.append(torch.zeros(m * k, b, dtype=zins[n].dtype, device=zins[n].device))
            continue
        parts = []
        for chunk in zins[n].reshape(m * k, b, -1).split(per_pass):
            c = chunk.shape[0]
            mean, log_scale = model.decode_modality(name, chunk.reshape(c * b, -1))
            parts.append(gaussian_log_prob(xs[n], mean.reshape((c, b) + mean.shape[1:]),
                                           log_scale))
        terms.append(model.likelihood_scale[name] * torch.cat(parts, 0) * mask[n].float())
    return torch.stack(terms, 0).sum(0).reshape(m, k, b)


def _finish(per_sample: torch.Tensor, counts: torch.Tensor, logs: dict) -> tuple:
    """Negative mean over the samples that count (counts [B] bool)."""
    n = counts.float().sum().clamp_min(1.0)
    loss = -(torch.where(counts, per_sample, torch.zeros_like(per_sample))).sum() / n
    logs = {k: float(v) for k, v in logs.items()}
    logs['loss'] = float(loss.detach())
    return loss, logs


def _masked_mean(v: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    return (torch.where(valid, v, torch.zeros_like(v)).sum()
            / valid.float().sum().clamp_min(1.0)).detach()


def mvae_loss(model, xs, mask, step):
    mus, logvars, _, _ = model.experts(xs, mask)
    m, b, d = mus.shape
    beta = kl_weight(step, model.cfg.model.beta, model.cfg.model.warmup_steps)
    eye = torch.eye(m, dtype=torch.bool, device=mask.device)
    rand = torch.rand(m, b, device=mask.device) < 0.5
    terms = torch.cat([mask.unsqueeze(0), eye.unsqueeze(-1) & mask.unsqueeze(0),
                       (mask & rand).unsqueeze(0)], 0)  # [T, M, B]
    t = terms.shape[0]
    tmus = mus.unsqueeze(0).expand(t, m, b, d).transpose(0, 1).reshape(m, t * b, d)
    tlvs = logvars.unsqueeze(0).expand(t, m, b, d).transpose(0, 1).reshape(m, t * b, d)
    mu, lv = poe(tmus, tlvs, terms.transpose(0, 1).reshape(m, t * b), prior_expert=True)
    mu, lv = mu.reshape(t, b, d), lv.reshape(t, b, d)
    lp = _log_likelihoods(model, reparameterize(mu, lv), xs)  # [M, T, B]
    recon = (lp * terms.transpose(0, 1).float()).sum(0)  # [T, B]
    kl = kl_std_normal(mu, lv)
    valid = terms.any(1)  # [T, B]
    elbo = torch.where(valid, recon - beta * kl, torch.zeros_like(recon)).sum(0)
    return _finish(elbo, mask.any(0), {'recon': _masked_mean(recon, valid),
                                       'kl': _masked_mean(kl, valid), 'beta': beta})


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
        lp = _log_likelihoods(model, mix.rsample().unsqueeze(0), xs)[:, 0]  # [M, B]
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
        lp = _log_likelihoods(model, torch.cat([z] + list(w.unbind(0)), -1).unsqueeze(0),
                              xs)[:, 0]
        kl_w = kl_std_normal(pmus, plvs)  # [M, B]
        kl_private = (torch.where(mask, p_member * kl_w, torch.zeros_like(kl_w))).sum(0)
        logs['kl_private'] = _masked_mean(kl_private, mask.any(0))
    recon = (lp * mask.float()).sum(0)  # [B]
    kl_s = kl_std_normal(mix.mus, mix.logvars)  # [S, B]
    kl = (mix.weights * torch.where(mix.valid, kl_s, torch.zeros_like(kl_s))).sum(0)
    elbo = recon - beta * (kl + kl_private)
    counts = mask.any(0)
    return _finish(elbo, counts, {'recon': _masked_mean(recon, counts),
                                  'kl': _masked_mean(kl, counts), 'beta': beta,
                                  'subsets': subset_matrix(mask.shape[0]).shape[0], **logs})


def _log_q_mixture(z: torch.Tensor, mus: torch.Tensor, logvars: torch.Tensor,
                   mask: torch.Tensor) -> torch.Tensor:
    """Log-density of the uniform mixture of present experts at z: z [M, K, B, D] -> [M, K, B]."""
    lq = diag_normal_log_prob(z.unsqueeze(0), mus[:, None, None], logvars[:, None, None])
    present = mask[:, None, None, :].expand_as(lq)  # [M', M, K, B]
    lq = torch.where(present, lq, torch.full_like(lq, -math.inf))
    count = mask.float().sum(0).clamp_min(1.0)
    lse = torch.logsumexp(lq, 0)
    lse = torch.where(mask.any(0), lse, torch.zeros_like(lse))  # no expert at all: unused
    return lse - torch.log(count)


def _dreg(lw: torch.Tensor, latents: list[torch.Tensor], mask: torch.Tensor, logs: dict):
    """
    DReG surrogate of the stratified IWAE bound; lw [M, K, B] computed with q params stopped.

    Its gradient is sum_k w~_k grad lw_k for the decoder and, through the hooks, sum_k w~_k^2
    d lw_k / dz dz/dphi for the encoders (Tucker et al. 2019).
    """
    k = lw.shape[1]
    valid = mask.unsqueeze(1).expand_as(lw)
    lw = torch.where(valid, lw, torch.zeros_like(lw))  # absent components: no NaN/inf weights
    grad_wt = torch.softmax(lw, dim=1).detach()
    for lat in latents:
        if lat.requires_grad:
            lat.register_hook(lambda g, w=grad_wt: g * w.unsqueeze(-1))
    bound = (torch.logsumexp(lw, 1) - math.log(k)).detach()
    surrogate = (grad_wt * lw).sum(1)  # [M, B]
    # value of the bound, gradient of the DReG surrogate
    surrogate = surrogate - surrogate.detach() + bound
    count = mask.float().sum(0).clamp_min(1.0)
    per_sample = torch.where(mask, surrogate, torch.zeros_like(surrogate)).sum(0) / count
    logs['iwae_bound'] = _masked_mean(torch.where(mask, bound, torch.zeros_like(bound)).sum(0)
                                      / count, mask.any(0))
    return _finish(per_sample, mask.any(0), logs)


def mmvae_loss(model, xs, mask, step):
    mus, logvars, _, _ = model.experts(xs, mask)
    m, b, d = mus.shape
    k = max(1, int(model.cfg.model.k_samples))
    beta = kl_weight(step, model.cfg.model.beta, model.cfg.model.warmup_steps)
    zs = mus.unsqueeze(1) + torch.exp(0.5 * logvars).unsqueeze(1) * torch.randn(
        m, k, b, d, dtype=mus.dtype, device=mus.device)  # [M, K, B, D]
    lpx = _cross_log_likelihoods(model, [zs] * m, xs, mask)  # [M, K, B]
    lqz = _log_q_mixture(zs, mus.detach(), logvars.detach(), mask)
    lw = lpx + beta * (std_normal_log_prob(zs) - lqz)
    return _dreg(lw, [zs], mask, {'recon': _masked_mean(lpx.mean(1), mask), 'beta': beta})


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
    lpx = _cross_log_likelihoods(model, zins, xs, mask)  # [M, K, B]
    lqz = _log_q_mixture(zs, mus.detach(), logvars.detach(), mask)
    lqw = diag_normal_log_prob(ws, pmus.detach().unsqueeze(1), plvs.detach().unsqueeze(1))
    lw = lpx + beta * (std_normal_log_prob(zs) - lqz + std_normal_log_prob(ws) - lqw)
    return _dreg(lw, [zs, ws], mask, {'recon': _masked_mean(lpx.mean(1), mask), 'beta': beta})


OBJECTIVES = {'poe': mvae_loss, 'mopoe': mopoe_loss, 'moe': mmvae_loss,
              'mmvae_plus': mmvae_plus_loss}
