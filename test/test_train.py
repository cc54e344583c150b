"""llmos-train end to end on bags the tests write: CLI, every fusion, resume, determinism, DDP."""
import csv
import json
import math
from pathlib import Path
import subprocess
import sys

from helpers import python_cmd, python_env
import pytest
import torch
import yaml

from llmos_ros.belief_noise import load_noise
from llmos_ros.checkpoint import load_checkpoint
from llmos_ros.config import TrainConfig
from llmos_ros.sim.make_bag import write_bag
from llmos_ros.surprise import load_calibration
from llmos_ros.train import learning_rate
from llmos_ros.train import main as train_main

# A small network and batch so each step takes milliseconds; the pipeline is the real one.
SMALL = {'model': {'hidden': 32, 'latent_dim': 8, 'private_dim': 4, 'k_samples': 2,
                   'warmup_steps': 4},
         'train': {'batch_size': 8, 'checkpoint_every': 3, 'val_every': 3, 'steps': 6}}


@pytest.fixture(scope='module')
def bag(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp('train') / 'sim_bag'
    write_bag(path, 2.0, seed=1, progress=False)
    return path


@pytest.fixture(scope='module')
def config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp('train_cfg') / 'small.yaml'
    path.write_text(yaml.safe_dump(SMALL))
    return path


pytestmark = pytest.mark.usefixtures('restore_torch_globals')  # train() sets torch globals


def run(capsys, *args) -> tuple[int, dict | None, str]:
    """main() in this process: (exit code, the JSON summary or None, stderr)."""
    code = train_main([*map(str, args), '--quiet', '--threads', '1'])
    out, err = capsys.readouterr()
    lines = [line for line in out.splitlines() if line.strip()]
    summary = json.loads(lines[-1]) if code == 0 else None
    assert 'Traceback' not in err
    return code, summary, err


def losses(log_dir: Path, split: str = 'train') -> list[tuple[int, float]]:
    with open(log_dir / 'losses.csv', newline='') as f:
        return [(int(r['step']), float(r['loss'])) for r in csv.DictReader(f)
                if r['split'] == split]


def test_cli_trains_and_the_checkpoint_loads(bag, config, tmp_path):
    out = tmp_path / 'model.pt'
    proc = subprocess.run(python_cmd('llmos_ros.train', '--bag', str(bag), '--out', str(out),
                                     '--config', str(config), '--steps', '4', '--quiet',
                                     '--threads', '1'),
                          env=python_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary['steps'] == 4 and summary['world_size'] == 1
    assert math.isfinite(summary['final_train_loss']) and math.isfinite(summary['final_val_loss'])
    loaded = load_checkpoint(out)
    assert set(loaded.cfg.modalities) == {'camera', 'audio', 'tactile'}
    assert loaded.cfg.model.hidden == 32 and loaded.extra['step'] == 4
    logs = tmp_path / 'model_logs'
    assert [s for s, _ in losses(logs)] == [1, 2, 3, 4]
    assert [s for s, _ in losses(logs, 'val')] == [3, 4]
    assert (logs / 'loss_curve.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    # the surprise is calibrated on the held-out validation split, for this very model
    calibration, why = load_calibration(out, loaded)
    assert calibration is not None, why
    val = loaded.extra['samples']['val']
    assert all(0 < calibration.counts[name] <= val for name in loaded.model.names)
    assert all(calibration.scores[name].size > 0 for name in loaded.model.names)
    # and the belief noise is learned there, per latent dimension, for this very model
    noise, why = load_noise(out, loaded)
    assert noise is not None, why
    assert noise.process_noise.shape == noise.expert_scale.shape == (loaded.model.latent_size,)
    assert noise.pairs > 0


@pytest.mark.parametrize('fusion', ['poe', 'moe', 'mopoe', 'mmvae_plus'])
def test_every_fusion_trains(fusion, bag, config, tmp_path, capsys):
    out = tmp_path / f'{fusion}.pt'
    code, summary, err = run(capsys, '--bag', bag, '--out', out, '--config', config,
                             '--fusion', fusion, '--steps', '2')
    assert code == 0, err
    assert all(math.isfinite(v) for _, v in losses(tmp_path / f'{fusion}_logs'))
    assert math.isfinite(summary['final_train_loss'])
    assert load_checkpoint(out).cfg.model.fusion == fusion


def test_resume_continues_the_same_loss_curve(bag, config, tmp_path, capsys):
    whole = tmp_path / 'whole.pt'
    assert run(capsys, '--bag', bag, '--out', whole, '--config', config, '--steps', '6')[0] == 0
    parts = tmp_path / 'parts.pt'
    assert run(capsys, '--bag', bag, '--out', parts, '--config', config, '--steps', '3')[0] == 0
    assert load_checkpoint(parts).extra['step'] == 3
    code, summary, err = run(capsys, '--bag', bag, '--out', parts, '--config', config,
                             '--resume', '--steps', '6')
    assert code == 0, err
    assert summary['steps'] == 6
    for split in ('train', 'val'):
        a, b = losses(tmp_path / 'whole_logs', split), losses(tmp_path / 'parts_logs', split)
        assert [s for s, _ in a] == [s for s, _ in b]
        assert [v for _, v in b] == pytest.approx([v for _, v in a], rel=1e-5, abs=1e-5)
    assert len(losses(tmp_path / 'parts_logs')) == 6


def test_two_identical_runs_give_identical_losses(bag, config, tmp_path, capsys):
    for name in ('a', 'b'):
        assert run(capsys, '--bag', bag, '--out', tmp_path / f'{name}.pt', '--config', config,
                   '--steps', '3', '--seed', '7')[0] == 0
    assert losses(tmp_path / 'a_logs') == losses(tmp_path / 'b_logs')
    assert losses(tmp_path / 'a_logs', 'val') == losses(tmp_path / 'b_logs', 'val')
    a, b = load_checkpoint(tmp_path / 'a.pt'), load_checkpoint(tmp_path / 'b.pt')
    assert a.model_id == b.model_id


def test_torchrun_two_processes_train_and_rank_0_writes(bag, config, tmp_path):
    out_dir = tmp_path / 'ddp'
    out = out_dir / 'model.pt'
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc-per-node', '2',
           '-m', 'llmos_ros.train', '--bag', str(bag), '--out', str(out), '--config', str(config),
           '--steps', '3', '--quiet', '--threads', '1']
    proc = subprocess.run(cmd, env=python_env(OMP_NUM_THREADS='1'), capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith('{')]
    assert len(summaries) == 1  # rank 0 only
    assert summaries[0]['world_size'] == 2 and summaries[0]['steps'] == 3
    loaded = load_checkpoint(out)
    assert loaded.extra['step'] == 3
    assert sorted(p.name for p in out_dir.iterdir()) == ['model.pt', 'model_logs']
    assert sorted(p.name for p in (out_dir / 'model_logs').iterdir()) == ['loss_curve.png',
                                                                          'losses.csv']
    assert len(losses(out_dir / 'model_logs')) == 3


def test_mismatched_config_on_resume_is_exit_2_naming_the_field(bag, config, tmp_path, capsys):
    out = tmp_path / 'm.pt'
    assert run(capsys, '--bag', bag, '--out', out, '--config', config, '--steps', '2')[0] == 0
    code, _, err = run(capsys, '--bag', bag, '--out', out, '--config', config, '--resume',
                       '--fusion', 'moe', '--steps', '3')
    assert code == 2
    assert 'model.fusion' in err and "'mopoe'" in err and "'moe'" in err
    # Modalities named in the config: a different image size does not fit the saved model.
    saved = load_checkpoint(out).cfg.to_dict()
    saved['modalities']['camera']['height'] = 16
    other = tmp_path / 'other.yaml'
    other.write_text(yaml.safe_dump({**SMALL, 'modalities': saved['modalities']}, sort_keys=False))
    code, _, err = run(capsys, '--bag', bag, '--out', out, '--config', other, '--resume')
    assert code == 2
    assert 'modalities.camera.shape' in err
    assert load_checkpoint(out).extra['step'] == 2  # the checkpoint is untouched


def test_bags_without_the_configured_topics_and_missing_bags_are_exit_2(
        bag, config, tmp_path, capsys):
    labels_only = tmp_path / 'labels_only'
    write_bag(labels_only, 0.5, without=('camera', 'audio', 'tactile'), progress=False)
    code, _, err = run(capsys, '--bag', labels_only, '--out', tmp_path / 'x.pt')
    assert code == 2 and 'no sensor topics' in err
    mods = {name: {'name': name, 'kind': kind, 'topic': f'/elsewhere/{name}', 'msg_type': mtype,
                   **extra}
            for name, kind, mtype, extra in (
                ('camera', 'image', 'sensor_msgs/msg/Image', {'channels': 3}),
                ('tactile', 'taxels', 'llmos_ros/msg/TactileArray', {'rows': 8, 'cols': 8}))}
    elsewhere = tmp_path / 'elsewhere.yaml'
    elsewhere.write_text(yaml.safe_dump({**SMALL, 'modalities': mods}))
    code, _, err = run(capsys, '--bag', bag, '--out', tmp_path / 'y.pt', '--config', elsewhere)
    assert code == 2
    assert 'none of the configured topics' in err and '/elsewhere/camera' in err
    assert '/camera/image_raw' in err  # what the bag does hold
    code, _, err = run(capsys, '--bag', tmp_path / 'missing_bag', '--out', tmp_path / 'z.pt')
    assert code == 2 and 'bag not found' in err
    assert not (tmp_path / 'x.pt').exists() and not (tmp_path / 'y.pt').exists()


def _early(tmp_path, name, **train) -> Path:
    """The small config, trained until validation stops improving (train.steps 0)."""
    cfg = {'model': dict(SMALL['model']),
           'train': {'batch_size': 8, 'checkpoint_every': 2, 'val_every': 2, 'steps': 0,
                     'patience': 2, 'max_minutes': 5.0, 'val_fraction': 0.3, **train}}
    path = tmp_path / f'{name}.yaml'
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_early_stopping_stops_on_a_plateau_and_keeps_the_best_weights(bag, tmp_path, capsys):
    # min_delta 100: after the first validation nothing counts as better, so it stops after
    # 1 + patience validations (6 steps) and keeps the weights of step 2
    config = _early(tmp_path, 'plateau', min_delta=100.0)
    code, summary, err = run(capsys, '--bag', bag, '--out', tmp_path / 'es.pt', '--config', config)
    assert code == 0, err
    assert summary['stopped'] == 'plateau' and summary['steps'] == 6
    assert summary['best_step'] == 2 and 'did not improve' in summary['stop_reason']
    early = load_checkpoint(tmp_path / 'es.pt')
    assert early.extra['stopped'] == 'plateau' and early.extra['step'] == 6
    code, _, err = run(capsys, '--bag', bag, '--out', tmp_path / 'two.pt', '--config', config,
                       '--steps', '2')
    assert code == 0, err
    two = load_checkpoint(tmp_path / 'two.pt').model.state_dict()
    assert all(torch.equal(v, two[k]) for k, v in early.model.state_dict().items())


def test_time_budget_stops_and_resume_reproduces_an_uninterrupted_run(bag, tmp_path, capsys):
    whole = _early(tmp_path, 'whole', min_delta=0.5)
    code, ref, err = run(capsys, '--bag', bag, '--out', tmp_path / 'whole.pt', '--config', whole)
    assert code == 0, err
    assert ref['stopped'] == 'plateau'
    # a run whose time budget runs out at once, then resumed with the budget of the first
    code, cut, err = run(capsys, '--bag', bag, '--out', tmp_path / 'cut.pt',
                         '--config', _early(tmp_path, 'cut', min_delta=0.5, max_minutes=1e-4))
    assert code == 0, err
    assert cut['stopped'] == 'time' and cut['steps'] < ref['steps']
    code, resumed, err = run(capsys, '--bag', bag, '--out', tmp_path / 'cut.pt', '--config', whole,
                             '--resume')
    assert code == 0, err
    assert (resumed['stopped'], resumed['steps'], resumed['best_step']) == (
        'plateau', ref['steps'], ref['best_step'])
    for split in ('train', 'val'):
        a, b = losses(tmp_path / 'whole_logs', split), losses(tmp_path / 'cut_logs', split)
        assert [s for s, _ in a] == [s for s, _ in b]
        assert [v for _, v in b] == pytest.approx([v for _, v in a], rel=1e-5, abs=1e-5)
    a = load_checkpoint(tmp_path / 'cut.pt').model.state_dict()
    b = load_checkpoint(tmp_path / 'whole.pt').model.state_dict()
    assert all(torch.allclose(v, b[k], rtol=1e-5, atol=1e-6) for k, v in a.items())


def test_cosine_schedule_steps_with_the_closed_form_rates_and_ends_at_lr_final(bag, tmp_path,
                                                                              capsys):
    cfg = {**SMALL, 'train': {**SMALL['train'], 'lr_schedule': 'cosine'}}
    config = tmp_path / 'cosine.yaml'
    config.write_text(yaml.safe_dump(cfg))
    code, summary, err = run(capsys, '--bag', bag, '--out', tmp_path / 'cos.pt',
                             '--config', config, '--steps', '6')
    assert code == 0, err
    with open(tmp_path / 'cos_logs' / 'losses.csv') as f:
        rates = [float(r['lr']) for r in csv.DictReader(f) if r['split'] == 'train']
    lr = TrainConfig().lr
    # step k (0-based) trains at progress k / 6: lr at the first step, falling to lr_final
    expected = [lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * k / 6))) for k in range(6)]
    assert rates == pytest.approx(expected, rel=1e-12)
    assert rates[0] == lr and all(a > b for a, b in zip(rates, rates[1:]))


@pytest.mark.parametrize('schedule, final, progress, expected', [
    ('cosine', 0.1, 0.0, 1e-3), ('cosine', 0.1, 0.5, 0.55e-3), ('cosine', 0.1, 1.0, 1e-4),
    ('cosine', 0.1, 1.7, 1e-4), ('cosine', 0.0, 1.0, 0.0), ('constant', 0.1, 0.9, 1e-3)])
def test_learning_rate_closed_form(schedule, final, progress, expected):
    tcfg = TrainConfig(lr=1e-3, lr_schedule=schedule, lr_final=final)
    assert learning_rate(tcfg, progress) == pytest.approx(expected, rel=1e-12, abs=1e-18)


def test_training_batches_shift_the_images_only_and_depend_on_the_step_alone(bag):
    """`train.augment_shift`: image modalities move, the others are the table's rows as read."""
    import numpy as np

    from llmos_ros.config import Config
    from llmos_ros.core.dataset import infer_modalities
    from llmos_ros.train import batch_tensors, load_data
    cfg = Config()
    cfg.modalities = infer_modalities([bag])
    cfg.train.augment_shift = 0.0625
    table, _, _ = load_data([bag], cfg, None, progress=False)
    rows = np.arange(16)
    plain, present = batch_tensors(table, rows, 'cpu')
    one = batch_tensors(table, rows, 'cpu', (cfg, np.random.default_rng([0, 5, 0, 1])))[0]
    again = batch_tensors(table, rows, 'cpu', (cfg, np.random.default_rng([0, 5, 0, 1])))[0]
    other = batch_tensors(table, rows, 'cpu', (cfg, np.random.default_rng([0, 6, 0, 1])))[0]
    images = [n for n, m in cfg.modalities.items() if m.kind == 'image']
    assert images and len(images) < len(cfg.modalities)
    for name, mod in cfg.modalities.items():
        assert torch.equal(one[name], again[name])
        if mod.kind == 'image':
            assert not torch.equal(one[name], plain[name])
            assert not torch.equal(one[name], other[name])
        else:
            assert torch.equal(one[name], plain[name])
    cfg.train.augment_shift = 0.0
    off = batch_tensors(table, rows, 'cpu', (cfg, np.random.default_rng(0)))[0]
    assert all(torch.equal(off[n], plain[n]) for n in cfg.modalities)
