"""
Belief over time: a diagonal Gaussian filter over the latent, and the staleness rule. ROS-free.

Transition (predict). Between stamps t0 < t1 every latent dimension i follows a random walk with
process noise q_i (latent variance per second): the mean stays, var_i += q_i * (t1 - t0) / 1 s.
The propagated variance is capped at the prior's variance, 1: the model's latent has the marginal
N(0, I), so a belief never claims to know less than knowing nothing.

Update (product of experts). The per-frame fused posterior p(z | x_t) (`PerceptionEngine.infer`)
already holds the prior expert N(0, I) once: for 'poe' it is N(0, I) * prod_m q_m(z | x_m). The
belief puts the propagated belief b_bar in the prior expert's place instead of next to it:

    b_t(z)  ~  p(z | x_t) / N(z; 0, I) * b_bar(z)

In precisions L = 1 / var and precision-weighted means h = mean / var (the prior has L = 1, h = 0):

    L_t = (L_post - 1) + L_bar        h_t = h_post + h_bar

The term L_post - 1 (with h_post) is the evidence of the present experts, a Gaussian likelihood
N(h_post / (L_post - 1), 1 / (L_post - 1)), so one step is exactly a Kalman update of b_bar with
that measurement. Where the posterior is not narrower than the prior in a dimension (a mixture
fusion's spread, the prior N(0, 1) a missing modality's private latent falls back to) there is no
evidence: the likelihood precision is taken as 0 and that dimension only propagates.

Resets (the belief becomes the per-frame posterior, i.e. b_bar is the prior N(0, I)): the first
sample; a stamp gap longer than `reset_gap_s`; a stamp not newer than the belief's (a bag loop or a
clock jump back; an equal stamp too, nothing can have happened in 0 s); a change of model id or
latent size. `BeliefState.reset` names the reason ('' when the step was a filter update).

Staleness. A modality's expert computed from a frame of age a (sample time minus the end of the
newest frame used) keeps contributing with its variance multiplied by 1 / w(a), where

    w(a) = 1 / (1 + max(0, a - stale_grace_s) / stale_tau_s)       (w = 1 when stale_tau_s = 0)

is its effective weight: the share of its fresh precision it still carries (1 while fresher than
the grace, 1/2 at grace + tau, falling smoothly towards 0). An expert older than `max_age_s` (the
hard limit) is not used: weight 0. The synchronizer's own per-modality `max_age_s` still decides
which inputs a sample (and so the per-frame latent) holds; `llmos_ros.temporal` keeps each
modality's last expert so the belief can use it, inflated, up to this limit.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
import math

import numpy as np

from llmos_ros.errors import ConfigError, InputError

NS = 1_000_000_000


@dataclass
class BeliefConfig:
    """Parameters of the belief filter and the staleness rule (see the module doc)."""

    process_noise: float = 0.05  # q: latent variance per second (an array: per dimension)
    reset_gap_s: float = 2.0  # a longer stamp gap restarts the belief
    stale_grace_s: float = 0.1  # an expert this old still has its full weight
    stale_tau_s: float = 0.5  # ... and half of it stale_tau_s later; 0: no inflation
    max_age_s: float = 1.0  # hard limit: an older expert is not used (weight 0)

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f'belief.{f.name} must be a finite number >= 0, got {value!r}')
            setattr(self, f.name, float(value))

    @classmethod
    def from_dict(cls, values: dict | None) -> BeliefConfig:
        """From a dict of field -> value; an unknown key is an error that names it."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f'unknown belief parameters {unknown}; known: {sorted(known)}')
        return cls(**values)


def staleness_weight(age_s: float, cfg: BeliefConfig) -> float:
    """Effective weight w(age) in (0, 1] of an expert whose input is `age_s` old (module doc)."""
    if cfg.stale_tau_s <= 0:
        return 1.0
    return 1.0 / (1.0 + max(0.0, float(age_s) - cfg.stale_grace_s) / cfg.stale_tau_s)


@dataclass
class BeliefState:
    """The belief at `stamp_ns`: N(mean, var) per dimension; `reset` names a reset ('' if none)."""

    stamp_ns: int
    mean: np.ndarray
    var: np.ndarray
    reset: str = ''

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.var)


class BeliefFilter:
    """The belief over a latent of any size, one `update` per fused posterior (module doc)."""

    def __init__(self, cfg: BeliefConfig | None = None):
        self.cfg = cfg or BeliefConfig()
        self.state: BeliefState | None = None
        self.model_id: str | None = None

    def propagated(self, stamp_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """The current belief carried to `stamp_ns` by the random walk: (mean, var)."""
        if self.state is None:
            raise InputError('no_belief', 'the belief has no state yet: update it first')
        dt = max(0, int(stamp_ns) - self.state.stamp_ns) / NS
        var = np.minimum(self.state.var + self.cfg.process_noise * dt, 1.0)
        return self.state.mean.copy(), var

    def reset_reason(self, stamp_ns: int, size: int, model_id: str) -> str:
        """Why the next update at `stamp_ns` restarts the belief ('' when it does not)."""
        if self.state is None:
            return 'first'
        if model_id != self.model_id or size != self.state.mean.size:
            return 'model'
        gap = int(stamp_ns) - self.state.stamp_ns
        if gap <= 0:
            return 'stamp_backwards'
        if gap > self.cfg.reset_gap_s * NS:
            return 'gap'
        return ''

    def update(self, stamp_ns: int, mean, var, model_id: str = '') -> BeliefState:
        """Fold the per-frame posterior N(mean, var) at `stamp_ns` into the belief; return it."""
        mean = np.asarray(mean, np.float64).ravel()
        var = np.asarray(var, np.float64).ravel()
        if mean.shape != var.shape:
            raise InputError('size', f'belief update: mean has {mean.size} entries, '
                             f'var {var.size}')
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(var)) and np.all(var > 0)):
            raise InputError('nan', 'belief update: the posterior has a non-finite mean or a '
                             'variance <= 0')
        reason = self.reset_reason(stamp_ns, mean.size, model_id)
        if reason:
            self.state = BeliefState(int(stamp_ns), mean.copy(), var.copy(), reason)
            self.model_id = model_id
            return self.state
        bar_mean, bar_var = self.propagated(stamp_ns)
        lik_prec = np.maximum(1.0 / var - 1.0, 0.0)  # the posterior divided by the prior
        lik_h = np.where(lik_prec > 0, mean / var, 0.0)
        prec = lik_prec + 1.0 / bar_var
        h = lik_h + bar_mean / bar_var
        self.state = BeliefState(int(stamp_ns), h / prec, 1.0 / prec)
        return self.state
