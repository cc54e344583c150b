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
data, nu_i from a grid) and the score is the mean over the D dimensions of its negative
log-density relative to full agreement:

    s_m = 1/D * sum_i (nu_i + 1) / 2 * log(1 + d2_i / (nu_i * s_i))

so no single noisy dimension drowns the others and a distance counts by how rare it is on clean
data in its own dimension. Without a fitted law (no calibration, or one stored before the fit
was added) the score is the plain mean of d2_i, its first meaning. Private latents do not enter:
they hold what only m shows, so the others say nothing about them.

Calibration. Raw scores differ across modalities and models, so each is turned into a tail
probability with the empirical distribution of the scores of clean data (the training split):
p = (1 + #{calibration scores >= s}) / (n + 1), the p-value of s under "m agrees with the others
as on clean data". On clean data p is uniform on (0, 1]; p < 0.01 is the calibrated 1 % alarm.
`llmos-train` calibrates the final weights on its validation split (the held-out end of the
training bags) and stores that in the checkpoint's extra['surprise']; this module's command line
recalibrates on other clean bags into a JSON sidecar next to the checkpoint (`sidecar_path`),
which then wins over the stored one. A calibration names the model id it belongs to.

    python -m llmos_ros.surprise --model model.pt --bag TRAIN_BAG [--out model.pt.surprise.json]
        [--validation]
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
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


def loo_distances(fusion: str, mus: torch.Tensor, logvars: torch.Tensor, mask: torch.Tensor
                  ) -> torch.Tensor:
    """
    Squared standardised distances d2 [M, B, D] (float64) of each expert from the others.

    d2 is measured from the fusion of the other present experts; rows are NaN where it is
    undefined (m absent, or no other expert present).

    The M leave-one-out fusions run as one batch of M * B rows (row m * B + b: sample b without
    expert m), so a live sample costs one fusion call, not M.
    """
    m_count, b = mask.shape
    others = mask.unsqueeze(0).repeat(m_count, 1, 1)  # [M (left out), M, B]
    others[torch.arange(m_count), torch.arange(m_count)] = False
    valid = (mask & others.any(1)).cpu()  # [M, B]: m present and some other expert too
    out = torch.full(mus.shape, float('nan'), dtype=torch.float64)
    if not bool(valid.any()):
        return out
    mu_o, lv_o = fuse(fusion, mus.repeat(1, m_count, 1), logvars.repeat(1, m_count, 1),
                      others.transpose(0, 1).reshape(m_count, m_count * b)).gaussian()
    mu_o, lv_o = mu_o.reshape(mus.shape), lv_o.reshape(logvars.shape)
    d2 = (mus - mu_o) ** 2 / (torch.exp(logvars) + torch.exp(lv_o))
    return torch.where(valid.unsqueeze(-1), d2.double().cpu(), out)


def loo_scores(fusion: str, mus: torch.Tensor, logvars: torch.Tensor, mask: torch.Tensor
               ) -> torch.Tensor:
    """Plain scores [M, B] (mean of d2 over dimensions, no fitted law); NaN where undefined."""
    return loo_distances(fusion, mus, logvars, mask).mean(-1)


def student_score(d2: np.ndarray, nu: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Mean over the last axis of (nu + 1) / 2 * log(1 + d2 / (nu * scale)) (module doc)."""
    return np.mean(0.5 * (nu + 1.0) * np.log1p(d2 / (nu * scale)), -1)


def fit_student(d2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """
    Per-dimension (nu [D], scale [D]) of clean distances d2 [N, D] (rows all finite).

    For each nu of NU_GRID the scale is the maximum-likelihood one (EM: a t variable is a
    Gaussian whose precision is Gamma-distributed, so each step reweights the rows by their
    expected precision); each dimension keeps the nu of the highest likelihood.
    """
    if len(d2) > FIT_ROWS:
        d2 = d2[np.round(np.linspace(0, len(d2) - 1, FIT_ROWS)).astype(int)]
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


@dataclass
class SurpriseCalibration:
    """Per modality the laws of the distances and the sorted clean scores (module doc)."""

    model_id: str
    scores: dict[str, np.ndarray]  # name -> sorted scores (at most MAX_POINTS order statistics)
    counts: dict[str, int]  # name -> number of calibration samples
    laws: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # (nu, scale)

    def score(self, name: str, d2: np.ndarray) -> np.ndarray:
        """Scores of distances d2 [..., D] of modality `name`: under its fitted law if any."""
        law = self.laws.get(name)
        if law is None:
            return np.mean(d2, -1)
        if law[0].size != d2.shape[-1]:
            raise CheckpointError(f'surprise calibration of {self.model_id}: {name} has '
                                  f'{law[0].size} fitted dimensions, the model '
                                  f'{d2.shape[-1]} shared ones')
        return student_score(d2, *law)

    def tail(self, name: str, score: float) -> float:
        """Tail probability of `score` for modality `name`; NaN when it cannot be told."""
        ref = self.scores.get(name)
        if ref is None or ref.size == 0 or not np.isfinite(score):
            return float('nan')
        above = ref.size - int(np.searchsorted(ref, score, side='left'))
        return (1.0 + above) / (ref.size + 1.0)

    def to_dict(self) -> dict:
        return {'model_id': self.model_id, 'counts': dict(self.counts),
                'scores': {n: [float(x) for x in s] for n, s in self.scores.items()},
                'laws': {n: {'nu': [float(x) for x in nu], 'scale': [float(x) for x in scale]}
                         for n, (nu, scale) in self.laws.items()}}

    @classmethod
    def from_dict(cls, data: dict, where: str = 'calibration') -> SurpriseCalibration:
        """A stored calibration; one without 'laws' (stored before the fit) scores plainly."""
        try:
            laws = {n: (np.asarray(law['nu'], np.float64), np.asarray(law['scale'], np.float64))
                    for n, law in data.get('laws', {}).items()}
            cal = cls(str(data['model_id']),
                      {n: np.sort(np.asarray(s, np.float64)) for n, s in data['scores'].items()},
                      {n: int(c) for n, c in data['counts'].items()}, laws)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f'{where}: not a surprise calibration ({exc!r})') from None
        for name, (nu, scale) in laws.items():
            if nu.ndim != 1 or nu.shape != scale.shape or not (np.all(nu > 0)
                                                               and np.all(scale > 0)):
                raise CheckpointError(f'{where}: surprise calibration law of {name} is not two '
                                      f'equal-length positive lists (nu, scale)')
        return cal

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()))


def score(calibration: SurpriseCalibration | None, name: str, d2: np.ndarray) -> np.ndarray:
    """Scores of distances d2 [..., D] of modality `name`: `calibration`'s, else the plain mean."""
    return np.mean(d2, -1) if calibration is None else calibration.score(name, d2)


def _keep(scores: np.ndarray) -> np.ndarray:
    """Sorted scores, thinned to MAX_POINTS evenly spaced order statistics."""
    s = np.sort(scores[np.isfinite(scores)])
    if s.size > MAX_POINTS:
        s = s[np.round(np.linspace(0, s.size - 1, MAX_POINTS)).astype(int)]
    return s


@torch.no_grad()
def sample_distances(model, arrays: dict[str, np.ndarray], present: dict[str, np.ndarray],
                     batch_size: int = 256) -> np.ndarray:
    """Distances d2 [M, N, D] of N preprocessed samples (arrays name -> (N, *shape))."""
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
        parts.append(loo_distances(model.fusion, mus, lvs, mask).numpy())
    if not parts:
        return np.zeros((len(model.names), 0, model.shared_dim))
    return np.concatenate(parts, 1)


def sample_scores(model, arrays: dict[str, np.ndarray], present: dict[str, np.ndarray],
                  calibration: SurpriseCalibration | None = None, batch_size: int = 256
                  ) -> np.ndarray:
    """Scores [M, N] of N preprocessed samples: under `calibration`'s laws, else plain."""
    d2 = sample_distances(model, arrays, present, batch_size)
    return np.stack([score(calibration, name, d2[i]) for i, name in enumerate(model.names)])


def calibrate(model, model_id: str, arrays, present, batch_size: int = 256
              ) -> SurpriseCalibration:
    """The calibration of `model` on clean preprocessed samples (the training split)."""
    d2 = sample_distances(model, arrays, present, batch_size)
    cal = SurpriseCalibration(model_id, {}, {})
    for i, name in enumerate(model.names):
        rows = d2[i][np.isfinite(d2[i]).all(-1)]
        cal.counts[name] = len(rows)
        if len(rows):
            cal.laws[name] = fit_student(rows)
        cal.scores[name] = _keep(cal.score(name, rows))
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


def validation_split(loaded, bags, where='model') -> tuple[dict, dict]:
    """(arrays, present) of the held-out end of `bags` that llmos-train calibrates on."""
    from llmos_ros.train import load_data
    _, val, _ = load_data(bags, loaded.cfg, loaded.stats, progress=False)
    if val is None:
        raise LlmosError(f'{where}: train.val_fraction = {loaded.cfg.train.val_fraction:g} '
                         f'holds no validation split')
    return val.arrays, val.present


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python -m llmos_ros.surprise',
                                     description='Calibrate the surprise of a checkpoint on '
                                                 'clean data (its training bag).')
    parser.add_argument('--model', required=True, help='checkpoint written by llmos-train')
    parser.add_argument('--bag', required=True, nargs='+', help='clean (training) bag(s)')
    parser.add_argument('--out', help='JSON sidecar (default: MODEL.surprise.json)')
    parser.add_argument('--max-samples', type=int, help='at most N samples per bag')
    parser.add_argument('--validation', action='store_true',
                        help="only the held-out end of the bags (the checkpoint's "
                             'train.val_fraction), as llmos-train calibrates: for the training '
                             'bags of the model')
    args = parser.parse_args(argv)
    if args.validation and args.max_samples is not None:
        parser.error('--max-samples does not apply to --validation (the split is what it is)')
    from llmos_ros.checkpoint import load_checkpoint
    from llmos_ros.evaluation.replay import replay
    from llmos_ros.inference import PerceptionEngine
    try:
        loaded = load_checkpoint(args.model)
        if args.validation:
            arrays, present = validation_split(loaded, args.bag, args.model)
        else:
            arrays, present = {}, {}
            for bag in args.bag:
                rep = replay(bag, PerceptionEngine(loaded), infer=False,
                             max_samples=args.max_samples, progress=False)
                for n in loaded.model.names:
                    arrays.setdefault(n, []).append(rep.arrays[n])
                    present.setdefault(n, []).append(rep.present[n])
            arrays = {n: np.concatenate(a) for n, a in arrays.items()}
            present = {n: np.concatenate(p) for n, p in present.items()}
        cal = calibrate(loaded.model, loaded.model_id, arrays, present)
        out = Path(args.out) if args.out else sidecar_path(args.model)
        cal.save(out)
    except LlmosError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    print(f'wrote {out}: ' + ', '.join(f'{n}: {c} samples' for n, c in cal.counts.items()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
