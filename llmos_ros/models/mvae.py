"""
`MultimodalVAE`: per-modality encoders, a fusion, per-modality decoders, one interface for all.

Latent layout (maps to LatentState.msg): the full latent is `shared_dim` entries shared by all
modalities, followed -- for 'mmvae_plus', and 'mopoe' with `private_latents` (the default) -- by
`private_dim` entries per modality, in `cfg.modalities` order (`private_modalities`). A private
latent w_m holds what only modality m shows (a digit's handwriting, an utterance's timing); its
decoder reads (z, w_m). When m is missing, w_m is its prior N(0, I): a cross-modal prediction
decodes the shared content at w_m = 0, the prior's mean.
'poe' and 'moe' have no private part.

Inputs are dicts name -> float tensor [B, *ModalityConfig.shape()] (z-scored) and presence
dicts name -> bool tensor [B]. A missing modality drops its expert; its tensor values are never
used (they are replaced before the encoder runs, so even NaN is harmless). A modality absent
from `inputs` is missing for every sample; one absent from `present` is present everywhere.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from llmos_ros import kinds
from llmos_ros.config import Config
from llmos_ros.errors import ConfigError, InputError
from llmos_ros.models import fusions
from llmos_ros.models.fusion import Mixture
from llmos_ros.models.networks import Decoder, Encoder


def likelihood_scales(shapes: dict[str, tuple[int, ...]], mcfg) -> dict[str, float]:
    """
    Weight of each modality's log-likelihood in the training objective.

    A log-likelihood sums over the modality's values, so a 64x64 RGB camera (12,288 values)
    outweighs a 48x64 tactile image (3,072) four to one in what the shared latent is shaped to
    explain. With `model.balance_likelihoods` (default) modality m's weight is
    max_n size_n / size_m (the largest modality keeps 1, as MMVAE's `llik_scaling` does for
    its smaller modality), times `model.likelihood_scale[m]` (default 1).
    """
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    top = max(sizes.values())
    return {n: (top / sizes[n] if mcfg.balance_likelihoods else 1.0)
            * float(mcfg.likelihood_scale.get(n, 1.0)) for n in shapes}


class MultimodalVAE(nn.Module):
    """Multimodal VAE over `cfg.modalities` with fusion `cfg.model.fusion`."""

    def __init__(self, cfg: Config):
        super().__init__()
        mcfg = cfg.model
        if not cfg.modalities:
            raise ConfigError('the model needs at least one modality')
        self.fusion_method = fusions.get(mcfg.fusion)  # posterior and objective
        self.fusion_method.check(mcfg)
        if mcfg.latent_dim < 1 or mcfg.hidden < 1:
            raise ConfigError('model.latent_dim and model.hidden must be >= 1')
        self.cfg = cfg
        self.names = list(cfg.modalities)
        for name in self.names:
            if not name or '.' in name:
                raise ConfigError(f'modality name {name!r} cannot be used (empty or has a dot)')
        unknown = set(mcfg.likelihood_scale) - set(self.names)
        if unknown:
            raise ConfigError(f'model.likelihood_scale names unknown modalities {sorted(unknown)}')
        self.fusion = mcfg.fusion
        self.shared_dim = int(mcfg.latent_dim)
        self.private_dim = mcfg.private_size()
        if self.private_dim < 0:
            raise ConfigError(f'model.private_dim must be >= 0, got {self.private_dim}')
        self.shapes = {n: tuple(cfg.modalities[n].shape()) for n in self.names}
        code = self.shared_dim + self.private_dim
        self.encoders = nn.ModuleDict(
            {n: Encoder(self.shapes[n], mcfg.hidden, code) for n in self.names})
        self.decoders = nn.ModuleDict(
            {n: Decoder(self.shapes[n], mcfg.hidden, code) for n in self.names})
        self.likelihood_scale = likelihood_scales(self.shapes, mcfg)
        # modalities whose likelihood marginalises a circular shift: name -> its reach per
        # trailing axis (Kind.shift_reach; objectives.shifted_gaussian_log_prob)
        self.shift_reach = {n: r for n in self.names
                            if (r := kinds.of(cfg.modalities[n]).shift_reach(cfg.modalities[n]))}
        # Conv weights in channels-last layout: oneDNN picks its faster NHWC kernels for every
        # conv (inputs stay NCHW). Same values within float rounding; with networks.Upsample2x
        # a training step is 1.54x and a batch-1 encode + decode 1.06x faster on the 2-core CPU
        # (benchmarks/conv_layout.py). Load and save are unaffected (state dicts copy values).
        self.to(memory_format=torch.channels_last)

    # ---- layout ----------------------------------------------------------------------------
    @property
    def latent_size(self) -> int:
        """Size of the full latent: shared + private_dim per modality (when private)."""
        return self.shared_dim + self.private_dim * len(self.names)

    def latent_layout(self) -> dict:
        """Fields of LatentState.msg describing the latent layout."""
        return {'shared_dim': self.shared_dim, 'private_dim': self.private_dim,
                'private_modalities': list(self.names) if self.private_dim else []}

    def private_slice(self, name: str) -> slice:
        i = self.names.index(name)
        start = self.shared_dim + i * self.private_dim
        return slice(start, start + self.private_dim)

    # ---- inputs ----------------------------------------------------------------------------
    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def prepare(self, inputs: dict[str, torch.Tensor], present: dict[str, torch.Tensor] | None
                ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Sanitised inputs (missing samples replaced by zeros) in modality order, mask [M, B]."""
        present = present or {}
        unknown = (set(inputs) | set(present)) - set(self.names)
        if unknown:
            raise InputError('modality', f'unknown modalities {sorted(unknown)}; '
                             f'the model has {self.names}')
        batch = [int(t.shape[0]) for t in list(inputs.values()) + list(present.values())]
        if not batch:
            raise InputError('empty', 'no inputs given')
        b = batch[0]
        if any(x != b for x in batch):
            raise InputError('batch', f'inconsistent batch sizes {batch}')
        device = self._device()
        xs, masks = [], []
        for name in self.names:
            shape = self.shapes[name]
            if name in inputs:
                x = inputs[name].to(device=device, dtype=torch.float32)
                if tuple(x.shape[1:]) != shape:
                    raise InputError('size', f'{name}: expected [B, {", ".join(map(str, shape))}],'
                                     f' got {list(x.shape)}')
                m = present.get(name)
                m = (torch.ones(b, dtype=torch.bool, device=device) if m is None
                     else m.to(device=device, dtype=torch.bool).reshape(b))
            else:
                m = present.get(name)
                if m is not None and bool(m.any()):
                    raise InputError('missing', f'{name} is marked present but has no input')
                x = torch.zeros((b,) + shape, device=device)
                m = torch.zeros(b, dtype=torch.bool, device=device)
            keep = m.reshape((b,) + (1,) * len(shape))
            xs.append(torch.where(keep, x, torch.zeros_like(x)))
            masks.append(m)
        return xs, torch.stack(masks, 0)

    # ---- encode / decode -------------------------------------------------------------------
    def experts(self, xs: list[torch.Tensor], mask: torch.Tensor):
        """Unimodal posteriors: shared (mus, logvars) [M, B, D] and private [M, B, P] or None."""
        return self.stack_experts([self.encoders[n](x) for n, x in zip(self.names, xs)])

    def stack_experts(self, outs: list[tuple[torch.Tensor, torch.Tensor]]):
        """
        `experts` from the encoders' outputs, (mu, logvar) [B, D + P] each in modality order.

        Also takes outputs of the same encoders run elsewhere (llmos_ros/ort_backend.py).
        """
        mus = torch.stack([o[0] for o in outs], 0)
        logvars = torch.stack([o[1] for o in outs], 0)
        if not self.private_dim:
            return mus, logvars, None, None
        d = self.shared_dim
        return mus[..., :d], logvars[..., :d], mus[..., d:], logvars[..., d:]

    def posterior_from(self, xs: list[torch.Tensor], mask: torch.Tensor
                       ) -> tuple[Mixture, torch.Tensor, torch.Tensor]:
        """Shared fused posterior (a Mixture) and the full-latent Gaussian (mu, logvar)."""
        return self.fuse_experts(self.experts(xs, mask), mask)

    def fuse_experts(self, experts, mask: torch.Tensor
                     ) -> tuple[Mixture, torch.Tensor, torch.Tensor]:
        """
        `posterior_from` for expert outputs already computed (`experts(xs, ...)`).

        The experts do not depend on the mask, so the posterior of any subset of the inputs is
        this fusion (closed form) of the same expert outputs with that subset's mask: encode
        once, fuse per subset (predictions, subset metrics).
        """
        mus, logvars, pmus, plvs = experts
        mix = self.fusion_method.posterior(mus, logvars, mask)
        mu, logvar = mix.gaussian()
        if self.private_dim:
            keep = mask.unsqueeze(-1)  # missing modality: private latent from its prior N(0, I)
            pm = torch.where(keep, pmus, torch.zeros_like(pmus))
            pl = torch.where(keep, plvs, torch.zeros_like(plvs))
            mu = torch.cat([mu] + list(pm.unbind(0)), -1)
            logvar = torch.cat([logvar] + list(pl.unbind(0)), -1)
        return mix, mu, logvar

    def posterior(self, inputs, present=None) -> Mixture:
        """The shared latent's fused posterior as a mixture (one component for 'poe')."""
        return self.posterior_from(*self.prepare(inputs, present))[0]

    def encode(self, inputs: dict[str, torch.Tensor], present: dict[str, torch.Tensor] | None
               = None) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Fused posterior of the full latent as a Gaussian (mu, logvar), each [B, latent_size].

        PoE: the exact product. MoE / MoPoE / MMVAE+ (shared part): the moment-matched Gaussian
        of the mixture. MMVAE+ private parts: q(w_m|x_m), or the prior N(0, I) when m is missing.
        """
        return self.posterior_from(*self.prepare(inputs, present))[1:]

    def decoder_input(self, z: torch.Tensor, name: str) -> torch.Tensor:
        """The part of a full latent [N, latent_size] (or shared [N, D]) decoder `name` uses."""
        if not self.private_dim:
            return z[:, :self.shared_dim]
        return torch.cat([z[:, :self.shared_dim], z[:, self.private_slice(name)]], -1)

    def decode_modality(self, name: str, zin: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        dec = self.decoders[name]
        return dec(zin), dec.log_scale()

    def decode(self, z: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Full latent [N, latent_size] -> name -> (mean [N, *shape], log_scale scalar)."""
        return {n: self.decode_modality(n, self.decoder_input(z, n)) for n in self.names}

    def predict(self, inputs: dict[str, torch.Tensor], present: dict[str, torch.Tensor] | None
                = None) -> dict[str, torch.Tensor]:
        """Decoded posterior mean for every modality (reconstruction or cross-modal prediction)."""
        mu, _ = self.encode(inputs, present)
        return {n: mean for n, (mean, _) in self.decode(mu).items()}

    def forward_masked(self, xs: list[torch.Tensor], mask: torch.Tensor):
        """(mu, logvar, predictions in modality order) from prepared inputs; used by export."""
        _, mu, logvar = self.posterior_from(xs, mask)
        preds = [self.decoders[n](self.decoder_input(mu, n)) for n in self.names]
        return mu, logvar, preds

    # ---- training --------------------------------------------------------------------------
    def forward(self, inputs: dict[str, torch.Tensor], present: dict[str, torch.Tensor] | None,
                step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """The training loss, so DistributedDataParallel can wrap the model."""
        return self.loss(inputs, present, step)

    def loss(self, inputs: dict[str, torch.Tensor], present: dict[str, torch.Tensor] | None,
             step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss (negative bound, mean over samples with any modality) and logs."""
        xs, mask = self.prepare(inputs, present)
        return self.fusion_method.objective(self, xs, mask, step)
