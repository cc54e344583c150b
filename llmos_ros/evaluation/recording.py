"""
llmos-eval --record: the test bag's inputs plus the live outputs, in one MCAP bag.

`Recorder.message` writes each input as read; `Recorder.result` writes, per evaluated sample,
/llmos/belief, /llmos/surprise, /llmos/latent and /llmos/prediction/<modality> -- the messages
the node publishes, built with the rosbags type store from the same fields and the same field
mapping (core/messages.py) as the node's.
"""
from __future__ import annotations

from pathlib import Path

from llmos_ros.core.bags import MESSAGES, BagWriter
from llmos_ros.core.messages import (
    LATENT_STATE,
    SURPRISE,
    latent_state_message,
    surprise_message,
)


class Recorder:
    """An open --record bag at `path` for the outputs of `engine` (a PerceptionEngine)."""

    def __init__(self, path: Path, engine, frame_id: str):
        self.path, self.engine, self.frame_id = Path(path), engine, frame_id
        self.predictions = 0  # prediction messages written
        self.writer = BagWriter(self.path, storage='mcap')
        self.writer.open()

    def message(self, topic: str, msg_type: str, stamp_ns: int, msg) -> None:
        """One input message, as read from the test bag."""
        self.writer.write(topic, msg_type, stamp_ns, msg)

    def result(self, result, tracker, state) -> None:
        """The outputs of one evaluated sample: belief, surprise, latent, predictions."""
        latent = self.engine.latent_fields(result, self.frame_id)
        self.writer.write('/llmos/belief', LATENT_STATE, state.stamp_ns,
                          latent_state_msg(tracker.belief_fields(state, latent)))
        self.writer.write('/llmos/surprise', SURPRISE, state.stamp_ns,
                          surprise_msg(tracker.surprise_fields(state, self.frame_id)))
        self.writer.write('/llmos/latent', LATENT_STATE, result.stamp_ns,
                          latent_state_msg(latent))
        self.engine.predict(result)
        for name, frame in self.engine.prediction_frames(result, self.frame_id).items():
            self.writer.write_frame(f'/llmos/prediction/{name}', frame)
            self.predictions += 1

    def close(self) -> None:
        self.writer.close()


def latent_state_msg(fields: dict):
    """The rosbags LatentState from `PerceptionEngine.latent_fields`, as the node publishes it."""
    return latent_state_message(fields, MESSAGES)


def surprise_msg(fields: dict):
    """The rosbags Surprise from `llmos_ros.temporal.surprise_fields`."""
    return surprise_message(fields, MESSAGES)
