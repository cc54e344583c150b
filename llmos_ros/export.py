"""
Export of a trained MultimodalVAE for deployment, and a check against the eager model.

The exported graph is `DeployModule.forward(x_<m1>, ..., x_<mM>, present_<m1>, ..., present_<mM>)
-> (mu, logvar, pred_<m1>, ..., pred_<mM>)`, modalities in `cfg.modalities` order: inputs
[B, *shape] float32 (z-scored), presence masks [B] bool; mu/logvar [B, latent_size] (layout as
`MultimodalVAE.latent_layout()`), predictions [B, *shape] (decoded posterior mean). The batch
dimension is dynamic. Formats: ONNX ('.onnx', legacy TorchScript-based exporter) or TorchScript
('.pt' / '.ts', torch.jit.trace). `export_onnx`, `ort_session` and `compare_outputs` also serve
the live engine's onnxruntime backend (llmos_ros/ort_backend.py: each encoder and decoder alone).
"""
from __future__ import annotations

import itertools
from pathlib import Path
import warnings

import numpy as np
import torch
from torch import nn

from llmos_ros.errors import ConfigError, LlmosError
from llmos_ros.models.mvae import MultimodalVAE

ONNX_OPSET = 17


class ExportError(LlmosError):
    """An export failed or the exported model does not reproduce the eager one."""


class DeployModule(nn.Module):
    """Positional-tensor wrapper of a MultimodalVAE (inputs then masks -> mu, logvar, preds)."""

    def __init__(self, model: MultimodalVAE):
        super().__init__()
        self.model = model
        self.names = list(model.names)

    def forward(self, *args: torch.Tensor):
        m = len(self.names)
        xs, masks = list(args[:m]), [a.to(torch.bool) for a in args[m:]]
        mask = torch.stack(masks, 0)
        clean = []
        for x, keep in zip(xs, masks):
            k = keep.reshape([-1] + [1] * (x.dim() - 1))
            clean.append(torch.where(k, x, torch.zeros_like(x)))
        mu, logvar, preds = self.model.forward_masked(clean, mask)
        return (mu, logvar, *preds)


def io_names(model: MultimodalVAE) -> tuple[list[str], list[str]]:
    inputs = [f'x_{n}' for n in model.names] + [f'present_{n}' for n in model.names]
    outputs = ['mu', 'logvar'] + [f'pred_{n}' for n in model.names]
    return inputs, outputs


def example_inputs(model: MultimodalVAE, seed: int = 0
                   ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Random inputs with one sample per presence pattern (all 2^M, at most 64 samples)."""
    gen = torch.Generator().manual_seed(seed)
    patterns = list(itertools.product([True, False], repeat=len(model.names)))[:64]
    b = len(patterns)
    inputs = {n: torch.randn((b,) + model.shapes[n], generator=gen) for n in model.names}
    present = {n: torch.tensor([p[i] for p in patterns]) for i, n in enumerate(model.names)}
    return inputs, present


def _args(model, inputs, present) -> tuple[torch.Tensor, ...]:
    b = next(iter(inputs.values())).shape[0]
    xs = [inputs[n].float() if n in inputs else torch.zeros((b,) + model.shapes[n])
          for n in model.names]
    ms = [present[n].bool() if n in present else torch.full((b,), n in inputs)
          for n in model.names]
    return tuple(xs + ms)


def export_onnx(module: nn.Module, args: tuple[torch.Tensor, ...], target,
                in_names: list[str], out_names: list[str]) -> None:
    """
    Export `module(*args)` (eval mode, cpu) to ONNX at `target`, a path or a binary file object.

    Legacy TorchScript-based exporter at ONNX_OPSET, batch dimension (0) of every input and
    output dynamic. The exporter's own errors propagate; callers wrap them in an ExportError
    naming what was exported.
    """
    axes = {n: {0: 'batch'} for n in in_names + out_names}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter('ignore', torch.jit.TracerWarning)
        warnings.simplefilter('ignore', DeprecationWarning)  # the legacy exporter
        torch.onnx.export(module, args, target, input_names=in_names, output_names=out_names,
                          dynamic_axes=axes, opset_version=ONNX_OPSET, dynamo=False)


def ort_session(model, threads: int = 1):
    """
    An onnxruntime CPU InferenceSession of `model` (a path or the ONNX bytes).

    `threads`: intra-op threads (0: onnxruntime's default, one per physical core); the pool does
    not spin while idle, so it never takes a core from the caller's other threads. ConfigError
    when onnxruntime is not installed.
    """
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ConfigError(f'onnxruntime cannot be imported ({exc}): pip install onnxruntime, '
                          'or use the torch backend') from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    source = str(model) if isinstance(model, (str, Path)) else model
    return ort.InferenceSession(source, options, providers=['CPUExecutionProvider'])


def compare_outputs(where: str, out_names: list[str], ref: list[np.ndarray],
                    got: list[np.ndarray], atol: float) -> float:
    """
    Max abs difference of `got` from `ref` (same order as `out_names`).

    ExportError naming `where` and the output when one is missing, has another shape, is not
    finite or differs by more than `atol`.
    """
    if len(got) != len(ref):
        raise ExportError(f'{where}: {len(got)} outputs, expected {len(ref)}')
    worst = 0.0
    for name, r, g in zip(out_names, ref, got):
        if r.shape != g.shape:
            raise ExportError(f'{where}: output {name} has shape {g.shape}, eager {r.shape}')
        diff = float(np.max(np.abs(r.astype(np.float64) - g.astype(np.float64)))) if r.size else 0.
        if not np.isfinite(diff) or diff > atol:
            raise ExportError(f'{where}: output {name} differs from the eager model by {diff:.3g}'
                              f' (tolerance {atol:.3g})')
        worst = max(worst, diff)
    return worst


def export_model(model: MultimodalVAE, path: str | Path) -> Path:
    """Export to ONNX ('.onnx') or TorchScript (any other suffix); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model = model.cpu().eval()
    module = DeployModule(model).eval()
    inputs, present = example_inputs(model)
    args = _args(model, inputs, present)
    in_names, out_names = io_names(model)
    try:
        if path.suffix == '.onnx':
            export_onnx(module, args, str(path), in_names, out_names)
        else:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter('ignore', torch.jit.TracerWarning)
                warnings.simplefilter('ignore', DeprecationWarning)  # jit.trace
                traced = torch.jit.trace(module, args, check_trace=False)
            traced.save(str(path))
    except Exception as exc:  # noqa: BLE001 - report any exporter failure as one error
        raise ExportError(f'export to {path} failed: {type(exc).__name__}: {exc}') from exc
    finally:
        model.train(was_training)
    return path


def run_exported(path: str | Path, model: MultimodalVAE, inputs, present) -> list[np.ndarray]:
    """Run an exported model on dict inputs; returns [mu, logvar, preds...] as numpy arrays."""
    path = Path(path)
    args = _args(model, inputs, present)
    if path.suffix == '.onnx':
        sess = ort_session(path)
        in_names, _ = io_names(model)
        feed = {n: a.numpy() for n, a in zip(in_names, args)}
        return [np.asarray(o) for o in sess.run(None, feed)]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', DeprecationWarning)
        loaded = torch.jit.load(str(path), map_location='cpu')
    with torch.no_grad():
        return [o.numpy() for o in loaded(*args)]


def check_export(model: MultimodalVAE, path: str | Path, inputs=None, present=None,
                 atol: float = 1e-4) -> float:
    """
    Compare the exported model with the eager one; returns the max abs difference.

    Without inputs, uses random inputs covering every presence pattern. Raises ExportError when
    an output is missing, has another shape, is not finite or differs by more than `atol`.
    """
    if inputs is None:
        inputs, present = example_inputs(model, seed=1)
    present = present or {}
    model = model.cpu().eval()
    with torch.no_grad():
        ref = [t.numpy() for t in DeployModule(model)(*_args(model, inputs, present))]
    got = run_exported(path, model, inputs, present)
    return compare_outputs(str(path), io_names(model)[1], ref, got, atol)
