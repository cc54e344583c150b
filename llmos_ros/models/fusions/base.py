"""
The interface of a fusion, and the registry of fusions by name (`model.fusion`).

A fusion is the posterior of the shared latent (how unimodal experts combine), the training
objective its paper defines, and the latent layout (whether each modality has a private latent
beside the shared one). `MultimodalVAE`, `ModelConfig` and the checkpoint checks reach a fusion
only through `get(name)`, so adding one is a module with a `Fusion` subclass and one `register`
line in llmos_ros/models/fusions/__init__.py. Shared math: llmos_ros.models.fusion (log-space
products, `Mixture`) and llmos_ros.models.objectives (likelihoods, KL, DReG).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from llmos_ros.errors import ConfigError
from llmos_ros.models.fusion import Mixture

if TYPE_CHECKING:
    from llmos_ros.config import ModelConfig


class Fusion:
    """One fusion (subclass it): `name`, `private_size`, `check`, `posterior`, `objective`."""

    name: str = ''

    def private_size(self, mcfg: ModelConfig) -> int:
        """Private latent entries per modality (0: the latent is all shared)."""
        return 0

    def check(self, mcfg: ModelConfig) -> None:
        """ConfigError for model settings this fusion cannot run with."""

    def posterior(self, mus: torch.Tensor, logvars: torch.Tensor, mask: torch.Tensor
                  ) -> Mixture:
        """Fused posterior of the shared latent from experts [M, B, D] and mask [M, B]."""
        raise NotImplementedError

    def measurement(self, mus: torch.Tensor, logvars: torch.Tensor, mask: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        What the present experts say about the shared latent, as one Gaussian: (mu, logvar) [B, D].

        The belief filter's measurement (llmos_ros.belief_noise): the fused posterior without a
        prior expert (the propagated belief takes the prior's place), moment-matched. The mixture
        fusions have no prior expert, so it is their posterior; PoE leaves its prior out.
        """
        return self.posterior(mus, logvars, mask).gaussian()

    def objective(self, model, xs: list[torch.Tensor], mask: torch.Tensor, step: int
                  ) -> tuple[torch.Tensor, dict[str, float]]:
        """Training loss (negative bound, mean over samples with any modality) and logs."""
        raise NotImplementedError


_FUSIONS: dict[str, Fusion] = {}


def register(fusion: Fusion) -> Fusion:
    """Add a fusion to the registry; a second one of the same name is an error."""
    if not fusion.name or fusion.name in _FUSIONS:
        raise ValueError(f'fusion {fusion.name!r} is unnamed or registered twice')
    _FUSIONS[fusion.name] = fusion
    return fusion


def names() -> tuple[str, ...]:
    """Names of the registered fusions, in registration order."""
    return tuple(_FUSIONS)


def get(name: str) -> Fusion:
    """The fusion registered as `name`; ConfigError naming `model.fusion` otherwise."""
    try:
        return _FUSIONS[name]
    except KeyError:
        raise ConfigError(f'model.fusion must be one of {names()}, got {name!r}') from None


def fuse(name: str, mus: torch.Tensor, logvars: torch.Tensor, mask: torch.Tensor) -> Mixture:
    """Fused posterior of the shared latent for fusion `name` (see `Fusion.posterior`)."""
    return get(name).posterior(mus, logvars, mask)
