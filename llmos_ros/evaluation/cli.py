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
import sys

from llmos_ros.errors import LlmosError
from llmos_ros.evaluation.options import MAX_FIT_SAMPLES, EvalOptions
from llmos_ros.evaluation.pipeline import evaluate
from llmos_ros.outputs import check_output_dir


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
    p.add_argument('--no-classifier-cache', action='store_true',
                   help='fit the coherence classifiers anew instead of taking those fitted '
                        'before on the same training inputs from the cache ($LLMOS_CACHE_DIR, '
                        'else ~/.cache/llmos_ros)')
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


def options(args: argparse.Namespace) -> EvalOptions:
    """The evaluation options of parsed arguments (with --bag and --model)."""
    return EvalOptions(
        bag=args.bag, model=args.model, out=args.out, train_bag=args.train_bag,
        iwae_k=args.iwae_k, elbo_samples=args.elbo_samples, record=args.record,
        frame_id=args.frame_id, compare=args.compare[0] if args.compare else None,
        max_samples=args.max_samples, max_train_samples=args.max_train_samples,
        max_fit_samples=args.max_fit_samples, coherence_epochs=args.coherence_epochs,
        classifier_cache=not args.no_classifier_cache,
        partial=args.partial, batch_size=args.batch_size, seed=args.seed, device=args.device,
        threads=args.threads, quiet=args.quiet)


def compare(args) -> dict:
    from llmos_ros.evaluation.report import compare_reports
    check_output_dir(args.out, '--out')
    paths = compare_reports(args.compare[0], args.compare[1], args.out)
    return {'out': str(args.out), 'compare': str(paths['markdown']), 'plot': str(paths['plot'])}


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        summary = evaluate(options(args)) if args.bag else compare(args)
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
