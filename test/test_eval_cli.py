"""llmos-eval on bags written here and a model trained a few steps here (no mocks)."""
import contextlib
import io
import json
import math
from pathlib import Path
import re

import numpy as np
import pytest
import torch

from llmos_ros.checkpoint import load_checkpoint
from llmos_ros.core.bags import BagWriter, bag_info, read_bag
from llmos_ros.core.dataset import build_samples
from llmos_ros.core.frames import STRING
from llmos_ros.evaluation.cli import main
from llmos_ros.evaluation.report import load_report, validate_report
from llmos_ros.kinds.image import ImageFrame
from llmos_ros.sim.make_bag import write_bag
from llmos_ros.sim.scene import SceneConfig

SCENE = dict(episode_s=1.0, image_height=16, image_width=16, rows=4, cols=4)
LOG_2PI = math.log(2 * math.pi)


def run(argv):
    """main(argv) in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope='module')
def env(tmp_path_factory):
    from llmos_ros import train
    threads = torch.get_num_threads()
    d = tmp_path_factory.mktemp('eval')
    write_bag(d / 'train', 3.0, seed=1, config=SceneConfig(**SCENE), progress=False)
    write_bag(d / 'test', 2.0, seed=2, config=SceneConfig(**SCENE), progress=False)
    (d / 'cfg.yaml').write_text('model: {hidden: 32, latent_dim: 6}\n'
                                'train: {batch_size: 16, steps: 2, val_fraction: 0.0}\n')
    with contextlib.redirect_stdout(io.StringIO()):
        assert train.main(['--bag', str(d / 'train'), '--out', str(d / 'm.pt'), '--config',
                           str(d / 'cfg.yaml'), '--quiet', '--threads', '1']) == 0
    code, out, err = run(['--bag', str(d / 'test'), '--model', str(d / 'm.pt'),
                          '--out', str(d / 'rep'), '--train-bag', str(d / 'train'),
                          '--iwae-k', '2', '--record', '--coherence-epochs', '1',
                          '--threads', '1', '--quiet'])
    assert code == 0, err
    yield {'dir': d, 'summary': json.loads(out.strip().splitlines()[-1]), 'stderr': err,
           'report': json.loads((d / 'rep' / 'metrics.json').read_text()),
           'loaded': load_checkpoint(d / 'm.pt')}
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def table(env):
    """The test bag through the dataset path (independent of the replay), normalised."""
    loaded = env['loaded']
    return build_samples(env['dir'] / 'test', loaded.cfg, stats=loaded.stats, progress=False)


def test_report_files_and_schema(env):
    rep = env['dir'] / 'rep'
    for name in ('metrics.json', 'report.md', 'metric_vs_subset_size.png', 'latents_pca.png',
                 'examples_camera.png', 'examples_audio.png', 'examples_tactile.png',
                 'belief_timeline.png'):
        assert (rep / name).is_file() and (rep / name).stat().st_size > 0, name
    report = env['report']
    validate_report(report)
    assert report['modalities'] == ['camera', 'audio', 'tactile']
    assert len(report['subsets']) == 7
    assert all(e['iwae_k'] == 2 and e['iwae_nll'] is not None for e in report['subsets'])
    assert all(e['probe_accuracy'] is not None for e in report['subsets'])
    coh = report['coherence']
    assert set(coh['classifier_accuracy']) == {'camera', 'audio', 'tactile'}
    assert len(coh['pairs']) == 9  # 3 singletons x 2 targets + 3 pairs x 1 target
    s = env['summary']
    assert s['metrics'] == str(rep / 'metrics.json') and s['samples'] > 0
    assert report['meta']['live_vs_batched_max_abs_diff'] < 1e-4  # live path == batched model


def test_message_accounting(env, table):
    counts, drops = env['report']['counts'], env['report']['drops']
    info = bag_info(env['dir'] / 'test')
    assert counts['messages'] == info['message_count']
    assert counts['messages'] == counts['processed'] + counts['dropped']
    assert counts['dropped'] == sum(drops.values())
    assert counts['labels'] == info['counts']['/episode/label']
    assert counts['samples_evaluated'] == len(table) == env['summary']['samples']
    # taxels at 100 Hz against a 30 Hz camera: most are never paired, and say so
    assert drops.get('tactile/unpaired', 0) > 0
    assert set(drops) <= {'tactile/unpaired', 'audio/unpaired', 'camera/unpaired'}


def _by_subset(report, subset):
    return next(e for e in report['subsets'] if e['subset'] == list(subset))


def _log_normal(x, mean, log_scale):
    z = (x - mean) / np.exp(log_scale)
    return (-0.5 * z * z - log_scale - 0.5 * LOG_2PI).reshape(len(x), -1).sum(1)


def _rolls(reach):
    """Every (dy, dx) of an image's 'space_shift' likelihood with this reach."""
    return [(dy, dx) for dy in range(-reach[0], reach[0] + 1)
            for dx in range(-reach[1], reach[1] + 1)]


def _log_shifted(x, mean, log_scale, reach):
    """The image's 'space_shift' log-likelihood by brute force: log-mean-exp over the rolls."""
    lps = np.stack([_log_normal(x, np.roll(mean, s, (-2, -1)), log_scale) for s in _rolls(reach)])
    top = lps.max(0)
    return np.log(np.exp(lps - top).mean(0)) + top


def test_metrics_equal_hand_computed(env, table):
    """MSE, skill, -ELBO and IWAE of the subset {camera} recomputed from the model here."""
    model = env['loaded'].model
    report = env['report']
    entry = _by_subset(report, ['camera'])  # subset index 0 -> seed 0 + 0
    rows = np.flatnonzero(table.present['camera'])
    assert entry['n_samples'] == rows.size
    x = {n: torch.from_numpy(a[rows]) for n, a in table.arrays.items()}
    mask = {n: torch.full((rows.size,), n == 'camera') for n in x}
    with torch.no_grad():
        mu, logvar = model.encode(x, mask)
        dec = {n: model.decoders[n](model.decoder_input(mu, n)).numpy() for n in x}
        log_scale = float(model.decoders['camera'].log_scale())
        gen = torch.Generator().manual_seed(0)
        z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=gen)
        m_z = model.decoders['camera'](model.decoder_input(z, 'camera')).numpy()
        zk = [mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=gen)
              for _ in range(2)]
        m_zk = [model.decoders['camera'](model.decoder_input(z_, 'camera')).numpy()
                for z_ in zk]
    xc = x['camera'].numpy().astype(np.float64)
    # the camera's default 'space_shift' likelihood leaves up to 1 px of 16 open (1/16 a side):
    # its error is at the best roll within that reach, its likelihood the mean over the rolls
    reach = model.shift_reach['camera']
    assert model.cfg.modalities['camera'].likelihood == 'space_shift' and reach == (1, 1)
    err = np.min([((np.roll(dec['camera'], r, (-2, -1)) - xc) ** 2).reshape(rows.size, -1)
                  .mean(1) for r in _rolls(reach)], 0).mean()
    base = (xc ** 2).reshape(rows.size, -1).mean(1).mean()
    assert entry['recon']['camera']['mse'] == pytest.approx(err, rel=1e-5)
    assert entry['recon']['camera']['baseline_mse'] == pytest.approx(base, rel=1e-5)
    assert entry['recon']['camera']['skill'] == pytest.approx(1 - err / base, rel=1e-4, abs=1e-6)
    # cross-modal: audio predicted from camera, on the samples that have audio; audio's
    # 'time_shift' likelihood leaves the position open, so its error is at the best shift
    assert model.cfg.modalities['audio'].likelihood == 'time_shift'
    keep = table.present['audio'][rows]
    xa = x['audio'].numpy()[keep].astype(np.float64)
    err_a = np.min([((np.roll(dec['audio'][keep], k, -1) - xa) ** 2).reshape(keep.sum(), -1)
                    .mean(1) for k in range(xa.shape[-1])], 0).mean()
    assert entry['cross']['audio']['mse'] == pytest.approx(err_a, rel=1e-5)
    assert entry['cross']['audio']['baseline_mse'] == pytest.approx(
        (xa ** 2).reshape(keep.sum(), -1).mean(1).mean(), rel=1e-5)
    # -ELBO: one seeded sample of z, exact KL; IWAE with K=2 after it on the same generator
    mu_, lv = mu.double().numpy(), logvar.double().numpy()
    kl = 0.5 * (np.exp(lv) + mu_ ** 2 - 1 - lv).sum(1)
    ll = _log_shifted(xc, m_z, log_scale, reach)
    assert entry['neg_elbo'] == pytest.approx(float(np.mean(kl - ll)), rel=1e-4)
    lws = []
    for z_, m_ in zip(zk, m_zk):
        z_ = z_.double().numpy()
        log_p = -0.5 * (z_ ** 2 + LOG_2PI).sum(1)
        log_q = (-0.5 * ((z_ - mu_) ** 2 / np.exp(lv) + lv + LOG_2PI)).sum(1)
        lws.append(_log_shifted(xc, m_, log_scale, reach) + log_p - log_q)
    lws = np.stack(lws)
    iwae = np.log(np.exp(lws - lws.max(0)).mean(0)) + lws.max(0)
    assert entry['iwae_nll'] == pytest.approx(float(-iwae.mean()), rel=1e-4)


def test_belief_probe_is_fitted_on_training_beliefs(env):
    """Each probe reads the representation it was fitted on: beliefs for the belief probe."""
    from llmos_ros.belief import BeliefConfig
    from llmos_ros.evaluation.belief_metrics import since_change
    from llmos_ros.evaluation.metrics import linear_probe
    from llmos_ros.evaluation.replay import replay
    from llmos_ros.inference import PerceptionEngine
    from llmos_ros.temporal import TemporalTracker

    def beliefs(bag):
        engine = PerceptionEngine(env['loaded'])
        tracker, means = TemporalTracker(engine, BeliefConfig(), None), []
        rep = replay(bag, engine, on_result=lambda r: means.append(tracker.step(r).belief.mean))
        return np.asarray(means), rep.labels, rep.stamps

    (btr, ltr, _), (bte, lte, ste) = beliefs(env['dir'] / 'train'), beliefs(env['dir'] / 'test')
    a, b = ltr != '', lte != ''
    expected = linear_probe(btr[a], ltr[a], bte[b], lte[b], seed=0)
    summary = env['report']['belief_surprise']
    assert summary['belief_probe_accuracy'] == pytest.approx(expected)
    # split at 0.3 s after each label change: the same probe on each part
    early = b & (since_change(ste, lte) < 0.3)
    assert 0 < early.sum() < b.sum()
    for part, rows in (('early', early), ('later', b & ~early)):
        assert summary['probe_accuracy_by_time'][f'belief_{part}'] == pytest.approx(
            linear_probe(btr[a], ltr[a], bte[rows], lte[rows], seed=0))
    # the frame probe: fitted on the training bag's per-frame products of the present experts,
    # reading the test bag's beliefs and its per-frame products
    from llmos_ros.belief_noise import measurements

    def frames(bag):
        rep = replay(bag, PerceptionEngine(env['loaded']), infer=False)
        return np.nan_to_num(measurements(env['loaded'].model, rep.arrays, rep.present)[0])
    mtr, mte = frames(env['dir'] / 'train'), frames(env['dir'] / 'test')
    assert summary['belief_frame_probe_accuracy'] == pytest.approx(
        linear_probe(mtr[a], ltr[a], bte[b], lte[b], seed=0))
    assert summary['measurement_probe_accuracy'] == pytest.approx(
        linear_probe(mtr[a], ltr[a], mte[b], lte[b], seed=0))


def test_throughput_and_latency_consistent(env):
    report = env['report']
    tp, lat = report['throughput'], report['latency_ms']
    assert tp['n_samples'] == report['counts']['samples_evaluated']
    assert tp['samples_per_s'] == pytest.approx(tp['n_samples'] / tp['wall_s'], rel=1e-6)
    assert tp['real_time_factor'] == pytest.approx(tp['data_span_s'] / tp['wall_s'], rel=1e-6)
    assert 1.8 < tp['data_span_s'] <= 2.0
    assert 0 < lat['p50'] <= lat['p90'] <= lat['p99'] <= lat['max']


def test_record_bag(env, table):
    recorded = env['dir'] / 'rep' / 'recorded'
    loaded = env['loaded']
    latents, preds, inputs, temporal = [], {}, 0, {'/llmos/belief': [], '/llmos/surprise': []}
    for topic, mtype, stamp, msg in read_bag(recorded):
        if topic == '/llmos/latent':
            latents.append((stamp, msg))
        elif topic in temporal:
            temporal[topic].append((stamp, msg))
        elif topic.startswith('/llmos/prediction/'):
            preds.setdefault(topic, []).append(mtype)
        else:
            inputs += 1
    assert inputs == bag_info(env['dir'] / 'test')['message_count']
    assert len(latents) == env['report']['counts']['samples_evaluated']
    assert sorted(s for s, _ in latents) == sorted(table.stamps.tolist())
    for topic, msgs in temporal.items():  # one belief and one surprise per latent, same stamp
        assert [s for s, _ in msgs] == [s for s, _ in latents], topic
    belief = temporal['/llmos/belief'][-1][1]
    assert len(belief.mean) == len(latents[-1][1].mean)
    assert len(belief.modality_weights) == len(belief.modalities) > 0
    surprise = temporal['/llmos/surprise'][-1][1]
    assert len(surprise.scores) == len(surprise.modalities) and surprise.model_id
    summary = env['report']['belief_surprise']  # no calibration sidecar: scores, no tails
    assert summary['n_samples'] == len(latents) and summary['calibrated'] is False
    assert summary['surprise_held_out_alarms'] == {n: None for n in loaded.model.names}
    assert 0 <= summary['belief_probe_accuracy'] <= 1 and summary['belief_resets'] >= 1
    _, first = latents[0]
    assert first.model_id == loaded.model_id and first.fusion == loaded.cfg.model.fusion
    # mopoe with private latents (default): 6 shared + 8 per modality
    assert first.shared_dim == 6 and first.private_dim == 8 and len(first.mean) == 6 + 8 * 3
    assert list(first.private_modalities) == loaded.model.names
    assert list(first.modalities) == ['camera', 'audio', 'tactile']
    assert len(first.modality_stamps) == 3 and first.header.frame_id == 'llmos'
    assert set(preds) == {'/llmos/prediction/camera', '/llmos/prediction/audio',
                          '/llmos/prediction/tactile'}
    assert set(preds['/llmos/prediction/camera']) == {'sensor_msgs/msg/Image'}
    assert set(preds['/llmos/prediction/audio']) == {'llmos_ros/msg/AudioChunk'}
    assert set(preds['/llmos/prediction/tactile']) == {'llmos_ros/msg/TactileArray'}


def test_compare_mode(env):
    d = env['dir']
    code, out, err = run(['--compare', str(d / 'rep'), str(d / 'rep'), '--out',
                          str(d / 'cmp'), '--quiet'])
    assert code == 0, err
    assert (d / 'cmp' / 'compare.md').is_file() and (d / 'cmp' / 'compare.png').is_file()
    assert json.loads(out.strip().splitlines()[-1])['compare'] == str(d / 'cmp' / 'compare.md')


def _fails(argv, *needles):
    code, out, err = run(argv)
    assert code == 2, (out, err)
    assert 'Traceback' not in err
    for needle in needles:
        assert needle in err, err
    return err


def test_truncated_bag_is_a_clear_error(env, tmp_path):
    d = env['dir']
    bag = tmp_path / 'cut'  # large enough for several MCAP chunks
    write_bag(bag, 4.0, seed=3, config=SceneConfig(**{**SCENE, 'image_height': 64,
                                                      'image_width': 64}), progress=False)
    (mcap,) = bag.glob('*.mcap')
    data = mcap.read_bytes()
    mcap.write_bytes(data[:len(data) * 2 // 3])
    argv = ['--bag', str(bag), '--model', str(d / 'm.pt'), '--out', str(tmp_path / 'r'),
            '--threads', '1', '--quiet']
    err = _fails(argv, 'truncated', 'messages are readable before the cut')
    n = int(re.search(r'(\d+) messages are readable', err).group(1))
    assert n > 0
    # --partial: what was read is evaluated, the error is kept in the report
    code, out, err = run(argv + ['--partial'])
    assert code == 0, err
    assert 'warning' in err and 'truncated' in err
    report = load_report(tmp_path / 'r')
    assert f'{n} messages read before the cut' in report['meta']['bag_error']
    c = report['counts']
    assert c['messages'] == n == c['processed'] + c['dropped']
    assert json.loads(out.strip().splitlines()[-1])['bag_error']


def test_user_errors(env, tmp_path):
    d = env['dir']
    model = str(d / 'm.pt')
    _fails(['--bag', str(d / 'test'), '--model', str(tmp_path / 'none.pt'), '--out',
            str(tmp_path / 'r')], 'checkpoint not found')
    other = tmp_path / 'other'
    with BagWriter(other) as w:
        w.write_label('/chatter', 0, 'hi')
    _fails(['--bag', str(other), '--model', model, '--out', str(tmp_path / 'r')],
           "none of the model's topics", '/camera/image_raw', '/chatter')
    wrong = tmp_path / 'wrong_type'
    with BagWriter(wrong) as w:
        w.write_label('/camera/image_raw', 0, 'not an image')
    _fails(['--bag', str(wrong), '--model', model, '--out', str(tmp_path / 'r')],
           STRING, 'camera')
    bad = tmp_path / 'bad_encoding'  # every sample's only modality fails preprocessing
    with BagWriter(bad) as w:
        for i in range(5):
            w.write_frame('/camera/image_raw', ImageFrame(
                10**9 + i * 33_000_000, 'yuv422', 16, 16, 32, False, np.zeros(512, np.uint8)))
    err = _fails(['--bag', str(bad), '--model', model, '--out', str(tmp_path / 'r'),
                  '--quiet'], 'no sample could be formed', "'camera/encoding': 5", 'yuv422')
    assert not Path(tmp_path / 'r' / 'metrics.json').exists(), err


def test_shape_mismatch_is_counted(env, tmp_path):
    """Taxels of another size: counted drops, the other modalities are still evaluated."""
    d = env['dir']
    bag = tmp_path / 'taxels3x3'
    write_bag(bag, 1.0, seed=4, config=SceneConfig(**{**SCENE, 'rows': 3, 'cols': 3}),
              progress=False)
    code, out, err = run(['--bag', str(bag), '--model', str(d / 'm.pt'), '--out',
                          str(tmp_path / 'r'), '--threads', '1', '--max-samples', '10'])
    assert code == 0, err
    report = load_report(tmp_path / 'r')
    assert report['modalities'] == ['camera', 'audio']
    assert report['drops']['tactile/size'] > 0
    assert report['counts']['samples_evaluated'] == 10
    c = report['counts']
    assert c['messages'] == c['processed'] + c['dropped']
    assert 'taxel array is 3x3x1' in err


def test_evaluation_imports_no_ros():
    import subprocess
    import sys
    code = ('import sys, llmos_ros.evaluation.cli, llmos_ros.evaluation.replay; '
            'sys.exit(any(m.startswith(("rclpy", "llmos_ros.msg", "llmos_ros.nodes")) '
            'for m in sys.modules))')
    assert subprocess.run([sys.executable, '-c', code],
                          cwd=Path(__file__).resolve().parents[1]).returncode == 0


def test_fit_sample_counts_are_stated(env):
    meta = env['report']['meta']
    fits = meta['fit_samples']
    assert {'coherence/camera', 'probe/camera', 'probe/camera+audio+tactile'} <= set(fits)
    assert all(1 <= n <= meta['max_fit_samples'] for n in fits.values())
    assert fits['coherence/camera'] <= meta['train_samples']


def _copy_bag(src, dst, label=lambda text: text):
    """A copy of bag `src` with each /episode/label text mapped by `label` (None: left out)."""
    with BagWriter(dst) as w:
        for topic, mtype, stamp, msg in read_bag(src):
            if topic.endswith('/episode/label'):
                text = label(str(msg.data))
                if text is not None:
                    w.write_label(topic, stamp, text)
            else:
                w.write(topic, mtype, stamp, msg)
    return dst


@pytest.mark.parametrize('label, note', [
    (lambda text: None, 'no /episode/label in the test bag: no probe or coherence'),
    (lambda text: 'other/' + text, "share none with the training bag's"),
])
def test_missing_or_foreign_labels_give_a_note_not_a_wrong_figure(env, tmp_path, label, note):
    d = env['dir']
    bag = _copy_bag(d / 'test', tmp_path / 'relabelled', label)
    code, out, err = run(['--bag', str(bag), '--model', str(d / 'm.pt'), '--out',
                          str(tmp_path / 'r'), '--train-bag', str(d / 'train'), '--threads', '1',
                          '--max-samples', '10', '--coherence-epochs', '1'])
    assert code == 0, err
    assert note in err
    report = load_report(tmp_path / 'r')
    assert all(entry['probe_accuracy'] is None for entry in report['subsets'])
    assert report['coherence'] is None


@pytest.mark.parametrize('where, match', [
    ('file', r'--out .* is a file, not a folder'),
    ('proc', r'--out /proc/llmos_eval cannot be written'),
])
def test_unwritable_out_fails_before_reading(env, tmp_path, where, match):
    (tmp_path / 'file').write_text('x')
    out = '/proc/llmos_eval' if where == 'proc' else str(tmp_path / 'file')
    code, stdout, err = run(['--bag', str(tmp_path / 'no_such_bag'), '--model',
                             str(tmp_path / 'no.pt'), '--out', out])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and re.search(match, lines[0]), err


def test_coherence_classifiers_come_from_the_cache_when_fitted_before(env, tmp_path,
                                                                         monkeypatch):
    """Same training inputs and settings: the cached classifiers give the same figures."""
    monkeypatch.setenv('LLMOS_CACHE_DIR', str(tmp_path / 'cache'))
    d = env['dir']
    reports = []
    for i, extra in enumerate([[], [], ['--no-classifier-cache']]):
        code, _, err = run(['--bag', str(d / 'test'), '--model', str(d / 'm.pt'),
                            '--out', str(tmp_path / f'rep{i}'), '--train-bag', str(d / 'train'),
                            '--coherence-epochs', '1', '--threads', '1', '--quiet', *extra])
        assert code == 0, err
        reports.append(json.loads((tmp_path / f'rep{i}' / 'metrics.json').read_text()))
    use = [r['meta']['coherence_classifiers'] for r in reports]
    mods = set(env['report']['coherence']['classifier_accuracy'])
    assert use == [dict.fromkeys(mods, 'fitted'), dict.fromkeys(mods, 'cached'),
                   dict.fromkeys(mods, 'off')]
    assert len(list((tmp_path / 'cache' / 'coherence').glob('*.pt'))) == len(mods)
    for r in reports[1:]:
        assert r['coherence'] == reports[0]['coherence']
