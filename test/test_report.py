"""Evaluation report: files written, JSON schema, corrupted reports rejected, compare mode."""
import copy
import json

import matplotlib.pyplot as plt
import numpy as np
import pytest

from llmos_ros.errors import LlmosError
from llmos_ros.evaluation import plots
from llmos_ros.evaluation.belief_metrics import Track
from llmos_ros.evaluation.metrics import DEFINITIONS, subsets
from llmos_ros.evaluation.report import (
    SCHEMA_VERSION,
    ReportError,
    compare_reports,
    load_report,
    validate_report,
    write_report,
)

MODS = ['image', 'audio']


def _results(probe_image=0.9, model_id='model-a'):
    """A results dict as llmos-eval builds it, with numpy scalars and a NaN mixed in."""
    entries = []
    for sub in subsets(MODS):
        entries.append({
            'subset': list(sub), 'n_samples': np.int64(40),
            'probe_accuracy': {('image',): probe_image, ('audio',): 0.6}.get(sub, 0.95),
            'neg_elbo': np.float32(123.4), 'iwae_nll': 120.5, 'iwae_k': 8,
            'recon': {m: {'mse': 0.1, 'baseline_mse': 1.0, 'skill': 0.9} for m in sub},
            'cross': {m: {'mse': 0.7, 'baseline_mse': 1.0, 'skill': np.float64(0.3)}
                      for m in MODS if m not in sub}})
    return {
        'model_id': model_id, 'bag': '/data/test_bag', 'train_bag': '/data/train_bag',
        'modalities': MODS, 'kinds': {'image': 'image', 'audio': 'audio'},
        'subsets': entries,
        'coherence': {'classifier_accuracy': {'image': 0.96, 'audio': 0.79},
                      'pairs': [{'given': ['audio'], 'target': 'image', 'accuracy': 0.55},
                                {'given': ['image'], 'target': 'audio', 'accuracy': 0.5}]},
        'throughput': {'samples_per_s': 250.0, 'real_time_factor': 12.5, 'n_samples': 40,
                       'wall_s': 0.16, 'data_span_s': 2.0},
        'latency_ms': {'p50': 3.0, 'p90': 4.0, 'p99': float('nan'), 'max': 6.0, 'mean': 3.2},
        'drops': {'stamp_backwards': 2, 'nan': 1},
        'counts': {'messages': 100, 'processed': 97, 'dropped': 3, 'samples': 40},
        'meta': {'seed': 0},
    }


def _arrays(rng):
    labels = rng.integers(0, 3, 30)
    latents = rng.normal(size=(30, 4)) + labels[:, None]
    img = rng.normal(size=(4, 1, 8, 8))
    spec = rng.normal(size=(4, 1, 8, 10))
    examples = {'image': {'input': img, 'recon': 0.9 * img, 'from audio': 0.3 * img},
                'audio': {'input': spec, 'recon': 0.8 * spec, 'from image': 0.1 * spec}}
    return latents, labels, examples


def test_write_report_files_and_valid_json(tmp_path):
    latents, labels, examples = _arrays(np.random.default_rng(0))
    paths = write_report(tmp_path / 'rep', _results(),
                         latents={'image': latents, 'image+audio': latents}, labels=labels,
                         examples=examples)
    for name in ('json', 'markdown', 'metric_vs_subset_size', 'latents_pca', 'examples_image',
                 'examples_audio'):
        assert paths[name].is_file() and paths[name].stat().st_size > 0, name
    report = json.loads((tmp_path / 'rep' / 'metrics.json').read_text())
    validate_report(report)
    assert report['schema'] == SCHEMA_VERSION
    assert set(DEFINITIONS) <= set(report['definitions'])
    assert report['latency_ms']['p99'] is None  # NaN is written as null
    assert report['subsets'][0]['n_samples'] == 40
    assert [e['subset'] for e in report['subsets']] == [['image'], ['audio'], ['image', 'audio']]
    md = (tmp_path / 'rep' / 'report.md').read_text()
    assert '| image+audio | 40 | 0.950 |' in md
    assert 'R 0.900' in md and '| audio | 0.300 | R 0.900 |' in md
    assert 'from audio' in md and '| stamp_backwards | 2 |' in md
    assert '![latents_pca](latents_pca.png)' in md
    assert load_report(tmp_path / 'rep')['model_id'] == 'model-a'


def _track(n, rng):
    """A stream of n samples as `Track.from_states` holds it: a restart, audio never scored."""
    latent = np.cumsum(rng.normal(size=(n, 6)), 0)
    resets = np.array(['first'] + [''] * (n - 1))
    resets[n // 2:n // 2 + 1] = 'jump'
    tails = np.stack([rng.uniform(1e-4, 1, n), np.full(n, np.nan)], 1)
    weights = np.stack([np.ones(n), np.linspace(1, 0, n)], 1)
    return Track(['image', 'audio'], np.arange(n, dtype=np.int64) * 33_000_000, latent,
                 latent * 0.9, np.full((n, 6), 0.3), weights, -np.log(tails), tails, resets)


def test_belief_timeline_drawn_and_linked(tmp_path):
    rng = np.random.default_rng(1)
    labels = np.repeat(['a', 'b', 'c'], 20)
    paths = write_report(tmp_path / 'rep', _results(), timeline=(_track(60, rng), labels))
    image = plt.imread(paths['belief_timeline'])
    assert image.shape[:2] == (630, 900)  # 10 x 7 in at 90 dpi
    assert image[..., :3].std() > 0.05  # something was drawn
    md = (tmp_path / 'rep' / 'report.md').read_text()
    assert '![belief_timeline](belief_timeline.png)' in md
    # one sample, no labels, no finite tail: still a plot, no error
    one = plots.plot_belief_timeline(_track(1, rng), None, tmp_path / 'one.png')
    assert plt.imread(one).shape[:2] == (630, 900)


def test_minimal_results_fill_optional_keys_with_null(tmp_path):
    res = {'model_id': 'm', 'bag': 'b', 'modalities': ['image'],
           'subsets': [{'subset': ['image'], 'n_samples': 3}]}
    write_report(tmp_path, res)
    report = load_report(tmp_path / 'metrics.json')
    assert report['coherence'] is None and report['throughput'] is None
    assert report['subsets'][0]['probe_accuracy'] is None
    assert 'Not computed' in (tmp_path / 'report.md').read_text()


def _valid_report(tmp_path):
    write_report(tmp_path, _results())
    return json.loads((tmp_path / 'metrics.json').read_text())


@pytest.mark.parametrize('corrupt, message', [
    (lambda r: r.pop('subsets'), "$: missing required key 'subsets'"),
    (lambda r: r['subsets'][0].update(probe_accuracy='high'),
     '$.subsets[0].probe_accuracy: expected number or null, got string'),
    (lambda r: r['subsets'][1].update(probe_accuracy=1.5),
     '$.subsets[1].probe_accuracy: must be <= 1'),
    (lambda r: r['subsets'][0]['recon']['image'].pop('mse'),
     "$.subsets[0].recon.image: missing required key 'mse'"),
    (lambda r: r['drops'].update(nan=1.5), '$.drops.nan: expected integer, got number'),
    (lambda r: r.update(schema='llmos_ros.eval/0'), '$.schema: must be'),
    (lambda r: r.update(extra=1), "$: unknown key 'extra'"),
    (lambda r: r['subsets'][0]['cross'].update(image=r['subsets'][0]['recon']['image']),
     '$.subsets[0].cross'),
    (lambda r: r['counts'].update(processed=90), '$.counts: messages (100) != processed'),
])
def test_corrupted_report_fails_with_clear_message(tmp_path, corrupt, message):
    report = _valid_report(tmp_path)
    bad = copy.deepcopy(report)
    corrupt(bad)
    with pytest.raises(ReportError) as info:
        validate_report(bad)
    assert message in str(info.value)
    assert SCHEMA_VERSION in str(info.value)
    # the same file on disk is refused when loading, naming the file
    (tmp_path / 'metrics.json').write_text(json.dumps(bad))
    with pytest.raises(LlmosError, match='metrics.json'):
        load_report(tmp_path)


def test_write_report_refuses_invalid_results(tmp_path):
    res = _results()
    res['subsets'][0]['n_samples'] = -1
    with pytest.raises(ReportError, match=r'n_samples: must be >= 0'):
        write_report(tmp_path, res)
    with pytest.raises(ReportError, match='model_id'):
        write_report(tmp_path, {'bag': 'b', 'modalities': ['x'], 'subsets': []})


def test_load_report_errors(tmp_path):
    with pytest.raises(LlmosError, match='no evaluation report'):
        load_report(tmp_path)
    (tmp_path / 'metrics.json').write_text('{"schema": ')
    with pytest.raises(LlmosError, match='not valid JSON'):
        load_report(tmp_path)


def test_compare_reports_side_by_side(tmp_path):
    write_report(tmp_path / 'a', _results(probe_image=0.80, model_id='poe'))
    res_b = _results(probe_image=0.90, model_id='mopoe')
    res_b['subsets'] = res_b['subsets'][:2]  # B lacks the pair subset
    res_b['drops'] = {'nan': 3}
    write_report(tmp_path / 'b', res_b)
    paths = compare_reports(tmp_path / 'a', tmp_path / 'b', tmp_path / 'cmp')
    assert paths['markdown'] == tmp_path / 'cmp' / 'compare.md'
    assert paths['plot'].is_file() and paths['plot'].stat().st_size > 0
    md = paths['markdown'].read_text()
    assert '# Comparison: poe (A) vs mopoe (B)' in md
    assert '| image | 0.800 | 0.900 | +0.100 |' in md
    assert '| image+audio | 0.950 | — | — |' in md
    assert '| audio → image | 0.550 | 0.550 | +0.000 |' in md
    assert '| drops.stamp_backwards | 2 | 0 |  |' in md
