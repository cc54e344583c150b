"""
Belief, staleness-aware fusion and surprise for a stream of `Inference`s. ROS-free.

`TemporalTracker.step(result)` runs after `PerceptionEngine.infer` on the same sample (the live
node's worker after publishing the latent; `llmos-eval` on every evaluated sample):

1. The experts of the modalities in the sample are computed from `result.inputs` and kept as
   each modality's last expert, with the stamp of the input it came from.
2. Surprise of each present modality against the fusion of the other present ones
   (`llmos_ros.surprise`): the mean of its per-frame scores over the calibration's window, with
   its tail probability calibrated for those others (its context); the window restarts with
   the belief and when the context changes.
3. Staleness-aware fusion into the belief: each input is folded in once, when it first appears,
   with its variance divided by its effective weight w(age) (`llmos_ros.belief.staleness_weight`,
   age = sample time - input stamp: a late input counts less). The experts that arrived with the
   sample are fused into one measurement (`llmos_ros.belief_noise.measurement`: the model's own
   fusion of them, as the noise model was learned). Folding a kept expert in again at
   every sample would count the same observation many times over, so a silent modality instead
   fades out of the belief through the process noise: its information is not cut off at the
   synchronizer's `max_age_s`, and the belief's std over what only it informed grows.
   `TemporalState.weights` reports w(age) of each modality's newest input (what it would still
   be worth now) until `BeliefConfig.max_age_s`, the hard limit, after which it is forgotten
   (weight 0, absent from the message).
4. The belief filter: the propagated belief in the prior expert's place (`llmos_ros.belief`).

The per-frame latent (`Inference.mean/std`) is unchanged by all this.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import math

import numpy as np
import torch

from llmos_ros.belief import NS, BeliefConfig, BeliefFilter, BeliefState, staleness_weight
from llmos_ros.belief_noise import BeliefNoise, measurement
from llmos_ros.surprise import (
    ScoreWindow,
    SurpriseCalibration,
    entry_key,
    loo_distances,
    score,
)


@dataclass
class TemporalState:
    """Belief and surprise at one sample; dicts keyed by modality, in model order."""

    stamp_ns: int
    belief: BeliefState
    ages_s: dict[str, float]  # age of each modality's expert used (kept ones included)
    weights: dict[str, float]  # its effective weight, 0 for a modality not used
    stamps_ns: dict[str, int]  # stamp of the input of each modality used (weight > 0)
    surprise: dict[str, tuple[float, float]] = field(default_factory=dict)  # (score, tail p)


@dataclass
class _Expert:
    stamp_ns: int
    mu: torch.Tensor  # shared [D]
    logvar: torch.Tensor
    pmu: torch.Tensor | None  # private [P] or None
    plogvar: torch.Tensor | None
    folded: bool = False  # already in the belief


class TemporalTracker:
    """Per-stream state: the kept experts and the belief filter (module doc)."""

    def __init__(self, engine, cfg: BeliefConfig | None = None,
                 calibration: SurpriseCalibration | None = None,
                 noise: BeliefNoise | None = None):
        self.model = engine.model
        self.model_id = engine.model_id
        self.names = list(engine.names)
        self.device = engine.device
        self.cfg = cfg or BeliefConfig()
        self.calibration = calibration
        self.noise = noise  # the learned noise model (llmos_ros.belief_noise), None: fallback
        self.filter = BeliefFilter(self.cfg, noise)
        # the measurement the filter's noise was learned of (belief_noise module doc)
        self.kind = self.filter.noise.measurement if self.filter.noise else 'fusion'
        self.kept: dict[str, _Expert] = {}
        self.window = ScoreWindow(calibration.window_s if calibration else 0.0)

    @torch.no_grad()
    def _experts(self, result) -> None:
        """Keep the experts of the modalities in `result` (those `infer` computed, else anew)."""
        if getattr(result, 'experts', None) is not None:  # no second encoder pass
            mus, lvs, pmus, plvs = result.experts
        else:
            inputs = {n: torch.from_numpy(np.asarray(a, np.float32))[None].to(self.device)
                      for n, a in result.inputs.items()}
            xs, mask = self.model.prepare(inputs, None)
            mus, lvs, pmus, plvs = self.model.experts(xs, mask)
        for i, name in enumerate(self.names):
            stamp = int(result.stamps_ns.get(name, result.stamp_ns))
            old = self.kept.get(name)
            if name in result.inputs and (old is None or old.stamp_ns != stamp):
                self.kept[name] = _Expert(
                    stamp, mus[i, 0], lvs[i, 0],
                    None if pmus is None else pmus[i, 0],
                    None if plvs is None else plvs[i, 0])

    def _stack(self, names: list[str], inflate: dict[str, float]):
        """
        The kept experts of `names` as a batch of one, in model order, and the mask [M, 1].

        Experts: (mus, logvars [M, 1, D], private mus, logvars [M, 1, P] or None without private
        latents), log-variances plus inflate[name] (0 when absent); zeros where masked out.
        """
        kept = [self.kept.get(n) if n in names else None for n in self.names]

        def stack(part: str, size: int, log: bool) -> torch.Tensor:
            zeros = torch.zeros(size, device=self.device)
            return torch.stack([zeros if e is None else getattr(e, part) + (
                inflate.get(n, 0.0) if log else 0.0) for n, e in zip(self.names, kept)])[:, None]

        d, p = self.model.shared_dim, self.model.private_dim
        experts = (stack('mu', d, False), stack('logvar', d, True),
                   stack('pmu', p, False) if p else None, stack('plogvar', p, True) if p else None)
        return experts, torch.tensor([e is not None for e in kept], device=self.device)[:, None]

    def _surprise(self, stamp_ns: int, present: list[str]) -> dict[str, tuple[float, float]]:
        (mus, lvs, _, _), mask = self._stack(present, {})
        d2 = loo_distances(self.model.fusion, mus, lvs, mask)[:, 0].numpy()  # [M, D]
        cal, out = self.calibration, {}
        for i, name in enumerate(self.names):
            if name in present and np.isfinite(d2[i]).all():
                key = entry_key(cal, name, present, self.names)
                s = self.window.add(name, stamp_ns, float(score(cal, key, d2[i])), key)
                out[name] = (s, cal.tail(key, s) if cal else float('nan'))
        return out

    def _measurement(self, inflate: dict[str, float]):
        """
        The experts not yet folded in, fused into one measurement: means, precisions, weights.

        Each [1, L]; each expert with its log-variances plus inflate[name] = -log w(age);
        precision 0 everywhere when there is none. weights: the measurement's precision with
        the inflation over that without it, at most 1 (the share staleness left, which
        `BeliefFilter.calibrated` keeps exact); None when no new expert is stale or the filter
        does not temper the variances (then the shares change nothing).
        """
        new = [n for n in self.names
               if n in inflate and n in self.kept and not self.kept[n].folded]
        experts, mask = self._stack(new, inflate)
        means, precs = measurement(self.model, experts, mask, self.kind)
        if not self.filter.tempered or not any(inflate[n] > 0 for n in new):
            return means, precs, None  # no second fusion
        _, own = measurement(self.model, self._stack(new, {})[0], mask, self.kind)
        shares = np.divide(precs, own, out=np.ones_like(precs), where=(own > 0) & (precs > 0))
        return means, precs, np.clip(shares, 1e-12, 1.0)

    def step(self, result, surprise: bool = True) -> TemporalState:
        """
        Fold one `Inference` into the belief; its surprise, ages and weights.

        surprise=False skips the surprise scores (`TemporalState.surprise` stays empty) for
        callers that only want the belief, e.g. llmos-eval fitting a probe on training beliefs.
        """
        if self.filter.reset_reason(result.stamp_ns, self.model.latent_size, self.model_id):
            self.kept.clear()  # first sample, model change, stamp back or long gap: start over
            self.window.clear()
        self._experts(result)
        scores = (self._surprise(result.stamp_ns, [n for n in self.names if n in result.inputs])
                  if surprise else {})
        ages, weights, inflate, stamps = {}, {}, {}, {}
        for name in self.names:
            e = self.kept.get(name)
            age = max(0, result.stamp_ns - e.stamp_ns) / NS if e else math.inf
            if age > self.cfg.max_age_s:
                self.kept.pop(name, None)
                weights[name] = 0.0
                ages[name] = age if e else float('nan')
                continue
            w = staleness_weight(age, self.cfg)
            ages[name], weights[name], inflate[name] = age, w, -math.log(w)
            stamps[name] = e.stamp_ns
        means, precs, shares = self._measurement(inflate)
        belief = self.filter.update(result.stamp_ns, means, precs, self.model_id, shares)
        for e in self.kept.values():
            e.folded = True
        return TemporalState(result.stamp_ns, belief, ages, weights, stamps, scores)

    def belief_fields(self, state: TemporalState, latent: dict) -> dict:
        """LatentState fields of the belief (llmos/belief), from the sample's `latent_fields`."""
        used = [n for n in self.names if state.weights.get(n, 0.0) > 0]
        return {**latent, 'mean': state.belief.mean.astype(np.float32),
                'std': state.belief.std.astype(np.float32), 'modalities': used,
                'modality_stamps_ns': [state.stamps_ns[n] for n in used],
                'modality_ages': [state.ages_s[n] for n in used],
                'modality_weights': [state.weights[n] for n in used]}

    def surprise_fields(self, state: TemporalState, frame_id: str = 'llmos') -> dict:
        """Fields of msg/Surprise.msg for `state`, modalities in model order."""
        names = [n for n in self.names if n in state.surprise]
        return {'stamp_ns': state.stamp_ns, 'frame_id': frame_id, 'model_id': self.model_id,
                'modalities': names, 'scores': [state.surprise[n][0] for n in names],
                'tail_probabilities': [state.surprise[n][1] for n in names]}
