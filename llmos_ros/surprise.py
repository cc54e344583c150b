"""
Surprise per modality: how unlikely modality m's expert is given the others. ROS-free.

Score. For a sample in which m and at least one other modality are present, let q_m = N(mu_m,
var_m) be m's expert over the shared latent and N(mu_o, var_o) the model's own fusion (its
`fusion`, moment-matched) of the other present experts. Per shared dimension i the squared
standardised distance is

    d2_i = (mu_m,i - mu_o,i)^2 / (var_m,i + var_o,i)

(0 when the two agree, large when m sees something the others do not). The experts' variances
are not calibrated, and on clean data d2_i is heavy-tailed with a spread that differs from one
dimension to the next, so the calibration fits to each dimension a Student-t law of the distance
(d2_i / s_i ~ F(1, nu_i): scale s_i and degrees of freedom nu_i, maximum likelihood on clean
data, nu_i from a grid) and the score is a weighted mean over the D dimensions of its negative
log-density relative to full agreement:

    s_m = sum_i w_i * (nu_i + 1) / 2 * log(1 + d2_i / (nu_i * s_i)),   w_i >= 0, sum_i w_i = 1

so no single noisy dimension drowns the others and a distance counts by how rare it is on clean
data in its own dimension. The weights say which dimensions tell a mismatch: they are fitted
(`fit_weights`) to tell clean samples from shuffled ones (m's expert from another time of the
recording next to the others', what a swapped or misrouted stream looks like) by logistic
regression on the per-dimension terms, on clean samples other than those the tails are
calibrated on (llmos-train: its training split; the tails: the validation split), so the tails
stay those of data the weights have not seen. Without fitted weights w_i = 1/D; without a fitted
law (no calibration, or one stored before the fit was added) the score is the plain mean of
d2_i, its first meaning. Private latents do not enter: they hold what only m shows, so the
others say nothing about them.

Window. One frame's score is noisy, and a stream that is swapped, misrouted or failing stays so
for a while, so the published score of m is the mean of its per-frame scores over the last
`window_s` seconds of samples in which m was scored (this one included; default
WINDOW_S = 0.3 s, about ten frames at 30 Hz): evidence adds up over a few frames at the cost of
reacting a fraction of a window later (on the simulated bags' 2-s swaps, a default-config
model, the mean AUROC over four scenes rose from 0.907 / 0.855 / 0.835 per frame to 0.929 /
0.883 / 0.872, camera / audio / tactile). The window restarts where the belief does (a gap, a
stamp going back, a new model). The calibration is made on scores averaged the same way, so the
tails keep their meaning, and it stores its window; window 0 is the per-frame score (and a
calibration stored before the window, its first meaning).

Contexts. How far m's expert lies from the others depends on which others there are: their
fusion's mean and variance change with the set (MoPoE's mixture of one expert is that expert,
of several a wider one; PoE's product of several is surer than one), so the distances in one
context do not follow the law of another. On the simulated bags (default-config MoPoE model,
tails of the full set), with tactile silent 81 % of camera's and 89 % of audio's clean samples
fell below the 1 % alarm. So the calibration has one entry (law, weights, tails) per context, m and
the set of others scored against it: for every set of at least two modalities, the samples in
which all of them are present, scored as if only they were (an expert depends on its own input
only, so leaving the others out is exact). Its key is m's name for the full set and
'm|o1+o2' for a part (`context_key`); live, a modality's window starts over when its context
changes. A calibration stored before contexts has one entry per modality, used in every
context (`SurpriseCalibration.contexts` False), as before. The cost grows with the number of
sets: 4 for three modalities, 11 for four.

Calibration. Raw scores differ across modalities and models, so each is turned into a tail
probability with the empirical distribution of the scores of clean data (the training split):
p = (1 + #{calibration scores >= s}) / (n + 1), the p-value of s under "m agrees with the others
as on clean data". On clean data p is uniform on (0, 1]; p < 0.01 is the calibrated 1 % alarm.
That holds for clean data like the calibration's, and a 1 % tail from a few episodes is theirs,
so each entry also keeps its held-out alarms (`held_out_alarms`): its clean scores in time order
cut in HELD_OUT_FOLDS contiguous parts, per part the share below p 0.01 under the tails of the
others: how far from 1 % the alarms of a stretch of clean data may come out. A wide spread says
the tail rests on few episodes (vt60's validation split, 627 samples of 5 episodes: 7.1 / 0 / 0
/ 1.6 / 0 %; avmnist's, 3,751 samples: 2.0 / 0.0 / 0.9 / 0.5 / 1.7 %).
`llmos-train` calibrates the final weights on its validation split (the held-out end of the
training bags) and stores that in the checkpoint's extra['surprise']; this module's command line
recalibrates on other clean bags into a JSON sidecar next to the checkpoint (`sidecar_path`),
which then wins over the stored one. A calibration names the model id it belongs to.

    python -m llmos_ros.surprise --model model.pt --bag TRAIN_BAG [--out model.pt.surprise.json]
        [--validation] [--window-s 0.3]
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
import itertools
import json
import math
from pathlib import Path
import sys

import numpy as np
import torch

from llmos_ros.errors import CheckpointError, LlmosError
from llmos_ros.models.fusions import fuse

MAX_POINTS = 4001  # calibration scores kept per modality (evenly spaced order statistics)
NU_GRID = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)  # Student-t degrees of freedom tried
FIT_ROWS = 20_000  # clean samples (evenly spaced) the per-dimension laws are fitted on
EM_STEPS = 50  # scale updates per degrees of freedom
WEIGHT_ROWS = 8_000  # clean samples (evenly spaced) the dimension weights are fitted on
SHUFFLES = (1 / 3, 1 / 2, 2 / 3)  # row b's shuffled partner: b + this share of the rows, cyclic
WEIGHT_STEPS = 600  # full-batch Adam steps of the weights' logistic regression
HELD_OUT_FOLDS = 5  # contiguous parts of the clean scores for the held-out alarms
ALARM_P = 0.01  # the calibrated alarm: tail probability below this
WINDOW_S = 0.3  # the published score: the mean of the per-frame scores over this many seconds


class ScoreWindow:
    """Per modality the mean of the scores of the last `window_s` seconds (module doc, Window)."""

    def __init__(self, window_s: float):
        self.width = int(round(window_s * 1e9))
        self.items: dict[str, list[tuple[int, float]]] = {}
        self.contexts: dict[str, str] = {}  # name -> the context its scores are of

    def clear(self) -> None:
        """Forget every score (the belief restarted)."""
        self.items.clear()
        self.contexts.clear()

    def add(self, name: str, stamp_ns: int, value: float, context: str = '') -> float:
        """
        Put `value` of modality `name` at `stamp_ns`; the mean over (stamp - window, stamp].

        context: what the score was measured against (`context_key`); when it changes, the
        window of `name` starts over (module doc, Contexts).
        """
        if self.width <= 0:
            return value
        if self.contexts.get(name, context) != context:
            self.items.pop(name, None)
        self.contexts[name] = context
        kept = [(t, v) for t, v in self.items.get(name, []) if t > stamp_ns - self.width]
        kept.append((int(stamp_ns), float(value)))
        self.items[name] = kept
        return float(np.mean([v for _, v in kept]))


def windowed(stamps, scores: np.ndarray, window_s: float,
             runs: list[np.ndarray] | None = None) -> np.ndarray:
    """
    `ScoreWindow` over recorded scores: per sample the window mean, the live rule row by row.

    stamps [N] in time order within each of `runs` (row indices, e.g.
    `belief_noise.segments`, the window restarting at each; None: one run); NaN where the
    sample's own score is not finite. window_s <= 0: the scores themselves (stamps unused).
    """
    scores = np.asarray(scores, np.float64)
    if window_s <= 0:
        return scores.copy()
    out = np.full(scores.shape, np.nan)
    for rows in (runs if runs is not None else [np.arange(len(scores))]):
        window = ScoreWindow(window_s)
        for k in rows:
            if np.isfinite(scores[k]):
                out[k] = window.add('', int(stamps[k]), float(scores[k]))
    return out


def tail_probability(ref: np.ndarray, scores):
    """(1 + #{ref >= s}) / (n + 1) of each score s, ref the n sorted clean scores (module doc)."""
    above = ref.size - np.searchsorted(ref, scores, side='left')
    return (1.0 + above) / (ref.size + 1.0)


def held_out_alarms(scores: np.ndarray, folds: int = HELD_OUT_FOLDS, p: float = ALARM_P
                    ) -> list[float]:
    """
    Per part of clean scores, the share of its alarms under the tails of the other parts.

    scores: in time order (NaN: unscored), cut in `folds` contiguous parts; an alarm is a tail
    probability below `p` (module doc, Calibration). [] when the other parts would hold fewer
    than 1 / p scores (no alarm possible).
    """
    values = np.asarray(scores, np.float64)
    values = values[np.isfinite(values)]
    parts = np.array_split(np.arange(values.size), folds)
    if values.size - max(len(part) for part in parts) < 1.0 / p:
        return []
    return [float(np.mean(tail_probability(np.sort(np.delete(values, part)), values[part]) < p))
            for part in parts]


def held_out_line(calibration: SurpriseCalibration, names) -> str:
    """One line of the full contexts' held-out alarms, for llmos-train and the command line."""
    parts = [f'{n} ' + ' / '.join(f'{100 * r:.1f}' for r in calibration.held_out[n]) + ' %'
             for n in names if calibration.held_out.get(n)]
    if not parts:
        least = math.ceil(HELD_OUT_FOLDS / (HELD_OUT_FOLDS - 1) / ALARM_P)
        return (f'surprise: too few clean samples to check the tails on held-out parts '
                f'({least} or more wanted)')
    return (f'surprise: alarms at p < {ALARM_P:g} on each of {HELD_OUT_FOLDS} parts of the clean '
            'samples held out in turn, '
            + ', '.join(parts) + ' (how far from 1 % a stretch of clean data may come out; '
            'wide: the tails rest on few episodes, calibrate on more clean recordings)')


def context_key(name: str, others, names) -> str:
    """
    The calibration key of modality `name` scored against the modalities `others`.

    `name` when they are all of the model's `names` but it, else 'name|o1+o2' in model order
    (module doc, Contexts).
    """
    given = set(others)
    others = [n for n in names if n in given and n != name]
    return name if len(others) == len(names) - 1 else f'{name}|{"+".join(others)}'


def entry_key(calibration: SurpriseCalibration | None, name: str, others, names) -> str:
    """The context key under which `name` against `others` is scored (and windowed)."""
    if calibration is None:
        return context_key(name, others, names)
    return calibration.key(name, others, names)


def scored_subsets(names) -> list[tuple[str, ...]]:
    """The sets of at least two modalities (model order) in which each one can be scored."""
    return [c for k in range(2, len(names) + 1) for c in itertools.combinations(names, k)]


def evenly_spaced(n: int, k: int) -> np.ndarray:
    """Indices of min(n, k) rows evenly spaced over n (first and last included)."""
    return np.round(np.linspace(0, n - 1, min(n, k))).astype(int)


def loo_fusions(fusion: str, mus: torch.Tensor, logvars: torch.Tensor, mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """
    (mu_o, logvar_o [M, B, D], others [M, B]): for each m the fusion of the experts but m.

    others[m, b]: some expert other than m is present in sample b (else row m, b is undefined).
    The M leave-one-out fusions run as one batch of M * B rows (row m * B + b: sample b without
    expert m), so a live sample costs one fusion call, not M.
    """
    m_count, b = mask.shape
    left = mask.unsqueeze(0).repeat(m_count, 1, 1)  # [M (left out), M, B]
    left[torch.arange(m_count), torch.arange(m_count)] = False
    mu_o, lv_o = fuse(fusion, mus.repeat(1, m_count, 1), logvars.repeat(1, m_count, 1),
                      left.transpose(0, 1).reshape(m_count, m_count * b)).gaussian()
    return mu_o.reshape(mus.shape), lv_o.reshape(logvars.shape), left.any(1)


def distances(mu: torch.Tensor, logvar: torch.Tensor, mu_o: torch.Tensor, logvar_o: torch.Tensor,
              valid: torch.Tensor) -> torch.Tensor:
    """d2 (float64, CPU) of experts from fusions of the others; NaN rows where not `valid`."""
    d2 = ((mu - mu_o) ** 2 / (torch.exp(logvar) + torch.exp(logvar_o))).double().cpu()
    return torch.where(valid.cpu().unsqueeze(-1), d2, torch.tensor(float('nan'),
                                                                    dtype=torch.float64))


def loo_distances(fusion: str, mus: torch.Tensor, logvars: torch.Tensor, mask: torch.Tensor
                  ) -> torch.Tensor:
    """
    Squared standardised distances d2 [M, B, D] (float64) of each expert from the others.

    d2 is measured from the fusion of the other present experts; rows are NaN where it is
    undefined (m absent, or no other expert present).
    """
    if not bool((mask & (mask.sum(0, keepdim=True) > 1)).any()):
        return torch.full(mus.shape, float('nan'), dtype=torch.float64)
    mu_o, lv_o, others = loo_fusions(fusion, mus, logvars, mask)
    return distances(mus, logvars, mu_o, lv_o, mask & others)


def loo_scores(fusion: str, mus: torch.Tensor, logvars: torch.Tensor, mask: torch.Tensor
               ) -> torch.Tensor:
    """Plain scores [M, B] (mean of d2 over dimensions, no fitted law); NaN where undefined."""
    return loo_distances(fusion, mus, logvars, mask).mean(-1)


def student_terms(d2: np.ndarray, nu: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Per dimension (nu + 1) / 2 * log(1 + d2 / (nu * scale)) (module doc)."""
    return 0.5 * (nu + 1.0) * np.log1p(d2 / (nu * scale))


def student_score(d2: np.ndarray, nu: np.ndarray, scale: np.ndarray,
                  weight: np.ndarray | None = None) -> np.ndarray:
    """Weighted mean (default: plain mean) over the last axis of `student_terms` (module doc)."""
    terms = student_terms(d2, nu, scale)
    return np.mean(terms, -1) if weight is None else terms @ weight


def fit_student(d2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """
    Per-dimension (nu [D], scale [D]) of clean distances d2 [N, D] (rows all finite).

    For each nu of NU_GRID the scale is the maximum-likelihood one (EM: a t variable is a
    Gaussian whose precision is Gamma-distributed, so each step reweights the rows by their
    expected precision); each dimension keeps the nu of the highest likelihood.
    """
    if len(d2) > FIT_ROWS:
        d2 = d2[evenly_spaced(len(d2), FIT_ROWS)]
    d2 = np.maximum(d2, 1e-300)
    best_ll = np.full(d2.shape[1], -np.inf)
    best_nu, best_scale = np.zeros(d2.shape[1]), np.zeros(d2.shape[1])
    for nu in NU_GRID:
        scale = np.maximum(d2.mean(0), 1e-12)
        for _ in range(EM_STEPS):
            scale = np.maximum(np.mean((nu + 1.0) / (nu + d2 / scale) * d2, 0), 1e-12)
        ll = (math.lgamma(0.5 * (nu + 1.0)) - math.lgamma(0.5 * nu)
              - 0.5 * np.log(nu * math.pi * scale)
              - np.mean(0.5 * (nu + 1.0) * np.log1p(d2 / (nu * scale)), 0))
        better = ll > best_ll
        best_ll[better], best_nu[better], best_scale[better] = ll[better], nu, scale[better]
    return best_nu, best_scale


def clean_and_shuffled(fusion: str, mus: torch.Tensor, logvars: torch.Tensor, mask: torch.Tensor
                       ) -> tuple[np.ndarray, np.ndarray]:
    """
    (clean, shuffled) d2 [M, B, D]: each expert against the others of its own sample / another's.

    Shuffled: expert m of row b's partner b + s * B (cyclic, s from SHUFFLES in turn) against
    the fusion of the others of row b, as when m's stream comes from another time.
    """
    n = mus.shape[1]
    mu_o, lv_o, others = loo_fusions(fusion, mus, logvars, mask)
    shifts = torch.tensor([max(1, round(f * n)) for f in SHUFFLES])
    partner = (torch.arange(n) + shifts[torch.arange(n) % len(shifts)]) % n
    clean = distances(mus, logvars, mu_o, lv_o, mask & others)
    shuffled = distances(mus[:, partner], logvars[:, partner], mu_o, lv_o,
                         mask[:, partner] & others)
    return clean.numpy(), shuffled.numpy()


def fit_weights(clean: np.ndarray, shuffled: np.ndarray) -> np.ndarray:
    """
    Dimension weights w [D] (w >= 0, sum 1) that best tell shuffled from clean terms [N, D].

    Logistic regression P(shuffled) = sigmoid(a * terms @ w + b) with w a softmax (so the score
    only grows with each distance), a > 0, the two classes weighted equally; full-batch Adam
    from uniform weights, so the fit is deterministic.
    """
    f64 = {'dtype': torch.float64}  # so llmos-train and a redo agree at any thread count
    x = torch.from_numpy(np.concatenate([clean, shuffled]).astype(np.float64))
    y = torch.cat([torch.zeros(len(clean), **f64), torch.ones(len(shuffled), **f64)])
    balance = torch.cat([torch.full((len(clean),), 0.5 / len(clean), **f64),
                         torch.full((len(shuffled),), 0.5 / len(shuffled), **f64)])
    logits = torch.zeros(x.shape[1], requires_grad=True, **f64)
    log_a = torch.zeros(1, requires_grad=True, **f64)
    b = torch.zeros(1, requires_grad=True, **f64)
    opt = torch.optim.Adam([logits, log_a, b], lr=0.05)
    with torch.enable_grad():
        for _ in range(WEIGHT_STEPS):
            z = torch.exp(log_a) * (x @ torch.softmax(logits, 0)) + b
            loss = (torch.nn.functional.binary_cross_entropy_with_logits(
                z, y, reduction='none') * balance).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return torch.softmax(logits, 0).detach().numpy()


@dataclass
class SurpriseCalibration:
    """
    Per context the law of the distances, the dimension weights and the sorted clean scores.

    Keys are contexts (`context_key`; a modality's name is its full context), module doc.
    """

    model_id: str
    scores: dict[str, np.ndarray]  # key -> sorted scores (at most MAX_POINTS order statistics)
    counts: dict[str, int]  # key -> number of calibration samples
    laws: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # (nu, scale)
    weights: dict[str, np.ndarray] = field(default_factory=dict)  # key -> w [D] (fit_weights)
    window_s: float = 0.0  # the scores are means over this many seconds (module doc, Window)
    contexts: bool = False  # calibrated per context; False: one entry per modality for all
    held_out: dict[str, list[float]] = field(default_factory=dict)  # key -> held_out_alarms

    def key(self, name: str, others, names) -> str:
        """The entry that scores `name` against `others` (module doc, Contexts)."""
        return context_key(name, others, names) if self.contexts else name

    def score(self, key: str, d2: np.ndarray) -> np.ndarray:
        """Scores of distances d2 [..., D] of the context `key`: under its fitted law if any."""
        law = self.laws.get(key)
        if law is None:
            return np.mean(d2, -1)
        if law[0].size != d2.shape[-1]:
            raise CheckpointError(f'surprise calibration of {self.model_id}: {key} has '
                                  f'{law[0].size} fitted dimensions, the model '
                                  f'{d2.shape[-1]} shared ones')
        return student_score(d2, *law, self.weights.get(key))

    def tail(self, key: str, score: float) -> float:
        """Tail probability of `score` in the context `key`; NaN when it cannot be told."""
        ref = self.scores.get(key)
        if ref is None or ref.size == 0 or not np.isfinite(score):
            return float('nan')
        return float(tail_probability(ref, score))

    def to_dict(self) -> dict:
        return {'model_id': self.model_id, 'counts': dict(self.counts),
                'window_s': float(self.window_s), 'contexts': bool(self.contexts),
                'scores': {n: [float(x) for x in s] for n, s in self.scores.items()},
                'held_out': {n: [float(x) for x in r] for n, r in self.held_out.items()},
                'laws': {n: {'nu': [float(x) for x in nu], 'scale': [float(x) for x in scale],
                             **({'weight': [float(x) for x in self.weights[n]]}
                                if n in self.weights else {})}
                         for n, (nu, scale) in self.laws.items()}}

    @classmethod
    def from_dict(cls, data: dict, where: str = 'calibration') -> SurpriseCalibration:
        """
        A stored calibration.

        One without 'laws' (stored before the fit) scores plainly, laws without 'weight'
        (stored before the weights) with the plain mean of the terms, one without 'window_s'
        (stored before the window) per frame, one without 'contexts' (stored before them) with
        each modality's one entry in every context: each its first meaning. 'held_out' (the
        held-out alarms) is for reading only; stored before it: none.
        """
        try:
            laws = {n: (np.asarray(law['nu'], np.float64), np.asarray(law['scale'], np.float64))
                    for n, law in data.get('laws', {}).items()}
            weights = {n: np.asarray(law['weight'], np.float64)
                       for n, law in data.get('laws', {}).items() if 'weight' in law}
            cal = cls(str(data['model_id']),
                      {n: np.sort(np.asarray(s, np.float64)) for n, s in data['scores'].items()},
                      {n: int(c) for n, c in data['counts'].items()}, laws, weights,
                      float(data.get('window_s', 0.0)), bool(data.get('contexts', False)),
                      {n: [float(x) for x in r] for n, r in data.get('held_out', {}).items()})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f'{where}: not a surprise calibration ({exc!r})') from None
        if not isinstance(data.get('contexts', False), bool):
            raise CheckpointError(f'{where}: surprise calibration contexts must be true or '
                                  f'false, got {data["contexts"]!r}')
        for name, rates in cal.held_out.items():
            if not all(0.0 <= x <= 1.0 for x in rates):
                raise CheckpointError(f'{where}: surprise calibration held_out alarms of {name} '
                                      f'must be shares in [0, 1], got {rates}')
        if not (math.isfinite(cal.window_s) and cal.window_s >= 0):
            raise CheckpointError(f'{where}: surprise calibration window_s must be a finite '
                                  f'number >= 0, got {cal.window_s}')
        for name, (nu, scale) in laws.items():
            if nu.ndim != 1 or nu.shape != scale.shape or not (np.all(nu > 0)
                                                               and np.all(scale > 0)):
                raise CheckpointError(f'{where}: surprise calibration law of {name} is not two '
                                      f'equal-length positive lists (nu, scale)')
        for name, weight in weights.items():
            if weight.shape != laws[name][0].shape or not (
                    np.all(weight >= 0) and abs(weight.sum() - 1.0) < 1e-6):
                raise CheckpointError(f'{where}: surprise calibration weight of {name} is not '
                                      f'{laws[name][0].size} non-negative numbers summing to 1')
        return cal

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()))


def score(calibration: SurpriseCalibration | None, key: str, d2: np.ndarray) -> np.ndarray:
    """Scores of distances d2 [..., D] in the context `key`: `calibration`'s, else plain mean."""
    return np.mean(d2, -1) if calibration is None else calibration.score(key, d2)


def _keep(scores: np.ndarray) -> np.ndarray:
    """Sorted scores, thinned to MAX_POINTS evenly spaced order statistics."""
    s = np.sort(scores[np.isfinite(scores)])
    if s.size > MAX_POINTS:
        s = s[evenly_spaced(s.size, MAX_POINTS)]
    return s


@torch.no_grad()
def sample_experts(model, arrays: dict[str, np.ndarray], present: dict[str, np.ndarray],
                   batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shared-latent experts (mus [M, N, D], logvars, mask [M, N]) on the CPU, N samples."""
    n = len(next(iter(present.values())))
    device = next(model.parameters()).device
    parts = []
    for start in range(0, n, batch_size):
        idx = slice(start, min(n, start + batch_size))
        inputs = {k: torch.from_numpy(np.asarray(a[idx], np.float32)).to(device)
                  for k, a in arrays.items()}
        masks = {k: torch.from_numpy(np.asarray(p[idx], bool)).to(device)
                 for k, p in present.items()}
        xs, mask = model.prepare(inputs, masks)
        mus, lvs, _, _ = model.experts(xs, mask)
        parts.append((mus.cpu(), lvs.cpu(), mask.cpu()))
    if not parts:
        m, d = len(model.names), model.shared_dim
        return torch.zeros(m, 0, d), torch.zeros(m, 0, d), torch.zeros(m, 0, dtype=torch.bool)
    return tuple(torch.cat([p[k] for p in parts], 1) for k in range(3))


def batched_distances(fusion: str, mus: torch.Tensor, logvars: torch.Tensor,
                      mask: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """`loo_distances` [M, N, D] of many samples, the fusions in batches (memory)."""
    parts = [np.zeros((mus.shape[0], 0, mus.shape[2]))]
    for start in range(0, mus.shape[1], batch_size):
        rows = slice(start, start + batch_size)
        parts.append(loo_distances(fusion, mus[:, rows], logvars[:, rows], mask[:, rows]).numpy())
    return np.concatenate(parts, 1)


def sample_distances(model, arrays: dict[str, np.ndarray], present: dict[str, np.ndarray],
                     batch_size: int = 256) -> np.ndarray:
    """Distances d2 [M, N, D] of N preprocessed samples (arrays name -> (N, *shape))."""
    mus, lvs, mask = sample_experts(model, arrays, present, batch_size)
    return batched_distances(model.fusion, mus, lvs, mask, batch_size)


def sample_scores(model, arrays: dict[str, np.ndarray], present: dict[str, np.ndarray],
                  calibration: SurpriseCalibration | None = None, batch_size: int = 256
                  ) -> tuple[np.ndarray, np.ndarray]:
    """
    (scores [M, N], keys [M, N]) of N preprocessed samples.

    Each score under the entry of `calibration` for its context (the other modalities present
    in its sample), else plain; keys: the contexts, '' where unscored.
    """
    names = list(model.names)
    d2 = sample_distances(model, arrays, present, batch_size)
    mask = np.stack([np.asarray(present[n], bool) for n in names])
    scores = np.full(d2.shape[:2], np.nan)
    keys = np.full(d2.shape[:2], '', dtype=object)
    for i, name in enumerate(names):
        for b in np.flatnonzero(np.isfinite(d2[i]).all(-1)):
            others = [n for j, n in enumerate(names) if j != i and mask[j, b]]
            keys[i, b] = entry_key(calibration, name, others, names)
        for key in set(keys[i]) - {''}:
            rows = keys[i] == key
            scores[i, rows] = score(calibration, key, d2[i, rows])
    return scores, keys


def _finite(d2: np.ndarray) -> np.ndarray:
    return d2[np.isfinite(d2).all(-1)]


def calibrate(model, model_id: str, arrays, present, stamps=None, groups=None,
              batch_size: int = 256, weight_data: tuple[dict, dict] | None = None,
              window_s: float = WINDOW_S) -> SurpriseCalibration:
    """
    The calibration of `model` on clean preprocessed samples (llmos-train: the validation split).

    One entry per context (module doc, Contexts): for every set of at least two modalities, the
    samples in which all of them are present, scored as if only they were. stamps [N] (and
    groups [N], e.g. the bag of each row), rows in time order within a group: the tails are
    those of the scores averaged over `window_s` (module doc, Window); without stamps, of the
    per-frame scores (window 0). weight_data: other clean samples (arrays, present), e.g. the
    training split, on which the dimension weights are fitted (at most WEIGHT_ROWS, evenly
    spaced, each against a shuffled partner); None: no weights (plain mean of the terms).
    """
    from llmos_ros.belief_noise import segments
    names = list(model.names)
    mus, lvs, mask = sample_experts(model, arrays, present, batch_size)
    window_s = float(window_s) if stamps is not None else 0.0
    runs = segments(np.asarray(stamps), groups) if window_s > 0 else None  # where it restarts
    cal = SurpriseCalibration(model_id, {}, {}, window_s=window_s, contexts=True)
    weighing = None  # experts of the weight rows
    n = len(next(iter(weight_data[1].values()))) if weight_data is not None else 0
    if n > 1:
        keep = evenly_spaced(n, WEIGHT_ROWS)
        weighing = sample_experts(model, {k: a[keep] for k, a in weight_data[0].items()},
                                  {k: p[keep] for k, p in weight_data[1].items()}, batch_size)
    for subset in scored_subsets(names):
        inside = torch.tensor([name in subset for name in names])[:, None]
        complete = (mask | ~inside).all(0)  # samples with every modality of the subset
        d2 = batched_distances(model.fusion, mus, lvs, mask & inside & complete, batch_size)
        pairs = None  # (clean, shuffled) d2 [M, B, D] of the complete weight rows
        if weighing is not None:
            w_mus, w_lvs, w_mask = weighing
            whole = (w_mask | ~inside).all(0)
            if int(whole.sum()) > 1:
                pairs = clean_and_shuffled(model.fusion, w_mus[:, whole], w_lvs[:, whole],
                                           (w_mask & inside)[:, whole])
        for name in subset:
            i, key = names.index(name), context_key(name, subset, names)
            finite = np.isfinite(d2[i]).all(-1)
            rows = d2[i][finite]
            cal.counts[key] = len(rows)
            if len(rows):
                cal.laws[key] = law = fit_student(rows)
                clean, shuffled = (_finite(p[i]) for p in pairs) if pairs else ((), ())
                if len(clean) and len(shuffled):
                    cal.weights[key] = fit_weights(student_terms(clean, *law),
                                                   student_terms(shuffled, *law))
            frame = np.full(len(finite), np.nan)
            frame[finite] = cal.score(key, rows)
            published = windowed(stamps, frame, window_s, runs)
            cal.held_out[key] = held_out_alarms(published)
            cal.scores[key] = _keep(published)
    return cal


def sidecar_path(model_path) -> Path:
    """Where the calibration of the checkpoint at `model_path` is stored."""
    return Path(str(model_path) + '.surprise.json')


def load_calibration(model_path, loaded) -> tuple[SurpriseCalibration | None, str]:
    """
    The calibration of `loaded` (the sidecar, else the checkpoint's), and why there is none.

    A sidecar is an explicit recalibration, so it wins over the one llmos-train stored. A
    calibration made for another model id, or whose laws do not cover the model's shared
    dimensions, is not used (the reason says so).
    """
    from llmos_ros.checkpoint import load_stored
    cal, why = load_stored(model_path, loaded, 'surprise',
                           sidecar_path(model_path) if model_path else None,
                           SurpriseCalibration.from_dict, noun='surprise calibration',
                           module='llmos_ros.surprise', redo='calibrate again')
    dims = loaded.model.shared_dim
    wrong = [n for n, (nu, _) in (cal.laws.items() if cal else ()) if nu.size != dims]
    if wrong:
        return None, (f'surprise calibration of {cal.model_id}: the laws of {", ".join(wrong)} '
                      f"do not have the model's {dims} shared dimensions; calibrate again")
    return cal, why


def context_warning(calibration: SurpriseCalibration | None, names) -> str:
    """
    Why `calibration` may alarm while a sensor is silent ('' when it will not).

    A calibration stored before contexts (module doc, Contexts) scores every context with the
    full set's entry: with three or more modalities, one that falls silent leaves the others
    below p 0.01 most of the time.
    """
    if calibration is None or calibration.contexts or len(names) < 3:
        return ''
    return (f'the surprise calibration of {calibration.model_id} predates contexts: while a '
            f'sensor is silent the others alarm most of the time; recalibrate with python -m '
            f'llmos_ros.surprise --model MODEL --bag TRAIN_BAG --validation')


def validation_split(loaded, bags, where='model'
                     ) -> tuple[tuple[dict, dict, np.ndarray, np.ndarray], tuple[dict, dict]]:
    """
    ((arrays, present, stamps, groups) of the held-out end of `bags`, (arrays, present) of rest).

    The held-out rows in time order per bag (groups: the bag of each): what llmos-train
    calibrates the tails on; the rest: what it fits the dimension weights on.
    """
    from llmos_ros.train import load_data, time_ordered
    train, val, _ = load_data(bags, loaded.cfg, loaded.stats, progress=False)
    if val is None:
        raise LlmosError(f'{where}: train.val_fraction = {loaded.cfg.train.val_fraction:g} '
                         f'holds no validation split')
    val, groups = time_ordered(val)
    return (val.arrays, val.present, val.stamps, groups), (train.arrays, train.present)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python -m llmos_ros.surprise',
                                     description='Calibrate the surprise of a checkpoint on '
                                                 'clean data (its training bag).')
    parser.add_argument('--model', required=True, help='checkpoint written by llmos-train')
    parser.add_argument('--bag', required=True, nargs='+', help='clean (training) bag(s)')
    parser.add_argument('--out', help='JSON sidecar (default: MODEL.surprise.json)')
    parser.add_argument('--max-samples', type=int, help='at most N samples per bag')
    parser.add_argument('--window-s', type=float, default=WINDOW_S,
                        help='the scores are means over this many seconds (0: per frame)')
    parser.add_argument('--validation', action='store_true',
                        help="tails on the held-out end of the bags (the checkpoint's "
                             'train.val_fraction), dimension weights on the rest, as '
                             'llmos-train calibrates: for the training bags of the model '
                             '(without it: tails on all samples, no weights)')
    args = parser.parse_args(argv)
    if not (math.isfinite(args.window_s) and args.window_s >= 0):
        parser.error(f'--window-s must be a finite number >= 0, got {args.window_s}')
    if args.validation and args.max_samples is not None:
        parser.error('--max-samples does not apply to --validation (the split is what it is)')
    from llmos_ros.checkpoint import load_checkpoint
    from llmos_ros.evaluation.replay import replay
    from llmos_ros.inference import PerceptionEngine
    try:
        loaded = load_checkpoint(args.model)
        weight_data = None
        if args.validation:
            (arrays, present, stamps, groups), weight_data = validation_split(
                loaded, args.bag, args.model)
        else:
            arrays, present, stamps, groups = {}, {}, [], []
            for k, bag in enumerate(args.bag):
                rep = replay(bag, PerceptionEngine(loaded), infer=False,
                             max_samples=args.max_samples, progress=False)
                for n in loaded.model.names:
                    arrays.setdefault(n, []).append(rep.arrays[n])
                    present.setdefault(n, []).append(rep.present[n])
                stamps.append(np.asarray(rep.stamps, np.int64))
                groups.append(np.full(len(rep.stamps), k))
            arrays = {n: np.concatenate(a) for n, a in arrays.items()}
            present = {n: np.concatenate(p) for n, p in present.items()}
            stamps, groups = np.concatenate(stamps), np.concatenate(groups)
        cal = calibrate(loaded.model, loaded.model_id, arrays, present, stamps, groups,
                        weight_data=weight_data, window_s=args.window_s)
        out = Path(args.out) if args.out else sidecar_path(args.model)
        cal.save(out)
    except LlmosError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    print(f'wrote {out}: ' + ', '.join(f'{n}: {c} samples' for n, c in cal.counts.items()))
    print(held_out_line(cal, loaded.model.names))
    return 0


if __name__ == '__main__':
    sys.exit(main())
