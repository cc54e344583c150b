"""
perception_node: sensor topics in, fused latent state and cross-modal predictions out.

A lifecycle node (REP 2005 states, driven through `<node>/change_state` or by `autostart`):
  configure   checks the parameters, loads the checkpoint (engine, belief tracker) and creates
              the publishers; a failure (a bad parameter, an unknown device, a missing,
              mismatched or tampered checkpoint) leaves the node up and unconfigured, the reason
              logged once and published in /diagnostics (ERROR, 'unconfigured: ...');
  activate    forgets every frame and sample from before (no stale output), subscribes to the
              inputs and starts the workers;
  deactivate  destroys the subscriptions and stops the workers: an inactive node neither
              converts nor pairs nor publishes;
  cleanup     destroys the publishers and frees the model;
  shutdown    (from any state) all of the above.
/diagnostics is published in every state (it reports the state).

Inputs (relative, remappable, sensor-data QoS per REP 2003), those of the model's modalities:
  camera/image_raw (or .../compressed), microphone/audio, tactile/array or tactile/image.
Outputs (reliable, keep last 10): llmos/latent (LatentState, frame `frame_id`),
  llmos/prediction/<modality> (frame_id of the input it predicts), llmos/debug_image (only
  while subscribed, at most `debug_image_rate_hz`; layout in llmos_ros.core.debug_view),
  /diagnostics.
Every publisher and subscription takes `qos_overrides.<topic>.<publisher|subscription>.*`;
incompatible QoS and lost messages are logged and counted in /diagnostics (qos/...).

Parameters: see PARAMETERS. LIVE ones apply at once when set; the others are read at configure
and may be set only while the node is unconfigured (a change is otherwise rejected, with the
reason, never ignored).
With `publish_belief` (default) also llmos/belief (LatentState: the belief over time,
staleness-aware) and llmos/surprise (Surprise) for every latent (llmos_ros/temporal.py).
"""
from __future__ import annotations

from collections import Counter, deque
import dataclasses
import math
import threading
import time

import numpy as np
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from threadpoolctl import threadpool_limits
import torch

from llmos_ros import kinds
from llmos_ros.belief import FALLBACK_PROCESS_NOISE, BeliefConfig
from llmos_ros.belief_noise import load_noise
from llmos_ros.checkpoint import load_checkpoint
from llmos_ros.core.drops import Drop, DropCounter
from llmos_ros.errors import ConfigError, InputError, LlmosError
from llmos_ros.inference import Inference, PerceptionEngine, check_backend, check_device
from llmos_ros.kinds.image import COMPRESSED_IMAGE, IMAGE, ImageFrame
from llmos_ros.nodes import convert
from llmos_ros.nodes.diagnostics import ERROR, OK, WARN, RateTracker, make_status
from llmos_ros.nodes.qos import (
    QosEvents,
    create_publisher,
    create_sensor_subscription,
    reliable_qos,
)
from llmos_ros.nodes.runtime import Param, declare_parameters, run_node
from llmos_ros.surprise import context_warning, held_out_line, load_calibration
from llmos_ros.temporal import TemporalTracker

LATENCY_WINDOW = 1000
WORKER_JOIN_S = 5.0  # deactivate waits this long for a worker to finish its sample

PARAMETERS = {
    'model_path': Param('', 'checkpoint from llmos-train; empty: stay unconfigured',
                        read_only=False),
    'device': Param('cpu', "torch device: 'cpu', 'cuda' or 'cuda:N'", read_only=False),
    'torch_threads': Param(1, 'CPU compute threads of the process: torch intra-op and '
                           "numpy's BLAS (0: their defaults, one per core). Batch-1 inference "
                           'gains little from more, and their spinning delays the other '
                           'workers. With backend onnxruntime also its intra-op threads '
                           '(0: its default)', (0, 256), read_only=False),
    'backend': Param('torch', 'runs the encoders and decoders: torch (eager, on device) or '
                     'onnxruntime (cpu only; exported at configure and checked equal to eager)',
                     read_only=False, constraints='torch | onnxruntime'),
    'autostart': Param(True, 'configure and activate at start (without a lifecycle manager)'),
    'camera_transport': Param('raw', 'camera input: raw (camera/image_raw) or compressed '
                              '(camera/image_raw/compressed)', read_only=False,
                              constraints='raw | compressed'),
    'modalities': Param('', "comma-separated subset of the model's modalities to subscribe "
                        "to; '' = all", read_only=False),
    'publish_predictions': Param(True, 'publish llmos/prediction/<modality>', read_only=False),
    'frame_id': Param('llmos', 'header.frame_id of llmos/latent (predictions carry the frame of '
                      'the input they predict)', read_only=False),
    'slop_s': Param(-1.0, "pairing slop; < 0 keeps the checkpoint's", read_only=False),
    'max_wait_s': Param(-1.0, "pairing wait; < 0 keeps the checkpoint's", read_only=False),
    'max_age_s': Param(-1.0, "oldest usable input; < 0 keeps the checkpoint's",
                       read_only=False),
    'diagnostics_period_s': Param(1.0, 'period of /diagnostics', read_only=False),
    'audio_prediction_iterations': Param(4, 'Griffin-Lim iterations for audio predictions',
                                         (1, 256), read_only=False),
    'prediction_rate_hz': Param(10.0, 'at most this many prediction sets per second; 0: one '
                                'per latent state', (0.0, 1000.0), read_only=False),
    'debug_image_rate_hz': Param(2.0, 'at most this many llmos/debug_image per second, only '
                                 'while subscribed; 0: never', (0.0, 100.0), read_only=False),
}
# Applied at once when set at runtime; every other parameter is read at configure.
LIVE = ('frame_id', 'audio_prediction_iterations', 'prediction_rate_hz', 'debug_image_rate_hz')
# upper bounds of the numeric parameters: beyond them a value is a typo, not a setting
LIMITS = {'slop_s': 10.0, 'max_wait_s': 10.0, 'max_age_s': 3600.0,
          'diagnostics_period_s': 3600.0, 'prediction_rate_hz': 1000.0,
          'audio_prediction_iterations': 1000, 'torch_threads': 256}
TRANSPORTS = ('raw', 'compressed')


def check_parameters(values: dict) -> None:
    """
    Raise ConfigError naming the first unusable parameter of `values` (name -> value).

    backend is torch or onnxruntime and runs on device (onnxruntime: cpu); device must exist
    here; camera_transport is raw or compressed; numbers are finite and within LIMITS;
    diagnostics_period_s > 0, audio_prediction_iterations >= 1, the others >= 0 (slop_s,
    max_wait_s, max_age_s: < 0 keeps the checkpoint's value).
    """
    check_backend(values['backend'], values['device'])
    check_device(values['device'])
    if values['camera_transport'] not in TRANSPORTS:
        raise ConfigError(f'camera_transport {values["camera_transport"]!r} is not one of '
                          f'{", ".join(TRANSPORTS)}')
    lowest = {'diagnostics_period_s': 1e-3, 'audio_prediction_iterations': 1,
              'prediction_rate_hz': 0.0, 'torch_threads': 0}
    for name, top in LIMITS.items():
        value = values[name]
        low = lowest.get(name, -math.inf)
        if not math.isfinite(value) or not low <= value <= top:
            raise ConfigError(f'{name} {value} is out of range: expected '
                              f'{low if low > -math.inf else "< 0 (keep) or 0"} .. {top}')

# belief.<name> parameters: fields of llmos_ros.belief.BeliefConfig (defaults from there)
BELIEF_PARAMETERS = {
    'process_noise': 'random-walk variance per second of every latent dimension; < 0: the '
                     "checkpoint's, learned per dimension (0.05 if it has none)",
    'reset_gap_s': 'a longer gap between samples restarts the belief',
    'stale_grace_s': 'an expert this old still has its full weight',
    'stale_tau_s': 'an expert grace + tau old has half its weight (0: no down-weighting)',
    'max_age_s': 'hard limit: an older expert is not used by the belief',
    'jump_p': 'an innovation this unlikely (chi-square tail) restarts the belief; 0: never'}


def _read_at_configure(name: str) -> bool:
    """Parameters taken at configure: PARAMETERS outside LIVE, publish_belief and belief.*."""
    return name in PARAMETERS or name == 'publish_belief' or name.startswith('belief.')


class PerceptionNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__('llmos_perception', **kwargs)
        self._live: dict = {}
        self._apply_live(declare_parameters(self, PARAMETERS))
        self._qos_events = QosEvents(self)
        self._frame_ids: dict[str, str] = {}  # modality -> frame_id of its newest input
        self._last_inputs: dict = {}  # modality -> deque of its newest frames, for the debug image
        self._debug_pub = None
        self._last_debug = -1e9
        self._declare_belief_parameters()
        self.engine: PerceptionEngine | None = None
        self._lock = threading.Lock()  # guards the engine's synchronizer and the pending slot
        self._pending = None  # freshest ready sample set, waiting for the worker
        self._pending_prediction = None  # freshest result, waiting for the prediction worker
        self._sample_ready = threading.Condition(self._lock)  # wakes the latent worker
        self._result_ready = threading.Condition(self._lock)  # wakes the prediction worker
        self._workers: list[threading.Thread] = []
        self._stop = threading.Event()  # set to stop the workers of one activation
        self._subs, self._pred_pubs = [], {}
        self._latent_pub = self._diag_pub = self._diag_timer = None
        self._tracker: TemporalTracker | None = None
        self._belief_pub = self._surprise_pub = None
        self._rates: dict[str, RateTracker] = {}
        self._last_stamp: dict[str, int] = {}
        self._counts: Counter = Counter()
        self._refused = DropCounter()  # messages refused on arrival (conversion or pairing)
        self._latency_ms: deque = deque(maxlen=LATENCY_WINDOW)
        self._last_error_log = 0.0
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._configured_once = False
        self._config_error = 'not configured yet'  # why the node is unconfigured, for /diagnostics
        self._diag_pub = create_publisher(self, _diagnostic_array(), '/diagnostics',
                                          reliable_qos(), self._qos_events)
        self._diag_timer = self.create_timer(self._diag_period(), self._publish_diagnostics)
        if self.get_parameter('autostart').value:
            self._autostart_timer = self.create_timer(0.0, self._autostart)

    # --- parameters ----------------------------------------------------------------------------
    def _apply_live(self, values: dict) -> None:
        """Take the LIVE parameters among `values` into effect."""
        for name in LIVE:
            if name in values:
                self._live[name] = values[name]
        rate = self._live['prediction_rate_hz']
        self._prediction_period = 1.0 / rate if rate > 0 else 0.0
        self._audio_iterations = int(self._live['audio_prediction_iterations'])

    def _on_set_parameters(self, params) -> SetParametersResult:
        """LIVE parameters apply at once; configure-time ones only while unconfigured."""
        live = {}
        for p in params:
            if p.name in LIVE:
                live[p.name] = p.value
            elif _read_at_configure(p.name) and self.engine is not None:
                return SetParametersResult(successful=False, reason=(
                    f'{p.name} is read at configure and the node is configured: deactivate and '
                    f'clean up, set it, then configure again (applied at once: '
                    f'{", ".join(LIVE)})'))
        if live:
            self._apply_live(live)
            self.get_logger().info('applied ' + ', '.join(f'{k}={v}' for k, v in live.items()))
        return SetParametersResult(successful=True)

    # --- lifecycle -----------------------------------------------------------------------------
    def _autostart(self):
        self.destroy_timer(self._autostart_timer)
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        path = self.get_parameter('model_path').value
        device = self.get_parameter('device').value
        if not path:
            return self._configure_failed('no model: set the model_path parameter '
                                          '(llmos-train --out)')
        try:
            check_parameters({name: self.get_parameter(name).value
                              for name in ('backend', 'device', 'camera_transport', *LIMITS)})
            threads = self.get_parameter('torch_threads').value
            if threads > 0:
                torch.set_num_threads(threads)
                # numpy's OpenBLAS (spectrograms, Griffin-Lim) keeps a pool of one thread per
                # core whose idle worker can busy-wait after every matrix product (in one run
                # at 30 Hz on 2 cores, 57 % of the node's CPU samples under perf), for products
                # too small to gain from a second thread
                threadpool_limits(threads, user_api='blas')
            loaded = load_checkpoint(path, device='cpu')
            wanted = [m.strip() for m in self.get_parameter('modalities').value.split(',')
                      if m.strip()]
            overrides = {k: self.get_parameter(k).value
                         for k in ('slop_s', 'max_wait_s', 'max_age_s')
                         if self.get_parameter(k).value >= 0}
            self.engine = PerceptionEngine(loaded, device, wanted or None, overrides,
                                           self.get_parameter('backend').value, threads)
            self._configure_belief(path, loaded)
        except LlmosError as exc:
            return self._configure_failed(f'cannot configure: {exc}')
        except Exception as exc:  # noqa: BLE001 - e.g. torch failing on a device: never silent
            return self._configure_failed(f'cannot configure: {type(exc).__name__}: {exc}')
        self._config_error = ''
        self._configured_once = True
        self._prediction_period = self._rate_period()
        self._audio_iterations = self.get_parameter('audio_prediction_iterations').value
        self._rates = {name: RateTracker() for name in self.engine.active}
        self._create_publishers()
        self.get_logger().info(
            f'model {self.engine.model_id} ({self.engine.cfg.model.fusion}) on {device}, '
            f'backend {self.engine.backend}; inputs: '
            + ', '.join(f'{n} <- {self._topic(n)[0]}' for n in self.engine.active))
        return TransitionCallbackReturn.SUCCESS

    def _configure_failed(self, reason: str) -> TransitionCallbackReturn:
        """Log why configure failed (one line), keep it for /diagnostics, stay unconfigured."""
        self._config_error = reason
        self.get_logger().error(f'{reason}; staying unconfigured')
        return TransitionCallbackReturn.FAILURE

    @property
    def configured(self) -> bool:
        """True once a configure has succeeded (the embedded runner checks this)."""
        return self._configured_once

    def _diag_period(self) -> float:
        """diagnostics_period_s if usable, else 1 s (the bad value is reported by configure)."""
        period = self.get_parameter('diagnostics_period_s').value
        ok = math.isfinite(period) and 1e-3 <= period <= LIMITS['diagnostics_period_s']
        return period if ok else 1.0

    def _rate_period(self) -> float:
        rate = self.get_parameter('prediction_rate_hz').value
        return 1.0 / rate if rate > 0 else 0.0

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        """Start from empty buffers, subscribe and start the workers, then publish."""
        self._forget_inputs()
        result = super().on_activate(state)  # activates the lifecycle publishers
        self._create_subscriptions()
        self._stop = threading.Event()
        self._workers = [threading.Thread(target=self._work, args=(self._stop,),
                                          name='llmos_latent', daemon=True),
                         threading.Thread(target=self._predict_work, args=(self._stop,),
                                          name='llmos_prediction', daemon=True)]
        for worker in self._workers:
            worker.start()
        return result

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        """Unsubscribe and stop the workers (a sample being published finishes first)."""
        self._destroy_subscriptions()
        self._stop_workers()
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        """From any state: stop, unsubscribe, free the model; /diagnostics stops too."""
        self._release()
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: State) -> TransitionCallbackReturn:
        """A transition raised: free everything and fall back to unconfigured."""
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _release(self) -> None:
        """Free what configure and activate made: subscriptions, workers, publishers, model."""
        self._destroy_subscriptions()
        self._stop_workers()
        self._destroy_publishers()
        with self._lock:
            self.engine = None
            self._tracker = None
            self._pending = self._pending_prediction = None
            self._last_inputs.clear()

    def _forget_inputs(self) -> None:
        """Drop buffered frames, pending samples and the belief: activate starts afresh."""
        with self._lock:
            self.engine.synchronizer.reset()
            self._pending = self._pending_prediction = None
            self._last_inputs.clear()
            if self._tracker is not None:
                self._tracker = TemporalTracker(self.engine, self._tracker.cfg,
                                                self._tracker.calibration, self._tracker.noise)

    # --- interfaces ----------------------------------------------------------------------------
    def _topic(self, name: str) -> tuple[str, str]:
        mod = self.engine.cfg.modalities[name]
        topic, msg_type = mod.topic.lstrip('/'), mod.msg_type
        transport = self.get_parameter('camera_transport').value
        if msg_type == IMAGE and name == 'camera' and transport == 'compressed':
            return topic + '/compressed', COMPRESSED_IMAGE
        return topic, msg_type

    def _create_publishers(self):
        """Configure: the output publishers (lifecycle: silent until activated)."""
        from sensor_msgs.msg import Image

        from llmos_ros.msg import LatentState
        events = self._qos_events
        self._latent_pub = create_publisher(self, LatentState, 'llmos/latent', reliable_qos(),
                                            events, lifecycle=True)
        if self.get_parameter('publish_predictions').value:
            for name in self.engine.names:
                kind = convert.prediction_type(self.engine.cfg.modalities[name])
                self._pred_pubs[name] = create_publisher(
                    self, kind, f'llmos/prediction/{name}', reliable_qos(), events,
                    lifecycle=True)
        self._debug_pub = create_publisher(self, Image, 'llmos/debug_image', reliable_qos(5),
                                           events, lifecycle=True)
        self._create_belief_interfaces()
        self.destroy_timer(self._diag_timer)
        self._diag_timer = self.create_timer(self._diag_period(), self._publish_diagnostics)

    def _destroy_publishers(self):
        """Cleanup: the output publishers (/diagnostics lives on: it reports the state)."""
        for pub in [self._latent_pub, self._debug_pub, self._belief_pub, self._surprise_pub,
                    *self._pred_pubs.values()]:
            if pub is not None:
                self.destroy_lifecycle_publisher(pub)
        self._latent_pub = self._debug_pub = self._belief_pub = self._surprise_pub = None
        self._pred_pubs = {}

    def _create_subscriptions(self):
        """Activate: one sensor-data subscription per active modality."""
        for name in self.engine.active:
            topic, msg_type = self._topic(name)
            self._subs.append(create_sensor_subscription(
                self, convert.message_class(msg_type), topic,
                lambda msg, n=name, t=msg_type: self._on_input(n, t, msg),
                events=self._qos_events))

    def _destroy_subscriptions(self):
        """Deactivate: no input reaches the node any more."""
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []

    # --- data path -----------------------------------------------------------------------------
    def _on_input(self, name: str, msg_type: str, msg):
        """Executor thread: convert, pair, hand the freshest ready sample to the worker."""
        received = time.monotonic()
        self._rates[name].tick(received)
        try:
            frame = kinds.frame_from_msg(msg_type, msg)
        except InputError as exc:  # oversized: refused before it is copied
            self._refuse(Drop(name, exc.reason, str(exc)))
            return
        except (ValueError, TypeError) as exc:
            self._refuse(Drop(name, 'malformed', str(exc)))
            return
        self._last_stamp[name] = frame.stamp_ns
        self._frame_ids[name] = frame.frame_id
        self._keep_for_debug(name, frame)
        with self._lock:
            if self.engine is None:
                return
            result = self.engine.push(name, frame)  # counts result.drops in engine.drops
            if result.samples:
                if self._pending is not None:
                    self._counts['superseded'] += 1
                self._counts['superseded'] += len(result.samples) - 1
                self._pending = (result.samples[-1], received)
                self._sample_ready.notify()
        if result.refused:
            self._refused.add([result.refused])
        if result.drops:
            self._log_drop(lambda: f'input dropped: {_describe(result.drops)}; '
                           f'drops so far: {self._drop_summary()}')

    def _work(self, stop: threading.Event):
        """Worker thread: preprocess, encode, fuse, decode, publish; returns once `stop` is set."""
        while True:
            taken = self._take(self._sample_ready, '_pending', stop)
            if taken is None:
                return
            (sample, received), engine = taken
            try:
                result, drops = engine.infer(sample)  # counts its drops in engine.drops
            except Exception as exc:  # a model failure must not kill the node
                self._drop('model', 'inference_error', repr(exc))
                continue
            if drops:
                self._log_drop(lambda drops=drops: f'input dropped: {_describe(drops)}')
            if result is None:
                self._counts['no_usable_input'] += 1
                continue
            try:
                self._publish_latent(result)
                wanted = bool(self._pred_pubs) or self._debug_wanted()
            except Exception:  # the context was shut down under the worker (SIGTERM): stop
                if self.context.ok():
                    raise
                return
            self._latency_ms.append((time.monotonic() - received) * 1e3)
            self._publish_belief(result)
            if wanted:
                with self._lock:
                    if self._pending_prediction is not None:
                        self._counts['predictions_skipped'] += 1
                    self._pending_prediction = result
                    self._result_ready.notify()

    def _take(self, ready: threading.Condition, slot: str, stop: threading.Event):
        """Wait for the freshest item in `slot` and take it: (item, engine), None when stopping."""
        with self._lock:
            while not stop.is_set() and getattr(self, slot) is None:
                ready.wait(0.5)
            if stop.is_set():
                return None
            item = getattr(self, slot)
            setattr(self, slot, None)
            return item, self.engine

    def _predict_work(self, stop: threading.Event):
        """Second worker: cross-modal predictions, never delaying the next latent state."""
        while True:
            taken = self._take(self._result_ready, '_pending_prediction', stop)
            if taken is None:
                return
            result, engine = taken
            started = time.monotonic()
            try:
                engine.predict(result)
                frames = self._publish_predictions(engine, result)
                if self._debug_wanted():
                    self._publish_debug(engine, result, frames)
            except Exception as exc:
                if not self.context.ok():
                    return  # shutting down (see _work)
                self._drop('model', 'prediction_error', repr(exc))
            rest = self._prediction_period - (time.monotonic() - started)
            if rest > 0:  # at most prediction_rate_hz: predictions yield the CPU to latents
                with self._lock:
                    self._result_ready.wait_for(stop.is_set, rest)

    def _publish_latent(self, result: Inference):
        self._latent_pub.publish(convert.latent_state(
            self.engine.latent_fields(result, self._live['frame_id'])))
        self._counts['published'] += 1

    # --- belief and surprise (llmos_ros/temporal.py) --------------------------------------------
    def _declare_belief_parameters(self):
        from rcl_interfaces.msg import ParameterDescriptor
        self.declare_parameter('publish_belief', True, ParameterDescriptor(
            description='publish llmos/belief (LatentState) and llmos/surprise (Surprise)'))
        for name, text in BELIEF_PARAMETERS.items():
            self.declare_parameter(f'belief.{name}', getattr(BeliefConfig(), name),
                                   ParameterDescriptor(description=text))

    def _configure_belief(self, path: str, loaded):
        """The tracker of the belief and surprise; a missing calibration is logged once."""
        self._tracker = None
        if not self.get_parameter('publish_belief').value:
            return
        cfg = BeliefConfig.from_dict({n: self.get_parameter(f'belief.{n}').value
                                      for n in BELIEF_PARAMETERS})
        calibration, why = load_calibration(path, loaded)
        old = context_warning(calibration, loaded.model.names)
        if calibration is None or old:
            self.get_logger().warning(old or f'surprise tail probabilities are NaN: {why}')
        if calibration is not None:
            self.get_logger().info(held_out_line(calibration, loaded.model.names))
        noise, why = load_noise(path, loaded) if cfg.process_noise < 0 else (None, '')
        if why:
            self.get_logger().warning(f'belief noise: {FALLBACK_PROCESS_NOISE} for every '
                                      f'dimension: {why}')
        elif noise is not None:
            self.get_logger().info(f'belief noise: learned per dimension ({noise.pairs} sample '
                                   f'pairs, variance power {noise.variance_power:g})')
        self._tracker = TemporalTracker(self.engine, cfg, calibration, noise)

    def _create_belief_interfaces(self):
        if self._tracker is None:
            return
        from llmos_ros.msg import LatentState, Surprise
        self._belief_pub = create_publisher(self, LatentState, 'llmos/belief', reliable_qos(),
                                            self._qos_events, lifecycle=True)
        self._surprise_pub = create_publisher(self, Surprise, 'llmos/surprise', reliable_qos(),
                                              self._qos_events, lifecycle=True)

    def _publish_belief(self, result: Inference):
        """Worker thread, after the latent: fold `result` into the belief, publish both."""
        if self._tracker is None or self._belief_pub is None:
            return
        try:
            state = self._tracker.step(result)
            frame_id = self._live['frame_id']
            latent = self.engine.latent_fields(result, frame_id)
            self._belief_pub.publish(
                convert.latent_state(self._tracker.belief_fields(state, latent)))
            self._surprise_pub.publish(
                convert.surprise(self._tracker.surprise_fields(state, frame_id)))
        except Exception as exc:  # a model or filter failure must not kill the node
            if self.context.ok():  # not a shutdown mid-publish
                self._drop('belief', 'belief_error', repr(exc))

    def _publish_predictions(self, engine: PerceptionEngine, result: Inference) -> dict:
        """Publish each prediction in the frame of the input it predicts; return the frames."""
        frames = engine.prediction_frames(result, self._live['frame_id'], self._audio_iterations)
        frames = {name: dataclasses.replace(frame, frame_id=self._frame_ids.get(
                      name, frame.frame_id)) for name, frame in frames.items()}
        for name, frame in frames.items():
            if name in self._pred_pubs:
                self._pred_pubs[name].publish(convert.frame_msg(frame))
        return frames

    # --- debug image ---------------------------------------------------------------------------
    def _keep_for_debug(self, name: str, frame) -> None:
        """Keep the newest input frames (its kind's `picture_span_s`) for the debug image."""
        span_ns = kinds.of(self.engine.cfg.modalities[name]).picture_span_s * 1e9
        with self._lock:
            kept = self._last_inputs.setdefault(name, deque())
            kept.append(frame)
            while len(kept) > 1 and frame.end_ns - kept[0].stamp_ns > span_ns:
                kept.popleft()

    def _debug_wanted(self) -> bool:
        """A debug image is due: subscribed, and its period has passed."""
        pub, rate = self._debug_pub, self._live['debug_image_rate_hz']
        return (pub is not None and rate > 0 and pub.get_subscription_count() > 0
                and time.monotonic() - self._last_debug >= 1.0 / rate)

    def _publish_debug(self, engine: PerceptionEngine, result: Inference, frames: dict) -> None:
        from llmos_ros.core import debug_view
        self._last_debug = time.monotonic()
        with self._lock:
            inputs = {name: list(kept) for name, kept in self._last_inputs.items()}
        modalities = engine.cfg.modalities
        picture = debug_view.render({name: kinds.of(modalities[name]) for name in engine.names},
                                    inputs, frames, list(result.modalities),
                                    float(np.mean(result.std)))
        height, width = picture.shape[:2]
        frame = ImageFrame(result.stamp_ns, 'rgb8', height, width, width * 3, False,
                           picture.ravel(), self._live['frame_id'])
        self._debug_pub.publish(convert.frame_msg(frame))

    def _drop(self, name: str, reason: str, text: str):
        """Count a drop in engine.drops (thread-safe: any thread) and log it, throttled."""
        engine = self.engine
        if engine is not None:
            engine.drops.add([Drop(name, reason, text)])
        self._log_drop(f'{name}: dropped ({reason}): {text}')

    def _refuse(self, drop: Drop):
        """A message that could not be converted: refused on arrival, counted and logged."""
        self._refused.add([drop])
        self._drop(drop.modality, drop.reason, drop.detail)

    def _log_drop(self, text):
        """Log a drop, throttled (counted always, logged every 2 s); text may be a callable."""
        now = time.monotonic()
        if now - self._last_error_log > 2.0:
            self._last_error_log = now
            text = text() if callable(text) else text
            self.get_logger().warning(text)

    def _drop_summary(self) -> str:
        return ', '.join(f'{k}: {v}' for k, v in self.engine.drops.snapshot().items())

    def _publish_diagnostics(self):
        from diagnostic_msgs.msg import DiagnosticArray
        if self._diag_pub is None:
            return
        if self.engine is None:
            self._publish_unconfigured()
            return
        now_ns = self.get_clock().now().nanoseconds
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        latency = np.array(self._latency_ms) if self._latency_ms else np.zeros(1)
        values = {'model_id': self.engine.model_id,
                  'fusion': self.engine.cfg.model.fusion,
                  'backend': self.engine.backend,
                  'published': self._counts['published'],
                  'superseded': self._counts['superseded'],
                  'predictions_skipped': self._counts['predictions_skipped'],
                  'latency_p50_ms': f'{np.percentile(latency, 50):.2f}',
                  'latency_p99_ms': f'{np.percentile(latency, 99):.2f}'}
        values.update({f'drops/{k}': v for k, v in self.engine.drops.snapshot().items()})
        with self._lock:
            values['samples_formed'] = self.engine.synchronizer.emitted
        values['no_usable_input'] = self._counts['no_usable_input']
        values.update(self._qos_events.values())
        incompatible = [k for k in values if k.endswith('/incompatible_qos')]
        array.status.append(make_status(
            f'{self.get_name()}: model', 'llmos', values, WARN if incompatible else OK,
            f'incompatible QoS: {", ".join(incompatible)}' if incompatible else ''))
        for name, tracker in self._rates.items():
            stamp = self._last_stamp.get(name)
            age = (now_ns - stamp) / 1e9 if stamp is not None else float('nan')
            level = OK if stamp is not None and age < 1.0 else WARN
            array.status.append(make_status(
                f'{self.get_name()}: input {name}', name,
                {'topic': self._topic(name)[0], 'rate_hz': f'{tracker.rate():.2f}',
                 'age_s': f'{age:.3f}', **self._accounting(name, tracker.count)}, level))
        self._diag_pub.publish(array)

    def _accounting(self, name: str, received: int) -> dict:
        """
        Every message received is accepted into pairing or refused with a reason.

        received = accepted + refused (refused/<reason> break it down). Accepted frames may
        later be dropped too (queue_full; their samples superseded): see the model status.
        """
        with self._lock:
            accepted = self.engine.synchronizer.accepted[name]
        refused = self._refused.reasons(name)
        return {'received': received, 'accepted': accepted, 'refused': sum(refused.values()),
                **{f'refused/{k}': v for k, v in sorted(refused.items())}}

    def _publish_unconfigured(self):
        """One ERROR status saying the node is unconfigured, and why."""
        array = _diagnostic_array()()
        array.header.stamp = self.get_clock().now().to_msg()
        reason = self._config_error or 'cleaned up'
        array.status.append(make_status(f'{self.get_name()}: model', 'llmos',
                                        {'state': 'unconfigured', 'error': reason}, ERROR,
                                        f'unconfigured: {reason}'))
        self._diag_pub.publish(array)

    def destroy_node(self):
        self._release()
        super().destroy_node()

    def _stop_workers(self):
        """Stop this activation's workers and wait for them (a sample in flight finishes)."""
        with self._lock:
            self._stop.set()
            self._sample_ready.notify_all()
            self._result_ready.notify_all()
        for worker in self._workers:
            worker.join(timeout=WORKER_JOIN_S)
            if worker.is_alive():
                self.get_logger().warning(f'{worker.name} still busy after {WORKER_JOIN_S} s; '
                                          'it stops after its current sample')
        self._workers = []


def _describe(drops) -> str:
    """Drops for a log line: '<modality>/<reason>: <detail>', '; '-separated."""
    return '; '.join(f'{d.key}: {d.detail}' for d in drops)


def _diagnostic_array():
    from diagnostic_msgs.msg import DiagnosticArray
    return DiagnosticArray


def main(args=None):
    return run_node(PerceptionNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
