"""
Belief over time: a diagonal Gaussian filter over the latent, and the staleness rule. ROS-free.

Transition (predict). Between stamps t0 < t1 (dt = t1 - t0 in seconds) every latent dimension i
follows a random walk with process noise q_i (latent variance per second): the mean stays,
var_i += q_i * dt, capped at the prior's variance, 1 (the model's latent has the marginal N(0, I),
so a belief never claims to know less than knowing nothing). With a learned noise model that
knows the state's mean m_i and stationary variance S_i on the data (`BeliefNoise.state_mean`,
`state_var`), the walk reverts to them instead (Ornstein-Uhlenbeck, rate theta_i = q_i / (2 S_i),
a = exp(-theta_i dt)):

    mean_i <- m_i + a (mean_i - m_i)        var_i <- max(var_i, a^2 var_i + S_i (1 - a^2))

It starts as the random walk (var grows by q_i dt while var_i << S_i) and levels off at what the
data show instead of at 1: a dimension nothing informs drifts to the state's average, where a
random walk kept its last value. A latent is bounded (a touch ends, an object leaves), so after a
few seconds the last value predicts it worse than the average does: on the sim, 90 % intervals of
a silent sensor's private latent covered 0.823 with the walk, 0.875 with the reversion. The max
keeps a prediction from making the belief surer (a variance above S_i, e.g. after a restart,
stays until a measurement lowers it).

Noise. `belief.process_noise` < 0 (the default) takes the noise model learned from data for the
model (`llmos_ros.belief_noise.BeliefNoise`: q_i per dimension from a variogram of the filter's
measurements on the training bags' held-out end, and a factor s_i on every expert variance of
dimension i, so that the measurement's variance is the frame-to-frame noise r_i the data show,
with the experts' spread of variances over time believed to the power g the data support
(`BeliefFilter.calibrated`); the module doc says how and why). Without one (an older
checkpoint) q = FALLBACK_PROCESS_NOISE for every dimension and s = 1. A value >= 0 is that q
for every dimension, experts as the model gives them (s = 1, g = 1).

Update (product of experts). The model's PoE fuses the modality experts q_m(z | x_m) with a prior
expert N(0, I). The belief puts the propagated belief b_bar in the prior expert's place, so the
prior is not counted twice (it is in b_bar already, since the first sample):

    b_t(z)  ~  b_bar(z) * prod_m q_m(z | x_m)

In precisions L = 1 / var and precision-weighted means h = mean / var, per dimension:

    L_t = L_bar + sum_m L_m        h_t = h_bar + sum_m h_m

(each expert's precision as `BeliefFilter.calibrated` takes it, see Noise). With one expert this is
exactly a Kalman update of b_bar with the measurement N(mu_m, s * var_m) (at g = 1). Each expert
covers the dimensions it has an opinion on: every modality the shared ones, modality m alone its
private latent; an expert has precision 0 elsewhere, so a dimension no present expert informs only
propagates. `llmos_ros.temporal` passes one expert per sample: the measurement of the experts that
arrived with it (`llmos_ros.belief_noise.measurement`, the model's own fusion of them without a
prior: for 'poe' their product, so with s = 1 the first belief equals the per-frame latent; for
MoPoE the moment-matched mixture of the subsets' products, which stays with the experts that agree
where their product follows the one that does not).

Resets: the belief restarts with the model's own posterior mean of the sample (the prior expert
N(0, I) times the experts at their own variances) and the variance of the prior times the
noise-scaled experts (the uncertainty the filter tracks with); a dimension no expert informs
gets the larger of 1 and S_i (knowing nothing, so a restart never makes a belief about it
surer). With a learned expert scale s of 10-1000 the prior times the scaled experts would shrink
the mean towards 0 by a factor 1 + s v, and the belief would start far from the per-frame latent
after every restart. The reasons: the first sample; a stamp gap longer than `reset_gap_s`; a
stamp not newer than the belief's (a bag loop or a clock jump back; an equal stamp too, nothing
can have happened in 0 s); a change of model id or latent size; a jump (below).
`BeliefState.reset` names the reason ('' when the step was a filter update).

Jumps. A random walk cannot follow a scene that changes at once (another object, another
speaker): the belief would lag behind the per-frame latent for as long as its variance needs to
grow. So an update whose experts contradict the propagated belief restarts it ('jump'): the
normalised innovation squared of the experts' product against b_bar (`BeliefFilter.jumped`),
chi-square distributed with one degree of freedom per informed dimension while the state follows
the random walk and the noise model holds, above its 1 - `jump_p` quantile (default jump_p 1e-3:
one false restart in a thousand updates when the noise model is right). Only with a learned
noise model: a guessed q and the experts' own variances make the statistic meaningless (with the
fallback it fired at nearly every sample on the simulated bags). How soon a change is seen
depends on its size against the scatter of the frames themselves: on the sim (default model,
40-s test bag) the statistic at the first frame after each of the 9 scene changes was 23 to 188,
while frames of steady episodes reach 85 at their 99th percentile, so no threshold restarts at
every change without restarting in steady scenes too; 4 of 9 restarted at once, the filter
followed the others over the next frames (probe in the first 0.3 s after a change 0.70 against
the per-frame latent's 0.97, later 0.996 against 1.000). Measured, not kept, as the test: the
statistic of the shared and of each private block, the log-likelihood ratio against a restart
drawn from the state's distribution, and sums of 2 to 4 consecutive innovations: none separates
the first frames after a change from the tail of steady frames.

Staleness. An expert computed from an input of age a (sample time minus the input's stamp) is
folded in with its variance divided by its effective weight

    w(a) = 1 / (1 + max(0, a - stale_grace_s) / stale_tau_s)       (w = 1 when stale_tau_s = 0)

the share of its fresh precision it still carries (1 while fresher than the grace, 1/2 at grace
+ tau, falling smoothly towards 0). Beyond `max_age_s` (the hard limit) an input is not used and
its modality is forgotten (weight 0). See `llmos_ros.temporal` for how inputs reach the filter:
each once, so a silent modality fades out through the process noise instead of vanishing.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
import math
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np

from llmos_ros.errors import ConfigError, InputError

if TYPE_CHECKING:  # belief_noise builds on this module
    from llmos_ros.belief_noise import BeliefNoise

NS = 1_000_000_000
FALLBACK_PROCESS_NOISE = 0.05  # q without a learned noise model (latent variance per second)


@dataclass
class BeliefConfig:
    """Parameters of the belief filter and the staleness rule (see the module doc)."""

    process_noise: float = -1.0  # q per second for every dimension; < 0: learned (module doc)
    reset_gap_s: float = 2.0  # a longer stamp gap restarts the belief
    stale_grace_s: float = 0.1  # an expert this old still has its full weight
    stale_tau_s: float = 0.5  # ... and half of it stale_tau_s later; 0: no inflation
    max_age_s: float = 1.0  # hard limit: an older expert is not used (weight 0)
    jump_p: float = 1e-3  # an innovation this unlikely restarts the belief ('jump'); 0: never

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or (
                    value < 0 and f.name != 'process_noise'):
                low = '' if f.name == 'process_noise' else ' >= 0'
                raise ConfigError(f'belief.{f.name} must be a finite number{low}, got {value!r}')
            setattr(self, f.name, float(value))
        if self.jump_p >= 1:
            raise ConfigError(f'belief.jump_p must be < 1 (a probability), got {self.jump_p}')

    @classmethod
    def from_dict(cls, values: dict | None) -> BeliefConfig:
        """From a dict of field -> value; an unknown key is an error that names it."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f'unknown belief parameters {unknown}; known: {sorted(known)}')
        return cls(**values)


def chi2_quantile(dof: int, tail: float) -> float:
    """
    The value a chi-square variable with `dof` degrees of freedom exceeds with probability `tail`.

    Exact for dof 1 (a squared standard normal); else Wilson-Hilferty: dof * (1 - 2 / (9 dof)
    + z sqrt(2 / (9 dof)))^3, z the standard normal's upper `tail` quantile (within 2 % of the
    exact quantile at tail 1e-3 for dof >= 3).
    """
    if dof == 1:  # exact: the square of a standard normal
        return NormalDist().inv_cdf(1.0 - tail / 2.0) ** 2
    z = NormalDist().inv_cdf(1.0 - tail)
    c = 2.0 / (9.0 * dof)
    return dof * max(0.0, 1.0 - c + z * math.sqrt(c)) ** 3


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

    def __init__(self, cfg: BeliefConfig | None = None, noise: BeliefNoise | None = None):
        self.cfg = cfg or BeliefConfig()
        self.state: BeliefState | None = None
        self.model_id: str | None = None
        learned = self.cfg.process_noise < 0 and noise is not None
        self.noise = noise if learned else None  # the learned noise model in use, if any
        self.process_noise = (noise.process_noise if learned else self.cfg.process_noise
                              if self.cfg.process_noise >= 0 else FALLBACK_PROCESS_NOISE)
        self.expert_scale = noise.expert_scale if learned else 1.0
        # how much of the experts' per-frame confidence to believe (belief_noise, Variance power)
        self.power = noise.variance_power if learned else 1.0
        self.expert_var = noise.expert_var if self.power < 1.0 else None
        # the mean-reverting walk (module doc, Transition), when the noise model knows the state
        self.reverts = learned and noise.state_var is not None
        if self.reverts:
            self.state_mean, state_var = noise.state_mean, noise.state_var
            self.theta = noise.process_noise / (2.0 * state_var)
            self.state_var, self.prior_var = state_var, np.maximum(1.0, state_var)
        else:
            self.prior_var = 1.0

    @property
    def noise_source(self) -> str:
        """'learned', 'set' (belief.process_noise >= 0) or 'fallback' (module doc, Noise)."""
        return 'learned' if self.noise is not None else (
            'set' if self.cfg.process_noise >= 0 else 'fallback')

    def propagated(self, stamp_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """The current belief carried to `stamp_ns` by the random walk: (mean, var)."""
        if self.state is None:
            raise InputError('no_belief', 'the belief has no state yet: update it first')
        dt = max(0, int(stamp_ns) - self.state.stamp_ns) / NS
        mean, var = self.state.mean, self.state.var
        if not self.reverts:
            return mean.copy(), np.minimum(var + self.process_noise * dt, 1.0)
        a = np.exp(-self.theta * dt)
        return (self.state_mean + a * (mean - self.state_mean),
                np.maximum(var, a * a * var + self.state_var * (1.0 - a * a)))

    @property
    def tempered(self) -> bool:
        """Whether the experts' variances are taken to a power below 1 (`calibrated`)."""
        return self.expert_var is not None

    def calibrated(self, precisions, weights=None) -> np.ndarray:
        """
        The precisions the filter folds in for the experts' `precisions` (module doc, Noise).

        1 / (s_i v_ref_i (v / v_ref_i)^g), v = 1 / precision the model's variance, g the noise
        model's variance power (1: just 1 / (s_i v)). weights (same shape, in (0, 1]): the share
        of each precision left after staleness (`staleness_weight`), which the power leaves
        exact: the model's precision is precisions / weights, and the result is multiplied by
        weights. Precision 0 stays 0.
        """
        precs = np.asarray(precisions, np.float64)
        if not self.tempered:  # weights change nothing: the precision scales
            return precs / self.expert_scale
        w = np.ones_like(precs) if weights is None else np.asarray(weights, np.float64)
        own = np.divide(precs, w, out=np.zeros_like(precs), where=precs > 0)
        ref = 1.0 / self.expert_var
        return np.where(precs > 0, w * ref * (own / ref) ** self.power, 0.0) / self.expert_scale

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

    def jumped(self, bar_mean: np.ndarray, bar_var: np.ndarray, means: np.ndarray,
               precs: np.ndarray) -> bool:
        """
        Whether the experts contradict the propagated belief beyond `jump_p` (module doc, Jumps).

        The experts' product N(m, 1 / P) over the d dimensions they inform against b_bar:
        NIS = sum_i (m_i - bar_mean_i)^2 / (bar_var_i + 1 / P_i), chi-square with d degrees of
        freedom while the state follows the random walk.
        """
        if self.cfg.jump_p <= 0 or self.noise is None:  # the test needs a learned noise model
            return False
        total = precs.sum(0)
        informed = total > 0
        d = int(informed.sum())
        if d == 0:
            return False
        m = (precs * means).sum(0)[informed] / total[informed]
        nis = float(np.sum((m - bar_mean[informed]) ** 2
                           / (bar_var[informed] + 1.0 / total[informed])))
        return nis > chi2_quantile(d, self.cfg.jump_p)

    def update(self, stamp_ns: int, means, precisions, model_id: str = '',
               weights=None) -> BeliefState:
        """
        Fold experts into the belief at `stamp_ns`; return it.

        means, precisions: [K, L] (or [L] for one expert): K experts over the L latent
        dimensions, precision 1 / var, 0 where an expert has no opinion. weights (same shape,
        optional): the share of each precision left after staleness (`calibrated`).
        """
        means = np.atleast_2d(np.asarray(means, np.float64))
        precs = np.atleast_2d(np.asarray(precisions, np.float64))
        shares = None if weights is None else np.atleast_2d(np.asarray(weights, np.float64))
        if means.shape != precs.shape or (shares is not None and shares.shape != precs.shape):
            raise InputError('size', f'belief update: means are {list(means.shape)}, '
                             f'precisions {list(precs.shape)}' + (
                                 '' if shares is None else f', weights {list(shares.shape)}'))
        if not (np.all(np.isfinite(means)) and np.all(np.isfinite(precs))
                and np.all(precs >= 0)) or (shares is not None and not np.all(
                    (shares > 0) & (shares <= 1))):
            raise InputError('nan', 'belief update: an expert has a non-finite mean or a '
                             'precision that is < 0 or not finite, or a weight outside (0, 1]')
        size = means.shape[1]
        if self.noise is not None and self.noise.process_noise.size != size:
            raise InputError('size', f'belief update: {size} latent dimensions, the noise model '
                             f'of {self.noise.model_id} has {self.noise.process_noise.size}')
        raw, precs = precs, self.calibrated(precs, shares)
        reason = self.reset_reason(stamp_ns, size, model_id)
        if reason:
            self.model_id = model_id
        else:
            bar_mean, bar_var = self.propagated(stamp_ns)
            if self.jumped(bar_mean, bar_var, means, precs):
                reason = 'jump'
        if reason:  # restart: the model's own posterior, the noise model's uncertainty
            total = precs.sum(0)
            prec = np.where(total > 0, 1.0 + total, 1.0 / self.prior_var)
            mean = (raw * means).sum(0) / (1.0 + raw.sum(0))
        else:
            prec = 1.0 / bar_var + precs.sum(0)
            mean = (bar_mean / bar_var + (precs * means).sum(0)) / prec
        self.state = BeliefState(int(stamp_ns), mean, 1.0 / prec, reason)
        return self.state
