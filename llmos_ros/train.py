"""
llmos-train: rosbags in, a trained multimodal VAE checkpoint out. ROS-free.

    llmos-train --bag BAG [BAG ...] --out model.pt [--config FILE] [--resume]
    torchrun --nproc-per-node 2 -m llmos_ros.train --bag BAG --out model.pt   (DDP)

Modalities, shapes and rates come from the bag's topics unless the config names them. The last
`train.val_fraction` of each bag's time line is held out for validation. By default
(`train.steps: 0`) training runs until the validation loss stops improving (`train.patience`
validations without a `train.min_delta` relative gain) or `train.max_minutes` are spent, then keeps
the best validation weights and says why it stopped; `--steps N` forces N steps. The learning
rate is constant unless `train.lr_schedule: cosine` (`learning_rate`). Losses go to
`<log-dir>/losses.csv` and `<log-dir>/loss_curve.png`; the checkpoint is rewritten every
`train.checkpoint_every` steps and at the end, and `--resume` continues from it on the same loss
curve (batches and noise are a function of the seed and the step).
"""
from __future__ import annotations

import argparse
import csv
from dataclasses import dataclass
import json
import math
import os
from pathlib import Path
import sys
import time

import numpy as np
import torch

from llmos_ros import kinds
from llmos_ros.checkpoint import load_checkpoint, model_id_of, save_checkpoint
from llmos_ros.config import Config, apply_overrides, load_training_config
from llmos_ros.core.dataset import (
    SampleTable,
    build_samples,
    fit_stats,
    infer_modalities,
    normalize,
    split_by_time,
)
from llmos_ros.errors import ConfigError, LlmosError
from llmos_ros.models.mvae import MultimodalVAE
from llmos_ros.outputs import check_output_dir, check_output_file


@dataclass
class Dist:
    """Process-group facts; a single process is rank 0 of 1."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog='llmos-train', description=__doc__.split('\n\n')[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--bag', nargs='+', required=True,
                   help='rosbag2 folders or files (MCAP/sqlite3)')
    p.add_argument('--out', required=True, help='checkpoint to write, e.g. model.pt')
    p.add_argument('--config', help='YAML config (sections modalities, sync, model, train)')
    p.add_argument('--resume', action='store_true', help='continue from the checkpoint at --out')
    p.add_argument('--steps', type=int, help='override train.steps')
    p.add_argument('--batch-size', type=int, help='override train.batch_size')
    p.add_argument('--fusion', help='override model.fusion: poe, moe, mopoe, mmvae_plus')
    p.add_argument('--device', help="override train.device: 'cpu', 'cuda', 'cuda:N'")
    p.add_argument('--seed', type=int, help='override train.seed')
    p.add_argument('--log-dir', help='losses.csv and loss_curve.png (default: beside --out)')
    p.add_argument('--export', help='also export for deployment (.onnx or TorchScript .ts)')
    p.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: torch default)')
    p.add_argument('--quiet', action='store_true', help='no progress bars')
    return p.parse_args(argv)


def make_config(args) -> tuple[Config, dict]:
    cfg, overrides = load_training_config(args.config)
    for value, section, key in ((args.steps, 'train', 'steps'),
                                (args.batch_size, 'train', 'batch_size'),
                                (args.fusion, 'model', 'fusion'),
                                (args.device, 'train', 'device'), (args.seed, 'train', 'seed')):
        if value is not None:
            setattr(getattr(cfg, section), key, value)
    return Config.from_dict(cfg.to_dict()), overrides  # from_dict validates the values


def load_data(bags, cfg: Config, stats: dict | None, progress: bool):
    """(train, val, stats): paired, preprocessed, normalised with the training split's stats."""
    from llmos_ros.core.bags import bag_topics, norm_topic
    held = sorted({norm_topic(t) for b in bags for t in bag_topics(b)})
    missing = sorted({norm_topic(m.topic) for m in cfg.modalities.values()} - set(held))
    if len(missing) == len(cfg.modalities):
        raise LlmosError(f'none of the configured topics ({", ".join(missing)}) is in the bags '
                         f'{[str(b) for b in bags]}; they hold: {", ".join(held) or "nothing"}')
    raw = build_samples(bags, cfg, stats=None, progress=progress)
    if len(raw) == 0:
        raise LlmosError(f'no samples could be formed from {bags} (drops: {raw.drops})'
                         + (f'; topics not in the bags: {", ".join(missing)}' if missing else ''))
    check_enough_samples(len(raw), raw.drops, bags)
    train, val = split_by_time(raw, cfg.train.val_fraction)
    if len(train) == 0:
        raise LlmosError('no training samples left after the validation split')
    stats = stats or fit_stats(train)
    train, val = normalize(train, stats), normalize(val, stats) if len(val) else None
    train.drops = dict(raw.drops)
    return train, val, stats


def time_ordered(table: SampleTable) -> tuple[SampleTable, np.ndarray]:
    """`table`'s rows sorted by (bag, stamp), and the bag of each row (the runs in time)."""
    bags = (table.bag_index if table.bag_index is not None
            else np.zeros(len(table), np.int32))
    order = np.lexsort((table.stamps, bags))
    return table.subset(order), bags[order]


def batch_tensors(table: SampleTable, rows: np.ndarray, device,
                  augment: tuple[Config, np.random.Generator] | None = None
                  ) -> tuple[dict, dict]:
    """
    The tensors of `rows`.

    With `augment` = (cfg, rng), each modality's kind changes its batch as
    `train.augment_shift` says (`Kind.augment`: training batches only).
    """
    arrays = {n: a[rows] for n, a in table.arrays.items()}
    if augment is not None and augment[0].train.augment_shift > 0:
        cfg, rng = augment
        for name, mod in cfg.modalities.items():
            if name in arrays:
                arrays[name] = kinds.of(mod).augment(mod, arrays[name], rng,
                                                     float(cfg.train.augment_shift))
    inputs = {n: torch.from_numpy(np.ascontiguousarray(a)).to(device)
              for n, a in arrays.items()}
    present = {n: torch.from_numpy(p[rows]).to(device) for n, p in table.present.items()}
    return inputs, present


def batch_rows(n: int, batch: int, seed: int, step: int, rank: int) -> np.ndarray:
    """The rows of one step's batch: a function of (seed, step, rank) only, so resume is exact."""
    rng = np.random.default_rng([seed, step, rank])
    return rng.choice(n, size=min(batch, n), replace=False)


@torch.no_grad()
def validate(model: MultimodalVAE, table: SampleTable, cfg: Config, device) -> dict:
    """Mean validation loss at the full KL weight, in fixed batches with fixed noise."""
    model.eval()
    state = torch.random.get_rng_state()
    torch.manual_seed(cfg.train.seed)
    total, count, logs = 0.0, 0, {}
    for start in range(0, len(table), cfg.train.batch_size):
        rows = np.arange(start, min(start + cfg.train.batch_size, len(table)))
        loss, parts = model.loss(*batch_tensors(table, rows, device), step=1 << 30)
        total += float(loss) * rows.size
        count += rows.size
        for key, value in parts.items():
            logs[key] = logs.get(key, 0.0) + float(value) * rows.size
    torch.random.set_rng_state(state)
    model.train()
    return {'loss': total / max(count, 1), **{k: v / max(count, 1) for k, v in logs.items()}}


STOP_REASONS = {
    'steps': 'the fixed step count (train.steps or --steps) was reached',
    'plateau': 'the validation loss did not improve by {min_delta:g} (relative) in {patience} '
               'validations ({window} steps); best {best_loss:.6g} at step {best_step}',
    'time': 'the time budget of train.max_minutes = {max_minutes:g} min ran out; best validation '
            'loss {best_loss} at step {best_step}',
}


class EarlyStopping:
    """
    When to stop training, and the best weights so far.

    train.steps > 0: exactly that many steps. train.steps == 0: validate every val_every steps
    and stop once `patience` validations in a row failed to improve the best loss by
    `min_delta` (relative to its magnitude), or when `max_minutes` of optimisation are spent;
    the best validation weights are restored at the end. Its state travels in the checkpoint,
    so `--resume` stops where an uninterrupted run would (the time budget counts the minutes
    of every run).
    """

    def __init__(self, tcfg, has_val: bool):
        self.tcfg = tcfg
        self.fixed = int(tcfg.steps) > 0
        self.has_val = has_val
        self.best_loss: float | None = None
        self.best_step: int | None = None
        self.bad = 0
        self.best_state: dict | None = None
        self.spent_s = 0.0  # optimisation seconds of earlier runs (resume)
        self._t0: float | None = None

    def start(self) -> None:
        """The optimisation starts (or resumes) now."""
        self._t0 = time.perf_counter()

    def elapsed_s(self) -> float:
        """Optimisation seconds of this and earlier runs."""
        return self.spent_s + (time.perf_counter() - self._t0 if self._t0 is not None else 0.0)

    def progress(self, step: int) -> float:
        """How far the run is, 0 to 1: steps of train.steps, or minutes of the time budget."""
        if self.fixed:
            return step / float(self.tcfg.steps)
        return self.elapsed_s() / (60.0 * float(self.tcfg.max_minutes))

    def describe(self) -> str:
        if self.fixed:
            return f'{self.tcfg.steps} steps'
        return (f'until validation stops improving (patience {self.tcfg.patience} x '
                f'{self.tcfg.val_every} steps) or {self.tcfg.max_minutes:g} min'
                + ('' if self.has_val else '; no validation split: the time budget decides'))

    def stop_reason(self, step: int) -> str | None:
        if self.fixed:
            return 'steps' if step >= self.tcfg.steps else None
        if self.has_val and self.bad >= max(1, int(self.tcfg.patience)):
            return 'plateau'
        if self.elapsed_s() >= 60.0 * float(self.tcfg.max_minutes):
            return 'time'
        return None

    def update(self, step: int, loss: float, model) -> None:
        """One validation result."""
        if self.best_loss is None or loss < self.best_loss - self.tcfg.min_delta * abs(
                self.best_loss):
            self.best_loss, self.best_step, self.bad = float(loss), int(step), 0
            if not self.fixed:
                self.best_state = {k: v.detach().to('cpu', copy=True)
                                   for k, v in model.state_dict().items()}
        else:
            self.bad += 1

    def postfix(self) -> str:
        return 'n/a' if self.best_loss is None else f'{self.best_loss:.4g}@{self.best_step}'

    def restore_best(self, model) -> None:
        """Load the best validation weights (early stopping only)."""
        if self.best_state is not None:
            model.load_state_dict(self.best_state)

    def explain(self) -> dict:
        return {'min_delta': self.tcfg.min_delta, 'patience': self.tcfg.patience,
                'window': self.tcfg.patience * self.tcfg.val_every,
                'best_loss': self.best_loss if self.best_loss is not None else 'n/a',
                'best_step': self.best_step, 'max_minutes': self.tcfg.max_minutes}

    def state(self, with_weights: bool = True) -> dict:
        out = {'best_loss': self.best_loss, 'best_step': self.best_step, 'bad': self.bad,
               'spent_s': self.elapsed_s()}
        if with_weights and self.best_state is not None:
            out['best_state'] = self.best_state
        return out

    def load(self, state: dict | None) -> None:
        if state:
            self.best_loss, self.best_step = state.get('best_loss'), state.get('best_step')
            self.bad = int(state.get('bad', 0))
            self.spent_s = float(state.get('spent_s', 0.0))
            self.best_state = state.get('best_state')


def learning_rate(tcfg, progress: float) -> float:
    """
    The learning rate at `progress` (0 to 1, `EarlyStopping.progress`) of the run.

    `constant` (default): `lr` throughout; `cosine`: half a cosine from `lr` down to
    `lr * lr_final`, so the last part of any budget trains at a low rate (on avmnist it reached
    the constant rate's validation loss with a weaker audio latent, so it is not the default).
    With `train.steps` the run's length is that step count, so a resumed run gets the rates of
    an uninterrupted one; with the time budget it is `train.max_minutes` of
    optimisation (resumed runs count earlier minutes), and a run stopped early by the plateau
    rule simply ends before the rate is low.
    """
    lr = float(tcfg.lr)
    if tcfg.lr_schedule == 'constant':
        return lr
    final = lr * float(tcfg.lr_final)
    p = min(max(float(progress), 0.0), 1.0)
    return final + (lr - final) * 0.5 * (1.0 + math.cos(math.pi * p))


def _agree(stop: bool, progress: float, dist_info: Dist, device) -> tuple[bool, float]:
    """
    (stop on any rank, the furthest rank's progress), the same on every rank.

    All ranks stop at the same step and step with the same learning rate (the time budget runs
    on each rank's clock).
    """
    if dist_info.world <= 1:
        return stop, progress
    import torch.distributed as dist
    t = torch.tensor([1.0 if stop else 0.0, float(progress)], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t[0].item() > 0), float(t[1].item())


def setup_distributed(device: str) -> Dist:
    if int(os.environ.get('WORLD_SIZE', '1')) <= 1:
        return Dist()
    import torch.distributed as dist
    backend = 'nccl' if device.startswith('cuda') else 'gloo'
    dist.init_process_group(backend)
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get('LOCAL_RANK', '0')))


MIN_SAMPLES = 16  # fewer paired samples than this is degenerate data, not a training set


def check_outputs(args) -> None:
    """--out, --log-dir and --export must be writable: checked before anything is read."""
    out = check_output_file(args.out, '--out')
    check_output_dir(args.log_dir or out.with_name(out.stem + '_logs'), '--log-dir')
    if args.export:
        check_output_file(args.export, '--export')


def drop_summary(drops: dict) -> str:
    """'modality/reason: count, ...' largest first, or 'none'."""
    items = sorted(drops.items(), key=lambda kv: (-kv[1], kv[0]))
    return ', '.join(f'{k}: {v}' for k, v in items) or 'none'


def check_enough_samples(n: int, drops: dict, bags) -> None:
    """Refuse degenerate data (e.g. every camera stamp zero: one sample) with the drops."""
    if n < MIN_SAMPLES:
        raise LlmosError(f'only {n} sample(s) could be formed from {[str(b) for b in bags]} '
                         f'(at least {MIN_SAMPLES} needed); inputs dropped: '
                         f'{drop_summary(drops)}')


def train(args) -> dict:
    cfg, overrides = make_config(args)
    check_outputs(args)
    out = Path(args.out)
    if args.threads:
        torch.set_num_threads(args.threads)
    dist_info = setup_distributed(cfg.train.device)
    device = torch.device(cfg.train.device)
    if device.type == 'cuda' and dist_info.world > 1:
        device = torch.device('cuda', dist_info.local_rank)
    if device.type == 'cpu':
        torch.use_deterministic_algorithms(True)
    progress = dist_info.main and not args.quiet

    resumed, stats = None, None
    if args.resume:
        resumed = load_checkpoint(out, cfg if cfg.modalities else None)
        if not cfg.modalities:  # the checkpoint's inputs, this run's train settings
            saved = resumed.cfg.to_dict()
            saved['train'] = cfg.to_dict()['train']
            # model settings given explicitly (--fusion, the YAML's model section) must fit
            saved['model'].update(_explicit_model_settings(args, cfg))
            cfg = Config.from_dict(saved)
            load_checkpoint(out, cfg)  # CheckpointError naming a mismatched field
        stats = resumed.stats
    elif not cfg.modalities:
        cfg.modalities = infer_modalities(args.bag)
        apply_overrides(cfg.modalities, overrides)
    train_t, val_t, stats = load_data(args.bag, cfg, stats, progress)

    torch.manual_seed(cfg.train.seed)
    model = MultimodalVAE(cfg).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    step, history = 0, []
    if resumed is not None:
        # a final checkpoint holds the best weights; training goes on from the last ones
        model.load_state_dict(resumed.extra.get('last_state') or resumed.model.state_dict())
        optimizer.load_state_dict(resumed.extra['optimizer'])
        step, history = int(resumed.extra['step']), list(resumed.extra.get('history', []))
    wrapped = model
    if dist_info.world > 1:
        from torch.nn.parallel import DistributedDataParallel
        wrapped = DistributedDataParallel(model, device_ids=[device.index]
                                          if device.type == 'cuda' else None)

    log_dir = Path(args.log_dir) if args.log_dir else out.with_name(out.stem + '_logs')

    stopper = EarlyStopping(cfg.train, has_val=val_t is not None)
    if resumed is not None:
        stopper.load(resumed.extra.get('early_stopping'))

    def checkpoint(final: bool = False, reason: str | None = None, last_state=None):
        if dist_info.main:
            extra = {'step': step, 'optimizer': optimizer.state_dict(), 'history': history,
                     'bags': [str(b) for b in args.bag],
                     'samples': {'train': len(train_t), 'val': len(val_t or [])},
                     'early_stopping': stopper.state(with_weights=True)}
            if final:
                extra['stopped'] = reason
                if val_t is not None:
                    extra.update(calibrations(model, cfg, train_t, val_t, device))
            if last_state is not None:
                extra['last_state'] = last_state
            save_checkpoint(out, model, cfg, stats, extra=extra)
            write_logs(log_dir, history)

    if dist_info.main:
        print(f'[llmos-train] {len(train_t)} training / {len(val_t or [])} validation samples; '
              f'modalities: ' + ', '.join(f'{n} {m.kind} {m.shape()}'
                                          for n, m in cfg.modalities.items())
              + f'; fusion {cfg.model.fusion}; {dist_info.world} process(es) on {device}; '
              + stopper.describe(), flush=True)
        print(f'[llmos-train] inputs dropped, by reason: {drop_summary(train_t.drops)}',
              flush=True)
    from tqdm import tqdm
    bar = tqdm(total=cfg.train.steps or None, initial=step, disable=not progress, unit='step',
               desc='train', mininterval=0.5)
    model.train()
    started, first_step = time.perf_counter(), step
    stopper.start()
    while True:
        reason = stopper.stop_reason(step)
        stop, progress_now = _agree(reason is not None, stopper.progress(step), dist_info,
                                    device)
        if stop:
            reason = reason or 'time'  # another rank ran out of time first
            break
        rows = batch_rows(len(train_t), cfg.train.batch_size, cfg.train.seed, step, dist_info.rank)
        torch.manual_seed(cfg.train.seed * 1_000_003 + step * dist_info.world + dist_info.rank)
        augment = (cfg, np.random.default_rng([cfg.train.seed, step, dist_info.rank, 1]))
        loss, parts = wrapped(*batch_tensors(train_t, rows, device, augment), step)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise LlmosError(f'the loss became {value} at step {step}; lower train.lr')
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        lr = learning_rate(cfg.train, progress_now)
        for group in optimizer.param_groups:
            group['lr'] = lr
        optimizer.step()
        step += 1
        row = {'step': step, 'split': 'train', 'loss': value, 'lr': lr,
               **{k: float(v) for k, v in parts.items()}}
        history.append(row)
        bar.update(1)
        if val_t is not None and (step % cfg.train.val_every == 0 or step == cfg.train.steps):
            val = validate(model, val_t, cfg, device)
            history.append({'step': step, 'split': 'val', **val})
            stopper.update(step, val['loss'], model)
        bar.set_postfix(loss=f'{value:.4g}', val=stopper.postfix(), refresh=False)
        if step % cfg.train.checkpoint_every == 0:
            checkpoint()
    bar.close()
    elapsed = time.perf_counter() - started
    last_state = None
    if stopper.best_state is not None:  # the checkpoint gets the best weights, resume the last
        last_state = {k: v.detach().to('cpu', copy=True) for k, v in model.state_dict().items()}
        stopper.restore_best(model)
    checkpoint(final=True, reason=reason, last_state=last_state)
    summary = {'out': str(out), 'steps': step, 'seconds': round(elapsed, 3),
               'samples_per_s': round((step - first_step) * cfg.train.batch_size
                                      * dist_info.world / max(elapsed, 1e-9), 1),
               'final_train_loss': _last(history, 'train'),
               'final_val_loss': _last(history, 'val'),
               'best_val_loss': stopper.best_loss, 'best_step': stopper.best_step,
               'stopped': reason, 'stop_reason': STOP_REASONS[reason].format(
                   **stopper.explain()),
               'world_size': dist_info.world, 'drops': dict(train_t.drops)}
    if dist_info.main:
        print(f'[llmos-train] stopped after {step} steps ({elapsed / 60:.1f} min): '
              f'{summary["stop_reason"]}', flush=True)
    if args.export and dist_info.main:
        from llmos_ros.export import check_export, export_model
        export_model(model, args.export)
        summary['export'] = args.export
        summary['export_max_abs_diff'] = check_export(model, args.export)
    if dist_info.world > 1:
        import torch.distributed as dist
        dist.barrier()  # rank 0 may still be calibrating and writing: the ranks leave together
        dist.destroy_process_group()
    return summary


def calibrations(model: MultimodalVAE, cfg: Config, train_t: SampleTable, val_t: SampleTable,
                 device) -> dict:
    """
    What the live path learns from held-out data, of the final weights on the validation split.

    extra['surprise']: the surprise calibration (llmos_ros.surprise; its tails on the validation
    split, its dimension weights on the training split); extra['belief']: the belief
    noise (llmos_ros.belief_noise), left out (with a note) when the split has no two samples
    close enough in time. The validation samples are held out from the optimisation, so they are
    what clean data the model has not fitted looks like; both name the model id the checkpoint
    will have.
    """
    from llmos_ros.belief_noise import learn
    from llmos_ros.surprise import calibrate, held_out_line
    model_id = model_id_of({k: v.detach().cpu() for k, v in model.state_dict().items()},
                           cfg.to_dict())
    was_training = model.training
    model.eval()
    try:
        table, groups = time_ordered(val_t)
        surprise = calibrate(model, model_id, table.arrays, table.present, table.stamps, groups,
                             weight_data=(train_t.arrays, train_t.present))
        print(f'[llmos-train] {held_out_line(surprise, model.names)}', flush=True)
        out = {'surprise': surprise.to_dict()}
        try:
            out['belief'] = learn(model, model_id, table.stamps, table.arrays, table.present,
                                  groups, device).to_dict()
        except LlmosError as exc:
            print(f'[llmos-train] no belief noise learned, the belief uses the fallback: {exc}',
                  flush=True)
    finally:
        model.train(was_training)
    return out


def _explicit_model_settings(args, cfg: Config) -> dict:
    """The model settings this run names itself: the --config file's model keys, --fusion."""
    keys = set()
    if args.config:
        import yaml
        data = yaml.safe_load(Path(args.config).read_text()) or {}
        keys |= set((data.get('model') or {}) if isinstance(data, dict) else {})
    if args.fusion is not None:
        keys.add('fusion')
    return {k: getattr(cfg.model, k) for k in keys}


def _last(history, split):
    values = [h['loss'] for h in history if h['split'] == split]
    return round(values[-1], 6) if values else None


def write_logs(log_dir: Path, history: list[dict]) -> None:
    """losses.csv (one row per train step and validation) and loss_curve.png."""
    log_dir.mkdir(parents=True, exist_ok=True)
    keys = ['step', 'split', 'loss'] + sorted({k for h in history for k in h} -
                                              {'step', 'split', 'loss'})
    with open(log_dir / 'losses.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    for split, style in (('train', '-'), ('val', 'o-')):
        pts = [(h['step'], h['loss']) for h in history if h['split'] == split]
        if pts:
            x, y = zip(*pts)
            if split == 'train' and len(y) > 20:  # running mean for readability
                k = max(1, len(y) // 50)
                y = np.convolve(y, np.ones(k) / k, mode='valid')
                x = x[k - 1:]
            ax.plot(x, y, style, label=split, lw=1)
    ax.set_xlabel('step')
    ax.set_ylabel('loss (negative bound per sample)')
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(log_dir / 'loss_curve.png', dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        summary = train(args)
    except (LlmosError, ConfigError) as exc:
        print(f'llmos-train: error: {exc}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('llmos-train: interrupted; the last periodic checkpoint is kept', file=sys.stderr)
        return 130
    if int(os.environ.get('RANK', '0')) == 0:
        print(json.dumps(summary))
    return 0


if __name__ == '__main__':
    sys.exit(main())
