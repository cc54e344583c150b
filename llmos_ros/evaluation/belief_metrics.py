"""
Metrics of the belief and the surprise over a replayed stream (llmos-eval, benchmarks). ROS-free.

`Track` holds, per evaluated sample in stamp order, the per-frame latent, the belief and the
surprise of every modality (`TemporalTracker` states). Definitions:

* jitter: mean Euclidean norm of the step-to-step change of a mean, over consecutive samples with
  the same episode label (steps across an episode change are left out); the jitter ratio is the
  per-frame latent's jitter over the belief's (> 1: the belief is smoother).
* false-alarm rate: the fraction of scored samples whose surprise tail probability is < alpha
  (on clean data it should be about alpha).
* AUROC: probability that a sample inside an injected event scores higher than one outside it
  (ties count half).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFINITIONS = {
    'belief_jitter_ratio': 'mean |step of the per-frame latent mean| / mean |step of the belief '
                           'mean| within episodes (> 1: the belief is smoother)',
    'latent_probe_accuracy': 'a linear probe fitted on the per-frame latents of the training bag, '
                             'applied to the per-frame latents of the test bag',
    'belief_probe_accuracy': 'a linear probe fitted on the belief means of the training bag (the '
                             'live path over its first meta.max_fit_samples samples, in order), '
                             'applied to the belief means of the test bag: each probe reads the '
                             'representation it was fitted on',
    'belief_frame_probe_accuracy': 'a linear probe fitted on the per-frame measurements of the '
                                   'training bag (the fusion of the present experts over the '
                                   'full latent: what the belief folds in, and restarts from), '
                                   'applied to the belief means of the test bag: a readout '
                                   'trained on single frames reading the belief',
    'measurement_probe_accuracy': 'the same probe applied to the per-frame measurements of the '
                                  'test bag (the single-frame figure the belief smooths)',
    'surprise_false_alarm_rate': 'fraction of scored samples with tail probability < 0.01 '
                                 '(calibrated: about 0.01 on clean data)',
    'surprise_held_out_alarms': "the calibration's own check of its tails: its clean samples "
                                'in 5 contiguous parts, per part held out the fraction with '
                                "tail probability < 0.01 under the other parts' scores: how "
                                'far from 0.01 a stretch of clean data may come out (wide: the '
                                'tails rest on few episodes; llmos_ros.surprise.held_out_alarms)',
    'probe_accuracy_by_time': 'latent_probe_accuracy and belief_probe_accuracy on the test '
                              'samples within the first 0.3 s of their episode label (early; '
                              'the belief may lag a change its first frames do not make '
                              'clear) and after it (later)',
}
EARLY_S = 0.3  # probe_accuracy_by_time: 'early' is this long after an episode label begins


@dataclass
class Track:
    """Per-sample arrays of a stream (module doc); NaN where a modality was not scored."""

    names: list[str]
    stamps: np.ndarray  # (N,) int64
    latent: np.ndarray  # (N, L) per-frame means
    belief: np.ndarray  # (N, L) belief means
    belief_std: np.ndarray  # (N, L)
    weights: np.ndarray  # (N, M) effective weights
    scores: np.ndarray  # (N, M) surprise scores
    tails: np.ndarray  # (N, M) tail probabilities
    resets: np.ndarray  # (N,) str, '' when the belief was updated
    measurement: np.ndarray | None = None  # (N, L) per-frame measurements (belief_noise)

    @classmethod
    def from_states(cls, names: list[str], results_means, states) -> Track:
        """From the per-frame means and the `TemporalState`s of the same samples."""
        nan = float('nan')
        return cls(list(names), np.array([s.stamp_ns for s in states], np.int64),
                   np.asarray(results_means, np.float64).reshape(len(states), -1),
                   np.array([s.belief.mean for s in states]),
                   np.array([s.belief.std for s in states]),
                   np.array([[s.weights.get(n, 0.0) for n in names] for s in states]),
                   np.array([[s.surprise.get(n, (nan, nan))[0] for n in names] for s in states]),
                   np.array([[s.surprise.get(n, (nan, nan))[1] for n in names] for s in states]),
                   np.array([s.belief.reset for s in states]))


def since_change(stamps: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Seconds since each sample's episode label began (the first sample's: since it)."""
    out, start = np.zeros(len(labels)), 0
    for k in range(len(labels)):
        if k and labels[k] != labels[k - 1]:
            start = k
        out[k] = (int(stamps[k]) - int(stamps[start])) / 1e9
    return out


def probe_accuracy_by_time(track: Track, labels: np.ndarray, probe, belief_probe) -> dict:
    """
    DEFINITIONS['probe_accuracy_by_time']: each probe on the early and on the later samples.

    probe, belief_probe: (means [N, L], rows [N] bool) -> accuracy on the labelled rows of
    `rows`, reading the per-frame latents and the belief means (`summary`).
    """
    early = since_change(track.stamps, labels) < EARLY_S
    return {f'{kind}_{part}': fit(means, rows)
            for kind, fit, means in (('latent', probe, track.latent),
                                     ('belief', belief_probe, track.belief))
            for part, rows in (('early', early), ('later', ~early))}


def jitter(means: np.ndarray, labels: np.ndarray) -> float:
    """Mean step norm of `means` (N, L) over consecutive samples with the same non-empty label."""
    if len(means) < 2:
        return float('nan')
    same = (labels[1:] == labels[:-1]) & (labels[1:] != '')
    steps = np.linalg.norm(np.diff(means, axis=0), axis=1)[same]
    return float(steps.mean()) if steps.size else float('nan')


def jitter_ratio(track: Track, labels: np.ndarray) -> float:
    """Per-frame jitter over belief jitter (module doc)."""
    b = jitter(track.belief, labels)
    return float(jitter(track.latent, labels) / b) if b > 0 else float('nan')


def false_alarm_rate(tails: np.ndarray, alpha: float = 0.01) -> float | None:
    """Fraction of finite tail probabilities below `alpha`; None without any."""
    t = tails[np.isfinite(tails)]
    return float((t < alpha).mean()) if t.size else None


def auroc(positives: np.ndarray, negatives: np.ndarray) -> float | None:
    """P(a positive scores above a negative), ties half; None when a side is empty."""
    pos = positives[np.isfinite(positives)]
    neg = negatives[np.isfinite(negatives)]
    if not pos.size or not neg.size:
        return None
    both = np.concatenate([pos, neg])
    order = both.argsort(kind='mergesort')
    ranks = np.empty(both.size)
    ranks[order] = np.arange(1, both.size + 1)
    for value in np.unique(both):  # average ranks of ties
        tie = both == value
        if tie.sum() > 1:
            ranks[tie] = ranks[tie].mean()
    return float((ranks[:pos.size].sum() - pos.size * (pos.size + 1) / 2)
                 / (pos.size * neg.size))


def summary(track: Track, labels: np.ndarray, probe=None, belief_probe=None,
            frame_probe=None) -> dict:
    """
    The belief and surprise figures of one stream.

    With labels, `probe(latents, rows=None) -> accuracy` scores the per-frame latents (the
    labelled samples, or those of them in the boolean `rows`) and `belief_probe` the belief
    means (each fitted on the same representation of the training bag);
    `frame_probe`, fitted on the training bag's per-frame measurements, scores the belief means
    and the track's measurements.
    """
    out = {'n_samples': int(len(track.stamps)),
           'belief_resets': int(np.sum(track.resets != '')),
           'belief_jitter_ratio': jitter_ratio(track, labels),
           'belief_mean_std': float(track.belief_std.mean()) if len(track.stamps) else None,
           'surprise_false_alarm_rate': {n: false_alarm_rate(track.tails[:, i])
                                         for i, n in enumerate(track.names)},
           'surprise_mean_tail': {n: (float(np.nanmean(track.tails[:, i]))
                                      if np.isfinite(track.tails[:, i]).any() else None)
                                  for i, n in enumerate(track.names)},
           'calibrated': bool(np.isfinite(track.tails).any())}
    if probe is not None:
        out['latent_probe_accuracy'] = probe(track.latent)
    if belief_probe is not None:
        out['belief_probe_accuracy'] = belief_probe(track.belief)
    if probe is not None and belief_probe is not None:
        out['probe_accuracy_by_time'] = probe_accuracy_by_time(track, labels, probe,
                                                               belief_probe)
    if frame_probe is not None:
        out['belief_frame_probe_accuracy'] = frame_probe(track.belief)
        if track.measurement is not None:
            out['measurement_probe_accuracy'] = frame_probe(track.measurement)
    return out


def finite(value):
    """`value` with every non-finite float replaced by None (for JSON)."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
