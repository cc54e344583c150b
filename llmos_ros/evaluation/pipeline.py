"""
llmos-eval as a pipeline of small functions over typed options and results.

    evaluate(opts) = load -> read_train_bag -> replay_test_bag -> fit_classifiers
                     -> subset_metrics (+ probes) -> live_check -> temporal -> report

The types are in `options` (`EvalOptions` is built from argparse in `cli.options`), the scoring
stages in `scores`, the model math (posteriors of any subset, ELBO, IWAE, decodings) in
`llmos_ros.models.evaluate`, the figures' definitions in `definitions`. Wall seconds per stage go
to meta.phase_seconds.
"""
from __future__ import annotations

import math
from pathlib import Path
import sys

from llmos_ros.errors import LlmosError
from llmos_ros.evaluation.definitions import DEFINITIONS
from llmos_ros.evaluation.options import EvalOptions, Loaded, Phases, SubsetResults, TestRun
from llmos_ros.evaluation.replay import Replay
from llmos_ros.evaluation.scores import (
    classifier_accuracy,
    examples,
    fit_classifiers,
    full_rows,
    label_use,
    live_check,
    subset_metrics,
    temporal_summary,
    tracker_for,
)
from llmos_ros.outputs import check_output_dir


def evaluate(opts: EvalOptions) -> dict:
    """Replay, metrics, report (and recording, comparison); returns the JSON summary."""
    from llmos_ros.evaluation.metrics import throughput
    from llmos_ros.evaluation.report import compare_reports, write_report
    loaded = load(opts)
    phases = Phases()
    train = read_train_bag(opts, loaded)
    phases.mark('read_train_bag')
    run = replay_test_bag(opts, loaded)
    test = run.replay
    mods = [m for m in loaded.model.names if test.present[m].any()]
    labels = label_use(opts, train, test)
    phases.mark('replay_test_bag')
    fit_counts: dict[str, int] = {}
    cache_use: dict[str, str] = {}
    classifiers = (fit_classifiers(opts, train, mods, fit_counts, cache_use) if labels.use
                   else {})
    class_acc = classifier_accuracy(classifiers, test, labels)
    phases.mark('coherence_classifiers')
    subsets = subset_metrics(opts, loaded, train, test, mods, classifiers, labels, phases)
    subsets.fit_counts = {**fit_counts, **subsets.fit_counts}
    live_diff = live_check(opts, loaded, test, subsets.test_experts)
    phases.mark('live_check')
    full = full_rows(test, mods)
    example_inputs = examples(loaded, test, mods, full)
    phases.mark('examples')
    temporal, track = temporal_summary(opts, loaded, train, run, labels.use,
                                       subsets.train_experts, subsets.test_experts)
    phases.mark('belief_surprise')
    tp = throughput(len(test), test.wall_s, test.data_span_s)
    tp.update({'n_samples': len(test), 'wall_s': test.wall_s, 'data_span_s': test.data_span_s})
    results = build_results(opts, loaded, train, run, mods, subsets, classifiers, class_acc,
                            temporal, tp, live_diff)
    results['meta']['coherence_classifiers'] = cache_use
    results['meta']['phase_seconds'] = dict(phases.seconds)
    panels, plot_labels = subsets.panels, test.labels[full]
    if not panels:
        panels, plot_labels = {'live latent (present modalities)': test.means}, test.labels
    labelled = labels.test.any()
    paths = write_report(loaded.out, results, latents=panels, examples=example_inputs,
                         labels=plot_labels if labelled else None,
                         timeline=(track, test.labels if labelled else None))
    phases.mark('report')  # in the stdout summary only (metrics.json was written before)
    summary = summarize(loaded.out, paths, run, results, phases)
    if opts.compare:
        summary['compare'] = str(compare_reports(opts.compare, loaded.out,
                                                 loaded.out)['markdown'])
    return summary


def check_outputs(opts: EvalOptions) -> Path:
    """--out must be a writable folder and --record's bag new: before anything is read."""
    out = check_output_dir(opts.out, '--out')
    if opts.record and (out / 'recorded').exists():
        raise LlmosError(f'{out / "recorded"} exists already; remove it or choose another --out')
    return out


def load(opts: EvalOptions) -> Loaded:
    """Check the outputs, load the checkpoint, check the bags' topics: errors before any work."""
    import torch

    from llmos_ros.checkpoint import load_checkpoint
    from llmos_ros.core.bag_samples import check_topics
    if opts.threads:
        torch.set_num_threads(opts.threads)
    out = check_outputs(opts)
    checkpoint = load_checkpoint(opts.model, device=opts.device)
    if not opts.partial:
        check_topics(opts.bag, checkpoint.cfg)
    if opts.train_bag:
        check_topics(opts.train_bag, checkpoint.cfg)
    return Loaded(out, checkpoint, torch.device(opts.device))


def read_train_bag(opts: EvalOptions, loaded: Loaded) -> Replay | None:
    """The training bag's normalised inputs and labels (the engine's pairing, no model)."""
    from llmos_ros.evaluation.replay import replay
    from llmos_ros.inference import PerceptionEngine
    if not opts.train_bag:
        return None
    engine = PerceptionEngine(loaded.checkpoint, opts.device)
    stride = _train_stride(opts.train_bag, engine, opts.max_train_samples)
    opts.note(f'reading the training bag {opts.train_bag}'
              + (f' (every {stride}th sample)' if stride > 1 else ''))
    train = replay(opts.train_bag, engine, infer=False, stride=stride,
                   progress=not opts.quiet, desc='train bag')
    if len(train) == 0:
        raise LlmosError(f'no usable sample in the training bag {opts.train_bag} '
                         f'(drops: {train.drops})')
    return train


def _train_stride(bag, engine, max_train: int) -> int:
    """Keep every n-th sample of the training bag so about max_train remain."""
    from llmos_ros.core.bags import bag_info, norm_topic
    try:
        info = bag_info(bag)
    except LlmosError:
        return 1
    ref = engine.synchronizer.reference
    topic = norm_topic(engine.cfg.modalities[ref].topic)
    n_ref = next((c for t, c in info['counts'].items() if norm_topic(t) == topic), 0)
    return max(1, math.ceil(n_ref / max_train)) if n_ref > max_train else 1


def replay_test_bag(opts: EvalOptions, loaded: Loaded) -> TestRun:
    """The test bag through the live path (engine + belief tracker), recorded with --record."""
    from llmos_ros.evaluation.recording import Recorder
    from llmos_ros.evaluation.replay import replay
    from llmos_ros.inference import PerceptionEngine
    engine = PerceptionEngine(loaded.checkpoint, opts.device)
    run = TestRun(None, tracker_for(opts, loaded, engine), [])
    recorder = Recorder(loaded.out / 'recorded', engine, opts.frame_id) if opts.record else None

    def on_result(result):
        run.states.append(run.tracker.step(result))
        if recorder is not None:
            recorder.result(result, run.tracker, run.states[-1])

    try:
        run.replay = replay(opts.bag, engine, max_samples=opts.max_samples,
                            partial=opts.partial, progress=not opts.quiet,
                            on_message=recorder.message if recorder else None,
                            on_result=on_result, desc='test bag')
    finally:
        if recorder is not None:
            recorder.close()
    if recorder is not None:
        run.recorded, run.predictions = recorder.path, recorder.predictions
    check_test_run(opts, run.replay, engine)
    return run


def check_test_run(opts: EvalOptions, test: Replay, engine) -> None:
    """Errors when nothing could be evaluated (saying why); a warning for a truncated bag."""
    if test.bag_error:
        print(f'llmos-eval: warning: {test.bag_error}; evaluating the '
              f'{test.counts["messages"]} messages read before it', file=sys.stderr)
    if test.counts['samples'] == 0:
        ref = engine.synchronizer.reference
        raise LlmosError(f'no sample could be formed from {opts.bag}: samples are formed at '
                         f'each message of the reference modality {ref!r} (topic '
                         f'{engine.cfg.modalities[ref].topic}), and none of its messages was '
                         f'usable (messages dropped: {test.drops or "none"}). '
                         + '; '.join(test.first_errors.values()))
    if len(test) == 0:
        reasons = ', '.join(f'{k}: {v}' for k, v in test.drops.items()) or 'none'
        first = '; '.join(test.first_errors.values())
        raise LlmosError(f'no sample of {opts.bag} could be evaluated (the model and the bag do '
                         f'not fit?). Messages dropped: {reasons}.'
                         + (f' First input errors: {first}' if first else ''))
    for m, err in test.first_errors.items():
        if m in test.present and not test.present[m].any():
            opts.note(f'modality {m} was unusable in every sample: {err}')


def build_results(opts: EvalOptions, loaded: Loaded, train: Replay | None, run: TestRun,
                  mods, subsets: SubsetResults, classifiers, class_acc, temporal, tp,
                  live_diff) -> dict:
    """The report dict (schema: evaluation/report.py)."""
    from llmos_ros.evaluation.metrics import latency_percentiles
    test, cfg, model = run.replay, loaded.cfg, loaded.model
    return {
        'model_id': loaded.checkpoint.model_id, 'bag': str(opts.bag),
        'train_bag': str(opts.train_bag) if opts.train_bag else None,
        'modalities': mods, 'kinds': {m: cfg.modalities[m].kind for m in mods},
        'subsets': subsets.entries,
        'coherence': {'classifier_accuracy': class_acc, 'pairs': subsets.pairs}
        if classifiers else None,
        'belief_surprise': temporal,
        'throughput': tp, 'latency_ms': latency_percentiles(test.latency_s),
        'counts': test.counts, 'drops': test.drops,
        'meta': {'model': str(opts.model), 'model_modalities': list(model.names),
                 'fusion': cfg.model.fusion, 'latent_size': int(model.latent_size),
                 'latent_layout': model.latent_layout(), 'device': str(loaded.device),
                 'seed': opts.seed, 'elbo_samples': opts.elbo_samples, 'iwae_k': opts.iwae_k,
                 'batch_size': opts.batch_size, 'metric_seconds': subsets.seconds,
                 'max_samples': opts.max_samples, 'engine_drops': test.engine_drops,
                 'unused_topics': test.unused_topics, 'first_input_errors': test.first_errors,
                 'live_vs_batched_max_abs_diff': live_diff, 'bag_error': test.bag_error,
                 'train_samples': len(train) if train is not None else None,
                 'max_fit_samples': opts.max_fit_samples, 'fit_samples': subsets.fit_counts,
                 'train_drops': train.drops if train is not None else None,
                 'recorded': str(run.recorded) if run.recorded else None,
                 'recorded_predictions': run.predictions if run.recorded else None,
                 'skill_baseline': 'training mean = 0 in normalised space'},
        'definitions': DEFINITIONS,
    }


def summarize(out: Path, paths: dict, run: TestRun, results: dict, phases: Phases) -> dict:
    """The JSON line llmos-eval prints last."""
    test, tp, temporal = run.replay, results['throughput'], results['belief_surprise']
    entries = results['subsets']
    return {'out': str(out), 'metrics': str(paths['json']),
            'report': str(paths['markdown']),
            'plots': sorted(str(p) for p in paths.values() if str(p).endswith('.png')),
            'recorded': str(run.recorded) if run.recorded else None,
            'samples': len(test), 'messages': test.counts['messages'],
            'dropped': test.counts['dropped'],
            'samples_per_s': round(tp['samples_per_s'], 2),
            'real_time_factor': round(tp['real_time_factor'], 3),
            'latency_p50_ms': round(results['latency_ms']['p50'], 3),
            'probe_accuracy': {'+'.join(e['subset']): e['probe_accuracy'] for e in entries},
            'cross_skill': {f'{"+".join(e["subset"])}->{m}': v['skill']
                            for e in entries for m, v in e['cross'].items()},
            'belief_jitter_ratio': temporal['belief_jitter_ratio'],
            'belief_probe_accuracy': temporal.get('belief_probe_accuracy'),
            'belief_frame_probe_accuracy': temporal.get('belief_frame_probe_accuracy'),
            'surprise_false_alarm_rate': temporal['surprise_false_alarm_rate'],
            'surprise_held_out_alarms': temporal['surprise_held_out_alarms'],
            'bag_error': test.bag_error,
            'phase_seconds': {k: round(v, 3) for k, v in phases.seconds.items()}}
