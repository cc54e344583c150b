"""
llmos-eval: how good and how fast a trained model is on a bag, without ROS.

    llmos-eval --bag TEST_BAG --model model.pt --out DIR [--train-bag TRAIN_BAG] [--iwae-k K]
               [--record] [--compare OTHER_REPORT_DIR] [--max-samples N] [--device cpu]
    llmos-eval --compare A_DIR B_DIR --out DIR

The test bag is replayed deterministically through the live node's code (pairing,
preprocessing, model: llmos_ros.inference.PerceptionEngine), every message accounted for
(processed, or dropped with a counted reason). For every non-empty subset of the modalities
present it reports reconstruction and cross-modal prediction error with skill scores, the
negative ELBO and, with --iwae-k, the importance-weighted likelihood; with labels
(/episode/label) and --train-bag, linear-probe accuracy and cross-modal coherence; throughput and
latency of the live path. DIR receives metrics.json, report.md and PNG plots; --record also writes
DIR/recorded, a bag with the inputs plus /llmos/latent and /llmos/prediction/<modality>.

A truncated or corrupt bag is an error (exit 2) saying how far it was read; with --partial the
messages before the cut are evaluated and the error is kept in the report (meta.bag_error). User
errors print one line and exit with 2; the last line on stdout is a JSON summary.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
import sys
import time

import numpy as np

from llmos_ros.errors import LlmosError
from llmos_ros.evaluation.belief_metrics import DEFINITIONS as BELIEF_DEFINITIONS
from llmos_ros.outputs import check_output_dir

# probes and coherence classifiers are fit on at most this many training samples: their cost
# stays bounded however long the training bag is
MAX_FIT_SAMPLES = 20000  # probe and coherence classifier fits (the report states the count)

ELBO_DEFINITION = (
    'Negative evidence lower bound per sample in nats, on the normalised inputs of the subset: '
    '-E_q[log p(x_S|z)] + KL(q || N(0, I)), averaged over the samples in which every modality '
    'of S is present. q is the fused posterior of S as the diagonal Gaussian the model '
    'publishes (MultimodalVAE.encode: the exact product for poe, the moment-matched mixture '
    'otherwise, over the full latent); p(x_S|z) = prod_{m in S} N(x_m | decoder mean, '
    'exp(log_scale)^2) without the training likelihood_scale weights; KL is exact; the '
    'expectation uses L seeded samples of z (meta.elbo_samples).')
IWAE_DEFINITION = (
    'Importance-weighted negative log-likelihood per sample in nats: -log (1/K sum_k '
    'p(x_S|z_k) N(z_k; 0, I) / q(z_k)), z_k ~ q, with q and p(x_S|z) as for neg_elbo, averaged '
    'over the samples (an upper bound on -log p(x_S) that tightens as K grows).')
EXTRA_DEFINITIONS = {
    'neg_elbo': ELBO_DEFINITION,
    'iwae_nll': IWAE_DEFINITION,
    'probe_accuracy': "Linear probe on the latent mean (full latent) of the subset's fused "
                      "posterior: each dimension standardised with the training latents' mean "
                      'and std, multinomial logistic regression (L2, C=1, lbfgs) fit on the '
                      "training bag's labelled samples in which every modality of the subset is "
                      'present (at most meta.max_fit_samples of them, evenly spaced in time; '
                      'the count used is meta.fit_samples), encoded from the same subset; the '
                      'fraction of labelled test samples (every '
                      'modality of the subset present) whose label it predicts. The label of a '
                      'sample is the most recent /episode/label stamped <= the sample stamp.',
    'coherence': 'Cross-modal coherence: for each modality, a label classifier '
                 "(CoherenceClassifier) trained on the training bag's real normalised inputs "
                 'of that modality (at most meta.max_fit_samples labelled samples, evenly '
                 'spaced in time; the count used is meta.fit_samples) classifies the modality '
                 'decoded from the latent mean of the '
                 'given subset; the fraction of labelled test samples (every modality of the '
                 'subset present) classified as their true label.',
    'latency_ms': 'Per-sample latency of the live path in milliseconds: PerceptionEngine.infer '
                  '(preprocessing of the paired window + fusion by the model), as the node '
                  'runs it for every sample; p50, p90, p99 (linear interpolation), max and mean.',
    'wall_s': 'Wall-clock seconds of the replay: reading and decoding the bag, pairing, '
              'preprocessing and the live model call per sample (recording excluded).',
    'phase_seconds': 'meta.phase_seconds: wall-clock seconds of each stage of llmos-eval '
                     '(read_train_bag, replay_test_bag, coherence_classifiers, subset_metrics, '
                     'probes, live_check, examples; the stdout summary adds report: writing '
                     'the files and plots). Imports and start-up are outside every stage.',
    'data_span_s': 'Last - first header stamp of the model-topic messages read, seconds.',
    'drops': 'Messages read but not used, by reason: unused_topic (no model modality, not a '
             'label); <modality>/<reason> for a synchroniser rejection (stamp_backwards, '
             'stamp_repeated, stamp_jump, off_timeline), a preprocessing failure of every '
             'window holding the message '
             '(InputError reason, e.g. size, encoding, nan), an unreadable message type (type), '
             'a message in no sample window (unpaired: a newer frame was chosen or it was too '
             'old), or one read after --max-samples samples (after_max_samples).',
    'counts': 'messages: messages read; processed: sensor messages in the window of at least one '
              'evaluated sample where their modality was usable, plus /episode/label messages; '
              'dropped: the rest (messages == processed + dropped); samples: sample sets formed '
              'by the pairing; samples_evaluated: those with at least one usable modality; '
              'samples_no_modality: those without; labels: label messages.',
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog='llmos-eval', description=__doc__.strip().split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.strip().split('\n\n', 1)[1])
    p.add_argument('--bag', help='test bag (rosbag2 folder, .mcap or .db3)')
    p.add_argument('--model', help='checkpoint written by llmos-train')
    p.add_argument('--out', required=True, help='report folder (created)')
    p.add_argument('--train-bag', help='training bag: fits the linear probe and the coherence '
                   'classifiers (needs /episode/label)')
    p.add_argument('--iwae-k', type=int, help='also report the IWAE likelihood with K samples')
    p.add_argument('--elbo-samples', type=int, default=1,
                   help='samples of z per sample for the ELBO expectation (default 1)')
    p.add_argument('--record', action='store_true',
                   help='write DIR/recorded: the inputs plus /llmos/latent and '
                   '/llmos/prediction/<modality>')
    p.add_argument('--frame-id', default='llmos', help='frame_id of recorded outputs')
    p.add_argument('--compare', nargs='+', metavar='REPORT_DIR',
                   help='with --bag: one report to compare the new one with; without: two')
    p.add_argument('--max-samples', type=int, help='evaluate at most N test samples')
    p.add_argument('--max-train-samples', type=int, default=20000,
                   help='subsample the training bag to about this many samples (default 20000)')
    p.add_argument('--max-fit-samples', type=int, default=MAX_FIT_SAMPLES,
                   help='fit each probe and coherence classifier on at most this many labelled '
                        f'training samples, evenly spaced in time (default {MAX_FIT_SAMPLES}; '
                        'the counts used are in the report)')
    p.add_argument('--coherence-epochs', type=int, default=8,
                   help='training passes of each coherence classifier (default 8)')
    p.add_argument('--partial', action='store_true',
                   help='evaluate a truncated / corrupt bag up to the cut instead of failing')
    p.add_argument('--batch-size', type=int, default=256, help='batch of the metric model calls')
    p.add_argument('--seed', type=int, default=0, help='seed of the sampled metrics')
    p.add_argument('--device', default='cpu', help="'cpu', 'cuda', 'cuda:N'")
    p.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: default)')
    p.add_argument('--quiet', action='store_true', help='no progress bars or notes')
    args = p.parse_args(argv)
    if args.bag is None and args.model is None:
        if not args.compare or len(args.compare) != 2:
            p.error('give --bag and --model, or --compare A_DIR B_DIR')
    else:
        if args.bag is None or args.model is None:
            p.error('--bag and --model go together')
        if args.compare and len(args.compare) != 1:
            p.error('with --bag, --compare takes one report folder')
    if args.iwae_k is not None and args.iwae_k < 1:
        p.error('--iwae-k must be >= 1')
    if args.max_samples is not None and args.max_samples < 1:
        p.error('--max-samples must be >= 1')
    if min(args.elbo_samples, args.batch_size, args.max_train_samples,
           args.max_fit_samples) < 1:
        p.error('--elbo-samples, --batch-size, --max-train-samples and --max-fit-samples '
                'must be >= 1')
    return args


def _note(args, text: str) -> None:
    if not args.quiet:
        print(f'[llmos-eval] {text}', file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- model calls
def _batch(model, arrays, idx, given, device):
    """Inputs of rows idx with only the modalities in `given` marked present."""
    import torch
    inputs, present = {}, {}
    for name in model.names:
        inputs[name] = torch.from_numpy(np.ascontiguousarray(arrays[name][idx])).to(device)
        present[name] = torch.full((len(idx),), name in given, dtype=torch.bool, device=device)
    return inputs, present


def row_experts(model, arrays, device, batch_size: int = 256) -> tuple:
    """
    Expert outputs (MultimodalVAE.experts) of every row of `arrays`, batched: [M, N, *].

    Experts do not depend on which modalities are given, so every subset's posterior of a row
    is a closed-form fusion of these (`fused_rows`): the encoders run once per row, not once
    per subset. Rows where a modality is absent hold that expert's output for zeros, which the
    subset masks leave out.
    """
    import torch
    n = len(next(iter(arrays.values()))) if arrays else 0
    parts = []
    with torch.no_grad():
        for start in range(0, n, batch_size):
            idx = np.arange(start, min(n, start + batch_size))
            inputs, _ = _batch(model, arrays, idx, model.names, device)
            parts.append(model.experts(*model.prepare(inputs, None)))
    if not parts:
        inputs, _ = _batch(model, arrays, np.zeros(0, int), model.names, device)
        return model.experts(*model.prepare(inputs, None))
    return tuple(None if p[0] is None else torch.cat(p, 1) for p in zip(*parts))


def fused_rows(model, experts, idx, mask):
    """Full-latent (mu, logvar) of rows idx from their experts; mask bool [M, len(idx)]."""
    sel = tuple(None if e is None else e[:, idx] for e in experts)
    return model.fuse_experts(sel, mask)[1:]


def _given_mask(model, given, n, device):
    import torch
    return torch.tensor([name in given for name in model.names],
                        device=device).reshape(-1, 1).expand(-1, n)


def _decode(model, name, z):
    """
    (mean [N, *shape], log_scale) of decoder `name` for full latents z [N, latent].

    Runs in passes of DECODE_ROWS rows: the same values as one pass, faster on CPU (the conv
    activations stay cache-sized).
    """
    import torch

    from llmos_ros.models.objectives import DECODE_ROWS
    parts = [model.decode_modality(name, model.decoder_input(c, name))[0]
             for c in z.split(DECODE_ROWS)]
    mean = torch.cat(parts, 0) if parts else model.decode_modality(
        name, model.decoder_input(z, name))[0]
    return mean, model.decoders[name].log_scale()


def _log_lik(model, inputs, z, given):
    """Log p(x_S | z): Gaussian decoder log-densities summed over m in S; z [B, D] -> [B]."""
    from llmos_ros.models.objectives import gaussian_log_prob
    total = 0.0
    for name in given:
        mean, log_scale = _decode(model, name, z)
        x = inputs[name]
        total = total + gaussian_log_prob(x, mean, log_scale, event_dims=x.dim() - 1)
    return total


def subset_metrics(model, arrays, present, rows, given, device, batch_size: int = 256,
                   elbo_samples: int = 1, iwae_k: int | None = None, seed: int = 0,
                   targets=None, chunk_hook=None, experts=None) -> dict:
    """
    Batched metrics of one subset `given` on the sample rows `rows` (all of `given` present).

    experts: `row_experts(model, arrays)`, to fuse the subset's posterior from them instead of
    running the encoders again (same values).

    Returns {'mu': [n, D], 'recon_mse' / 'base_mse': {mod: per-sample arrays over the samples
    where mod is present}, 'neg_elbo': [n], 'iwae_ll': [n] or None}. Noise: one
    torch.Generator seeded with `seed`; per chunk of batch_size rows, elbo_samples draws
    randn(B, D) for the ELBO, then iwae_k draws for the IWAE. chunk_hook(idx, decoded) sees
    every chunk's decoded means (coherence).
    """
    import torch

    from llmos_ros.evaluation.metrics import iwae_log_likelihood, mean_baseline_mse, mse
    from llmos_ros.models.objectives import (
        diag_normal_log_prob,
        kl_std_normal,
        std_normal_log_prob,
    )
    targets = list(model.names if targets is None else targets)
    gen = torch.Generator().manual_seed(int(seed))
    mus, elbo, iwae = [], [], []
    err = {m: [] for m in targets}
    base = {m: [] for m in targets}
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            idx = rows[start:start + batch_size]
            inputs, mask = _batch(model, arrays, idx, given, device)
            if experts is None:
                mu, logvar = model.encode(inputs, mask)
            else:
                mu, logvar = fused_rows(model, experts, idx,
                                        _given_mask(model, given, len(idx), device))
            mus.append(mu.cpu().numpy())
            decoded = {n: _decode(model, n, mu)[0] for n in targets}
            for m in targets:
                keep = present[m][idx]
                if keep.any():
                    pred = decoded[m].cpu().numpy()[keep]
                    target = arrays[m][idx][keep]
                    err[m].append(mse(pred, target))
                    base[m].append(mean_baseline_mse(target, 0.0))
            if chunk_hook is not None:
                chunk_hook(idx, decoded)
            std = torch.exp(0.5 * logvar)
            ll = torch.zeros(len(idx), dtype=torch.float64)
            for _ in range(elbo_samples):
                eps = torch.randn(mu.shape, generator=gen).to(device)
                ll += _log_lik(model, inputs, mu + std * eps, given).double().cpu()
            kl = kl_std_normal(mu, logvar).double().cpu()
            elbo.append((kl - ll / elbo_samples).numpy())
            if iwae_k:
                lws = []
                for _ in range(iwae_k):
                    z = mu + std * torch.randn(mu.shape, generator=gen).to(device)
                    lw = (_log_lik(model, inputs, z, given) + std_normal_log_prob(z)
                          - diag_normal_log_prob(z, mu, logvar))
                    lws.append(lw.double().cpu())
                iwae.append(iwae_log_likelihood(torch.stack(lws, 0)).numpy())
    def cat(parts):
        return np.concatenate(parts) if parts else np.zeros(0)

    return {'mu': np.concatenate(mus) if mus else np.zeros((0, model.latent_size), np.float32),
            'recon_mse': {m: cat(err[m]) for m in targets},
            'base_mse': {m: cat(base[m]) for m in targets},
            'neg_elbo': cat(elbo), 'iwae_ll': cat(iwae) if iwae_k else None}


def encode_rows(model, arrays, rows, given, device, batch_size: int = 256,
                present=None, experts=None) -> np.ndarray:
    """
    Latent means [n, D] of rows encoded from `given` (or each row's own `present` set).

    experts: `row_experts(model, arrays)`, to fuse from them instead of encoding again.
    """
    import torch
    out = []
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            idx = rows[start:start + batch_size]
            if experts is not None:
                mask = (_given_mask(model, given, len(idx), device) if present is None else
                        torch.from_numpy(np.stack([present[n][idx] for n in model.names])
                                         ).to(device))
                out.append(fused_rows(model, experts, idx, mask)[0].cpu().numpy())
                continue
            inputs, mask = _batch(model, arrays, idx, given, device)
            if present is not None:
                mask = {n: torch.from_numpy(present[n][idx]).to(device) for n in model.names}
            out.append(model.encode(inputs, mask)[0].cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.latent_size), np.float32)


def _error_entry(errs: np.ndarray, bases: np.ndarray) -> dict:
    from llmos_ros.evaluation.metrics import skill_score
    if errs.size == 0:
        return {'mse': None, 'baseline_mse': None, 'skill': None}
    e, b = float(errs.mean()), float(bases.mean())
    return {'mse': e, 'baseline_mse': b, 'skill': skill_score(e, b)}


# ----------------------------------------------------------------------------- evaluation
def _train_stride(bag, engine, max_train: int) -> int:
    from llmos_ros.core.bags import bag_info, norm_topic
    try:
        info = bag_info(bag)
    except LlmosError:
        return 1
    ref = engine.synchronizer.reference
    topic = norm_topic(engine.cfg.modalities[ref].topic)
    n_ref = next((c for t, c in info['counts'].items() if norm_topic(t) == topic), 0)
    return max(1, math.ceil(n_ref / max_train)) if n_ref > max_train else 1


def fit_rows(rows: np.ndarray, cap: int) -> np.ndarray:
    """At most `cap` of the (time-ordered) rows, evenly spaced; all of them when fewer."""
    if rows.size <= cap:
        return rows
    return rows[np.linspace(0, rows.size - 1, cap).round().astype(int)]


def _fit_classifiers(args, train, mods, fit_counts: dict):
    from llmos_ros.evaluation.metrics import CoherenceClassifier
    classifiers = {}
    for m in mods:
        rows = fit_rows(np.flatnonzero(train.present[m] & (train.labels != '')),
                        args.max_fit_samples)
        if rows.size == 0:
            continue
        fit_counts[f'coherence/{m}'] = int(rows.size)
        classifiers[m] = CoherenceClassifier(method='cnn', epochs=args.coherence_epochs,
                                             seed=args.seed).fit(train.arrays[m][rows],
                                                                 train.labels[rows])
    return classifiers


def check_outputs(args) -> Path:
    """--out must be a writable folder and --record's bag new: before anything is read."""
    out = check_output_dir(args.out, '--out')
    if getattr(args, 'record', False) and (out / 'recorded').exists():
        raise LlmosError(f'{out / "recorded"} exists already; remove it or choose another --out')
    return out


def _labels_agree(args, train_labels, test_labels) -> bool:
    """
    Whether probe and coherence make sense: the test labels share classes with the training's.

    None shared: a note, no probe. Some test labels unseen in training: a note naming them (their
    samples count as misclassified).
    """
    seen = set(train_labels[train_labels != '']) if len(train_labels) else set()
    test = set(test_labels[test_labels != '']) if len(test_labels) else set()
    unseen = sorted(test - seen)
    if not test & seen:
        _note(args, f"the test bag's labels {sorted(test)[:5]} share none with the training "
                    f"bag's {sorted(seen)[:5]}: no probe or coherence")
        return False
    if unseen:
        _note(args, f'labels of the test bag not in the training bag (counted as misclassified):'
                    f' {unseen[:10]}')
    return True


def evaluate(args) -> dict:
    """Replay, metrics, report (and recording, comparison); returns the JSON summary."""
    import torch

    from llmos_ros.checkpoint import load_checkpoint
    from llmos_ros.evaluation.metrics import latency_percentiles, linear_probe, subsets, throughput
    from llmos_ros.evaluation.replay import check_topics, latent_state_msg, replay
    from llmos_ros.evaluation.report import compare_reports, write_report
    from llmos_ros.inference import PerceptionEngine

    if args.threads:
        torch.set_num_threads(args.threads)
    out = check_outputs(args)
    loaded = load_checkpoint(args.model, device=args.device)
    cfg, model = loaded.cfg, loaded.model
    device = torch.device(args.device)
    progress = not args.quiet
    if not args.partial:
        check_topics(args.bag, cfg)  # clear errors before any work
    if args.train_bag:
        check_topics(args.train_bag, cfg)

    # ---- training bag: real normalised inputs + labels (pairing/preprocessing of the engine)
    phases: dict[str, float] = {}  # wall seconds per stage (meta.phase_seconds)
    mark = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        phases[name] = phases.get(name, 0.0) + now - mark
        mark = now

    train = None
    if args.train_bag:
        engine_t = PerceptionEngine(loaded, args.device)
        stride = _train_stride(args.train_bag, engine_t, args.max_train_samples)
        _note(args, f'reading the training bag {args.train_bag}'
              + (f' (every {stride}th sample)' if stride > 1 else ''))
        train = replay(args.train_bag, engine_t, infer=False, stride=stride, progress=progress,
                       desc='train bag')
        if len(train) == 0:
            raise LlmosError(f'no usable sample in the training bag {args.train_bag} '
                             f'(drops: {train.drops})')
    phase('read_train_bag')

    # ---- test bag through the live path
    engine = PerceptionEngine(loaded, args.device)
    writer, recorded = None, None
    n_pred = 0
    if args.record:
        from llmos_ros.core.bags import BagWriter
        recorded = out / 'recorded'
        writer = BagWriter(recorded, storage='mcap')
        writer.open()

    def on_message(topic, mtype, stamp, msg):
        writer.write(topic, mtype, stamp, msg)

    tracker, states = _tracker(args, loaded, engine), []

    def on_result(result):
        nonlocal n_pred
        states.append(tracker.step(result))
        if writer is None:
            return
        _record_temporal(writer, tracker, states[-1], engine.latent_fields(result, args.frame_id),
                         args.frame_id)
        writer.write('/llmos/latent', 'llmos_ros/msg/LatentState', result.stamp_ns,
                     latent_state_msg(engine.latent_fields(result, args.frame_id)))
        engine.predict(result)
        for name, frame in engine.prediction_frames(result, args.frame_id).items():
            writer.write_frame(f'/llmos/prediction/{name}', frame)
            n_pred += 1

    try:
        test = replay(args.bag, engine, max_samples=args.max_samples, partial=args.partial,
                      progress=progress, on_message=on_message if writer else None,
                      on_result=on_result, desc='test bag')
    finally:
        if writer is not None:
            writer.close()
    if test.bag_error:
        print(f'llmos-eval: warning: {test.bag_error}; evaluating the '
              f'{test.counts["messages"]} messages read before it', file=sys.stderr)
    if test.counts['samples'] == 0:
        ref = engine.synchronizer.reference
        raise LlmosError(f'no sample could be formed from {args.bag}: samples are formed at '
                         f'each message of the reference modality {ref!r} (topic '
                         f'{cfg.modalities[ref].topic}), and none of its messages was usable '
                         f'(messages dropped: {test.drops or "none"}). '
                         + '; '.join(test.first_errors.values()))
    if len(test) == 0:
        reasons = ', '.join(f'{k}: {v}' for k, v in test.drops.items()) or 'none'
        first = '; '.join(test.first_errors.values())
        raise LlmosError(f'no sample of {args.bag} could be evaluated (the model and the bag do '
                         f'not fit?). Messages dropped: {reasons}.'
                         + (f' First input errors: {first}' if first else ''))
    for m, err in test.first_errors.items():
        if not test.present[m].any():
            _note(args, f'modality {m} was unusable in every sample: {err}')

    names = list(model.names)
    mods = [m for m in names if test.present[m].any()]
    labelled = test.labels != ''
    use_labels = train is not None and labelled.any() and (train.labels != '').any()
    if train is not None and not use_labels:
        which = ' and '.join(name for name, table in (('test', test), ('training', train))
                             if not (table.labels != '').any())
        _note(args, f'no /episode/label in the {which} bag: no probe or coherence')
    elif train is None and labelled.any():
        _note(args, 'the test bag has labels: give --train-bag for probe accuracy and coherence')

    phase('replay_test_bag')
    if use_labels:
        use_labels = _labels_agree(args, train.labels, test.labels)
    fit_counts: dict[str, int] = {}
    classifiers = _fit_classifiers(args, train, mods, fit_counts) if use_labels else {}
    class_acc = {}
    for m, clf in classifiers.items():
        rows = np.flatnonzero(test.present[m] & labelled)
        class_acc[m] = clf.accuracy(test.arrays[m][rows], test.labels[rows]) if rows.size \
            else None

    phase('coherence_classifiers')
    full_rows = np.flatnonzero(np.all([test.present[m] for m in mods], axis=0))
    entries, pairs, panels = [], [], {}
    started = time.perf_counter()
    # encoders once per row; every subset's posterior is fused from these
    test_experts = row_experts(model, test.arrays, device, args.batch_size)
    train_experts = (row_experts(model, train.arrays, device, args.batch_size) if use_labels
                     else None)
    all_subsets = subsets(mods)
    for si, given in enumerate(all_subsets):
        rows = np.flatnonzero(np.all([test.present[m] for m in given], axis=0))
        outside = [m for m in mods if m not in given]
        hits = {m: [0, 0] for m in outside if m in classifiers}

        def hook(idx, decoded, hits=hits):
            lab = labelled[idx]
            if not lab.any():
                return
            for m, h in hits.items():
                pred = classifiers[m].predict(decoded[m].cpu().numpy()[lab])
                h[0] += int(np.sum(pred == test.labels[idx][lab]))
                h[1] += int(lab.sum())

        res = subset_metrics(model, test.arrays, test.present, rows, given, device,
                             args.batch_size, args.elbo_samples, args.iwae_k,
                             seed=args.seed + si, targets=mods,
                             chunk_hook=hook if hits else None, experts=test_experts)
        phase('subset_metrics')
        probe = None
        if use_labels:
            trows = fit_rows(np.flatnonzero(np.all([train.present[m] for m in given], axis=0)
                                            & (train.labels != '')), args.max_fit_samples)
            lab = labelled[rows]
            if trows.size and lab.any():
                fit_counts['probe/' + '+'.join(given)] = int(trows.size)
                ztr = encode_rows(model, train.arrays, trows, given, device, args.batch_size,
                                  experts=train_experts)
                probe = linear_probe(ztr, train.labels[trows], res['mu'][lab],
                                     test.labels[rows][lab], seed=args.seed)
        phase('probes')
        entry = {'subset': list(given), 'n_samples': int(rows.size), 'probe_accuracy': probe,
                 'neg_elbo': float(res['neg_elbo'].mean()) if rows.size else None,
                 'recon': {m: _error_entry(res['recon_mse'][m], res['base_mse'][m])
                           for m in given},
                 'cross': {m: _error_entry(res['recon_mse'][m], res['base_mse'][m])
                           for m in outside}}
        if args.iwae_k:
            entry['iwae_nll'] = float(-res['iwae_ll'].mean()) if rows.size else None
            entry['iwae_k'] = int(args.iwae_k)
        entries.append(entry)
        for m, (correct, total) in hits.items():
            if total:
                pairs.append({'given': list(given), 'target': m, 'accuracy': correct / total})
        if full_rows.size and (len(given) == 1 or len(given) == len(mods)):
            pos = np.searchsorted(rows, full_rows)
            panels['+'.join(given)] = res['mu'][pos]
    metric_s = time.perf_counter() - started

    # the live latent (engine.infer, one sample at a time) against the batched encoder
    own = encode_rows(model, test.arrays, np.arange(len(test)), (), device, args.batch_size,
                      present=test.present, experts=test_experts)
    live_diff = float(np.abs(own - test.means).max()) if len(test) else 0.0
    phase('live_check')

    if not panels:
        panels = {'live latent (present modalities)': test.means}
        plot_labels = test.labels
    else:
        plot_labels = test.labels[full_rows]
    examples = _examples(model, test, mods, full_rows, device)

    temporal = _temporal_summary(args, model, device, train, test, tracker, states, use_labels)
    tp = throughput(len(test), test.wall_s, test.data_span_s)
    tp.update({'n_samples': len(test), 'wall_s': test.wall_s, 'data_span_s': test.data_span_s})
    results = {
        'model_id': loaded.model_id, 'bag': str(args.bag),
        'train_bag': str(args.train_bag) if args.train_bag else None,
        'modalities': mods, 'kinds': {m: cfg.modalities[m].kind for m in mods},
        'subsets': entries,
        'coherence': {'classifier_accuracy': class_acc, 'pairs': pairs} if classifiers
        else None,
        'belief_surprise': temporal,
        'throughput': tp, 'latency_ms': latency_percentiles(test.latency_s),
        'counts': test.counts, 'drops': test.drops,
        'meta': {'model': str(args.model), 'model_modalities': names,
                 'fusion': cfg.model.fusion, 'latent_size': int(model.latent_size),
                 'latent_layout': model.latent_layout(), 'device': str(device),
                 'seed': args.seed, 'elbo_samples': args.elbo_samples, 'iwae_k': args.iwae_k,
                 'batch_size': args.batch_size, 'metric_seconds': metric_s,
                 'max_samples': args.max_samples, 'engine_drops': test.engine_drops,
                 'unused_topics': test.unused_topics, 'first_input_errors': test.first_errors,
                 'live_vs_batched_max_abs_diff': live_diff, 'bag_error': test.bag_error,
                 'train_samples': len(train) if train is not None else None,
                 'max_fit_samples': args.max_fit_samples, 'fit_samples': fit_counts,
                 'train_drops': train.drops if train is not None else None,
                 'recorded': str(recorded) if recorded else None,
                 'recorded_predictions': n_pred if recorded else None,
                 'skill_baseline': 'training mean = 0 in normalised space'},
        'definitions': {**EXTRA_DEFINITIONS, **BELIEF_DEFINITIONS},
    }
    phase('examples')
    results['meta']['phase_seconds'] = dict(phases)
    paths = write_report(out, results, latents=panels,
                         labels=plot_labels if labelled.any() else None, examples=examples)
    phase('report')  # in the stdout summary only (metrics.json was written before)
    summary = {'out': str(out), 'metrics': str(paths['json']),
               'report': str(paths['markdown']),
               'plots': sorted(str(p) for k, p in paths.items() if str(p).endswith('.png')),
               'recorded': str(recorded) if recorded else None,
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
               'phase_seconds': {k: round(v, 3) for k, v in phases.items()}}
    if args.compare:
        cmp = compare_reports(args.compare[0], out, out)
        summary['compare'] = str(cmp['markdown'])
    return summary


def _tracker(args, loaded, engine):
    """The belief/surprise tracker of the test stream (default BeliefConfig, calibration)."""
    from llmos_ros.belief import BeliefConfig
    from llmos_ros.surprise import load_calibration
    from llmos_ros.temporal import TemporalTracker
    calibration, why = load_calibration(args.model, loaded)
    if calibration is None:
        _note(args, f'surprise tail probabilities are NaN: {why}')
    return TemporalTracker(engine, BeliefConfig(), calibration)


def _record_temporal(writer, tracker, state, latent: dict, frame_id: str) -> None:
    """Write llmos/belief and llmos/surprise of one sample to the --record bag."""
    from llmos_ros.core.messages import LATENT_STATE, SURPRISE
    from llmos_ros.evaluation.replay import latent_state_msg, surprise_msg
    writer.write('/llmos/belief', LATENT_STATE, state.stamp_ns,
                 latent_state_msg(tracker.belief_fields(state, latent)))
    writer.write('/llmos/surprise', SURPRISE, state.stamp_ns,
                 surprise_msg(tracker.surprise_fields(state, frame_id)))


def _temporal_summary(args, model, device, train, test, tracker, states, use_labels) -> dict:
    """Belief and surprise figures (llmos_ros.evaluation.belief_metrics) of the test stream."""
    from llmos_ros.evaluation.belief_metrics import Track, finite, summary
    from llmos_ros.evaluation.metrics import linear_probe
    track = Track.from_states(tracker.names, test.means, states)
    probe = None
    if use_labels:
        trows = np.flatnonzero(train.labels != '')
        ztr = encode_rows(model, train.arrays, trows, (), device, args.batch_size,
                          present={k: v for k, v in train.present.items()})
        lab = test.labels != ''

        def probe(latents):
            return linear_probe(ztr, train.labels[trows], latents[lab], test.labels[lab],
                                seed=args.seed)
    return finite(summary(track, test.labels, probe))


def _examples(model, test, mods, full_rows, device, n: int = 6) -> dict:
    """{modality: {column: [n, *shape]}}: input, reconstruction, predictions from the others."""
    import torch

    from llmos_ros.evaluation.metrics import subsets
    if full_rows.size == 0:
        return {}
    idx = full_rows[np.linspace(0, full_rows.size - 1, min(n, full_rows.size)).astype(int)]
    columns = {m: {'input': test.arrays[m][idx]} for m in mods}
    with torch.no_grad():
        for given in subsets(mods):
            if len(given) not in (1, len(mods) - 1, len(mods)):
                continue
            inputs, mask = _batch(model, test.arrays, idx, given, device)
            mu, _ = model.encode(inputs, mask)
            for m in mods:
                if len(given) == len(mods):
                    title = 'reconstruction (all given)'
                elif m in given:
                    continue
                else:
                    title = 'from ' + '+'.join(given)
                dec = model.decode_modality(m, model.decoder_input(mu, m))[0]
                columns[m][title] = dec.cpu().numpy()
    return columns


def compare(args) -> dict:
    from llmos_ros.evaluation.report import compare_reports
    check_output_dir(args.out, '--out')
    paths = compare_reports(args.compare[0], args.compare[1], args.out)
    return {'out': str(args.out), 'compare': str(paths['markdown']), 'plot': str(paths['plot'])}


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        summary = evaluate(args) if args.bag else compare(args)
    except LlmosError as exc:
        print(f'llmos-eval: error: {exc}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('llmos-eval: interrupted', file=sys.stderr)
        return 130
    print(json.dumps(summary))
    return 0


if __name__ == '__main__':
    sys.exit(main())
