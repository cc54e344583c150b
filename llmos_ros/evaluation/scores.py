"""
The scoring stages of llmos-eval: probes, coherence, per-subset metrics, live check, belief.

Each takes the typed options and results of `options` (the model math itself is in
`llmos_ros.models.evaluate`); `pipeline.evaluate` calls them in order.
"""
from __future__ import annotations

import time

import numpy as np

from llmos_ros.evaluation.options import (
    EvalOptions,
    Labels,
    Loaded,
    Phases,
    SubsetResults,
    TestRun,
)
from llmos_ros.evaluation.replay import Replay


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


def fit_classifiers(opts: EvalOptions, train: Replay, mods, fit_counts: dict,
                    cache_use: dict | None = None) -> dict:
    """
    A coherence classifier per modality on the training bag's labelled inputs.

    With opts.classifier_cache, a classifier fitted before on the same inputs, labels and
    settings comes from the disk cache (`classifier_cache`: the same classifier, bit for bit);
    cache_use[m] says 'cached', 'fitted' (and stored) or 'off'.
    """
    from llmos_ros.evaluation.classifier_cache import ClassifierCache, fit_key
    from llmos_ros.evaluation.metrics import CoherenceClassifier
    cache = ClassifierCache() if opts.classifier_cache else None
    cache_use = {} if cache_use is None else cache_use
    classifiers = {}
    for m in mods:
        rows = fit_rows(np.flatnonzero(train.present[m] & (train.labels != '')),
                        opts.max_fit_samples)
        if rows.size == 0:
            continue
        fit_counts[f'coherence/{m}'] = int(rows.size)
        clf = CoherenceClassifier(method='cnn', epochs=opts.coherence_epochs, seed=opts.seed)
        x, y = train.arrays[m][rows], train.labels[rows]
        if cache is None:
            classifiers[m], cache_use[m] = clf.fit(x, y), 'off'
            continue
        key = fit_key(x, y, clf.settings())
        classifiers[m], cache_use[m] = cache.load(key), 'cached'
        if classifiers[m] is None:
            classifiers[m], cache_use[m] = clf.fit(x, y), 'fitted'
            if not cache.save(key, classifiers[m]):
                opts.note(f'cannot write the classifier cache {cache.root}: fitting each time')
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
    full = full_rows(test, mods)
    started = time.perf_counter()
    # encoders once per row; every subset's posterior is fused from these
    out.test_experts = row_experts(model, test.arrays, device, opts.batch_size)
    train_experts = out.train_experts = (
        row_experts(model, train.arrays, device, opts.batch_size) if labels.use else None)
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
        if full.size and (len(given) == 1 or len(given) == len(mods)):
            out.panels['+'.join(given)] = mu[np.searchsorted(rows, full)]
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


def full_rows(test: Replay, mods) -> np.ndarray:
    """Test rows where every present modality is there."""
    return np.flatnonzero(np.all([test.present[m] for m in mods], axis=0))


def examples(loaded: Loaded, test: Replay, mods, full: np.ndarray, n: int = 6) -> dict:
    """Example decodings of up to n full rows, evenly spaced (plots)."""
    from llmos_ros.models.evaluate import example_columns
    if full.size == 0:
        return {}
    idx = full[np.linspace(0, full.size - 1, min(n, full.size)).astype(int)]
    return example_columns(loaded.model, test.arrays, idx, mods, loaded.device)


def temporal_summary(opts: EvalOptions, loaded: Loaded, train: Replay | None, run: TestRun,
                     use_labels: bool, train_experts, test_experts=None):
    """
    Belief and surprise figures (llmos_ros.evaluation.belief_metrics) of the test stream.

    Returns (figures, the stream's `Track`, for the timeline plot).

    train_experts, test_experts: `row_experts` of the training and test rows
    (`SubsetResults`; train_experts None without labels): the probes' training latents, beliefs
    and per-frame measurements are fused from them, not encoded again.
    """
    from llmos_ros.belief_noise import measurements
    from llmos_ros.evaluation.belief_metrics import Track, finite, summary
    from llmos_ros.evaluation.metrics import linear_probe
    from llmos_ros.models.evaluate import encode_rows
    test = run.replay
    track = Track.from_states(run.tracker.names, test.means, run.states)
    probe = belief_probe = frame_probe = None
    if use_labels:
        trows = np.flatnonzero(train.labels != '')
        ztr = encode_rows(loaded.model, train.arrays, trows, (), loaded.device, opts.batch_size,
                          present=train.present, experts=train_experts)
        lab = test.labels != ''
        beliefs, belief_labels = train_beliefs(opts, loaded, train, train_experts)
        known = belief_labels != ''

        def probe(latents, rows=None):
            use = lab if rows is None else lab & rows
            return linear_probe(ztr, train.labels[trows], latents[use], test.labels[use],
                                seed=opts.seed)

        def belief_probe(means, rows=None):
            use = lab if rows is None else lab & rows
            return linear_probe(beliefs[known], belief_labels[known], means[use],
                                test.labels[use], seed=opts.seed)

        if test_experts is not None:  # single frames: the belief's measurements
            kind = run.tracker.kind  # what the tracker folds in
            frames = np.nan_to_num(measurements(loaded.model, train.arrays, train.present,
                                                experts=train_experts, kind=kind)[0][trows])
            track.measurement = measurements(loaded.model, test.arrays, test.present,
                                             experts=test_experts, kind=kind)[0]

            def frame_probe(means):
                return linear_probe(frames, train.labels[trows], np.nan_to_num(means)[lab],
                                    test.labels[lab], seed=opts.seed)
    figures = summary(track, test.labels, probe, belief_probe, frame_probe)
    cal = run.tracker.calibration  # its own check of the tails it gives (surprise doc)
    figures['surprise_held_out_alarms'] = {n: (cal.held_out.get(n) or None) if cal else None
                                           for n in track.names}
    return finite(figures), track


def train_beliefs(opts: EvalOptions, loaded: Loaded, train: Replay,
                  experts) -> tuple[np.ndarray, np.ndarray]:
    """
    Belief means and labels of the training bag, for the belief probe.

    The belief tracker over the bag's first `max_fit_samples` samples in time order, so the
    belief probe is fitted on beliefs as the test bag's are formed. The tracker is fed the
    expert outputs `experts` (`row_experts` of `train`) that the batched encoders computed,
    which equal the live engine's (`live_check`), so the bag is not replayed through the
    engine a second time. A strided `train` (a bag of more than --max-train-samples samples)
    lacks consecutive samples: then the bag's first `max_fit_samples` samples are read and
    encoded again for this.
    """
    from llmos_ros.evaluation.replay import replay
    from llmos_ros.inference import PerceptionEngine
    from llmos_ros.models.evaluate import row_experts
    engine = PerceptionEngine(loaded.checkpoint, opts.device)
    if train.stride > 1:
        train = replay(opts.train_bag, engine, infer=False, max_samples=opts.max_fit_samples,
                       progress=not opts.quiet, desc='train bag beliefs')
        experts = row_experts(loaded.model, train.arrays, loaded.device, opts.batch_size)
    tracker = tracker_for(opts, loaded, engine, quiet=True)
    n = min(len(train), opts.max_fit_samples)
    means = np.zeros((n, loaded.model.latent_size), np.float64)
    for i in range(n):
        means[i] = tracker.step(row_inference(train, experts, i), surprise=False).belief.mean
    return means, train.labels[:n]


def row_inference(rows: Replay, experts, i: int):
    """
    Row i of a replay as the `Inference` a live `engine.infer` of its sample returns.

    Stamps, inputs and the expert outputs ([M, 1, *] slices of `experts`); no fused latent
    (mean, std None): what `TemporalTracker.step` reads.
    """
    from llmos_ros.inference import Inference
    present = [m for m in rows.names if rows.present[m][i]]
    return Inference(int(rows.stamps[i]), present,
                     {m: int(rows.modality_stamps[m][i]) for m in present}, None, None,
                     {m: rows.arrays[m][i] for m in present},
                     experts=tuple(None if e is None else e[:, i:i + 1] for e in experts))


def tracker_for(opts: EvalOptions, loaded: Loaded, engine, quiet: bool = False):
    """
    A belief/surprise tracker of `engine`'s stream (default BeliefConfig, the calibration).

    The belief uses the checkpoint's learned noise (`llmos_ros.belief_noise`), else the fallback.
    """
    from llmos_ros.belief import FALLBACK_PROCESS_NOISE, BeliefConfig
    from llmos_ros.belief_noise import load_noise
    from llmos_ros.surprise import context_warning, load_calibration
    from llmos_ros.temporal import TemporalTracker
    calibration, why = load_calibration(opts.model, loaded.checkpoint)
    old = context_warning(calibration, loaded.model.names)
    if (calibration is None or old) and not quiet:
        opts.note(old or f'surprise tail probabilities are NaN: {why}')
    noise, why = load_noise(opts.model, loaded.checkpoint)
    if noise is None and not quiet:
        opts.note(f'belief process noise {FALLBACK_PROCESS_NOISE} for every dimension: {why}')
    return TemporalTracker(engine, BeliefConfig(), calibration, noise)
