"""
Shared math of the training objectives (each fusion's own is in llmos_ros.models.fusions).

Every objective takes the model, the sanitised inputs `xs` (list in modality order, a missing
modality's values already replaced so they cannot leak) and the presence mask [M, B], and
returns (loss, logs). Only modalities present in a sample are encoded into or reconstructed
for that sample; samples with no modality at all do not count. Likelihoods are Gaussian with a
learned per-modality log-scale (for a modality with a shift likelihood, marginalised over
circular shifts of the decoded array: audio 'time_shift' in time, image 'space_shift' by a few
pixels, `shifted_gaussian_log_prob`),
weighted by `model.likelihood_scale[name]`
(`mvae.likelihood_scales`: the balance by modality size times the config's likelihood_scale).
The KL weight warms up linearly from 0 to `beta` over `warmup_steps`. Here: the densities, the
KL warm-up, the (cross-modal) log-likelihoods, the mixture density and the DReG surrogate of the
importance-weighted bounds.
"""
from __future__ import annotations

import math

import torch

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


def _shift_offsets(sizes: tuple[int, ...], reach: tuple[int | None, ...]) -> torch.Tensor:
    """Flat row-major indices of the shifts -r..r (mod n) per axis of size n; None: all n."""
    grids = [torch.arange(n) if r is None or 2 * r + 1 >= n
             else torch.arange(-r, r + 1) % n for n, r in zip(sizes, reach)]
    flat = torch.zeros(1, dtype=torch.long)
    for n, g in zip(sizes, grids):
        flat = (flat.unsqueeze(-1) * n + g).flatten()
    return flat


def shifted_sq_distances(x: torch.Tensor, mean: torch.Tensor, reach: tuple[int | None, ...],
                         event_dims: int = 3) -> torch.Tensor:
    """
    Squared distances of x from the circular shifts of mean within reach: [..., S].

    sum (x - roll(mean, s))^2 over the last `event_dims` axes, for each shift s of the last
    len(reach) axes (time: 1; height and width: 2) with every component within its axis'
    reach (r: -r..r; None: every shift of that axis). All at once: |x|^2 + |m|^2 - 2 x . roll(m),
    the last term for every circular shift by FFT cross-correlation over the shifted axes,
    then the shifts within reach kept.
    """
    dims = tuple(range(-event_dims, 0))
    axes = dims[-len(reach):]
    sizes = tuple(x.shape[-len(reach):])
    cross = torch.fft.irfftn(torch.fft.rfftn(x, dim=axes) * torch.fft.rfftn(mean, dim=axes).conj(),
                             s=sizes, dim=axes)  # x . roll(mean, s) per channel
    cross = cross.sum(dims[:-len(reach)]).flatten(-len(reach))  # [..., every shift]
    cross = cross.index_select(-1, _shift_offsets(sizes, reach).to(cross.device))
    return ((x * x).sum(dims).unsqueeze(-1) + (mean * mean).sum(dims).unsqueeze(-1)
            - 2.0 * cross)


def shifted_gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor,
                              reach: tuple[int | None, ...]) -> torch.Tensor:
    """
    Log-density of x [..., C, H, W] around the decoded mean shifted circularly.

    N(roll(mean, s), s^2) marginalised over a uniform circular shift s of the last len(reach)
    axes, each within its reach (`shifted_sq_distances`): log (1/|S|) sum_s N(x | roll(mean, s)).
    The decoder draws the event once; where it falls (in the window: audio 'time_shift'; in
    the picture: image 'space_shift') is the shift, which nothing else tells.
    """
    n = x.shape[-3] * x.shape[-2] * x.shape[-1]
    sq = shifted_sq_distances(x, mean, reach)
    lp = -0.5 * sq * torch.exp(-2.0 * log_scale) - n * (log_scale + 0.5 * LOG_2PI)
    return torch.logsumexp(lp, -1) - math.log(sq.shape[-1])


def modality_log_prob(model, name: str, x: torch.Tensor, mean: torch.Tensor,
                      log_scale: torch.Tensor) -> torch.Tensor:
    """Log p(x_name | decoded mean) under the modality's likelihood, summed over its values."""
    reach = model.shift_reach.get(name)
    if reach is not None:
        return shifted_gaussian_log_prob(x, mean, log_scale, reach)
    return gaussian_log_prob(x, mean, log_scale)


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


def log_likelihoods(model, z: torch.Tensor, xs: list[torch.Tensor]) -> torch.Tensor:
    """Scaled log p(x_m | z) for every modality: z [N, B, D] -> [M, N, B]."""
    n, b = z.shape[:2]
    flat = z.reshape(n * b, -1)
    out = []
    for i, name in enumerate(model.names):
        mean, log_scale = model.decode_modality(name, model.decoder_input(flat, name))
        lp = modality_log_prob(model, name, xs[i], mean.reshape((n, b) + mean.shape[1:]),
                               log_scale)
        out.append(model.likelihood_scale[name] * lp)
    return torch.stack(out, 0)


def cross_log_likelihoods(model, zins: list[torch.Tensor], xs: list[torch.Tensor],
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
            parts.append(modality_log_prob(model, name, xs[n],
                                           mean.reshape((c, b) + mean.shape[1:]), log_scale))
        terms.append(model.likelihood_scale[name] * torch.cat(parts, 0) * mask[n].float())
    return torch.stack(terms, 0).sum(0).reshape(m, k, b)


def finish_loss(per_sample: torch.Tensor, counts: torch.Tensor, logs: dict) -> tuple:
    """Negative mean over the samples that count (counts [B] bool)."""
    n = counts.float().sum().clamp_min(1.0)
    loss = -(torch.where(counts, per_sample, torch.zeros_like(per_sample))).sum() / n
    logs = {k: float(v) for k, v in logs.items()}
    logs['loss'] = float(loss.detach())
    return loss, logs


def masked_mean(v: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of v where valid (detached: for the logs)."""
    return (torch.where(valid, v, torch.zeros_like(v)).sum()
            / valid.float().sum().clamp_min(1.0)).detach()


def log_q_mixture(z: torch.Tensor, mus: torch.Tensor, logvars: torch.Tensor,
                   mask: torch.Tensor) -> torch.Tensor:
    """Log-density of the uniform mixture of present experts at z: z [M, K, B, D] -> [M, K, B]."""
    lq = diag_normal_log_prob(z.unsqueeze(0), mus[:, None, None], logvars[:, None, None])
    present = mask[:, None, None, :].expand_as(lq)  # [M', M, K, B]
    lq = torch.where(present, lq, torch.full_like(lq, -math.inf))
    count = mask.float().sum(0).clamp_min(1.0)
    lse = torch.logsumexp(lq, 0)
    lse = torch.where(mask.any(0), lse, torch.zeros_like(lse))  # no expert at all: unused
    return lse - torch.log(count)


def dreg(lw: torch.Tensor, latents: list[torch.Tensor], mask: torch.Tensor, logs: dict):
    """
    DReG surrogate of the stratified IWAE bound; lw [M, K, B] computed with q params stopped.

    Its gradient is sum_k w~_k grad lw_k for the decoder and, through the hooks, sum_k w~_k^2
    d lw_k / dz dz/dphi for the encoders (Tucker et al. 2019). At K=1 the weights are exactly 1:
    the value is the stratified ELBO and the gradient its path-derivative ("sticking the
    landing", Roeder et al. 2017) estimate, so no hooks are registered.
    """
    k = lw.shape[1]
    valid = mask.unsqueeze(1).expand_as(lw)
    lw = torch.where(valid, lw, torch.zeros_like(lw))  # absent components: no NaN/inf weights
    grad_wt = torch.softmax(lw, dim=1).detach()
    for lat in latents if k > 1 else ():
        if lat.requires_grad:
            lat.register_hook(lambda g, w=grad_wt: g * w.unsqueeze(-1))
    bound = (torch.logsumexp(lw, 1) - math.log(k)).detach()
    surrogate = (grad_wt * lw).sum(1)  # [M, B]
    # value of the bound, gradient of the DReG surrogate
    surrogate = surrogate - surrogate.detach() + bound
    count = mask.float().sum(0).clamp_min(1.0)
    per_sample = torch.where(mask, surrogate, torch.zeros_like(surrogate)).sum(0) / count
    logs['iwae_bound'] = masked_mean(torch.where(mask, bound, torch.zeros_like(bound)).sum(0)
                                      / count, mask.any(0))
    return finish_loss(per_sample, mask.any(0), logs)
