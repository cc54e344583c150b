"""
The typed options and results the llmos-eval stages (`pipeline`, `scores`) hand on.

`EvalOptions` is what the command line asked for (built from argparse in `cli.options`);
`Loaded`, `TestRun`, `Labels` and `SubsetResults` are the results of the stages; `Phases` times
them (meta.phase_seconds).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
import sys
import time

import numpy as np

from llmos_ros.evaluation.replay import Replay

MAX_FIT_SAMPLES = 20000  # probe and coherence classifier fits (the report states the count)


@dataclass(frozen=True)
class EvalOptions:
    """What to evaluate and how (the llmos-eval options, see `cli.parse_args`)."""

    bag: str
    model: str
    out: str
    train_bag: str | None = None
    iwae_k: int | None = None
    elbo_samples: int = 1
    record: bool = False
    frame_id: str = 'llmos'
    compare: str | None = None  # a report folder to compare the new report with
    max_samples: int | None = None
    max_train_samples: int = 20000
    max_fit_samples: int = MAX_FIT_SAMPLES
    coherence_epochs: int = 8
    classifier_cache: bool = True  # coherence classifiers from/to the disk cache
    partial: bool = False
    batch_size: int = 256
    seed: int = 0
    device: str = 'cpu'
    threads: int = 0
    quiet: bool = False

    def note(self, text: str) -> None:
        """A note on stderr (not with --quiet)."""
        if not self.quiet:
            print(f'[llmos-eval] {text}', file=sys.stderr, flush=True)


class Phases:
    """Wall seconds per stage (meta.phase_seconds): `mark(name)` ends the running stage."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._mark = time.perf_counter()

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._mark
        self._mark = now


@dataclass
class Loaded:
    """The checkpoint and where the report goes."""

    out: Path
    checkpoint: object  # checkpoint.LoadedModel
    device: object  # torch.device

    @property
    def model(self):
        return self.checkpoint.model

    @property
    def cfg(self):
        return self.checkpoint.cfg


@dataclass
class TestRun:
    """The test bag through the live path, with the belief states and what was recorded."""

    replay: Replay
    tracker: object  # temporal.TemporalTracker
    states: list
    recorded: Path | None = None
    predictions: int = 0  # prediction messages recorded


@dataclass
class Labels:
    """Whether probes and coherence apply (labels in both bags, classes shared)."""

    use: bool
    test: np.ndarray  # bool [N]: test samples with a label


@dataclass
class SubsetResults:
    """Per-subset report entries, coherence pairs, latent panels for the plots."""

    entries: list = field(default_factory=list)
    pairs: list = field(default_factory=list)
    panels: dict = field(default_factory=dict)
    fit_counts: dict = field(default_factory=dict)  # meta.fit_samples
    seconds: float = 0.0  # meta.metric_seconds
    test_experts: tuple | None = None  # the test rows' expert outputs (encoders run once)
    train_experts: tuple | None = None  # every training row's, likewise (when labels are used)
