"""
Surprise per modality: how unlikely modality m's expert is given the others. ROS-free.

Score. For a sample in which m and at least one other modality are present, let q_m = N(mu_m,
var_m) be m's expert over the shared latent and N(mu_o, var_o) the model's own fusion (its
`fusion`, moment-matched) of the other present experts. The score is the mean over the D shared
dimensions of the squared standardised distance

    s_m = 1/D * sum_i (mu_m,i - mu_o,i)^2 / (var_m,i + var_o,i)

(a Mahalanobis distance under the two experts' combined uncertainty; 0 when they agree, large
when m sees something the others do not). Private latents do not enter: they hold what only m
shows, so the others say nothing about them.

Calibration. Raw scores differ across modalities and models, so each is turned into a tail
probability with the empirical distribution of the scores of clean data (the training split):
p = (1 + #{calibration scores >= s}) / (n + 1), the p-value of s under "m agrees with the others
as on clean data". On clean data p is uniform on (0, 1]; p < 0.01 is the calibrated 1 % alarm.
`llmos-train` calibrates the final weights on its validation split (the held-out end of the
training bags) and stores that in the checkpoint's extra['surprise']; this module's command line
recalibrates on other clean bags into a JSON sidecar next to the checkpoint (`sidecar_path`),
which then wins over the stored one. A calibration names the model id it belongs to.

    python -m llmos_ros.surprise --model model.pt --bag TRAIN_BAG [--out model.pt.surprise.json]
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
import json
from pathlib import Path
import sys

import numpy as np
import torch

from llmos_ros.errors import CheckpointError, LlmosError
from llmos_ros.models.fusions import fuse

MAX_POINTS = 4001  # calibration scores kept per modality (evenly spaced order statistics)


def loo_scores(fusion: str, mus: torch.Tensor, logvars: torch.Tensor, mask: torch.Tensor
               ) -> torch.Tensor:
    """
    Scores [M, B] of each expert against the fusion of the others; NaN where undefined.

    The M leave-one-out fusions run as one batch of M * B rows (row m * B + b: sample b without
    expert m), so a live sample costs one fusion call, not M.
    """
    m_count, b = mask.shape
    others = mask.unsqueeze(0).repeat(m_count, 1, 1)  # [M (left out), M, B]
    others[torch.arange(m_count), torch.arange(m_count)] = False
    valid = (mask & others.any(1)).cpu()  # [M, B]: m present and some other expert too
    out = torch.full(mask.shape, float('nan'), dtype=torch.float64)
    if not bool(valid.any()):
        return out
    mu_o, lv_o = fuse(fusion, mus.repeat(1, m_count, 1), logvars.repeat(1, m_count, 1),
                      others.transpose(0, 1).reshape(m_count, m_count * b)).gaussian()
    mu_o, lv_o = mu_o.reshape(mus.shape), lv_o.reshape(logvars.shape)
    d2 = (mus - mu_o) ** 2 / (torch.exp(logvars) + torch.exp(lv_o))
    return torch.where(valid, d2.double().mean(-1).cpu(), out)


@dataclass
class SurpriseCalibration:
    """Sorted clean-data scores per modality, for the model `model_id` (module doc)."""

    model_id: str
    scores: dict[str, np.ndarray]  # name -> sorted scores (at most MAX_POINTS order statistics)
    counts: dict[str, int]  # name -> number of calibration samples

    def tail(self, name: str, score: float) -> float:
        """Tail probability of `score` for modality `name`; NaN when it cannot be told."""
        ref = self.scores.get(name)
        if ref is None or ref.size == 0 or not np.isfinite(score):
            return float('nan')
        above = ref.size - int(np.searchsorted(ref, score, side='left'))
        return (1.0 + above) / (ref.size + 1.0)

    def to_dict(self) -> dict:
        return {'model_id': self.model_id, 'counts': dict(self.counts),
                'scores': {n: [float(x) for x in s] for n, s in self.scores.items()}}

    @classmethod
    def from_dict(cls, data: dict, where: str = 'calibration') -> SurpriseCalibration:
        try:
            return cls(str(data['model_id']),
                       {n: np.sort(np.asarray(s, np.float64)) for n, s in data['scores'].items()},
                       {n: int(c) for n, c in data['counts'].items()})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f'{where}: not a surprise calibration ({exc!r})') from None

    def save(self, path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()))


def _keep(scores: np.ndarray) -> np.ndarray:
    """Sorted scores, thinned to MAX_POINTS evenly spaced order statistics."""
    s = np.sort(scores[np.isfinite(scores)])
    if s.size > MAX_POINTS:
        s = s[np.round(np.linspace(0, s.size - 1, MAX_POINTS)).astype(int)]
    return s


@torch.no_grad()
def sample_scores(model, arrays: dict[str, np.ndarray], present: dict[str, np.ndarray],
                  batch_size: int = 256) -> np.ndarray:
    """Scores [M, N] of N preprocessed samples (arrays name -> (N, *shape), present (N,))."""
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
        parts.append(loo_scores(model.fusion, mus, lvs, mask).numpy())
    return np.concatenate(parts, 1) if parts else np.zeros((len(model.names), 0))


def calibrate(model, model_id: str, arrays, present, batch_size: int = 256
              ) -> SurpriseCalibration:
    """The calibration of `model` on clean preprocessed samples (the training split)."""
    scores = sample_scores(model, arrays, present, batch_size)
    kept = {n: _keep(scores[i]) for i, n in enumerate(model.names)}
    return SurpriseCalibration(model_id, kept,
                               {n: int(np.isfinite(scores[i]).sum())
                                for i, n in enumerate(model.names)})


def sidecar_path(model_path) -> Path:
    """Where the calibration of the checkpoint at `model_path` is stored."""
    return Path(str(model_path) + '.surprise.json')


def load_calibration(model_path, loaded) -> tuple[SurpriseCalibration | None, str]:
    """
    The calibration of `loaded` (the sidecar, else the checkpoint's), and why there is none.

    A sidecar is an explicit recalibration, so it wins over the one llmos-train stored. A
    calibration made for another model id is not used (the reason says so).
    """
    from llmos_ros.checkpoint import load_stored
    return load_stored(model_path, loaded, 'surprise',
                       sidecar_path(model_path) if model_path else None,
                       SurpriseCalibration.from_dict, noun='surprise calibration',
                       module='llmos_ros.surprise', redo='calibrate again')


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python -m llmos_ros.surprise',
                                     description='Calibrate the surprise of a checkpoint on '
                                                 'clean data (its training bag).')
    parser.add_argument('--model', required=True, help='checkpoint written by llmos-train')
    parser.add_argument('--bag', required=True, nargs='+', help='clean (training) bag(s)')
    parser.add_argument('--out', help='JSON sidecar (default: MODEL.surprise.json)')
    parser.add_argument('--max-samples', type=int, help='at most N samples per bag')
    args = parser.parse_args(argv)
    from llmos_ros.checkpoint import load_checkpoint
    from llmos_ros.evaluation.replay import replay
    from llmos_ros.inference import PerceptionEngine
    try:
        loaded = load_checkpoint(args.model)
        arrays, present = {}, {}
        for bag in args.bag:
            rep = replay(bag, PerceptionEngine(loaded), infer=False,
                         max_samples=args.max_samples, progress=False)
            for n in loaded.model.names:
                arrays.setdefault(n, []).append(rep.arrays[n])
                present.setdefault(n, []).append(rep.present[n])
        cal = calibrate(loaded.model, loaded.model_id,
                        {n: np.concatenate(a) for n, a in arrays.items()},
                        {n: np.concatenate(p) for n, p in present.items()})
        out = Path(args.out) if args.out else sidecar_path(args.model)
        cal.save(out)
    except LlmosError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    print(f'wrote {out}: ' + ', '.join(f'{n}: {c} samples' for n, c in cal.counts.items()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
