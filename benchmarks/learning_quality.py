"""
How much the latent learns with a config: train on TRAIN_BAG, evaluate on TEST_BAG, report.

    python benchmarks/learning_quality.py TRAIN_BAG TEST_BAG [--config C] [--out DIR]
        [--fusion F] [--steps N] [--threads T] [--model M]

Runs `llmos-train` (the default config unless --config; modalities inferred from the bag) and then
`llmos-eval --train-bag TRAIN_BAG`, exactly as a user would, and prints per subset of modalities
the linear-probe accuracy, the cross-modal coherence of every pair, training minutes, steps and
why training stopped; the last line is one JSON object. --model skips training and evaluates an
existing checkpoint. Labels come from /episode/label (the probe and coherence need them).
"""
import argparse
import contextlib
import io
import json
from pathlib import Path
import sys
import tempfile
import time

from llmos_ros.evaluation.cli import main as eval_main
from llmos_ros.train import main as train_main


def _run(main, argv) -> tuple[int, dict | None, str]:
    """main(argv) in this process: (exit code, its last-line JSON summary, the rest of stdout)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(argv)
    lines = [line for line in buffer.getvalue().splitlines() if line.strip()]
    summary = json.loads(lines[-1]) if code == 0 and lines else None
    return code, summary, '\n'.join(lines[:-1])


def train(args, model: Path) -> dict:
    argv = ['--bag', args.train_bag, '--out', str(model), '--quiet']
    for flag, value in (('--config', args.config), ('--fusion', args.fusion),
                        ('--steps', args.steps), ('--threads', args.threads)):
        if value:
            argv += [flag, str(value)]
    start = time.perf_counter()
    code, summary, text = _run(train_main, argv)
    if text:
        print(text, flush=True)
    if code:
        raise SystemExit(f'llmos-train failed with exit code {code}')
    summary['wall_minutes'] = (time.perf_counter() - start) / 60.0
    return summary


def evaluate(args, model: Path, out: Path) -> dict:
    argv = ['--bag', args.test_bag, '--model', str(model), '--train-bag', args.train_bag,
            '--out', str(out), '--quiet']
    if args.threads:
        argv += ['--threads', str(args.threads)]
    start = time.perf_counter()
    code, _, text = _run(eval_main, argv)
    if code:
        raise SystemExit(f'llmos-eval failed with exit code {code}: {text}')
    metrics = json.loads((out / 'metrics.json').read_text())
    metrics['eval_minutes'] = (time.perf_counter() - start) / 60.0
    return metrics


def table(metrics: dict) -> tuple[list[str], dict, dict]:
    """Printable lines, probe accuracy per subset, coherence per 'given->target'."""
    probe = {'+'.join(e['subset']): e['probe_accuracy'] for e in metrics['subsets']}
    coherence = {}
    coh = metrics.get('coherence') or {}
    for pair in coh.get('pairs', []):
        coherence[f'{"+".join(pair["given"])}->{pair["target"]}'] = pair['accuracy']
    lines = ['| given | probe acc. |', '| --- | --- |']
    lines += [f'| {k} | {_fmt(v)} |' for k, v in probe.items()]
    lines += ['', '| coherence (given -> generated) | accuracy |', '| --- | --- |']
    lines += [f'| {k} | {_fmt(v)} |' for k, v in coherence.items()]
    real = coh.get('classifier_accuracy') or {}
    if real:
        lines += ['', 'classifiers on real test inputs: '
                  + ', '.join(f'{m} {_fmt(v)}' for m, v in real.items())]
    return lines, probe, coherence


def _fmt(v) -> str:
    return 'n/a' if v is None else f'{v:.3f}'


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('train_bag')
    p.add_argument('test_bag')
    p.add_argument('--config', help='training config YAML (default: the package defaults)')
    p.add_argument('--fusion', help='override model.fusion')
    p.add_argument('--steps', type=int, help='force this many steps (default: until converged)')
    p.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: torch default)')
    p.add_argument('--model', type=Path, help='evaluate this checkpoint instead of training')
    p.add_argument('--out', type=Path, help='folder for the model and the report (default: temp)')
    args = p.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix='llmos_quality_'))
    out.mkdir(parents=True, exist_ok=True)
    model = args.model or out / 'model.pt'
    trained = None if args.model else train(args, model)
    metrics = evaluate(args, model, out / 'report')
    lines, probe, coherence = table(metrics)
    print('\n'.join(lines))
    result = {'train_bag': args.train_bag, 'test_bag': args.test_bag, 'config': args.config,
              'fusion': metrics['meta']['fusion'], 'model': str(model),
              'report': str(out / 'report'), 'probe_accuracy': probe, 'coherence': coherence,
              'classifier_accuracy': (metrics.get('coherence') or {}).get('classifier_accuracy'),
              'eval_minutes': round(metrics['eval_minutes'], 2)}
    if trained:
        print(f'training: {trained["steps"]} steps in {trained["wall_minutes"]:.1f} min '
              f'(optimisation {trained["seconds"] / 60:.1f} min, {trained["samples_per_s"]} '
              f'samples/s); stopped: {trained["stop_reason"]}')
        result.update({'train_minutes': round(trained['wall_minutes'], 2),
                       'steps': trained['steps'], 'best_step': trained['best_step'],
                       'stopped': trained['stopped'], 'stop_reason': trained['stop_reason'],
                       'samples_per_s': trained['samples_per_s']})
    print(json.dumps(result))
    return 0


if __name__ == '__main__':
    sys.exit(main())
