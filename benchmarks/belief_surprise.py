"""
Belief and surprise on simulated bags with injected events (issue 13's figures).

    python benchmarks/belief_surprise.py [--out DIR] [--train-s 60] [--steps 300] [--test-s 40]
        [--threads 1] [--process-noise [Q ...]] [--model M --train-bag B]
        [--test-seeds 11 23 37 51]

Trains a model on a simulated training bag (or takes --model and its --train-bag), calibrates its
surprise as llmos-train does (tails on that bag's validation split, its held-out end; dimension
weights on the rest: `python -m llmos_ros.surprise --validation`, into the sidecar; the score
window of --window-s, default the surprise's), takes its
learned belief noise (`llmos_ros.belief_noise`: the checkpoint's, or, for a model trained
without one, learned on the training bag into the sidecar), writes test bags of another seed --
clean, each modality swapped with another scene's stream (always another object or material:
`llmos_ros.sim.make_bag`) in 2 s windows every 10 s, tactile silent for 3 s windows, and a
steady one (the same scene without touches: only the sensor noise changes within an episode)
-- replays them through the live path (`PerceptionEngine` + `TemporalTracker`) and prints:

* probe: linear-probe accuracy of the per-frame latent and of the belief on the clean bag, each
  probe fitted on the same representation of the training bag; in brackets the belief read by
  a probe fitted on the training bag's single frames (the belief's measurements);
  and the same split at 0.3 s after each episode change (where the belief may lag a change its
  first frames do not make clear: `llmos_ros.belief`, Jumps);
* jitter ratio: per-frame over belief step-to-step jitter within episodes, clean bag; 'steady':
  the same on the steady bag, where the state does not move within an episode (>= 2 wanted), and
  the probes (fitted on the training bag) on it;
* silence: share of steps in which the belief std over tactile's private latent does not fall
  while tactile is silent, the std at the window's end over its start, and the coverage of that
  latent's predicted 90 % interval: the share of (sample, dimension) pairs in the silent windows
  where the clean twin bag's per-frame latent at the same stamp lies within belief mean +-
  1.645 sqrt(belief var + r), r the learned measurement noise of the dimension (the per-frame
  latent scatters around the state the belief estimates by that much; nominal 0.90); cov90
  belief-only leaves r out (the belief's own interval, how issue 13 first measured it);
* swaps: AUROC of each modality's surprise score for samples inside its swap windows (after the
  modality's pairing window has filled) against samples outside (>= 0.9 wanted); with several
  --test-seeds the mean over one swap bag per seed;
* false alarms: the share of clean-bag samples with tail probability < 0.01, per modality; and
  of the silence bag's samples without tactile, for the other modalities (each is then scored
  against the remaining one alone: the calibration's context, `llmos_ros.surprise`).

One row per --process-noise value (q for every dimension, experts unscaled; `--process-noise`
alone: none) and a row 'learned' (the learned noise), the other belief parameters at their
defaults. The work folder gets timeline_<bag>.png of the learned row (the clean, silence, first
swap and steady bags: `llmos_ros.evaluation.plots.plot_belief_timeline`, events shaded). The
last line is one JSON object with every figure.
"""
import argparse
import contextlib
import io
import json
from pathlib import Path
import sys
import tempfile
import time

import numpy as np
import torch

from llmos_ros.belief import BeliefConfig
from llmos_ros.belief_noise import learn, load_noise, measurements
from llmos_ros.belief_noise import sidecar_path as noise_sidecar
from llmos_ros.checkpoint import load_checkpoint
from llmos_ros.evaluation.belief_metrics import (
    EARLY_S,
    Track,
    auroc,
    false_alarm_rate,
    finite,
    jitter,
    probe_accuracy_by_time,
)
from llmos_ros.evaluation.metrics import linear_probe
from llmos_ros.evaluation.plots import plot_belief_timeline
from llmos_ros.evaluation.replay import replay
from llmos_ros.inference import PerceptionEngine
from llmos_ros.sim.make_bag import DEFAULT_START_NS, Event, write_bag
from llmos_ros.sim.scene import SceneConfig
from llmos_ros.surprise import WINDOW_S, calibrate, sidecar_path, validation_split
from llmos_ros.temporal import TemporalTracker
from llmos_ros.train import main as train_main

NS = 1_000_000_000
Z90 = 1.6449


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument('--out', help='work folder (default: a temporary one)')
    p.add_argument('--train-s', type=float, default=60.0, help='training bag seconds')
    p.add_argument('--steps', type=int, default=300, help='training steps')
    p.add_argument('--test-s', type=float, default=40.0, help='seconds of each test bag')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--process-noise', type=float, nargs='*', default=[0.05],
                   help='belief.process_noise values to compare (one row each, beside learned)')
    p.add_argument('--model', help='existing checkpoint (skips training; needs --train-bag)')
    p.add_argument('--train-bag', help='the training bag of --model')
    p.add_argument('--window-s', type=float, default=WINDOW_S,
                   help='surprise score window in seconds (0: per frame)')
    p.add_argument('--test-seeds', type=int, nargs='+', default=[11],
                   help='scene seeds of the test bags: the first makes every test bag, the '
                        'others swap bags too; swap AUROC is their mean (four 2-s swaps per '
                        'bag make one seed a noisy figure)')
    return p.parse_args(argv)


def windows(test_s: float, length: float) -> list[tuple[float, float]]:
    """Event windows: `length` seconds every 10 s from 5 s on."""
    return [(t, t + length) for t in np.arange(5.0, test_s - length, 10.0)]


def replayed(bag, loaded):
    """Replay `bag` through the live path: (engine, its `Inference`s, labels)."""
    engine, results = PerceptionEngine(loaded), []
    rep = replay(bag, engine, progress=False, on_result=results.append)
    return engine, results, rep.labels


def track(engine, results, cfg: BeliefConfig, calibration, noise) -> Track:
    """The belief and surprise of replayed results under `cfg` (and `noise` when learned)."""
    tracker = TemporalTracker(engine, cfg, calibration, noise)
    states = [tracker.step(r) for r in results]
    return Track.from_states(tracker.names, [r.mean for r in results], states)


def frames(loaded, results, kind: str) -> np.ndarray:
    """The belief's per-frame measurements (belief_noise.measurement) of replayed results."""
    experts = tuple(None if results[0].experts[k] is None
                    else torch.cat([r.experts[k] for r in results], 1) for k in range(4))
    present = {n: np.array([n in r.inputs for r in results]) for n in loaded.model.names}
    return np.nan_to_num(measurements(loaded.model, None, present, experts=experts,
                                      kind=kind)[0])


def _f(value, digits: int = 3) -> str:
    return '-' if value is None else f'{value:.{digits}f}'


def seconds(track: Track) -> np.ndarray:
    return (track.stamps - DEFAULT_START_NS) / NS


def in_spans(t: np.ndarray, spans) -> np.ndarray:
    """Whether each time t (s) lies in one of the [start, end) spans."""
    inside = np.zeros(len(t), bool)
    for start, end in spans:
        inside |= (t >= start) & (t < end)
    return inside


def swap_auroc(track: Track, i: int, spans, lag: float) -> float | None:
    """AUROC of modality i's score: inside [start + lag, end) against outside any span + lag."""
    t = seconds(track)
    inside = in_spans(t, [(start + lag, end) for start, end in spans])
    near = in_spans(t, [(start, end + lag + 0.2) for start, end in spans])
    return auroc(track.scores[inside, i], track.scores[~near, i])


def silent_rows(track: Track, spans, i: int) -> np.ndarray:
    """Rows inside the spans in which modality i was not scored (its input gone)."""
    return in_spans(seconds(track), spans) & ~np.isfinite(track.tails[:, i])


def silence_figures(track: Track, clean: Track, spans, block: slice, r: np.ndarray) -> dict:
    """Std growth and 90 % interval coverage of the tactile private latent while silent (doc)."""
    t = seconds(track)
    clean_at = {s: k for k, s in enumerate(clean.stamps)}
    rising, ratios, hits, own, total = [], [], 0, 0, 0
    for start, end in spans:
        rows = np.flatnonzero((t >= start) & (t < end))
        std = track.belief_std[rows, block].mean(1)
        rising.extend(np.diff(std) >= -1e-9)
        ratios.append(float(std[-1] / std[0]) if std.size else float('nan'))
        for k in rows:
            c = clean_at.get(track.stamps[k])
            if c is None:
                continue
            err = np.abs(clean.latent[c, block] - track.belief[k, block])
            var = track.belief_std[k, block] ** 2
            hits += int(np.sum(err <= Z90 * np.sqrt(var + r)))
            own += int(np.sum(err <= Z90 * np.sqrt(var)))
            total += err.size
    return {'std_non_decreasing': float(np.mean(rising)) if rising else None,
            'std_end_over_start': float(np.nanmean(ratios)) if ratios else None,
            'coverage_90': hits / total if total else None,
            'coverage_90_belief_only': own / total if total else None}


def timelines(work: Path, tr: dict, runs: dict, swaps, silent, names) -> None:
    """belief_timeline plots of the clean, silence, first swap and steady bags into `work`."""
    events = {'silence': [(a, b, 'tactile silent') for a, b in silent],
              **{f'swap_{m}': [(a, b, f'{m} swapped') for a, b in swaps] for m in names}}
    for name in ('clean', 'silence', *(f'swap_{m}' for m in names), 'steady'):
        plot_belief_timeline(tr[name], runs[name][2], work / f'timeline_{name}.png',
                             spans=events.get(name, ()), origin_ns=DEFAULT_START_NS)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    work = Path(args.out or tempfile.mkdtemp(prefix='belief_surprise_'))
    work.mkdir(parents=True, exist_ok=True)
    if args.model:
        if not args.train_bag:
            print('error: --model needs --train-bag', file=sys.stderr)
            return 2
        model_path, train_bag = Path(args.model), Path(args.train_bag)
    else:
        model_path, train_bag = work / 'model.pt', work / 'train'
        if not train_bag.exists():
            write_bag(train_bag, args.train_s, seed=0, progress=False)
        if not model_path.exists():
            with contextlib.redirect_stdout(io.StringIO()):
                code = train_main(['--bag', str(train_bag), '--out', str(model_path), '--steps',
                                   str(args.steps), '--threads', str(args.threads), '--quiet'])
            if code:
                return code
    loaded = load_checkpoint(model_path)
    val, fit = validation_split(loaded, [train_bag])
    cal = calibrate(loaded.model, loaded.model_id, *val, weight_data=fit,
                    window_s=args.window_s)
    cal.save(sidecar_path(model_path))
    noise, why = load_noise(model_path, loaded)
    if noise is None:
        train = replay(train_bag, PerceptionEngine(loaded), infer=False, progress=False)
        print(f'learning the belief noise on {train_bag} ({why})')
        noise = learn(loaded.model, loaded.model_id, train.stamps, train.arrays, train.present)
        noise_sidecar(model_path).write_text(json.dumps(noise.to_dict()))
    names = list(loaded.model.names)
    swaps, silent = windows(args.test_s, 2.0), windows(args.test_s, 3.0)
    seed, *more = args.test_seeds
    swapped = {m: [Event('swap', m, a, b - a) for a, b in swaps] for m in names}
    bags = {'clean': (seed, []),
            'silence': (seed, [Event('silence', 'tactile', a, b - a) for a, b in silent]),
            **{f'swap_{m}': (seed, swapped[m]) for m in names},
            **{f'swap_{m}_{k}': (k, swapped[m]) for m in names for k in more},
            'steady': (seed, [], SceneConfig(touches=False))}
    runs = {}
    for name, (bag_seed, events, *scene) in bags.items():
        path = work / f'test_{name}'
        if not path.exists():
            write_bag(path, args.test_s, seed=bag_seed, events=events,
                      config=scene[0] if scene else None, progress=False)
        runs[name] = replayed(path, loaded)
    runs['train'] = replayed(train_bag, loaded)
    labels, train_labels = runs['clean'][2], runs['train'][2]
    lab, tlab = labels != '', train_labels != ''
    lags = {m: max(0.0, loaded.cfg.modalities[m].window_s) for m in names}
    private = loaded.model.private_slice('tactile')
    print(f'model {loaded.model_id} ({loaded.cfg.model.fusion}), train {train_bag}, '
          f'test bags of {args.test_s:g} s (seed {seed}'
          + (f'; swap bags also of seeds {more}, AUROC their mean' if more else '')
          + '); probes fitted on the training bag')
    print('process_noise  probe latent/belief (belief, frame probe)  jitter ratio  steady: '
          'jitter ratio, probe latent/belief  silent: std '
          'rising, end/start, '
          'cov90, cov90 belief-only | ' + '  '.join(f'AUROC {m}' for m in names) + ' | '
          + '  '.join(f'FA {m}' for m in names) + ' | tactile silent: '
          + '  '.join(f'FA {m}' for m in names if m != 'tactile'))
    frame_fit = frames(loaded, runs['train'][1], noise.measurement)[tlab]  # any q
    rows = []
    for q in [*args.process_noise, 'learned']:
        cfg = BeliefConfig(process_noise=-1.0 if q == 'learned' else q)
        tr = {name: track(*runs[name][:2], cfg, cal, noise) for name in runs}
        clean, train_tr = tr['clean'], tr['train']
        probe = {kind: linear_probe(getattr(train_tr, kind)[tlab], train_labels[tlab],
                                    getattr(clean, kind)[lab], labels[lab])
                 for kind in ('latent', 'belief')}
        probe['belief_frame_probe'] = linear_probe(frame_fit, train_labels[tlab],
                                                   clean.belief[lab], labels[lab])
        fits = {kind: lambda means, rows, fitted=getattr(train_tr, kind)[tlab]: linear_probe(
            fitted, train_labels[tlab], means[lab & rows], labels[lab & rows])
            for kind in ('latent', 'belief')}  # each fitted on its own kind's training bag
        by_time = probe_accuracy_by_time(clean, labels, fits['latent'], fits['belief'])
        ratio = jitter(clean.latent, labels) / jitter(clean.belief, labels)
        still, still_labels = tr['steady'], runs['steady'][2]
        slab = still_labels != ''
        ratio_steady = (jitter(still.latent, still_labels)
                        / jitter(still.belief, still_labels))
        probe_steady = {kind: linear_probe(getattr(train_tr, kind)[tlab], train_labels[tlab],
                                           getattr(still, kind)[slab], still_labels[slab])
                        for kind in ('latent', 'belief')}
        per_seed = {m: [swap_auroc(tr[f'swap_{m}'], i, swaps, lags[m])]
                    + [swap_auroc(tr[f'swap_{m}_{k}'], i, swaps, lags[m]) for k in more]
                    for i, m in enumerate(names)}
        swap_figs = {m: None if None in v else float(np.mean(v)) for m, v in per_seed.items()}
        fa = {m: false_alarm_rate(clean.tails[:, i]) for i, m in enumerate(names)}
        quiet = silent_rows(tr['silence'], silent, names.index('tactile'))
        fa_silent = {m: false_alarm_rate(tr['silence'].tails[quiet, i])
                     for i, m in enumerate(names) if m != 'tactile'}
        sil = silence_figures(tr['silence'], clean, silent, private,
                              noise.measurement_noise[private])
        if q == 'learned':  # what the figures come from, to look at
            timelines(work, tr, runs, swaps, silent, names)
        rows.append({'process_noise': q, 'probe_latent': probe['latent'],
                     'probe_belief': probe['belief'],
                     'probe_belief_frame_probe': probe['belief_frame_probe'],
                     'probe_by_time_since_change': by_time,
                     'jitter_ratio': ratio, 'jitter_ratio_steady': ratio_steady,
                     'probe_steady_latent': probe_steady['latent'],
                     'probe_steady_belief': probe_steady['belief'], 'silence': sil,
                     'swap_auroc': swap_figs, 'swap_auroc_per_seed': per_seed,
                     'false_alarm_rate_1pct': fa,
                     'false_alarm_rate_1pct_tactile_silent': fa_silent})
        print(f'{q:>13}  {probe["latent"]:.3f} / {probe["belief"]:.3f} '
              f'({probe["belief_frame_probe"]:.3f})  {ratio:6.2f}x'
              f'  {ratio_steady:6.2f}x, {probe_steady["latent"]:.3f} / '
              f'{probe_steady["belief"]:.3f}'
              f'       {_f(sil["std_non_decreasing"])}, {_f(sil["std_end_over_start"])}, '
              f'{_f(sil["coverage_90"])}, {_f(sil["coverage_90_belief_only"])} | '
              + '  '.join(f'{_f(swap_figs[m]):>10}' for m in names)
              + ' | ' + '  '.join(f'{_f(fa[m], 4):>7}' for m in names)
              + ' | ' + '  '.join(f'{_f(v, 4):>7}' for v in fa_silent.values()))
        print(f'{"":>13}  probe latent/belief in the first {EARLY_S:g} s after an episode '
              f'change {by_time["latent_early"]:.3f} / {by_time["belief_early"]:.3f}, later '
              f'{by_time["latent_later"]:.3f} / {by_time["belief_later"]:.3f}')
    result = {'model_id': loaded.model_id, 'fusion': loaded.cfg.model.fusion,
              'belief': {k: v for k, v in BeliefConfig().__dict__.items()
                         if k != 'process_noise'},
              'noise': noise.to_dict(), 'rows': rows, 'test_s': args.test_s, 'steps': args.steps,
              'test_seeds': args.test_seeds, 'surprise_window_s': cal.window_s,
              'seconds': time.perf_counter() - started}
    print(json.dumps(finite(result)))
    return 0


if __name__ == '__main__':
    sys.exit(main())
