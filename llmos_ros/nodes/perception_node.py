"""
perception_node: sensor topics in, fused latent state and cross-modal predictions out.

A lifecycle node: configure loads the checkpoint and subscribes, activate starts publishing.
With `autostart` (default) it configures and activates itself; a failed configure (missing or
mismatched checkpoint) leaves it up and unconfigured with the error logged.

Inputs (relative, remappable, sensor-data QoS), those of the model's modalities:
  camera/image_raw (or .../compressed), microphone/audio, tactile/array or tactile/image.
Outputs: llmos/latent (LatentState), llmos/prediction/<modality>, /diagnostics, and with
`publish_belief` (default) llmos/belief (LatentState: the belief over time, staleness-aware) and
llmos/surprise (Surprise) for every latent (llmos_ros/temporal.py).
"""
from __future__ import annotations

from collections import Counter, deque
import threading
import time

import numpy as np
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn
from rclpy.qos import qos_profile_sensor_data

from llmos_ros.belief import BeliefConfig
from llmos_ros.checkpoint import load_checkpoint
from llmos_ros.core import frames as F
from llmos_ros.core.frames import frame_from_msg
from llmos_ros.errors import LlmosError
from llmos_ros.inference import Inference, PerceptionEngine
from llmos_ros.nodes import convert
from llmos_ros.nodes.diagnostics import OK, WARN, RateTracker, make_status
from llmos_ros.nodes.runtime import run_node
from llmos_ros.surprise import load_calibration
from llmos_ros.temporal import TemporalTracker

LATENCY_WINDOW = 1000
# belief.<name> parameters: fields of llmos_ros.belief.BeliefConfig (defaults from there)
BELIEF_PARAMETERS = {
    'process_noise': 'random-walk variance per second of every latent dimension',
    'reset_gap_s': 'a longer gap between samples restarts the belief',
    'stale_grace_s': 'an expert this old still has its full weight',
    'stale_tau_s': 'an expert grace + tau old has half its weight (0: no down-weighting)',
    'max_age_s': 'hard limit: an older expert is not used by the belief'}


class PerceptionNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__('llmos_perception', **kwargs)
        self.declare_parameter('model_path', '')
        self.declare_parameter('device', 'cpu')
        self.declare_parameter('autostart', True)
        self.declare_parameter('camera_transport', 'raw')
        self.declare_parameter('modalities', '')
        self.declare_parameter('publish_predictions', True)
        self.declare_parameter('frame_id', 'llmos')
        self.declare_parameter('slop_s', -1.0)
        self.declare_parameter('max_wait_s', -1.0)
        self.declare_parameter('max_age_s', -1.0)
        self.declare_parameter('diagnostics_period_s', 1.0)
        self.declare_parameter('audio_prediction_iterations', 4)
        self.declare_parameter('prediction_rate_hz', 10.0)
        self._declare_belief_parameters()
        rate = self.get_parameter('prediction_rate_hz').value
        self._prediction_period = 1.0 / rate if rate > 0 else 0.0
        self._audio_iterations = self.get_parameter('audio_prediction_iterations').value
        self.engine: PerceptionEngine | None = None
        self._lock = threading.Lock()  # guards the engine's synchronizer and the pending slot
        self._pending = None  # freshest ready sample set, waiting for the worker
        self._pending_prediction = None  # freshest result, waiting for the prediction worker
        self._sample_ready = threading.Condition(self._lock)  # wakes the latent worker
        self._result_ready = threading.Condition(self._lock)  # wakes the prediction worker
        self._workers: list[threading.Thread] = []
        self._running = False
        self._subs, self._pred_pubs = [], {}
        self._latent_pub = self._diag_pub = self._diag_timer = None
        self._tracker: TemporalTracker | None = None
        self._belief_pub = self._surprise_pub = None
        self._rates: dict[str, RateTracker] = {}
        self._last_stamp: dict[str, int] = {}
        self._counts: Counter = Counter()
        self._latency_ms: deque = deque(maxlen=LATENCY_WINDOW)
        self._last_error_log = 0.0
        if self.get_parameter('autostart').value:
            self._autostart_timer = self.create_timer(0.0, self._autostart)

    # --- lifecycle -----------------------------------------------------------------------------
    def _autostart(self):
        self.destroy_timer(self._autostart_timer)
        if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    def on_configure(self, state: State) -> TransitionCallbackReturn:
        path = self.get_parameter('model_path').value
        device = self.get_parameter('device').value
        if not path:
            self.get_logger().error('no model: set the model_path parameter (llmos-train --out);'
                                    ' staying unconfigured')
            return TransitionCallbackReturn.FAILURE
        try:
            loaded = load_checkpoint(path, device=device)
            wanted = [m.strip() for m in self.get_parameter('modalities').value.split(',')
                      if m.strip()]
            overrides = {k: self.get_parameter(k).value
                         for k in ('slop_s', 'max_wait_s', 'max_age_s')
                         if self.get_parameter(k).value >= 0}
            self.engine = PerceptionEngine(loaded, device, wanted or None, overrides)
            self._configure_belief(path, loaded)
        except LlmosError as exc:
            self.get_logger().error(f'cannot configure: {exc}; staying unconfigured')
            return TransitionCallbackReturn.FAILURE
        self._create_interfaces()
        self.get_logger().info(
            f'model {self.engine.model_id} ({self.engine.cfg.model.fusion}) on {device}; inputs: '
            + ', '.join(f'{n} <- {self._topic(n)[0]}' for n in self.engine.active))
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        self._running = True
        self._workers = [threading.Thread(target=self._work, name='llmos_latent', daemon=True),
                         threading.Thread(target=self._predict_work, name='llmos_prediction',
                                          daemon=True)]
        for worker in self._workers:
            worker.start()
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._stop_worker()
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._stop_worker()
        self._destroy_interfaces()
        self.engine = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._stop_worker()
        self._destroy_interfaces()
        return TransitionCallbackReturn.SUCCESS

    # --- interfaces ----------------------------------------------------------------------------
    def _topic(self, name: str) -> tuple[str, str]:
        mod = self.engine.cfg.modalities[name]
        topic, msg_type = mod.topic.lstrip('/'), mod.msg_type
        transport = self.get_parameter('camera_transport').value
        if msg_type == F.IMAGE and name == 'camera' and transport == 'compressed':
            return topic + '/compressed', F.COMPRESSED_IMAGE
        return topic, msg_type

    def _create_interfaces(self):
        from diagnostic_msgs.msg import DiagnosticArray

        from llmos_ros.msg import LatentState
        self._latent_pub = self.create_lifecycle_publisher(LatentState, 'llmos/latent', 10)
        if self.get_parameter('publish_predictions').value:
            for name in self.engine.names:
                kind = convert.prediction_type(self.engine.cfg.modalities[name])
                self._pred_pubs[name] = self.create_lifecycle_publisher(
                    kind, f'llmos/prediction/{name}', 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._create_belief_interfaces()
        for name in self.engine.active:
            topic, msg_type = self._topic(name)
            self._rates[name] = RateTracker()
            self._subs.append(self.create_subscription(
                convert.message_class(msg_type), topic,
                lambda msg, n=name, t=msg_type: self._on_input(n, t, msg),
                qos_profile_sensor_data))
        period = self.get_parameter('diagnostics_period_s').value
        self._diag_timer = self.create_timer(period, self._publish_diagnostics)

    def _destroy_interfaces(self):
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []
        for pub in [self._latent_pub, self._diag_pub, self._belief_pub, self._surprise_pub,
                    *self._pred_pubs.values()]:
            if pub is not None:
                self.destroy_publisher(pub)
        self._latent_pub = self._diag_pub = self._belief_pub = self._surprise_pub = None
        self._pred_pubs = {}
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None

    # --- data path -----------------------------------------------------------------------------
    def _on_input(self, name: str, msg_type: str, msg):
        """Executor thread: convert, pair, hand the freshest ready sample to the worker."""
        received = time.monotonic()
        self._rates[name].tick(received)
        try:
            frame = frame_from_msg(msg_type, msg)
        except (ValueError, TypeError) as exc:
            self._drop(name, 'malformed', str(exc))
            return
        self._last_stamp[name] = frame.stamp_ns
        with self._lock:
            if self.engine is None:
                return
            self.engine.last_error = ''
            before = sum(self.engine.drops.values())
            ready = self.engine.push(name, frame)
            if sum(self.engine.drops.values()) > before:
                self._log_drop(lambda: f'input dropped: {self.engine.last_error or name}; '
                               f'drops so far: {self._drop_summary()}')
            if ready:
                if self._pending is not None:
                    self._counts['superseded'] += 1
                self._counts['superseded'] += len(ready) - 1
                self._pending = (ready[-1], received)
                self._sample_ready.notify()

    def _work(self):
        """Worker thread: preprocess, encode, fuse, decode, publish."""
        while True:
            taken = self._take(self._sample_ready, '_pending')
            if taken is None:
                return
            (sample, received), engine = taken
            try:
                result, errors = engine.infer(sample)
            except Exception as exc:  # a model failure must not kill the node
                self._drop('model', 'inference_error', repr(exc))
                continue
            for error in errors:
                self._log_drop(error)
            if result is None:
                self._counts['no_usable_input'] += 1
                continue
            self._publish_latent(result)
            self._latency_ms.append((time.monotonic() - received) * 1e3)
            self._publish_belief(result)
            if self._pred_pubs:
                with self._lock:
                    if self._pending_prediction is not None:
                        self._counts['predictions_skipped'] += 1
                    self._pending_prediction = result
                    self._result_ready.notify()

    def _take(self, ready: threading.Condition, slot: str):
        """Wait for the freshest item in `slot` and take it: (item, engine), None when stopping."""
        with self._lock:
            while self._running and getattr(self, slot) is None:
                ready.wait(0.5)
            if not self._running:
                return None
            item = getattr(self, slot)
            setattr(self, slot, None)
            return item, self.engine

    def _predict_work(self):
        """Second worker: cross-modal predictions, never delaying the next latent state."""
        while True:
            taken = self._take(self._result_ready, '_pending_prediction')
            if taken is None:
                return
            result, engine = taken
            started = time.monotonic()
            try:
                engine.predict(result)
                self._publish_predictions(result)
            except Exception as exc:
                self._drop('model', 'prediction_error', repr(exc))
            rest = self._prediction_period - (time.monotonic() - started)
            if rest > 0:  # at most prediction_rate_hz: predictions yield the CPU to latents
                with self._lock:
                    self._result_ready.wait_for(lambda: not self._running, rest)

    def _publish_latent(self, result: Inference):
        msg = convert.latent_state(
            self.engine.latent_fields(result, self.get_parameter('frame_id').value))
        try:
            self._latent_pub.publish(msg)
        except Exception:
            if self.context.ok():
                raise
            return  # the context was shut down (a signal) while the worker was busy
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
        if calibration is None:
            self.get_logger().warning(f'surprise tail probabilities are NaN: {why}')
        self._tracker = TemporalTracker(self.engine, cfg, calibration)

    def _create_belief_interfaces(self):
        if self._tracker is None:
            return
        from llmos_ros.msg import LatentState, Surprise
        self._belief_pub = self.create_lifecycle_publisher(LatentState, 'llmos/belief', 10)
        self._surprise_pub = self.create_lifecycle_publisher(Surprise, 'llmos/surprise', 10)

    def _publish_belief(self, result: Inference):
        """Worker thread, after the latent: fold `result` into the belief, publish both."""
        if self._tracker is None or self._belief_pub is None:
            return
        try:
            state = self._tracker.step(result)
            frame_id = self.get_parameter('frame_id').value
            latent = self.engine.latent_fields(result, frame_id)
            self._belief_pub.publish(
                convert.latent_state(self._tracker.belief_fields(state, latent)))
            self._surprise_pub.publish(
                convert.surprise(self._tracker.surprise_fields(state, frame_id)))
        except Exception as exc:  # a model or filter failure must not kill the node
            if self.context.ok():  # not a shutdown mid-publish
                self._drop('belief', 'belief_error', repr(exc))

    def _publish_predictions(self, result: Inference):
        frames = self.engine.prediction_frames(result, self.get_parameter('frame_id').value,
                                               self._audio_iterations)
        for name, frame in frames.items():
            self._pred_pubs[name].publish(convert.frame_msg(frame))

    def _drop(self, name: str, reason: str, text: str):
        if self.engine is not None:
            with self._lock:
                self.engine.drops[f'{name}/{reason}'] += 1
        self._log_drop(f'{name}: dropped ({reason}): {text}')

    def _log_drop(self, text):
        """Log a drop, throttled (counted always, logged every 2 s); text may be a callable."""
        now = time.monotonic()
        if now - self._last_error_log > 2.0:
            self._last_error_log = now
            text = text() if callable(text) else text
            self.get_logger().warning(text)

    def _drop_summary(self) -> str:
        return ', '.join(f'{k}: {v}' for k, v in sorted(self.engine.drops.items()))

    def _publish_diagnostics(self):
        from diagnostic_msgs.msg import DiagnosticArray
        if self.engine is None or self._diag_pub is None:
            return
        now_ns = self.get_clock().now().nanoseconds
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        latency = np.array(self._latency_ms) if self._latency_ms else np.zeros(1)
        values = {'model_id': self.engine.model_id,
                  'fusion': self.engine.cfg.model.fusion,
                  'published': self._counts['published'],
                  'superseded': self._counts['superseded'],
                  'predictions_skipped': self._counts['predictions_skipped'],
                  'latency_p50_ms': f'{np.percentile(latency, 50):.2f}',
                  'latency_p99_ms': f'{np.percentile(latency, 99):.2f}'}
        with self._lock:
            values.update({f'drops/{k}': v for k, v in sorted(self.engine.drops.items())})
        array.status.append(make_status(f'{self.get_name()}: model', 'llmos', values, OK))
        for name, tracker in self._rates.items():
            stamp = self._last_stamp.get(name)
            age = (now_ns - stamp) / 1e9 if stamp is not None else float('nan')
            level = OK if stamp is not None and age < 1.0 else WARN
            array.status.append(make_status(
                f'{self.get_name()}: input {name}', name,
                {'topic': self._topic(name)[0], 'rate_hz': f'{tracker.rate():.2f}',
                 'age_s': f'{age:.3f}'}, level))
        self._diag_pub.publish(array)

    def destroy_node(self):
        self._stop_worker()
        super().destroy_node()

    def _stop_worker(self):
        with self._lock:
            self._running = False
            self._sample_ready.notify_all()
            self._result_ready.notify_all()
        for worker in self._workers:
            worker.join(timeout=5.0)
        self._workers = []


def main(args=None):
    return run_node(PerceptionNode, args)


if __name__ == '__main__':
    raise SystemExit(main())
