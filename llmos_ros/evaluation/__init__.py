"""
Offline evaluation (`llmos-eval`): metrics, report and plots, ROS-free and model-agnostic.

- `metrics`: subsets, mse / skill scores, linear probe, coherence classifier, latency,
  throughput, IWAE log-likelihood; `DEFINITIONS` of every reported figure.
- `report`: `write_report`, `validate_report`, `compare_reports`; the results dict and the
  metrics.json schema (`REPORT_SCHEMA`, `SCHEMA_VERSION`) are documented there.
- `plots`: matplotlib (Agg) PNG plots.

Names are imported lazily, so `llmos_ros.evaluation.metrics` does not load matplotlib.
"""
from importlib import import_module

_EXPORTS = {
    'metrics': ('DEFINITIONS', 'CoherenceClassifier', 'aligned_mse', 'error_and_skill',
                'iwae_log_likelihood', 'latency_percentiles', 'linear_probe',
                'mean_baseline_mse', 'mse', 'skill_score', 'subsets', 'throughput'),
    'report': ('REPORT_SCHEMA', 'SCHEMA_VERSION', 'ReportError', 'build_report',
               'compare_reports', 'load_report', 'report_errors', 'validate_report',
               'write_report'),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        return getattr(import_module(f'{__name__}.{_WHERE[name]}'), name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
