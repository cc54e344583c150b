"""
The belief's noise, learned from data: q_i, r_i, s_i, m_i, S_i per dimension, a power g. ROS-free.

Process noise q_i and measurement noise r_i per latent dimension, the scale s_i of the experts'
variances that makes the filter honest, the state's mean m_i and stationary variance S_i, and how
much of the experts' per-frame confidence to believe (the power g).

Model (local level). The filter (`llmos_ros.belief`) treats the latent as a state z(t) doing a
random walk, var(z_i(t + tau) - z_i(t)) = q_i * tau, seen through per-sample measurements
y_i(t) = z_i(t) + e_i(t) with independent noise var(e_i) = r_i.

Measurement (`measurement`). What the experts of a sample say about the latent, as one diagonal
Gaussian over the full latent: on the shared part the model's own fusion of the experts without
a prior expert (`Fusion.measurement`: MoPoE's mixture of the subsets' products, moment-matched;
PoE's product), on modality m's private part m's own expert; precision 0 where no expert
informs. The fusion and not the product of the experts, because a mixture stays with the
experts that agree: after a scene change the audio window still holds a second of the old scene,
and the product followed it where the per-frame latent did not (default-config sim model, 40-s
bags: belief probe on steady episodes 0.969 with the product, 0.988 with the fusion; step-to-
step jitter 1.64x -> 2.08x lower than the per-frame latent's on touched ones; jump restarts 40
-> 16). A noise model stored before this rule says `measurement: 'product'` (the product of the
experts, of which it was learned) and keeps it.

Estimator (variogram). Under that model, for two samples tau apart with no reset between them,

    E[(y_i(t + tau) - y_i(t))^2] = 2 r_i + q_i * tau.

The samples are cut into segments where the filter would not reset (a new bag, a stamp not newer
than the previous one, a gap longer than `reset_gap_s`); episode changes stay inside a segment,
since the belief runs across them and its q must allow for them. For LAGS lags tau_k evenly
spaced up to `max_lag_s` every sample is paired with the first one at least tau_k later in its
segment (kept when less than one lag spacing further), the squared differences are averaged per
dimension (pairs where both are defined), and the line 2 r + q tau is fitted to the lag means
(each lag weighted equally) by least squares with r, q >= 0. Real latents are not exactly a
random walk plus white noise (the per-frame latent of a touch changes fast and then levels off),
so r soaks up what changes faster than the lags resolve and q what drifts over seconds: the
fitted line is the random walk that best matches how far the latent moves within max_lag_s.

State. The state's mean m_i and stationary variance S_i = var(y_i) - r_i (at least
STATE_VAR_MIN) over the same samples: the filter's walk reverts to them (`llmos_ros.belief`,
Transition), so a dimension that nothing informs for seconds drifts to its average with the
spread the data show. A dimension without pairs gets the prior's, 0 and 1.

Expert scale. The filter weighs a measurement by the experts' variances, and the model's expert
variance of a dimension is not the frame-to-frame noise r_i (on the simulated bags it is 10 to
1000 times smaller on the shared latent: the experts are sure of each frame's latent, which
wanders around the slower state). So the filter multiplies every expert variance of dimension i
by s_i = r_i / median_t v_i(t), v_i(t) the variance of the measurement at t: the measurement
then has the variance the data show (s_i >= MIN_SCALE).

Variance power. How much of an expert's per-frame confidence the filter believes: the measurement
variance it uses is s_i v_ref_i (v_i(t) / v_ref_i)^g, v_ref_i = median_t v_i(t) (`expert_var`),
one power g in [0, 1] for all dimensions (`variance_power`; g = 1: the model's variances times
s_i as above; g = 0: every frame of a dimension counts the same); a frame of median variance has
the variance r_i at every g, so s_i is the same for all. An encoder's variance says how sure
it is, not how far its frame's latent lies from the state: on vt60 the mean squared change
between consecutive measurements grows with their variance at a median log-log slope of 0.3
across dimensions, not 1, while the variance spans 36x between its 10th and 90th percentile, so
at g = 1 a few frames the encoder was sure of outweighed the rest (belief probe 0.833 against the
per-frame latent's 0.862; jump restarts every 10th sample). g is learned, not set: of POWERS, the
one under which the filter (`llmos_ros.belief.BeliefFilter`, all else as learned) best predicts
each next measurement on the same samples (mean Gaussian log-likelihood of the innovation per
informed dimension; on vt60's validation split 0.25, on the sim's 0.5, both nearly flat
between 0.25 and 0.75). The power applies to the model's variances: staleness still divides a
late expert's share exactly (`BeliefFilter.calibrated`). A noise model stored before this rule
has g = 1. Tried: s_i = r_i / mean_t of the tempered variances (the scale that makes the average
frame's variance r_i): its likelihood was higher and chose g = 1 on the sim, but the belief
followed each frame more (jitter 2.26x -> 1.75x lower than the per-frame latent's, 17 -> 39 jump
restarts in 40 s).
Tried too: r_i (and s_i) times a factor chosen like g; the predictive likelihood preferred 1/3
on the sim and avmnist and 1/2 on vt60 (the fitted line's intercept overstates the white noise
where the variogram bends within max_lag_s), and the sim's belief probe rose 0.972 -> 0.988,
but with the smaller r the chi-square jump test fires on the heavy tail of steady frames (vt60
32 -> 233 restarts in 1,261 samples, jitter 3.90x -> 1.80x lower than the per-frame latent's).

`llmos-train` learns this on its validation split (the held-out end of the training bags) and
stores it in the checkpoint's extra['belief']; this module's command line learns it on other bags
into a JSON sidecar next to the checkpoint (`sidecar_path`), which wins over the stored one. It
names the model id it belongs to.

    python -m llmos_ros.belief_noise --model model.pt --bag TRAIN_BAG [--out model.pt.belief.json]
        [--measurement fusion|product] [--variance-power G] [--validation]
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
import json
from pathlib import Path
import sys

import numpy as np
import torch

from llmos_ros.belief import FALLBACK_PROCESS_NOISE, NS, BeliefConfig, BeliefFilter
from llmos_ros.errors import CheckpointError, LlmosError
from llmos_ros.models import fusions
from llmos_ros.models.fusion import poe

LAGS = 30  # lags of the variogram fit
MAX_LAG_S = 3.0  # longest lag: a few seconds, how long a modality stays silent in practice
MIN_SCALE = 1e-3  # the filter never trusts an expert more than 1000 x what it says
RESET_GAP_S = BeliefConfig().reset_gap_s  # segments end where the filter (default) resets
MEASUREMENTS = ('fusion', 'product')  # the shared part's measurement (module doc)
STATE_VAR_MIN = 1e-6  # the smallest stationary variance of the state (module doc, State)
POWERS = (0.0, 0.25, 0.5, 0.75, 1.0)  # the variance powers g tried (module doc, Variance power)
PREDICTION_ROWS = 5000  # samples the filter runs over to choose g (the first ones, in runs)


@dataclass
class BeliefNoise:
    """Learned noise per latent dimension, for the model `model_id` (module doc)."""

    model_id: str
    process_noise: np.ndarray  # q_i: latent variance per second of the random walk
    measurement_noise: np.ndarray  # r_i: variance of the measurement around the state
    expert_scale: np.ndarray  # s_i: factor on every expert variance of dimension i
    pairs: int = 0  # sample pairs behind the fit
    max_lag_s: float = MAX_LAG_S
    measurement: str = 'fusion'  # of what the noise was learned (module doc, Measurement)
    state_mean: np.ndarray | None = None  # m_i: the state's mean (module doc, State)
    state_var: np.ndarray | None = None  # S_i: its stationary variance; None: learned before
    variance_power: float = 1.0  # g (module doc, Variance power); 1: learned before
    expert_var: np.ndarray | None = None  # v_ref_i, the measurement's median variance

    def to_dict(self) -> dict:
        keys = ('process_noise', 'measurement_noise', 'expert_scale') + (
            ('state_mean', 'state_var') if self.state_var is not None else ()) + (
            ('expert_var',) if self.expert_var is not None else ())
        return {'model_id': self.model_id, 'pairs': int(self.pairs),
                'max_lag_s': float(self.max_lag_s), 'measurement': self.measurement,
                'variance_power': float(self.variance_power),
                **{k: [float(x) for x in getattr(self, k)] for k in keys}}

    @classmethod
    def from_dict(cls, data: dict, where: str = 'belief noise') -> BeliefNoise:
        try:
            arrays = [np.asarray(data[k], np.float64)
                      for k in ('process_noise', 'measurement_noise', 'expert_scale')]
            state = [np.asarray(data[k], np.float64) if k in data else None
                     for k in ('state_mean', 'state_var')]
            noise = cls(str(data['model_id']), *arrays, int(data.get('pairs', 0)),
                        float(data.get('max_lag_s', MAX_LAG_S)),
                        data.get('measurement', 'product'),  # stored before: the product
                        *state,  # stored before: none (the plain random walk)
                        float(data.get('variance_power', 1.0)),  # before: the model's own
                        np.asarray(data['expert_var'], np.float64) if 'expert_var' in data
                        else None)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f'{where}: not a belief noise model ({exc!r})') from None
        power, ref = noise.variance_power, noise.expert_var
        if not 0.0 <= power <= 1.0 or (power < 1.0 and ref is None) or (ref is not None and not (
                ref.shape == arrays[0].shape and np.all(np.isfinite(ref)) and np.all(ref > 0))):
            raise CheckpointError(f'{where}: variance_power must be in [0, 1], got {power}, '
                                  f'with expert_var (as long as process_noise, finite, > 0) '
                                  f'when below 1')
        if (state[0] is None) != (state[1] is None) or (state[1] is not None and not (
                state[0].shape == state[1].shape == arrays[0].shape
                and np.all(np.isfinite(state[0])) and np.all(np.isfinite(state[1]))
                and np.all(state[1] > 0))):
            raise CheckpointError(f'{where}: state_mean and state_var must both be given, as '
                                  f'long as process_noise, finite, state_var > 0')
        if noise.measurement not in MEASUREMENTS:
            raise CheckpointError(f'{where}: measurement must be one of {MEASUREMENTS}, got '
                                  f'{noise.measurement!r}')
        if not (arrays[0].ndim == 1 and all(a.shape == arrays[0].shape for a in arrays)
                and all(np.all(np.isfinite(a) & (a >= 0)) for a in arrays)):
            raise CheckpointError(f'{where}: process_noise, measurement_noise and expert_scale '
                                  f'must be equally long lists of finite numbers >= 0')
        return noise


def segments(stamps: np.ndarray, groups: np.ndarray | None = None,
             reset_gap_s: float = RESET_GAP_S) -> list[np.ndarray]:
    """Row indices of the runs without a reset (module doc), rows in their given order."""
    n = len(stamps)
    if n == 0:
        return []
    dt = np.diff(np.asarray(stamps, np.int64))
    cut = (dt <= 0) | (dt > reset_gap_s * NS)
    if groups is not None:
        cut |= np.asarray(groups)[1:] != np.asarray(groups)[:-1]
    return np.split(np.arange(n), np.flatnonzero(cut) + 1)


def variogram(stamps: np.ndarray, values: np.ndarray, runs: list[np.ndarray],
              max_lag_s: float = MAX_LAG_S, lags: int = LAGS
              ) -> tuple[np.ndarray, np.ndarray, int]:
    """
    (tau [K], E[(y(t + tau) - y(t))^2] [K, L], pairs) over the lags that have pairs.

    tau is the lag bin's mean actual lag in seconds; NaN where a dimension has no pair.
    """
    step = max_lag_s / lags
    taus, means, total = [], [], 0
    for k in range(1, lags + 1):
        sums, counts, lag_sum, n_pairs = 0.0, 0, 0.0, 0
        for rows in runs:
            st = np.asarray(stamps, np.int64)[rows]
            j = np.searchsorted(st, st + int(round(k * step * NS)))
            ok = j < rows.size
            i, j = np.flatnonzero(ok), j[ok]
            keep = st[j] - st[i] < (k + 1) * step * NS
            i, j = rows[i[keep]], rows[j[keep]]
            if not i.size:
                continue
            d2 = (values[j] - values[i]) ** 2
            sums = sums + np.nansum(d2, 0)
            counts = counts + np.sum(np.isfinite(d2), 0)
            lag_sum += float(np.sum(np.asarray(stamps, np.int64)[j]
                                    - np.asarray(stamps, np.int64)[i])) / NS
            n_pairs += i.size
        if n_pairs:
            with np.errstate(invalid='ignore', divide='ignore'):
                means.append(np.where(counts > 0, sums / np.maximum(counts, 1), np.nan))
            taus.append(lag_sum / n_pairs)
            total += n_pairs
    width = values.shape[1] if values.ndim == 2 else 0
    return np.array(taus), np.array(means).reshape(len(taus), width), total


def fit_line(taus: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """
    Per column of g [K, L]: (q, r) >= 0 of the least-squares line g = 2 r + q tau.

    NaN rows of a column are left out; a column with no value gets NaN.
    """
    q, r = np.full(g.shape[1], np.nan), np.full(g.shape[1], np.nan)
    for col in range(g.shape[1]):
        ok = np.isfinite(g[:, col])
        x, y = taus[ok], g[ok, col]
        if not y.size:
            continue
        slope = 0.0
        if y.size > 1 and np.ptp(x) > 0:
            slope = float(np.polyfit(x, y, 1)[0])
        slope = max(slope, 0.0)
        intercept = float(np.mean(y - slope * x))
        if intercept < 0:  # the constraint binds: a line through the origin
            intercept, slope = 0.0, float(np.sum(x * y) / np.sum(x * x))
        q[col], r[col] = slope, intercept / 2
    return q, r


def estimate(model_id: str, stamps, means, variances, groups=None,
             reset_gap_s: float = RESET_GAP_S, max_lag_s: float = MAX_LAG_S,
             fallback_q: float = FALLBACK_PROCESS_NOISE, measurement: str = 'fusion',
             powers: tuple[float, ...] = POWERS) -> BeliefNoise:
    """
    The noise model of measurements `means` [N, L] at `stamps` [N] (module doc).

    means: NaN where undefined; variances [N, L]: the variances the experts give them.
    groups [N] (e.g. the bag of each row) also cut segments. A dimension without any pair keeps
    q = fallback_q and scale 1 (r = its median expert variance). measurement: what `means` are
    (module doc), stored with the noise. powers: the variance powers to choose from (one: that
    one, without running the filter).
    """
    means = np.asarray(means, np.float64)
    runs = segments(stamps, groups, reset_gap_s)
    taus, g, pairs = variogram(stamps, means, runs, max_lag_s)
    if pairs == 0:
        raise LlmosError(f'no two samples within {max_lag_s:g} s of each other without a reset '
                         f'between them: cannot learn the belief noise')
    q, r = fit_line(taus, g)
    measured = np.where(np.isfinite(means), variances, np.nan)
    v, seen = np.full(q.shape, np.nan), np.isfinite(measured).any(0)
    v[seen] = np.nanmedian(measured[:, seen], 0)
    missing = ~np.isfinite(q)
    q[missing], r[missing] = fallback_q, v[missing]
    scale = np.ones_like(q)
    known = ~missing & np.isfinite(v) & (v > 0)
    scale[known] = np.maximum(r[known] / v[known], MIN_SCALE)
    r[~np.isfinite(r)] = 0.0
    rows = np.concatenate(runs)
    state_mean, state_var = np.zeros_like(q), np.ones_like(q)  # the prior where unknown
    with np.errstate(invalid='ignore'):
        state_mean[~missing] = np.nanmean(means[rows][:, ~missing], 0)
        state_var[~missing] = np.maximum(np.nanvar(means[rows][:, ~missing], 0) - r[~missing],
                                         STATE_VAR_MIN)
    ref = np.where(known, v, 1.0)
    noise = BeliefNoise(model_id, q, r, scale, pairs, max_lag_s, measurement, state_mean,
                        state_var, 1.0, ref)
    fits = {g: (prediction_nll(replace(noise, variance_power=g), stamps, means, measured, runs,
                               reset_gap_s) if len(powers) > 1 else 0.0, -g) for g in powers}
    noise.variance_power = min(fits, key=fits.get)  # (module doc, Variance power); a tie: larger
    return noise


def prediction_nll(noise: BeliefNoise, stamps, means, variances, runs: list[np.ndarray],
                   reset_gap_s: float = RESET_GAP_S, max_rows: int = PREDICTION_ROWS) -> float:
    """
    How badly the filter under `noise` predicts each next measurement (module doc, power).

    The default filter (its jump rule too, with `reset_gap_s`) runs over each run of rows, the
    first `max_rows` rows in all (a Python loop: about 0.3 s per 5,000 rows); per row after a
    run's first, before the update: the Gaussian negative log-likelihood of the measurement
    under the propagated belief plus the measurement's variance as the filter takes it,
    averaged over the informed dimensions; the mean over rows (inf without any).
    """
    cfg = BeliefConfig(reset_gap_s=reset_gap_s)
    prec = np.where(np.isfinite(variances) & (variances > 0), 1.0 / variances, 0.0)
    values = np.nan_to_num(means)
    total, count, left = 0.0, 0, max_rows
    for run in runs:
        run, left = run[:left], left - min(left, run.size)
        belief = BeliefFilter(cfg, noise)
        for k, row in enumerate(run):
            if k:
                bar_mean, bar_var = belief.propagated(stamps[row])
                p = belief.calibrated(prec[row])
                informed = p > 0
                if informed.any():
                    spread = bar_var[informed] + 1.0 / p[informed]
                    total += float(np.mean(np.log(2.0 * np.pi * spread) + (
                        values[row, informed] - bar_mean[informed]) ** 2 / spread)) / 2.0
                    count += 1
            belief.update(stamps[row], values[row], prec[row])
    return total / count if count else float('inf')


def measurement(model, experts, mask, kind: str = 'fusion') -> tuple[np.ndarray, np.ndarray]:
    """
    The filter's measurement of B samples: (means [B, L], precisions [B, L]), float64.

    experts: (mus, logvars [M, B, D], private mus, logvars [M, B, P] or None) in model order;
    mask [M, B]: the experts to use. kind 'fusion' or 'product' (module doc, Measurement).
    Precision 0 (mean 0) where no expert in the mask informs a dimension.
    """
    mus, lvs, pmus, plvs = experts
    mask = torch.as_tensor(mask, dtype=torch.bool, device=mus.device)
    if kind == 'product':
        mu, lv = poe(mus, lvs, mask, prior_expert=False)
    else:
        mu, lv = fusions.get(model.fusion).measurement(mus, lvs, mask)
    b, d = mus.shape[1], model.shared_dim
    means, precs = np.zeros((b, model.latent_size)), np.zeros((b, model.latent_size))
    some = mask.any(0).cpu().numpy()
    means[some, :d] = mu.double().cpu().numpy()[some]
    precs[some, :d] = np.exp(-lv.double().cpu().numpy()[some])
    if pmus is not None:
        for i, name in enumerate(model.names):
            rows, part = mask[i].cpu().numpy(), model.private_slice(name)
            means[rows, part] = pmus[i].double().cpu().numpy()[rows]
            precs[rows, part] = np.exp(-plvs[i].double().cpu().numpy()[rows])
    return means, precs


def measurements(model, arrays: dict, present: dict, device='cpu', batch_size: int = 256,
                 experts=None, kind: str = 'fusion') -> tuple[np.ndarray, np.ndarray]:
    """
    The filter's measurement of every row: (means [N, L], variances [N, L]).

    `measurement` of the present experts, NaN where none informs a dimension. experts: the
    rows' `row_experts` when already computed.
    """
    from llmos_ros.models.evaluate import row_experts
    if experts is None:
        experts = row_experts(model, arrays, device, batch_size)
    mask = np.stack([np.asarray(present[n], bool) for n in model.names])
    means, prec = measurement(model, experts, mask, kind)
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where(prec > 0, means, np.nan), np.where(prec > 0, 1 / prec, np.nan)


def learn(model, model_id: str, stamps, arrays: dict, present: dict, groups=None,
          device='cpu', batch_size: int = 256, kind: str = 'fusion',
          powers: tuple[float, ...] = POWERS) -> BeliefNoise:
    """The noise model of `model` on clean preprocessed samples in time order (module doc)."""
    means, variances = measurements(model, arrays, present, device, batch_size, kind=kind)
    return estimate(model_id, stamps, means, variances, groups, measurement=kind, powers=powers)


def sidecar_path(model_path) -> Path:
    """Where a noise model learned for the checkpoint at `model_path` is stored."""
    return Path(str(model_path) + '.belief.json')


def load_noise(model_path, loaded) -> tuple[BeliefNoise | None, str]:
    """The noise model of `loaded` (the sidecar, else the checkpoint's), and why there is none."""
    from llmos_ros.checkpoint import load_stored
    return load_stored(model_path, loaded, 'belief', sidecar_path(model_path) if model_path
                       else None, BeliefNoise.from_dict,
                       noun='belief noise calibration', module='llmos_ros.belief_noise',
                       redo='learn it again')


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python -m llmos_ros.belief_noise',
                                     description='Learn the belief noise (q, r and the expert '
                                                 'scale per latent dimension) of a checkpoint '
                                                 'on clean bags (its training bag).')
    parser.add_argument('--model', required=True, help='checkpoint written by llmos-train')
    parser.add_argument('--bag', required=True, nargs='+', help='clean (training) bag(s)')
    parser.add_argument('--out', help='JSON sidecar (default: MODEL.belief.json)')
    parser.add_argument('--max-samples', type=int, help='at most N samples per bag')
    parser.add_argument('--measurement', choices=MEASUREMENTS, default='fusion',
                        help="what the belief folds in per sample: the model's fusion of the "
                             "new experts (default) or their product (module doc)")
    parser.add_argument('--variance-power', type=float, metavar='G',
                        help='this variance power in [0, 1] instead of the learned one (module '
                             "doc; 1: the experts' variances as the model gives them, scaled)")
    parser.add_argument('--validation', action='store_true',
                        help="on the held-out end of the bags (the checkpoint's "
                             'train.val_fraction), as llmos-train learns it: for the training '
                             'bags of the model (without it: on all samples)')
    args = parser.parse_args(argv)
    if args.validation and args.max_samples is not None:
        parser.error('--max-samples does not apply to --validation (the split is what it is)')
    if args.variance_power is not None and not 0.0 <= args.variance_power <= 1.0:
        parser.error(f'--variance-power must be in [0, 1], got {args.variance_power}')
    from llmos_ros.checkpoint import load_checkpoint
    from llmos_ros.evaluation.replay import replay
    from llmos_ros.inference import PerceptionEngine
    from llmos_ros.surprise import validation_split
    try:
        loaded = load_checkpoint(args.model)
        if args.validation:
            (arrays, present, stamps, groups), _ = validation_split(loaded, args.bag, args.model)
        else:
            parts = [replay(bag, PerceptionEngine(loaded), infer=False,
                            max_samples=args.max_samples, progress=False) for bag in args.bag]
            names = loaded.model.names
            arrays = {n: np.concatenate([p.arrays[n] for p in parts]) for n in names}
            present = {n: np.concatenate([p.present[n] for p in parts]) for n in names}
            stamps = np.concatenate([p.stamps for p in parts])
            groups = np.concatenate([np.full(len(p), k) for k, p in enumerate(parts)])
        noise = learn(loaded.model, loaded.model_id, stamps, arrays, present, groups,
                      kind=args.measurement, powers=POWERS if args.variance_power is None
                      else (args.variance_power,))
        out = Path(args.out) if args.out else sidecar_path(args.model)
        out.write_text(json.dumps(noise.to_dict()))
    except LlmosError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    print(f'wrote {out}: {noise.pairs} sample pairs; median q {np.median(noise.process_noise):.3g}'
          f' /s, r {np.median(noise.measurement_noise):.3g}, expert scale '
          f'{np.median(noise.expert_scale):.3g}, variance power {noise.variance_power:g}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
