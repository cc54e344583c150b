"""
The stages of llmos-eval, each a small function over typed options and results.

    evaluate(opts) = load -> read_train_bag -> replay_test_bag -> fit_classifiers
                     -> subset_metrics (+ probes) -> live_check -> temporal -> report

`EvalOptions` holds what the command line asked for (built from argparse in `cli.options`);
`Loaded`, `TestRun`, `Labels` and `SubsetResults` are what the stages hand on. The model math
(posteriors of any subset, ELBO, IWAE, decodings) is in `llmos_ros.models.evaluate`; the figures'
definitions are in `definitions`. Wall seconds per stage go to meta.phase_seconds.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import math
from pathlib import Path
import sys
import time

import numpy as np

from llmos_ros.errors import LlmosError
from llmos_ros.evaluation.definitions import DEFINITIONS
from llmos_ros.evaluation.replay import Replay
from llmos_ros.outputs import check_output_dir

MAX_FIT_SAMPLES = 20000  # probe and coherence classifier fits (the report states the count)


@dataclass(frozen=True)
class EvalOptions:
    """What to evaluate and how (the llmos-eval options, see `cli.parse_args`)."""

    bag: str
    model: str
    out: str
    train_bag: str | None = None
    iwae_k: int | None = None
    elbo_samples: int = 1
    record: bool = False
    frame_id: str = 'llmos'
    compare: str | None = None  # a report folder to compare the new report with
    max_samples: int | None = None
    max_train_samples: int = 20000
    max_fit_samples: int = MAX_FIT_SAMPLES
    coherence_epochs: int = 8
    partial: bool = False
    batch_size: int = 256
    seed: int = 0
    device: str = 'cpu'
    threads: int = 0
    quiet: bool = False

    def note(self, text: str) -> None:
        """A note on stderr (not with --quiet)."""
        if not self.quiet:
            print(f'[llmos-eval] {text}', file=sys.stderr, flush=True)


class Phases:
    """Wall seconds per stage (meta.phase_seconds): `mark(name)` ends the running stage."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._mark = time.perf_counter()

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._mark
        self._mark = now


@dataclass
class Loaded:
    """The checkpoint and where the report goes."""

    out: Path
    checkpoint: object  # checkpoint.LoadedModel
    device: object  # torch.device

    @property
    def model(self):
        return self.checkpoint.model

    @property
    def cfg(self):
        return self.checkpoint.cfg


@dataclass
class TestRun:
    """The test bag through the live path, with the belief states and what was recorded."""

    replay: Replay
    tracker: object  # temporal.TemporalTracker
    states: list
    recorded: Path | None = None
    predictions: int = 0  # prediction messages recorded


@dataclass
class Labels:
    """Whether probes and coherence apply (labels in both bags, classes shared)."""

    use: bool
    test: np.ndarray  # bool [N]: test samples with a label


@dataclass
class SubsetResults:
    """Per-subset report entries, coherence pairs, latent panels for the plots."""

    entries: list = field(default_factory=list)
    pairs: list = field(default_factory=list)
    panels: dict = field(default_factory=dict)
    fit_counts: dict = field(default_factory=dict)  # meta.fit_samples
    seconds: float = 0.0  # meta.metric_seconds
    test_experts: tuple | None = None  # the test rows' expert outputs (encoders run once)


# ----------------------------------------------------------------------------- stages
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
    classifiers = fit_classifiers(opts, train, mods, fit_counts) if labels.use else {}
    class_acc = classifier_accuracy(classifiers, test, labels)
    phases.mark('coherence_classifiers')
    subsets = subset_metrics(opts, loaded, train, test, mods, classifiers, labels, phases)
    subsets.fit_counts = {**fit_counts, **subsets.fit_counts}
    live_diff = live_check(opts, loaded, test, subsets.test_experts)
    phases.mark('live_check')
    full_rows = _full_rows(test, mods)
    examples = _examples(loaded, test, mods, full_rows)
    temporal = temporal_summary(opts, loaded, train, run, labels.use)
    tp = throughput(len(test), test.wall_s, test.data_span_s)
    tp.update({'n_samples': len(test), 'wall_s': test.wall_s, 'data_span_s': test.data_span_s})
    results = build_results(opts, loaded, train, run, mods, subsets, classifiers, class_acc,
                            temporal, tp, live_diff)
    phases.mark('examples')
    results['meta']['phase_seconds'] = dict(phases.seconds)
    panels, plot_labels = subsets.panels, test.labels[full_rows]
    if not panels:
        panels, plot_labels = {'live latent (present modalities)': test.means}, test.labels
    paths = write_report(loaded.out, results, latents=panels,
                         labels=plot_labels if labels.test.any() else None, examples=examples)
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
    run = TestRun(None, _tracker(opts, loaded, engine), [])
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


def _tracker(opts: EvalOptions, loaded: Loaded, engine):
    """The belief/surprise tracker of the test stream (default BeliefConfig, calibration)."""
    from llmos_ros.belief import BeliefConfig
    from llmos_ros.surprise import load_calibration
    from llmos_ros.temporal import TemporalTracker
    calibration, why = load_calibration(opts.model, loaded.checkpoint)
    if calibration is None:
        opts.note(f'surprise tail probabilities are NaN: {why}')
    return TemporalTracker(engine, BeliefConfig(), calibration)


def label_use(opts: EvalOptions, train: Replay | None, test: Replay) -> Labels:
    """
    Whether probe and coherence make sense: labels in both bags, sharing classes.

    None shared: a note, no probe. Some test labels unseen in training: a note naming them (their
    samples count as misclassified).
    """
    labelled = test.labels != ''
    use = train is not None and labelled.any() and (train.labels != '').any()
    if train is not None and not use:
        which = ' and '.join(name for name, table in (('test', test), ('training', train))
                             if not (table.labels != '').any())
        opts.note(f'no /episode/label in the {which} bag: no probe or coherence')
    elif train is None and labelled.any():
        opts.note('the test bag has labels: give --train-bag for probe accuracy and coherence')
    if not use:
        return Labels(False, labelled)
    seen = set(train.labels[train.labels != ''])
    classes = set(test.labels[labelled])
    unseen = sorted(classes - seen)
    if not classes & seen:
        opts.note(f"the test bag's labels {sorted(classes)[:5]} share none with the training "
                  f"bag's {sorted(seen)[:5]}: no probe or coherence")
        return Labels(False, labelled)
    if unseen:
        opts.note(f'labels of the test bag not in the training bag (counted as misclassified):'
                  f' {unseen[:10]}')
    return Labels(True, labelled)


def fit_rows(rows: np.ndarray, cap: int) -> np.ndarray:
    """At most `cap` of the (time-ordered) rows, evenly spaced; all of them when fewer."""
    if rows.size <= cap:
        return rows
    return rows[np.linspace(0, rows.size - 1, cap).round().astype(int)]


def fit_classifiers(opts: EvalOptions, train: Replay, mods, fit_counts: dict) -> dict:
    """A coherence classifier per modality on the training bag's labelled inputs."""
    from llmos_ros.evaluation.metrics import CoherenceClassifier
    classifiers = {}
    for m in mods:
        rows = fit_rows(np.flatnonzero(train.present[m] & (train.labels != '')),
                        opts.max_fit_samples)
        if rows.size == 0:
            continue
        fit_counts[f'coherence/{m}'] = int(rows.size)
        classifiers[m] = CoherenceClassifier(method='cnn', epochs=opts.coherence_epochs,
                                             seed=opts.seed).fit(train.arrays[m][rows],
                                                                 train.labels[rows])
    return classifiers


def classifier_accuracy(classifiers: dict, test: Replay, labels: Labels) -> dict:
    """Each coherence classifier's accuracy on the test bag's real inputs."""
    out = {}
    for m, clf in classifiers.items():
        rows = np.flatnonzero(test.present[m] & labels.test)
        out[m] = clf.accuracy(test.arrays[m][rows], test.labels[rows]) if rows.size else None
    return out


def subset_metrics(opts: EvalOptions, loaded: Loaded, train: Replay | None, test: Replay,
                   mods: list[str], classifiers: dict, labels: Labels,
                   phases: Phases) -> SubsetResults:
    """Every non-empty subset of the present modalities: errors, ELBO, coherence, probe."""
    from llmos_ros.evaluation.metrics import subsets
    from llmos_ros.models.evaluate import row_experts
    model, device = loaded.model, loaded.device
    out = SubsetResults()
    full_rows = _full_rows(test, mods)
    started = time.perf_counter()
    # encoders once per row; every subset's posterior is fused from these
    out.test_experts = row_experts(model, test.arrays, device, opts.batch_size)
    train_experts = (row_experts(model, train.arrays, device, opts.batch_size) if labels.use
                     else None)
    for si, given in enumerate(subsets(mods)):
        rows = np.flatnonzero(np.all([test.present[m] for m in given], axis=0))
        entry, mu, pairs = _subset_entry(opts, loaded, test, mods, given, rows, classifiers,
                                         labels, seed=opts.seed + si,
                                         experts=out.test_experts)
        phases.mark('subset_metrics')
        if labels.use:
            entry['probe_accuracy'] = _probe(opts, loaded, train, test, given, rows, mu,
                                             labels, train_experts, out.fit_counts)
        phases.mark('probes')
        out.entries.append(entry)
        out.pairs += pairs
        if full_rows.size and (len(given) == 1 or len(given) == len(mods)):
            out.panels['+'.join(given)] = mu[np.searchsorted(rows, full_rows)]
    out.seconds = time.perf_counter() - started
    return out


def _subset_entry(opts, loaded, test, mods, given, rows, classifiers, labels, seed, experts):
    """(report entry, latent means of rows, coherence pairs) of one subset `given`."""
    from llmos_ros.models import evaluate
    outside = [m for m in mods if m not in given]
    hits = {m: [0, 0] for m in outside if m in classifiers}

    def hook(idx, decoded):
        lab = labels.test[idx]
        if not lab.any():
            return
        for m, h in hits.items():
            pred = classifiers[m].predict(decoded[m].cpu().numpy()[lab])
            h[0] += int(np.sum(pred == test.labels[idx][lab]))
            h[1] += int(lab.sum())

    res = evaluate.subset_metrics(loaded.model, test.arrays, test.present, rows, given,
                                  loaded.device, opts.batch_size, opts.elbo_samples,
                                  opts.iwae_k, seed=seed, targets=mods,
                                  chunk_hook=hook if hits else None, experts=experts)
    entry = {'subset': list(given), 'n_samples': int(rows.size), 'probe_accuracy': None,
             'neg_elbo': float(res['neg_elbo'].mean()) if rows.size else None,
             'recon': {m: _error_entry(res['recon_mse'][m], res['base_mse'][m]) for m in given},
             'cross': {m: _error_entry(res['recon_mse'][m], res['base_mse'][m])
                       for m in outside}}
    if opts.iwae_k:
        entry['iwae_nll'] = float(-res['iwae_ll'].mean()) if rows.size else None
        entry['iwae_k'] = int(opts.iwae_k)
    pairs = [{'given': list(given), 'target': m, 'accuracy': correct / total}
             for m, (correct, total) in hits.items() if total]
    return entry, res['mu'], pairs


def _error_entry(errs: np.ndarray, bases: np.ndarray) -> dict:
    from llmos_ros.evaluation.metrics import skill_score
    if errs.size == 0:
        return {'mse': None, 'baseline_mse': None, 'skill': None}
    e, b = float(errs.mean()), float(bases.mean())
    return {'mse': e, 'baseline_mse': b, 'skill': skill_score(e, b)}


def _probe(opts, loaded, train, test, given, rows, mu, labels, train_experts,
           fit_counts) -> float | None:
    """Linear-probe accuracy of subset `given`: fit on training latents, test on `mu`."""
    from llmos_ros.evaluation.metrics import linear_probe
    from llmos_ros.models.evaluate import encode_rows
    trows = fit_rows(np.flatnonzero(np.all([train.present[m] for m in given], axis=0)
                                    & (train.labels != '')), opts.max_fit_samples)
    lab = labels.test[rows]
    if not (trows.size and lab.any()):
        return None
    fit_counts['probe/' + '+'.join(given)] = int(trows.size)
    ztr = encode_rows(loaded.model, train.arrays, trows, given, loaded.device, opts.batch_size,
                      experts=train_experts)
    return linear_probe(ztr, train.labels[trows], mu[lab], test.labels[rows][lab],
                        seed=opts.seed)


def live_check(opts: EvalOptions, loaded: Loaded, test: Replay, experts) -> float:
    """Max |live latent (engine.infer, one sample at a time) - batched encoder| over the test."""
    from llmos_ros.models.evaluate import encode_rows
    if not len(test):
        return 0.0
    own = encode_rows(loaded.model, test.arrays, np.arange(len(test)), (), loaded.device,
                      opts.batch_size, present=test.present, experts=experts)
    return float(np.abs(own - test.means).max())


def _full_rows(test: Replay, mods) -> np.ndarray:
    """Test rows where every present modality is there."""
    return np.flatnonzero(np.all([test.present[m] for m in mods], axis=0))


def _examples(loaded: Loaded, test: Replay, mods, full_rows, n: int = 6) -> dict:
    """Example decodings of up to n full rows, evenly spaced (plots)."""
    from llmos_ros.models.evaluate import example_columns
    if full_rows.size == 0:
        return {}
    idx = full_rows[np.linspace(0, full_rows.size - 1, min(n, full_rows.size)).astype(int)]
    return example_columns(loaded.model, test.arrays, idx, mods, loaded.device)


def temporal_summary(opts: EvalOptions, loaded: Loaded, train: Replay | None, run: TestRun,
                     use_labels: bool) -> dict:
    """Belief and surprise figures (llmos_ros.evaluation.belief_metrics) of the test stream."""
    from llmos_ros.evaluation.belief_metrics import Track, finite, summary
    from llmos_ros.evaluation.metrics import linear_probe
    from llmos_ros.models.evaluate import encode_rows
    test = run.replay
    track = Track.from_states(run.tracker.names, test.means, run.states)
    probe = None
    if use_labels:
        trows = np.flatnonzero(train.labels != '')
        ztr = encode_rows(loaded.model, train.arrays, trows, (), loaded.device, opts.batch_size,
                          present={k: v for k, v in train.present.items()})
        lab = test.labels != ''

        def probe(latents):
            return linear_probe(ztr, train.labels[trows], latents[lab], test.labels[lab],
                                seed=opts.seed)
    return finite(summary(track, test.labels, probe))


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
            'surprise_false_alarm_rate': temporal['surprise_false_alarm_rate'],
            'bag_error': test.bag_error,
            'phase_seconds': {k: round(v, 3) for k, v in phases.seconds.items()}}
