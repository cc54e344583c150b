"""
Evaluation plots (matplotlib, Agg backend, PNG files); ROS-free, arrays in, files out.

- `plot_metric_vs_subset_size(results, path)`: probe accuracy, skills and -ELBO against the
  number of modalities given.
- `plot_latent_projection(latents, labels, path)`: 2-D PCA of latent means coloured by label.
- `plot_examples(columns, path, kind)`: inputs beside reconstructions and cross-modal
  predictions, each drawn as its kind's `picture` (images as images, audio log-mel
  spectrograms as spectrograms, a wrench as its six axes over time).
- `plot_comparison(results_a, results_b, path)`: two reports' per-subset figures side by side.
- `plot_belief_timeline(track, labels, path)`: the belief against the per-frame latent, the
  modalities' weights and their surprise over the test stream's time.

`results` is the dict described in llmos_ros.evaluation.report.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from llmos_ros import kinds  # noqa: E402

MAX_CHANGE_LINES = 80  # plot_belief_timeline: more episode changes are not drawn


def subset_label(subset: Sequence[str]) -> str:
    """Short text for a subset: 'image+audio'."""
    return '+'.join(subset)


def _num(v) -> float:
    return float('nan') if v is None else float(v)


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _series(results: Mapping) -> dict[str, list[tuple[int, float, str]]]:
    """Metric name -> [(subset size, value, subset label)] for the per-subset figures."""
    series: dict[str, list[tuple[int, float, str]]] = {}
    for entry in results.get('subsets', []):
        size, lab = len(entry['subset']), subset_label(entry['subset'])
        values = [('probe accuracy', entry.get('probe_accuracy'))]
        values += [(f'recon skill: {mod}', m.get('skill'))
                   for mod, m in (entry.get('recon') or {}).items()]
        values += [(f'cross skill: {mod}', m.get('skill'))
                   for mod, m in (entry.get('cross') or {}).items()]
        values.append(('-ELBO (nats)', entry.get('neg_elbo')))
        for name, value in values:
            if value is not None and np.isfinite(value):
                series.setdefault(name, []).append((size, float(value), lab))
    return series


def plot_metric_vs_subset_size(results: Mapping, path) -> Path:
    """One panel per metric: value of each subset (labelled) against subset size, plus mean."""
    series = _series(results)
    groups = [('probe accuracy', [k for k in series if k == 'probe accuracy']),
              ('reconstruction skill', [k for k in series if k.startswith('recon skill')]),
              ('cross-modal skill', [k for k in series if k.startswith('cross skill')]),
              ('-ELBO (nats)', [k for k in series if k == '-ELBO (nats)'])]
    groups = [g for g in groups if g[1]]
    fig, axes = plt.subplots(1, max(1, len(groups)), figsize=(4.2 * max(1, len(groups)), 3.6),
                             squeeze=False)
    sizes = sorted({len(e['subset']) for e in results.get('subsets', [])}) or [1]
    for ax, (title, keys) in zip(axes[0], groups):
        for key in keys:
            pts = series[key]
            xs = np.array([p[0] for p in pts], dtype=float)
            ys = np.array([p[1] for p in pts])
            name = key.split(': ')[-1] if ': ' in key else key
            jitter = (keys.index(key) - (len(keys) - 1) / 2) * 0.06
            ax.scatter(xs + jitter, ys, label=name, s=24)
            means = [(s, ys[xs == s].mean()) for s in sizes if np.any(xs == s)]
            ax.plot([m[0] for m in means], [m[1] for m in means], alpha=0.5)
            for x, y, lab in zip(xs + jitter, ys, [p[2] for p in pts]):
                ax.annotate(lab, (x, y), fontsize=6, xytext=(3, 2), textcoords='offset points')
        if 'skill' in title:
            ax.axhline(0.0, color='grey', lw=0.8, ls='--')
        ax.set_xticks(sizes)
        ax.set_xlabel('modalities given')
        ax.set_title(title, fontsize=10)
        if len(keys) > 1:
            ax.legend(fontsize=7)
    if not groups:
        axes[0][0].text(0.5, 0.5, 'no per-subset metrics', ha='center', va='center')
        axes[0][0].set_axis_off()
    fig.suptitle(f"{results.get('model_id', '')} on {Path(str(results.get('bag', ''))).name}",
                 fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def pca_2d(x) -> np.ndarray:
    """Projection of x [N, D] onto its first two principal components (deterministic signs)."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    x = x - x.mean(axis=0)
    if len(x) < 2:
        return np.zeros((len(x), 2))
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    comps = vt[:2]
    signs = np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(axis=1)])
    proj = x @ (comps * signs[:, None]).T
    if proj.shape[1] < 2:
        proj = np.concatenate([proj, np.zeros((len(x), 2 - proj.shape[1]))], axis=1)
    return proj


def plot_latent_projection(latents, labels, path, max_points: int = 3000) -> Path:
    """
    2-D PCA of latent means coloured by label, one panel per entry.

    latents: an array [N, D], or {subset label: array [N, D]} for one panel each; labels: [N]
    (or None: one colour). At most `max_points` evenly spaced samples are drawn.
    """
    panels = dict(latents) if isinstance(latents, Mapping) else {'latent mean': latents}
    n = len(panels)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.4 * rows), squeeze=False)
    lab = None if labels is None else np.asarray(labels).reshape(-1)
    classes = [] if lab is None else list(np.unique(lab))
    cmap = plt.get_cmap('tab10' if len(classes) <= 10 else 'tab20')
    for ax, (title, z) in zip(axes.ravel(), panels.items()):
        z = np.asarray(z.detach().cpu() if hasattr(z, 'detach') else z)
        keep = np.linspace(0, len(z) - 1, min(len(z), max_points)).astype(int) if len(z) else []
        p = pca_2d(z[keep]) if len(z) else np.zeros((0, 2))
        if lab is None:
            ax.scatter(p[:, 0], p[:, 1], s=4)
        else:
            lk = lab[keep]
            for i, c in enumerate(classes):
                m = lk == c
                ax.scatter(p[m, 0], p[m, 1], s=4, color=cmap(i % cmap.N), label=str(c))
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.ravel()[n:]:
        ax.set_axis_off()
    if classes and len(classes) <= 20:
        axes.ravel()[0].legend(fontsize=6, markerscale=2, ncol=2, title='label',
                               title_fontsize=7)
    fig.suptitle('latent means, PCA 2-D', fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _show(ax, a: np.ndarray, kind: kinds.Kind, vmin: float, vmax: float) -> None:
    """Draw one sample as its kind's picture: RGB, a spectrogram or a grey image."""
    picture = kind.picture(np.asarray(a, dtype=np.float64))
    if picture.ndim == 3:
        ax.imshow(np.clip((picture - vmin) / max(vmax - vmin, 1e-12), 0, 1),
                  interpolation='nearest')
    elif kind.time_frequency:
        ax.imshow(picture, origin='lower', aspect='auto', cmap='magma', vmin=vmin, vmax=vmax,
                  interpolation='nearest')
    else:
        ax.imshow(picture, cmap='gray', vmin=vmin, vmax=vmax, interpolation='nearest')
    ax.set_xticks([])
    ax.set_yticks([])


def plot_examples(columns: Mapping[str, object], path, kind: str = 'image',
                  title: str = '', max_rows: int = 8) -> Path:
    """
    Grid of examples: one row per sample, one column per entry of `columns`.

    columns: {title: array [N, *shape]} with the same N and shape for every entry, e.g.
    {'input': x, 'recon (image)': r, 'from audio': c}; the first entry sets the colour scale of
    its row. Each array is drawn as the `picture` of the modality kind named `kind`: RGB, grey,
    or for time-frequency kinds (audio) a spectrogram (frequency upwards, time to the right).
    """
    drawer = kinds.get(kind)
    spectra = drawer.time_frequency
    cols = {k: np.asarray(v.detach().cpu() if hasattr(v, 'detach') else v, dtype=np.float64)
            for k, v in columns.items()}
    if not cols:
        raise ValueError('plot_examples: no columns')
    n = min(min(len(v) for v in cols.values()), max_rows)
    names = list(cols)
    fig, axes = plt.subplots(max(n, 1), len(names), squeeze=False,
                             figsize=(1.6 * len(names) * (1.4 if spectra else 1.0),
                                      1.5 * max(n, 1) + 0.4))
    first = cols[names[0]]
    for r in range(n):
        vmin, vmax = float(np.nanmin(first[r])), float(np.nanmax(first[r]))
        if vmax <= vmin:
            vmax = vmin + 1.0
        for c, name in enumerate(names):
            _show(axes[r][c], cols[name][r], drawer, vmin, vmax)
            if r == 0:
                axes[r][c].set_title(name, fontsize=8)
            if spectra and c == 0:
                axes[r][c].set_ylabel('frequency bin', fontsize=7)
            if spectra and r == n - 1:
                axes[r][c].set_xlabel('frame (time)', fontsize=7)
    if n == 0:
        for ax in axes[0]:
            ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _comparison_rows(results: Mapping) -> dict[str, dict[str, float]]:
    """Subset label -> {'probe accuracy', 'mean recon skill', 'mean cross skill'}."""
    rows = {}
    for e in results.get('subsets', []):
        rec = [_num(m.get('skill')) for m in (e.get('recon') or {}).values()]
        crs = [_num(m.get('skill')) for m in (e.get('cross') or {}).values()]
        rows[subset_label(e['subset'])] = {
            'probe accuracy': _num(e.get('probe_accuracy')),
            'mean recon skill': float(np.nanmean(rec)) if rec and np.isfinite(rec).any()
            else float('nan'),
            'mean cross skill': float(np.nanmean(crs)) if crs and np.isfinite(crs).any()
            else float('nan')}
    return rows


def plot_comparison(results_a: Mapping, results_b: Mapping, path,
                    names: Sequence[str] = ('A', 'B')) -> Path:
    """Grouped bars per subset (union of both reports) for probe accuracy and mean skills."""
    ra, rb = _comparison_rows(results_a), _comparison_rows(results_b)
    labels = list(ra) + [k for k in rb if k not in ra]
    metrics = ['probe accuracy', 'mean recon skill', 'mean cross skill']
    fig, axes = plt.subplots(1, 3, figsize=(max(9.0, 1.1 * len(labels) * 3), 3.8),
                             squeeze=False)
    x = np.arange(len(labels))
    for ax, metric in zip(axes[0], metrics):
        for i, (rows, name) in enumerate(((ra, names[0]), (rb, names[1]))):
            vals = [rows.get(lab, {}).get(metric, float('nan')) for lab in labels]
            ax.bar(x + (i - 0.5) * 0.4, np.nan_to_num(vals, nan=0.0), width=0.4, label=name)
        ax.axhline(0.0, color='grey', lw=0.8)
        ax.set_xticks(x)
        ax.set_xticklabels(labels, rotation=45, ha='right', fontsize=7)
        ax.set_title(metric, fontsize=10)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


def plot_belief_timeline(track, labels=None, path='belief_timeline.png',
                         max_points: int = 4000, spans: Sequence[tuple[float, float, str]] = (),
                         origin_ns: int | None = None) -> Path:
    """
    The belief and the surprise over time, three panels on one time axis (s since the first).

    1. The per-frame latent (dots) and the belief mean (line) projected on the per-frame
       latent's first principal component, with the belief's 90 % band along it (mean +-
       1.645 sqrt(sum_i u_i^2 var_i), u the component): where the belief smooths, lags or
       widens. Restarts of the belief as red ticks on the top edge, episode changes (labels) as
       grey lines (when there are at most MAX_CHANGE_LINES).
    2. Each modality's effective weight w(age) (0: not used).
    3. Each modality's surprise tail probability, log scale, with the 1 % alarm line (a gap
       where it was not scored).

    track: a `llmos_ros.evaluation.belief_metrics.Track`; labels: [N] episode labels or None.
    At most `max_points` evenly spaced samples are drawn (restarts and changes all). spans:
    (start s, end s, text) shaded on every panel, e.g. injected events; times are seconds
    since `origin_ns` (default the first sample's stamp).
    """
    n = len(track.stamps)
    origin = origin_ns if origin_ns is not None else (int(track.stamps[0]) if n else 0)
    t = (np.asarray(track.stamps, np.int64) - origin) / 1e9
    keep = np.linspace(0, n - 1, min(n, max_points)).astype(int) if n else np.zeros(0, int)
    latent = np.nan_to_num(np.asarray(track.latent, np.float64))
    centre = latent.mean(0) if n else np.zeros(latent.shape[1:])
    u = np.zeros(latent.shape[1]) if latent.ndim == 2 else np.zeros(0)
    if n > 1 and u.size:
        u = np.linalg.svd(latent - centre, full_matrices=False)[2][0]
        u = u * np.sign(u[np.abs(u).argmax()])
    fig, axes = plt.subplots(3, 1, figsize=(10.0, 7.0), sharex=True,
                             gridspec_kw={'height_ratios': [2.2, 1.0, 1.4]})
    ax = axes[0]
    belief = (np.asarray(track.belief, np.float64) - centre) @ u
    band = 1.645 * np.sqrt(np.asarray(track.belief_std, np.float64) ** 2 @ (u * u))
    ax.scatter(t[keep], ((latent - centre) @ u)[keep], s=3, color='0.55',
               label='per-frame latent')
    ax.fill_between(t[keep], (belief - band)[keep], (belief + band)[keep], color='C0',
                    alpha=0.2, lw=0, label='belief 90 %')
    ax.plot(t[keep], belief[keep], color='C0', lw=1.0, label='belief mean')
    if labels is not None and n:
        lab = np.asarray(labels).reshape(-1)
        changes = np.flatnonzero(lab[1:] != lab[:-1]) + 1
        for i in changes if changes.size <= MAX_CHANGE_LINES else ():  # else a grey wall
            for a in axes:
                a.axvline(t[i], color='0.8', lw=0.6, zorder=0)
    for k, (start, end, text) in enumerate(spans):
        for a in axes:
            a.axvspan(start, end, color='C1', alpha=0.12, lw=0,
                      label=text if a is axes[2] and k == 0 else None)
    restarts = np.flatnonzero(np.asarray(track.resets) != '')
    ax.plot(t[restarts], np.ones(restarts.size), '|', color='C3', ms=8,
            transform=ax.get_xaxis_transform(), label=f'restarts ({restarts.size})')
    ax.set_ylabel('1st principal comp.', fontsize=8)
    ax.legend(fontsize=7, loc='lower right', ncol=4)
    ax.set_title('belief and surprise over the test stream', fontsize=10)
    weights = np.asarray(track.weights, np.float64)
    tails = np.asarray(track.tails, np.float64)
    for i, name in enumerate(track.names):
        axes[1].plot(t[keep], weights[keep, i], lw=0.9, color=f'C{i + 1}', label=name)
        axes[2].plot(t[keep], np.maximum(tails[keep, i], 1e-6), lw=0.8,  # NaN: a gap
                     color=f'C{i + 1}', label=name)
    axes[1].set_ylim(-0.05, 1.05)
    axes[1].set_ylabel('weight w(age)', fontsize=8)
    axes[1].legend(fontsize=7, loc='lower right', ncol=len(track.names))
    axes[2].axhline(0.01, color='C3', lw=0.8, ls='--', label='1 % alarm')
    axes[2].set_yscale('log')
    axes[2].set_ylabel('surprise tail p', fontsize=8)
    axes[2].set_xlabel('time (s)' if origin_ns is None else 'time (s since origin)', fontsize=8)
    axes[2].legend(fontsize=7, loc='lower right', ncol=len(track.names) + 2)
    fig.tight_layout()
    return _save(fig, path)
