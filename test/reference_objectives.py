"""
The moe / mmvae_plus objectives as first written (one decoder pass over all M*K*B rows).

Kept verbatim as the reference that the faster implementations in
llmos_ros.models.objectives must match (test/test_speed.py) and as the "before" of
benchmarks/fusion_speed.py; since the audio kind's 'time_shift' likelihood, each modality's
density is `modality_log_prob` (what it was for every modality then: the Gaussian).
"""
import torch

from llmos_ros.models.objectives import (
    diag_normal_log_prob,
    dreg,
    kl_weight,
    log_likelihoods,
    log_q_mixture,
    masked_mean,
    modality_log_prob,
    std_normal_log_prob,
)


def mmvae_loss(model, xs, mask, step):
    """MMVAE loss as first written."""
    mus, logvars, _, _ = model.experts(xs, mask)
    m, b, d = mus.shape
    k = max(1, int(model.cfg.model.k_samples))
    beta = kl_weight(step, model.cfg.model.beta, model.cfg.model.warmup_steps)
    zs = mus.unsqueeze(1) + torch.exp(0.5 * logvars).unsqueeze(1) * torch.randn(
        m, k, b, d, dtype=mus.dtype, device=mus.device)  # [M, K, B, D]
    lp = log_likelihoods(model, zs.reshape(m * k, b, d), xs).reshape(m, m, k, b)
    lpx = (lp * mask[:, None, None, :].float()).sum(0)  # [M, K, B]
    lqz = log_q_mixture(zs, mus.detach(), logvars.detach(), mask)
    lw = lpx + beta * (std_normal_log_prob(zs) - lqz)
    return dreg(lw, [zs], mask, {'recon': masked_mean(lpx.mean(1), mask), 'beta': beta})


def mmvae_plus_loss(model, xs, mask, step):
    """MMVAE+ loss as first written."""
    mus, logvars, pmus, plvs = model.experts(xs, mask)
    m, b, d = mus.shape
    p = pmus.shape[-1]
    k = max(1, int(model.cfg.model.k_samples))
    beta = kl_weight(step, model.cfg.model.beta, model.cfg.model.warmup_steps)
    zs = mus.unsqueeze(1) + torch.exp(0.5 * logvars).unsqueeze(1) * torch.randn(
        m, k, b, d, dtype=mus.dtype, device=mus.device)
    ws = pmus.unsqueeze(1) + torch.exp(0.5 * plvs).unsqueeze(1) * torch.randn(
        m, k, b, p, dtype=mus.dtype, device=mus.device)  # own private latent of component m
    lps = []
    for n, name in enumerate(model.names):
        own = torch.zeros(m, 1, 1, 1, dtype=torch.bool, device=mus.device)
        own[n] = True
        aux = torch.randn(m, k, b, p, dtype=mus.dtype, device=mus.device)  # r_n = N(0, I)
        w_n = torch.where(own, ws, aux)  # component n uses its own w_n, others sample r_n
        zin = torch.cat([zs, w_n], -1).reshape(m * k * b, d + p)
        mean, log_scale = model.decode_modality(name, zin)
        lp = modality_log_prob(model, name, xs[n], mean.reshape((m, k, b) + mean.shape[1:]),
                               log_scale)
        lps.append(model.likelihood_scale[name] * lp * mask[n].float())
    lpx = torch.stack(lps, 0).sum(0)  # [M, K, B]
    lqz = log_q_mixture(zs, mus.detach(), logvars.detach(), mask)
    lqw = diag_normal_log_prob(ws, pmus.detach().unsqueeze(1), plvs.detach().unsqueeze(1))
    lw = lpx + beta * (std_normal_log_prob(zs) - lqz + std_normal_log_prob(ws) - lqw)
    return dreg(lw, [zs, ws], mask, {'recon': masked_mean(lpx.mean(1), mask), 'beta': beta})

