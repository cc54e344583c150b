"""
Approximate-time pairing of modalities, purely stamp-driven (see docs/ARCHITECTURE.md, Pairing).

A sample is formed at each frame of the reference modality, at t = its stamp (the end of the
chunk for an audio reference). For every other modality the window ends at t (causal); what a
modality needs is its kind's (llmos_ros.kinds: `windowed`, `spans_time`):

- not windowed (image; taxels and wrench with `window_s: 0`): the newest frame stamped
  <= t + slop_s;
- windowed, frames at an instant (taxels and wrench with a window, the default): the frames
  stamped in [t - window_s, t);
- windowed, frames spanning time (audio): the chunks overlapping [t - window_s, t) (a chunk
  starting at t is not used).

The reference itself: not windowed, its own frame; windowed and spanning time (audio), as
above (its chunk ends at t); windowed at an instant (taxels or wrench with a window as the
reference), the frames stamped in (t - window_s, t], so the window holds its own frame at t.
That window ends at t + 1 ns (`SampleSet.window_end`; [t + 1 ns - window_s, t + 1 ns) in
integer nanoseconds), and the preprocessor grids it from there.

A modality whose newest usable frame is older than t - max_age_s (for audio: whose newest chunk
ends before t - max_age_s) is absent from the sample. A pending sample is emitted once every other
modality covers t (an image/taxel frame stamped >= t, an audio chunk ending >= t) or once the
newest stamp seen on any input exceeds t + max_wait_s; `pop_ready(flush=True)` emits the rest.

Decisions are taken in `push`, never in `pop_ready`, so the output depends only on the frames and
the order they arrive in, not on when the caller polls. Frames of one modality must arrive in
stamp order; an older stamp is dropped ('stamp_backwards'), an equal one too ('stamp_repeated').
Every drop is reported as a `core.drops.Drop` with the modality it costs (`push` returns them).

Time line and jumps (J = sync.jump_s): the reference modality defines the time line.
- A reference frame stamped more than J after the newest stamp seen, or more than J before the
  reference's previous one (a far-future stamp, a clock step, a looping bag, stamps back to zero)
  is dropped ('stamp_jump'). If the next reference frame continues from it (stamped after it and
  nearer to it than to the old time line), the time line re-anchors there: pending samples are
  emitted, every buffered frame is forgotten and the frame is accepted. So one bad stamp costs
  that frame only, and a real jump costs one frame.
- Once the reference has a frame, a frame of another modality stamped more than J away from the
  reference's newest stamp cannot be paired and is dropped ('off_timeline'); a stream that comes
  back within J of the reference after stepping back re-anchors (its buffer is forgotten).
The offline dataset, evaluation and the live node share this code, so they recover identically.
Memory is bounded: at most queue_size pending or ready samples and image frames per modality
(beyond that the oldest is dropped, 'queue_full'); windowed streams (audio, taxel windows) keep
only window_s + max_wait_s + margin, at most 64 x queue_size frames.
"""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from llmos_ros import kinds
from llmos_ros.config import Config
from llmos_ros.core.drops import Drop, PushResult
from llmos_ros.core.frames import Frame
from llmos_ros.errors import ConfigError

NS = 1_000_000_000


@dataclass
class SampleSet:
    """One paired sample: its time and, per present modality, the frames its window holds."""

    stamp_ns: int
    windows: dict[str, list[Frame]]
    stamps: dict[str, int] = field(default_factory=dict)  # header stamp of the newest frame used
    ends: dict[str, int] = field(default_factory=dict)  # window ends other than stamp_ns

    @property
    def present(self) -> set[str]:
        return set(self.windows)

    def window_end(self, name: str) -> int:
        """Where the window of `name` ends (exclusive): stamp_ns, or t + 1 ns (module doc)."""
        return self.ends.get(name, self.stamp_ns)


def reference_modality(cfg: Config) -> str:
    """The configured reference, else the first modality of the lowest `Kind.reference_rank`."""
    if not cfg.modalities:
        raise ConfigError('no modalities configured')
    ref = cfg.sync.reference
    if ref:
        if ref not in cfg.modalities:
            raise ConfigError(f'sync.reference {ref!r} is not a modality: '
                              f'{sorted(cfg.modalities)}')
        return ref
    return min(cfg.modalities, key=lambda n: kinds.of(cfg.modalities[n]).reference_rank)


class Synchronizer:
    """Pairs frames of the configured modalities into `SampleSet`s (see module doc)."""

    def __init__(self, cfg: Config, margin_s: float | None = None):
        self.cfg = cfg
        self.mods = dict(cfg.modalities)
        self.kinds = {n: kinds.of(m) for n, m in self.mods.items()}
        self.reference = reference_modality(cfg)
        s = cfg.sync
        self.slop_ns = int(round(s.slop_s * NS))
        self.max_wait_ns = int(round(s.max_wait_s * NS))
        self.queue_size = max(1, int(s.queue_size))
        self.jump_ns = int(round(s.jump_s * NS))
        if s.jump_s <= 0 or s.jump_s <= s.max_wait_s:
            raise ConfigError(f'sync.jump_s must be > 0 and > sync.max_wait_s '
                              f'({s.max_wait_s} s), got {s.jump_s}')
        # how late (beyond max_wait) a reference frame may arrive and still find its history
        margin = s.max_wait_s if margin_s is None else margin_s
        self.margin_ns = int(round(max(0.0, margin) * NS))
        self.max_age_ns = {n: int(round(m.max_age_s * NS)) for n, m in self.mods.items()}
        self.window_ns = {n: int(round(m.window_s * NS)) for n, m in self.mods.items()
                          if self.kinds[n].windowed(m)}
        self.drops: Counter[str] = Counter()  # frames or samples dropped, by reason
        self.absent: Counter[str] = Counter()  # samples emitted without a modality, by modality
        self.emitted = 0
        self.accepted: Counter[str] = Counter()  # frames taken into pairing, by modality
        self.reset()

    def reset(self) -> None:
        """Forget all frames and pending samples (counters are kept)."""
        self._hist: dict[str, deque] = {n: deque() for n in self.mods}
        self._last_stamp: dict[str, int] = {}
        self._newest_end: dict[str, int] = {}
        self._newest_seen: int | None = None
        self._last_ref_t: int | None = None
        self._jump_ns: int | None = None  # stamp of the last reference frame dropped as a jump
        self._pending: deque[tuple[int, Frame]] = deque()
        self._ready: deque[SampleSet] = deque()

    # -----------------------------------------------------------------------------------------
    def push(self, name: str, frame: Frame) -> PushResult:
        """
        Add one frame of modality `name`; return what it caused (samples wait in `pop_ready`).

        The result's drops: the frame itself when a rule refuses it (then the only drop, and
        `accepted` is False), else every pending or ready sample (reference modality) and every
        buffered frame (its modality) that a full queue evicted.
        """
        if name not in self.mods:
            return PushResult.refuse(self._drop(name, 'unknown_modality',
                                                f'not one of {sorted(self.mods)}'))
        stamp = int(frame.stamp_ns)
        drops: list[Drop] = []  # evictions (re-anchoring may emit pending samples)
        check = self._check_reference if name == self.reference else self._check_other
        refused = check(name, stamp, drops)
        if refused:
            return PushResult.refuse(refused)
        last = self._last_stamp.get(name)
        if last is not None and stamp <= last:
            return PushResult.refuse(self._drop(
                name, 'stamp_backwards' if stamp < last else 'stamp_repeated',
                f'stamp {stamp} ns after {last} ns'))
        self._last_stamp[name] = stamp
        self.accepted[name] += 1
        self._newest_end[name] = frame.end_ns
        if self._newest_seen is None or stamp > self._newest_seen:
            self._newest_seen = stamp
        hist = self._hist[name]
        hist.append(frame)
        if name == self.reference:
            t = frame.end_ns  # the stamp, or the end of a frame spanning time
            self._last_ref_t = t
            self._pending.append((t, frame))
            if len(self._pending) > self.queue_size:
                old, _ = self._pending.popleft()
                drops.append(self._drop(name, 'queue_full', f'pending sample at {old} ns'))
        drops += self._advance(False)
        drops += self._prune()
        return PushResult([], drops)

    def pop_ready(self, flush: bool = False) -> list[SampleSet]:
        """Samples ready so far, oldest first; flush=True also emits every pending sample."""
        if flush:
            self.flush()
        out = list(self._ready)
        self._ready.clear()
        return out

    def flush(self) -> list[Drop]:
        """Make every pending sample ready (end of a bag); the drops of a full ready queue."""
        return self._advance(True)

    @property
    def pending(self) -> int:
        return len(self._pending)

    # -----------------------------------------------------------------------------------------
    def _check_reference(self, name: str, stamp: int, drops: list[Drop]) -> Drop | None:
        """Jump rule of the reference (module doc): a 'stamp_jump' drop, or None (re-anchored)."""
        last = self._last_stamp.get(name)
        if last is None:
            self._forget_off_timeline(stamp)
            return None
        newest = max(last, self._newest_seen if self._newest_seen is not None else last)
        if last - self.jump_ns <= stamp <= newest + self.jump_ns:
            self._jump_ns = None
            return None
        cand = self._jump_ns
        if cand is not None and stamp > cand and abs(stamp - cand) < abs(stamp - last):
            drops += self._reanchor()
            return None
        self._jump_ns = stamp
        return self._drop(name, 'stamp_jump', f'stamp {stamp} ns is more than jump_s from the '
                          f'time line (previous reference stamp {last} ns)')

    def _check_other(self, name: str, stamp: int, drops: list[Drop]) -> Drop | None:
        """A non-reference frame far from the reference's time line: an 'off_timeline' drop."""
        ref_last = self._last_stamp.get(self.reference)
        if ref_last is None:
            return None
        if abs(stamp - ref_last) > self.jump_ns:
            return self._drop(name, 'off_timeline', f'stamp {stamp} ns is more than jump_s from '
                              f'the reference stamp {ref_last} ns')
        last = self._last_stamp.get(name)
        if last is not None and stamp < last - self.jump_ns:  # stepped back onto the time line
            del self._last_stamp[name]
            self._newest_end.pop(name, None)
            self._hist[name].clear()
        return None

    def _forget_off_timeline(self, ref_stamp: int) -> None:
        """First reference frame: forget streams buffered more than J away from it."""
        for other in list(self._last_stamp):
            if abs(self._last_stamp[other] - ref_stamp) > self.jump_ns:
                del self._last_stamp[other]
                self._newest_end.pop(other, None)
                self._hist[other].clear()
        self._newest_seen = max(self._last_stamp.values(), default=None)

    def _reanchor(self) -> list[Drop]:
        """The reference jumped for good: emit pending samples, forget every buffered frame."""
        drops = self._advance(True)
        ready = self._ready
        self.reset()
        self._ready = ready
        return drops

    def _drop(self, name: str, reason: str, detail: str) -> Drop:
        self.drops[reason] += 1
        return Drop(name, reason, detail)

    def _covered(self, t: int) -> bool:
        for name in self.mods:
            if name == self.reference:
                continue
            end = self._newest_end.get(name)  # the stamp, or the end of an audio chunk
            if end is None:
                return False
            # within slop of t counts as covering it: a sample never waits for the next audio
            # chunk or taxel frame when the newest one is that close (approximate time)
            if end < t - self.slop_ns:
                return False
        return True

    def _advance(self, flush: bool) -> list[Drop]:
        drops = []
        while self._pending:
            t, ref_frame = self._pending[0]
            if not (flush or self._covered(t) or self._newest_seen > t + self.max_wait_ns):
                break
            self._pending.popleft()
            self._ready.append(self._sample(t, ref_frame))
            self.emitted += 1
            if len(self._ready) > self.queue_size:
                old = self._ready.popleft()
                drops.append(self._drop(self.reference, 'queue_full',
                                        f'ready sample at {old.stamp_ns} ns not taken'))
        return drops

    def _sample(self, t: int, ref_frame: Frame) -> SampleSet:
        windows: dict[str, list[Frame]] = {}
        stamps: dict[str, int] = {}
        ends: dict[str, int] = {}
        for name in self.mods:
            own = name == self.reference and not self.kinds[name].spans_time
            if own and name not in self.window_ns:
                windows[name] = [ref_frame]
                stamps[name] = int(ref_frame.stamp_ns)
                continue
            hist = self._hist[name]
            if name in self.window_ns:
                end = t + 1 if own else t  # a windowed reference holds its frame at t
                if end != t:
                    ends[name] = end
                lo = end - self.window_ns[name]
                win = [fr for fr in hist if fr.stamp_ns < end and not self._before(name, fr, lo)]
                fresh = bool(win) and win[-1].end_ns >= t - self.max_age_ns[name]
            else:
                win = []
                for fr in reversed(hist):
                    if fr.stamp_ns <= t + self.slop_ns:
                        win = [fr]
                        break
                fresh = bool(win) and win[0].stamp_ns >= t - self.max_age_ns[name]
            if fresh:
                windows[name] = win
                stamps[name] = int(win[-1].stamp_ns)
            else:
                self.absent[name] += 1
        return SampleSet(t, windows, stamps, ends)

    def _before(self, name: str, frame: Frame, lo: int) -> bool:
        """
        The frame lies wholly before a window starting at lo.

        An audio chunk (spans time) ending at lo misses [lo, t); a frame stamped lo is in it.
        """
        if self.kinds[name].spans_time:
            return frame.end_ns <= lo
        return frame.stamp_ns < lo

    def _prune(self) -> list[Drop]:
        """Forget frames no pending or future sample can use; cap what is left."""
        if self._pending:
            low = self._pending[0][0]
        else:
            low = self._newest_seen - self.max_wait_ns - self.margin_ns
            if self._last_ref_t is not None:
                low = max(low, self._last_ref_t)
        drops = []
        for name in self.mods:
            hist = self._hist[name]
            if not hist:
                continue
            if name in self.window_ns:
                lo = low - self.window_ns[name]
                while hist and self._before(name, hist[0], lo):
                    hist.popleft()
                cap = 64 * self.queue_size
            else:
                # keep the newest frame stamped <= low + slop and everything after it
                while len(hist) > 1 and hist[1].stamp_ns <= low + self.slop_ns:
                    hist.popleft()
                cap = self.queue_size
                if name == self.reference:
                    while len(hist) > 1:
                        hist.popleft()
            while len(hist) > cap:
                old = hist.popleft()
                drops.append(self._drop(name, 'queue_full', f'buffered frame at '
                                        f'{old.stamp_ns} ns (more than {cap} waiting)'))
        return drops
