"""
Batched model math of offline evaluation (llmos-eval), ROS-free.

Posteriors of any modality subset, decoded means, log-likelihoods, ELBO and IWAE figures and
example decodings of a `MultimodalVAE`.

Rows are sample indices into arrays {modality: (N, *shape) float32} (normalised, zeros where
absent) as `evaluation.replay.Replay` and `core.dataset.SampleTable` hold them. The encoders run
once per row (`row_experts`); every subset's posterior is then a closed-form fusion of those
expert outputs (`fused_rows`), as the live engine does it (`MultimodalVAE.fuse_experts`).
"""
from __future__ import annotations

import numpy as np
import torch

from llmos_ros.evaluation.metrics import (
    aligned_mse,
    iwae_log_likelihood,
    mean_baseline_mse,
    mse,
    subsets,
)
from llmos_ros.models.objectives import (
    DECODE_ROWS,
    diag_normal_log_prob,
    kl_std_normal,
    modality_log_prob,
    std_normal_log_prob,
)


def batch_rows(model, arrays, idx, given, device):
    """Inputs of rows idx with only the modalities in `given` marked present."""
    inputs, present = {}, {}
    for name in model.names:
        inputs[name] = torch.from_numpy(np.ascontiguousarray(arrays[name][idx])).to(device)
        present[name] = torch.full((len(idx),), name in given, dtype=torch.bool, device=device)
    return inputs, present


def row_experts(model, arrays, device, batch_size: int = 256) -> tuple:
    """
    Expert outputs (MultimodalVAE.experts) of every row of `arrays`, batched: [M, N, *].

    Experts do not depend on which modalities are given, so every subset's posterior of a row
    is a closed-form fusion of these (`fused_rows`): the encoders run once per row, not once
    per subset. Rows where a modality is absent hold that expert's output for zeros, which the
    subset masks leave out. The encoders run in passes of at most DECODE_ROWS rows: the same
    values as larger batches, faster on CPU (the conv activations stay cache-sized).
    """
    n = len(next(iter(arrays.values()))) if arrays else 0
    rows = max(1, min(batch_size, DECODE_ROWS))
    parts = []
    with torch.no_grad():
        for start in range(0, n, rows):
            idx = np.arange(start, min(n, start + rows))
            inputs, _ = batch_rows(model, arrays, idx, model.names, device)
            parts.append(model.experts(*model.prepare(inputs, None)))
    if not parts:
        inputs, _ = batch_rows(model, arrays, np.zeros(0, int), model.names, device)
        return model.experts(*model.prepare(inputs, None))
    return tuple(None if p[0] is None else torch.cat(p, 1) for p in zip(*parts))


def fused_rows(model, experts, idx, mask):
    """Full-latent (mu, logvar) of rows idx from their experts; mask bool [M, len(idx)]."""
    sel = tuple(None if e is None else e[:, idx] for e in experts)
    return model.fuse_experts(sel, mask)[1:]


def given_mask(model, given, n, device):
    """Presence mask bool [M, n]: the modalities of `given` present in every row."""
    return torch.tensor([name in given for name in model.names],
                        device=device).reshape(-1, 1).expand(-1, n)


def decode_mean(model, name, z):
    """
    (mean [N, *shape], log_scale) of decoder `name` for full latents z [N, latent].

    Runs in passes of DECODE_ROWS rows: the same values as one pass, faster on CPU (the conv
    activations stay cache-sized).
    """
    parts = [model.decode_modality(name, model.decoder_input(c, name))[0]
             for c in z.split(DECODE_ROWS)]
    mean = torch.cat(parts, 0) if parts else model.decode_modality(
        name, model.decoder_input(z, name))[0]
    return mean, model.decoders[name].log_scale()


def log_likelihood(model, inputs, z, given):
    """Log p(x_S | z): Gaussian decoder log-densities summed over m in S; z [B, D] -> [B]."""
    total = 0.0
    for name in given:
        mean, log_scale = decode_mean(model, name, z)
        x = inputs[name]
        total = total + modality_log_prob(model, name, x, mean, log_scale)
    return total


def subset_metrics(model, arrays, present, rows, given, device, batch_size: int = 256,
                   elbo_samples: int = 1, iwae_k: int | None = None, seed: int = 0,
                   targets=None, chunk_hook=None, experts=None) -> dict:
    """
    Batched metrics of one subset `given` on the sample rows `rows` (all of `given` present).

    experts: `row_experts(model, arrays)`, to fuse the subset's posterior from them instead of
    running the encoders again (same values).

    Returns {'mu': [n, D], 'recon_mse' / 'base_mse': {mod: per-sample arrays over the samples
    where mod is present}, 'neg_elbo': [n], 'iwae_ll': [n] or None}. Noise: one
    torch.Generator seeded with `seed`; per chunk of batch_size rows, elbo_samples draws
    randn(B, D) for the ELBO, then iwae_k draws for the IWAE. chunk_hook(idx, decoded) sees
    every chunk's decoded means (coherence).
    """
    targets = list(model.names if targets is None else targets)
    gen = torch.Generator().manual_seed(int(seed))
    mus, elbo, iwae = [], [], []
    err = {m: [] for m in targets}
    base = {m: [] for m in targets}
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            idx = rows[start:start + batch_size]
            inputs, mask = batch_rows(model, arrays, idx, given, device)
            if experts is None:
                mu, logvar = model.encode(inputs, mask)
            else:
                mu, logvar = fused_rows(model, experts, idx,
                                        given_mask(model, given, len(idx), device))
            mus.append(mu.cpu().numpy())
            decoded = {n: decode_mean(model, n, mu)[0] for n in targets}
            for m in targets:
                keep = present[m][idx]
                if keep.any():
                    pred = decoded[m].cpu().numpy()[keep]
                    target = arrays[m][idx][keep]
                    reach = model.shift_reach.get(m)
                    err[m].append(mse(pred, target) if reach is None
                                  else aligned_mse(pred, target, reach))
                    base[m].append(mean_baseline_mse(target, 0.0))
            if chunk_hook is not None:
                chunk_hook(idx, decoded)
            std = torch.exp(0.5 * logvar)
            ll = torch.zeros(len(idx), dtype=torch.float64)
            for _ in range(elbo_samples):
                eps = torch.randn(mu.shape, generator=gen).to(device)
                ll += log_likelihood(model, inputs, mu + std * eps, given).double().cpu()
            kl = kl_std_normal(mu, logvar).double().cpu()
            elbo.append((kl - ll / elbo_samples).numpy())
            if iwae_k:
                lws = []
                for _ in range(iwae_k):
                    z = mu + std * torch.randn(mu.shape, generator=gen).to(device)
                    lw = (log_likelihood(model, inputs, z, given) + std_normal_log_prob(z)
                          - diag_normal_log_prob(z, mu, logvar))
                    lws.append(lw.double().cpu())
                iwae.append(iwae_log_likelihood(torch.stack(lws, 0)).numpy())
    def cat(parts):
        return np.concatenate(parts) if parts else np.zeros(0)

    return {'mu': np.concatenate(mus) if mus else np.zeros((0, model.latent_size), np.float32),
            'recon_mse': {m: cat(err[m]) for m in targets},
            'base_mse': {m: cat(base[m]) for m in targets},
            'neg_elbo': cat(elbo), 'iwae_ll': cat(iwae) if iwae_k else None}


def encode_rows(model, arrays, rows, given, device, batch_size: int = 256,
                present=None, experts=None) -> np.ndarray:
    """
    Latent means [n, D] of rows encoded from `given` (or each row's own `present` set).

    experts: `row_experts(model, arrays)`, to fuse from them instead of encoding again.
    """
    out = []
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            idx = rows[start:start + batch_size]
            if experts is not None:
                mask = (given_mask(model, given, len(idx), device) if present is None else
                        torch.from_numpy(np.stack([present[n][idx] for n in model.names])
                                         ).to(device))
                out.append(fused_rows(model, experts, idx, mask)[0].cpu().numpy())
                continue
            inputs, mask = batch_rows(model, arrays, idx, given, device)
            if present is not None:
                mask = {n: torch.from_numpy(present[n][idx]).to(device) for n in model.names}
            out.append(model.encode(inputs, mask)[0].cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.latent_size), np.float32)


def example_columns(model, arrays, idx, mods, device) -> dict:
    """
    Example decodings of rows idx: {modality: {column: [len(idx), *shape]}}.

    Columns: the input, the reconstruction from all of `mods`, and the prediction from each
    single modality and each leave-one-out set.
    """
    columns = {m: {'input': arrays[m][idx]} for m in mods}
    with torch.no_grad():
        for given in subsets(mods):
            if len(given) not in (1, len(mods) - 1, len(mods)):
                continue
            inputs, mask = batch_rows(model, arrays, idx, given, device)
            mu, _ = model.encode(inputs, mask)
            for m in mods:
                if len(given) == len(mods):
                    title = 'reconstruction (all given)'
                elif m in given:
                    continue
                else:
                    title = 'from ' + '+'.join(given)
                dec = model.decode_modality(m, model.decoder_input(mu, m))[0]
                columns[m][title] = dec.cpu().numpy()
    return columns
