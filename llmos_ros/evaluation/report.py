"""
Evaluation report: metrics.json (every figure with its definition), report.md and PNG plots.

The `results` dict given to `write_report` (JSON-like: numpy scalars, tuples and NaN are
accepted and converted; NaN / inf become null):

    {
      'model_id': str,                      # e.g. checkpoint file name or hash
      'bag': str,                           # the test bag
      'train_bag': str | None,              # bag the probe / coherence classifiers were fit on
      'modalities': [str, ...],             # modalities present, in model order
      'kinds': {mod: kind},                 # optional, for plots; llmos_ros.kinds.names()
      'subsets': [                          # one entry per non-empty subset (metrics.subsets)
        {'subset': [str, ...],              # modalities given to the encoder
         'n_samples': int,
         'probe_accuracy': float | None,    # None: no labels
         'neg_elbo': float | None,
         'iwae_nll': float | None, 'iwae_k': int | None,      # optional (None: not asked for)
         'recon': {mod: {'mse', 'baseline_mse', 'skill'}},    # mods inside the subset
         'cross': {mod: {'mse', 'baseline_mse', 'skill'}}},   # mods outside the subset
        ...],
      'coherence': None | {                 # None: no labels
         'classifier_accuracy': {mod: float},                 # classifier on real test inputs
         'pairs': [{'given': [str, ...], 'target': mod, 'accuracy': float}, ...]},
      'throughput': None | {'samples_per_s', 'real_time_factor',
                            'n_samples' (int), 'wall_s', 'data_span_s'},
      'latency_ms': None | {'p50', 'p90', 'p99', 'max', 'mean'},
      'drops': {reason: int},               # messages dropped, by reason
      'counts': {name: int},                # e.g. 'messages', 'processed', 'dropped', 'samples'
      'meta': {...},                        # optional, free-form (config, versions, seeds)
      'definitions': {key: str},            # optional: added to / overriding DEFINITIONS
    }

Only 'model_id', 'bag', 'modalities' and 'subsets' are required; missing optional keys are
written as null ({} for drops / counts). metrics.json holds this dict plus 'schema'
(SCHEMA_VERSION), 'created' (ISO-8601 UTC) and 'definitions' (metrics.DEFINITIONS merged with
the given ones). Its structure is REPORT_SCHEMA (a JSON-Schema subset: type, const, enum,
required, properties, additionalProperties, items, minItems, minimum, maximum) plus the
consistency rules listed in `report_errors`; `validate_report` checks both.
"""
from __future__ import annotations

from datetime import datetime, timezone
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from llmos_ros.errors import LlmosError
from llmos_ros.evaluation import plots
from llmos_ros.evaluation.metrics import DEFINITIONS
from llmos_ros.kinds import names as kind_names

SCHEMA_VERSION = 'llmos_ros.eval/1'

_NUM = {'type': ['number', 'null']}
_FRACTION = {'type': ['number', 'null'], 'minimum': 0, 'maximum': 1}
_COUNT = {'type': 'integer', 'minimum': 0}
_ERROR = {'type': 'object', 'required': ['mse', 'skill'], 'additionalProperties': False,
          'properties': {'mse': _NUM, 'baseline_mse': _NUM, 'skill': _NUM}}
_NAMES = {'type': 'array', 'minItems': 1, 'items': {'type': 'string'}}

REPORT_SCHEMA: dict[str, Any] = {
    'type': 'object',
    'required': ['schema', 'created', 'model_id', 'bag', 'train_bag', 'modalities', 'subsets',
                 'coherence', 'throughput', 'latency_ms', 'drops', 'counts', 'definitions'],
    'additionalProperties': False,
    'properties': {
        'schema': {'const': SCHEMA_VERSION},
        'created': {'type': 'string'},
        'model_id': {'type': 'string'},
        'bag': {'type': 'string'},
        'train_bag': {'type': ['string', 'null']},
        'modalities': _NAMES,
        'kinds': {'type': 'object',
                  'additionalProperties': {'enum': list(kind_names())}},
        'subsets': {'type': 'array', 'items': {
            'type': 'object',
            'required': ['subset', 'n_samples', 'probe_accuracy', 'neg_elbo', 'recon', 'cross'],
            'additionalProperties': False,
            'properties': {
                'subset': _NAMES,
                'n_samples': _COUNT,
                'probe_accuracy': _FRACTION,
                'neg_elbo': _NUM,
                'iwae_nll': _NUM,
                'iwae_k': {'type': ['integer', 'null'], 'minimum': 1},
                'recon': {'type': 'object', 'additionalProperties': _ERROR},
                'cross': {'type': 'object', 'additionalProperties': _ERROR}}}},
        'coherence': {
            'type': ['object', 'null'], 'required': ['classifier_accuracy', 'pairs'],
            'additionalProperties': False,
            'properties': {
                'classifier_accuracy': {'type': 'object', 'additionalProperties': _FRACTION},
                'pairs': {'type': 'array', 'items': {
                    'type': 'object', 'required': ['given', 'target', 'accuracy'],
                    'additionalProperties': False,
                    'properties': {'given': _NAMES, 'target': {'type': 'string'},
                                   'accuracy': _FRACTION}}}}},
        'throughput': {
            'type': ['object', 'null'], 'required': ['samples_per_s', 'real_time_factor'],
            'additionalProperties': False,
            'properties': {'samples_per_s': _NUM, 'real_time_factor': _NUM, 'n_samples': _COUNT,
                           'wall_s': _NUM, 'data_span_s': _NUM}},
        'latency_ms': {
            'type': ['object', 'null'], 'required': ['p50', 'p90', 'p99', 'max', 'mean'],
            'additionalProperties': False,
            'properties': {k: _NUM for k in ('p50', 'p90', 'p99', 'max', 'mean')}},
        'drops': {'type': 'object', 'additionalProperties': _COUNT},
        'counts': {'type': 'object', 'additionalProperties': _COUNT},
        'belief_surprise': {'type': ['object', 'null']},  # evaluation/belief_metrics.summary
        'meta': {'type': 'object'},
        'definitions': {'type': 'object', 'additionalProperties': {'type': 'string'}},
    },
}

_OPTIONAL_DEFAULTS = {'train_bag': None, 'coherence': None, 'throughput': None,
                      'latency_ms': None, 'drops': {}, 'counts': {}, 'belief_surprise': None}


class ReportError(LlmosError, ValueError):
    """A report does not match the schema, or a report folder cannot be read."""


# ----------------------------------------------------------------------------- validation
_TYPES = {'object': lambda v: isinstance(v, dict),
          'array': lambda v: isinstance(v, (list, tuple)),
          'string': lambda v: isinstance(v, str),
          'integer': lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, bool),
          'number': lambda v: isinstance(v, (int, float, np.integer, np.floating))
          and not isinstance(v, bool),
          'boolean': lambda v: isinstance(v, bool),
          'null': lambda v: v is None}


def _type_name(v) -> str:
    for name in ('null', 'boolean', 'integer', 'number', 'string', 'array', 'object'):
        if _TYPES[name](v):
            return name
    return type(v).__name__


def schema_errors(value, schema: Mapping, where: str = '$') -> list[str]:
    """Problems of `value` against a REPORT_SCHEMA-style schema, each naming its JSON path."""
    if 'const' in schema and value != schema['const']:
        return [f'{where}: must be {schema["const"]!r}, got {value!r}']
    if 'enum' in schema and value not in schema['enum']:
        return [f'{where}: must be one of {schema["enum"]}, got {value!r}']
    if 'type' in schema:
        types = schema['type'] if isinstance(schema['type'], list) else [schema['type']]
        if not any(_TYPES[t](value) for t in types):
            return [f'{where}: expected {" or ".join(types)}, got {_type_name(value)} '
                    f'({value!r:.60})']
    errors: list[str] = []
    if _TYPES['number'](value):
        if 'minimum' in schema and value < schema['minimum']:
            errors.append(f'{where}: must be >= {schema["minimum"]}, got {value}')
        if 'maximum' in schema and value > schema['maximum']:
            errors.append(f'{where}: must be <= {schema["maximum"]}, got {value}')
    if isinstance(value, dict):
        for key in schema.get('required', []):
            if key not in value:
                errors.append(f'{where}: missing required key {key!r}')
        props = schema.get('properties', {})
        extra = schema.get('additionalProperties', True)
        for key, item in value.items():
            path = f'{where}.{key}'
            if not isinstance(key, str):
                errors.append(f'{where}: key {key!r} is not a string')
            elif key in props:
                errors.extend(schema_errors(item, props[key], path))
            elif extra is False:
                errors.append(f'{where}: unknown key {key!r} (known: {sorted(props)})')
            elif isinstance(extra, Mapping):
                errors.extend(schema_errors(item, extra, path))
    if isinstance(value, (list, tuple)):
        if len(value) < schema.get('minItems', 0):
            errors.append(f'{where}: needs at least {schema["minItems"]} item(s)')
        if 'items' in schema:
            for i, item in enumerate(value):
                errors.extend(schema_errors(item, schema['items'], f'{where}[{i}]'))
    return errors


def report_errors(report: Mapping) -> list[str]:
    """
    Every problem of a metrics.json dict: REPORT_SCHEMA, then these consistency rules.

    - every subset names only listed modalities, without repeats, and no subset appears twice;
    - recon keys lie inside the subset, cross keys are listed modalities outside it;
    - coherence targets are listed modalities outside 'given'; kinds name listed modalities;
    - counts: messages == processed + dropped (when all three are given); dropped == sum of
      drops (when 'dropped' is given).
    """
    errors = schema_errors(report, REPORT_SCHEMA)
    if errors:
        return errors
    mods = list(report['modalities'])
    if len(set(mods)) != len(mods):
        errors.append(f'$.modalities: repeated names in {mods}')
    seen = set()
    for i, entry in enumerate(report['subsets']):
        where, sub = f'$.subsets[{i}]', list(entry['subset'])
        if not set(sub) <= set(mods) or len(set(sub)) != len(sub):
            errors.append(f'{where}.subset: {sub} must be distinct names from {mods}')
        if frozenset(sub) in seen:
            errors.append(f'{where}.subset: {sub} appears twice')
        seen.add(frozenset(sub))
        if not set(entry['recon']) <= set(sub):
            errors.append(f'{where}.recon: {sorted(entry["recon"])} must lie inside {sub}')
        if not set(entry['cross']) <= set(mods) - set(sub):
            errors.append(f'{where}.cross: {sorted(entry["cross"])} must be modalities '
                          f'outside {sub}')
    coh = report['coherence']
    if coh is not None:
        for i, pair in enumerate(coh['pairs']):
            if pair['target'] not in mods or pair['target'] in pair['given'] \
                    or not set(pair['given']) <= set(mods):
                errors.append(f'$.coherence.pairs[{i}]: target {pair["target"]!r} must be a '
                              f'modality outside given {pair["given"]}, both from {mods}')
        if not set(coh['classifier_accuracy']) <= set(mods):
            errors.append(f'$.coherence.classifier_accuracy: unknown modalities '
                          f'{sorted(set(coh["classifier_accuracy"]) - set(mods))}')
    if not set(report.get('kinds', {})) <= set(mods):
        errors.append(f'$.kinds: unknown modalities {sorted(set(report["kinds"]) - set(mods))}')
    counts, drops = report['counts'], report['drops']
    if {'messages', 'processed', 'dropped'} <= set(counts) and \
            counts['messages'] != counts['processed'] + counts['dropped']:
        errors.append(f'$.counts: messages ({counts["messages"]}) != processed '
                      f'({counts["processed"]}) + dropped ({counts["dropped"]})')
    if 'dropped' in counts and counts['dropped'] != sum(drops.values()):
        errors.append(f'$.counts.dropped ({counts["dropped"]}) != sum of $.drops '
                      f'({sum(drops.values())})')
    return errors


def validate_report(report: Mapping) -> None:
    """Raise ReportError listing every problem if `report` does not match the schema."""
    errors = report_errors(report)
    if errors:
        shown = '\n  '.join(errors[:20])
        more = f'\n  ... and {len(errors) - 20} more' if len(errors) > 20 else ''
        raise ReportError(f'evaluation report does not match schema {SCHEMA_VERSION}:\n  '
                          f'{shown}{more}')


# ----------------------------------------------------------------------------- writing
def _plain(value):
    """JSON-ready copy: numpy -> python, tuples -> lists, NaN / inf -> None."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, 'detach'):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def build_report(results: Mapping) -> dict:
    """The metrics.json dict for `results` (see the module docstring); validated."""
    report = _plain(results)
    for key in ('model_id', 'bag', 'modalities', 'subsets'):
        if key not in report:
            raise ReportError(f'results: missing required key {key!r}')
    for key, default in _OPTIONAL_DEFAULTS.items():
        report.setdefault(key, default)
    for entry in report['subsets'] if isinstance(report['subsets'], list) else []:
        if isinstance(entry, dict):
            entry.setdefault('probe_accuracy', None)
            entry.setdefault('neg_elbo', None)
            entry.setdefault('recon', {})
            entry.setdefault('cross', {})
    report['definitions'] = {**DEFINITIONS, **(report.get('definitions') or {})}
    report['schema'] = SCHEMA_VERSION
    report.setdefault('created', datetime.now(timezone.utc).isoformat(timespec='seconds'))
    validate_report(report)
    order = ['schema', 'created', 'model_id', 'bag', 'train_bag', 'modalities', 'kinds',
             'subsets', 'coherence', 'belief_surprise', 'throughput', 'latency_ms', 'counts',
             'drops', 'meta', 'definitions']
    return {k: report[k] for k in order if k in report}


def _f(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return '—'
    if isinstance(v, int):
        return str(v)
    return f'{v:.{digits}f}'


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ['| ' + ' | '.join(header) + ' |', '|' + '|'.join(' --- ' for _ in header) + '|']
    out += ['| ' + ' | '.join(str(c) for c in row) + ' |' for row in rows]
    return out + ['']


def _label(subset) -> str:
    return plots.subset_label(subset)


def _markdown(report: Mapping, plot_files: Sequence[str]) -> str:
    mods = report['modalities']
    kinds = report.get('kinds', {})
    lines = [f'# Evaluation of {report["model_id"]}', '',
             f'- test bag: `{report["bag"]}`',
             f'- training bag (probe, coherence classifiers): `{report["train_bag"] or "—"}`',
             '- modalities: ' + ', '.join(f'{m} ({kinds[m]})' if m in kinds else m
                                         for m in mods),
             f'- schema: `{report["schema"]}`, created {report["created"]}', '',
             '## Per subset of given modalities', '']
    has_iwae = any(e.get('iwae_nll') is not None for e in report['subsets'])
    head = ['given', 'samples', 'probe accuracy', '-ELBO (nats)']
    if has_iwae:
        head.append('IWAE NLL (nats)')
    rows = []
    for e in report['subsets']:
        row = [_label(e['subset']), _f(e['n_samples']), _f(e['probe_accuracy']),
               _f(e['neg_elbo'], 2)]
        if has_iwae:
            k = e.get('iwae_k')
            row.append(_f(e.get('iwae_nll'), 2) + (f' (K={k})' if k else ''))
        rows.append(row)
    lines += _table(head, rows)
    for title, key in (('Skill score (1 - mse / mse of predicting the training mean); '
                        '*R*: reconstruction (modality given), otherwise cross-modal '
                        'prediction', 'skill'),
                       ('MSE in normalised space (mse of the training mean in brackets)',
                        'mse')):
        lines += [f'### {title}', '']
        rows = []
        for e in report['subsets']:
            row = [_label(e['subset'])]
            for m in mods:
                if m in e['recon']:
                    v, tag = e['recon'][m], 'R '
                elif m in e['cross']:
                    v, tag = e['cross'][m], ''
                else:
                    row.append('—')
                    continue
                if key == 'skill':
                    row.append(f'{tag}{_f(v.get("skill"))}')
                else:
                    row.append(f'{_f(v.get("mse"), 4)} ({_f(v.get("baseline_mse"), 4)})')
            rows.append(row)
        lines += _table(['given'] + list(mods), rows)
    coh = report['coherence']
    lines += ['## Cross-modal coherence', '']
    if coh is None:
        lines += ['Not computed (no `episode/label` in the bags).', '']
    else:
        targets = [m for m in mods if m in coh['classifier_accuracy']
                   or any(p['target'] == m for p in coh['pairs'])]
        rows = [['classifier on real test inputs']
                + [_f(coh['classifier_accuracy'].get(m)) for m in targets]]
        by_given: dict[str, dict[str, float]] = {}
        for p in coh['pairs']:
            by_given.setdefault(_label(p['given']), {})[p['target']] = p['accuracy']
        rows += [[f'from {g}'] + [_f(acc.get(m)) for m in targets] for g, acc in by_given.items()]
        lines += _table(['given → target'] + targets, rows)
    lines += ['## Throughput and latency', '']
    tp, lat = report['throughput'], report['latency_ms']
    if tp is None:
        lines += ['Throughput not measured.', '']
    else:
        lines += _table(['samples/s', 'real-time factor', 'samples', 'wall s', 'data s'],
                        [[_f(tp['samples_per_s'], 1), _f(tp['real_time_factor'], 2),
                          _f(tp.get('n_samples')), _f(tp.get('wall_s'), 2),
                          _f(tp.get('data_span_s'), 2)]])
    if lat is None:
        lines += ['Latency not measured.', '']
    else:
        lines += _table(['', 'p50', 'p90', 'p99', 'max', 'mean'],
                        [['latency (ms)']
                         + [_f(lat[k], 2) for k in ('p50', 'p90', 'p99', 'max', 'mean')]])
    lines += ['## Messages', '']
    if report['counts']:
        lines += _table(list(report['counts']), [[str(v) for v in report['counts'].values()]])
    if report['drops']:
        lines += _table(['dropped because', 'messages'],
                        [[k, str(v)] for k, v in sorted(report['drops'].items())])
    else:
        lines += ['No message dropped.', '']
    if plot_files:
        lines += ['## Plots', '']
        lines += [f'![{Path(p).stem}]({p})' for p in plot_files] + ['']
    lines += ['## Definitions', '']
    lines += [f'- **{k}**: {v}' for k, v in report['definitions'].items()] + ['']
    return '\n'.join(lines)


def write_report(out_dir, results: Mapping, latents=None, labels=None,
                 examples: Mapping[str, Mapping[str, Any]] | None = None,
                 timeline=None) -> dict[str, Path]:
    """
    Write metrics.json, report.md and the PNG plots into out_dir (created); return their paths.

    results: see the module docstring (validated; ReportError names every problem).
    latents: optional [N, D] latent means, or {subset label: [N, D]}, for the PCA plot;
    labels: optional [N] labels colouring it. examples: optional
    {modality: {column title: array [n, *shape]}}, e.g. {'image': {'input': x, 'recon': r,
    'from audio': c}}, one grid plot per modality, each drawn by its kind (`Kind.picture`).
    timeline: optional (belief_metrics.Track, labels [N] or None) of the test stream, for the
    belief and surprise over time (`plots.plot_belief_timeline`).
    Returns {'json': ..., 'markdown': ..., <plot name>: ...}.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = build_report(results)
    paths: dict[str, Path] = {}
    paths['metric_vs_subset_size'] = plots.plot_metric_vs_subset_size(
        report, out / 'metric_vs_subset_size.png')
    if latents is not None:
        paths['latents_pca'] = plots.plot_latent_projection(latents, labels,
                                                            out / 'latents_pca.png')
    if timeline is not None:
        paths['belief_timeline'] = plots.plot_belief_timeline(*timeline,
                                                              out / 'belief_timeline.png')
    kinds = report.get('kinds', {})
    for mod, columns in (examples or {}).items():
        kind = kinds.get(mod, 'image')
        paths[f'examples_{mod}'] = plots.plot_examples(
            columns, out / f'examples_{mod}.png', kind=kind,
            title=f'{mod}: inputs, reconstructions, cross-modal predictions')
    paths['json'] = out / 'metrics.json'
    paths['json'].write_text(json.dumps(report, indent=2, allow_nan=False) + '\n')
    pngs = [p.name for k, p in paths.items() if p.suffix == '.png']
    paths['markdown'] = out / 'report.md'
    paths['markdown'].write_text(_markdown(report, pngs))
    return paths


# ----------------------------------------------------------------------------- comparing
def load_report(path) -> dict:
    """Read and validate metrics.json from a report folder (or the file itself)."""
    path = Path(path)
    file = path / 'metrics.json' if path.is_dir() else path
    try:
        report = json.loads(file.read_text())
    except FileNotFoundError:
        raise ReportError(f'no evaluation report at {file}') from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ReportError(f'{file} is not valid JSON: {exc}') from None
    try:
        validate_report(report)
    except ReportError as exc:
        raise ReportError(f'{file}: {exc}') from None
    return report


def _delta(a, b, digits: int = 3) -> str:
    if a is None or b is None:
        return '—'
    return f'{b - a:+.{digits}f}'


def compare_reports(report_a_dir, report_b_dir, out_dir,
                    names: Sequence[str] | None = None) -> dict[str, Path]:
    """
    Write compare.md (two reports side by side, B - A differences) and compare.png.

    Subsets, modalities and coherence pairs are matched by name; a figure only one report has
    is shown against '—'. names: column titles, default the model ids (the folder names when
    the ids are equal). Returns {'markdown': ..., 'plot': ...}.
    """
    a, b = load_report(report_a_dir), load_report(report_b_dir)
    if names is None:
        names = (a['model_id'], b['model_id'])
        if names[0] == names[1]:
            names = (Path(report_a_dir).name, Path(report_b_dir).name)
        if names[0] == names[1]:
            names = ('A', 'B')
    na, nb = names
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f'# Comparison: {na} (A) vs {nb} (B)', '']
    lines += _table(['', f'A: {na}', f'B: {nb}'],
                    [['model', a['model_id'], b['model_id']],
                     ['test bag', f'`{a["bag"]}`', f'`{b["bag"]}`'],
                     ['training bag', f'`{a["train_bag"]}`', f'`{b["train_bag"]}`'],
                     ['modalities', ', '.join(a['modalities']), ', '.join(b['modalities'])],
                     ['schema', a['schema'], b['schema']]])
    sa = {_label(e['subset']): e for e in a['subsets']}
    sb = {_label(e['subset']): e for e in b['subsets']}
    order = list(sa) + [k for k in sb if k not in sa]
    rows = []
    for key in order:
        ea, eb = sa.get(key, {}), sb.get(key, {})
        row = [key]
        for metric, digits in (('probe_accuracy', 3), ('neg_elbo', 2), ('iwae_nll', 2)):
            va, vb = ea.get(metric), eb.get(metric)
            row += [_f(va, digits), _f(vb, digits), _delta(va, vb, digits)]
        rows.append(row)
    lines += ['## Per subset', '']
    lines += _table(['given', 'probe A', 'probe B', 'Δ', '-ELBO A', '-ELBO B', 'Δ',
                     'IWAE NLL A', 'IWAE NLL B', 'Δ'], rows)
    mods = list(a['modalities']) + [m for m in b['modalities'] if m not in a['modalities']]
    rows = []
    for key in order:
        for mod in mods:
            vals = []
            for e in (sa.get(key, {}), sb.get(key, {})):
                if mod in e.get('recon', {}):
                    vals.append(('recon', e['recon'][mod].get('skill')))
                elif mod in e.get('cross', {}):
                    vals.append(('cross', e['cross'][mod].get('skill')))
                else:
                    vals.append((None, None))
            kind = vals[0][0] or vals[1][0]
            if kind is None:
                continue
            rows.append([key, mod, kind, _f(vals[0][1]), _f(vals[1][1]),
                         _delta(vals[0][1], vals[1][1])])
    lines += ['## Skill per modality (1 - mse / mse of the training mean)', '']
    lines += _table(['given', 'modality', 'task', 'A', 'B', 'Δ'], rows)
    lines += ['## Coherence', '']
    ca, cb = a['coherence'] or {}, b['coherence'] or {}
    rows = []
    for m in mods:
        va = ca.get('classifier_accuracy', {}).get(m)
        vb = cb.get('classifier_accuracy', {}).get(m)
        if va is not None or vb is not None:
            rows.append([f'classifier on real {m}', _f(va), _f(vb), _delta(va, vb)])
    pa = {(_label(p['given']), p['target']): p['accuracy'] for p in ca.get('pairs', [])}
    pb = {(_label(p['given']), p['target']): p['accuracy'] for p in cb.get('pairs', [])}
    for key in list(pa) + [k for k in pb if k not in pa]:
        va, vb = pa.get(key), pb.get(key)
        rows.append([f'{key[0]} → {key[1]}', _f(va), _f(vb), _delta(va, vb)])
    lines += _table(['', 'A', 'B', 'Δ'], rows) if rows else ['Not computed in either.', '']
    lines += ['## Throughput, latency and drops', '']
    rows = []
    for section, keys in (('throughput', ('samples_per_s', 'real_time_factor')),
                          ('latency_ms', ('p50', 'p90', 'p99', 'max', 'mean'))):
        for k in keys:
            va = (a[section] or {}).get(k)
            vb = (b[section] or {}).get(k)
            rows.append([f'{section}.{k}', _f(va, 2), _f(vb, 2), _delta(va, vb, 2)])
    for k in sorted(set(a['counts']) | set(b['counts'])):
        rows.append([f'counts.{k}', _f(a['counts'].get(k)), _f(b['counts'].get(k)), ''])
    for k in sorted(set(a['drops']) | set(b['drops'])):
        rows.append([f'drops.{k}', str(a['drops'].get(k, 0)), str(b['drops'].get(k, 0)), ''])
    lines += _table(['', 'A', 'B', 'Δ'], rows)
    plot = plots.plot_comparison(a, b, out / 'compare.png', names=(na, nb))
    lines += ['## Plot', '', f'![comparison]({plot.name})', '']
    md = out / 'compare.md'
    md.write_text('\n'.join(lines))
    return {'markdown': md, 'plot': plot}
