"""
rosbag2 I/O without ROS, with the `rosbags` library (MCAP and sqlite3 storage).

- `typestore()`: the Kilted message store plus llmos_ros/msg/{AudioChunk,TactileArray,LatentState,
  Surprise}, read from the package's msg/ files (`msg_dir()`).
- `bag_topics(path)`, `read_bag(path, topics)`: messages in log-time order, stamp = header stamp
  when the message has one, else the log time.
- `BagWriter(path, storage)`: `write_frame`, `write_label`, `write`.

Topics are matched ignoring the leading slash; bags store absolute names. Every failure raises
`BagError` naming the bag and, for a failure while reading, how many messages were read before it;
an MCAP file cut short (no footer) is read up to its last complete record first
(`core/mcap_recovery.py`). Only rosbags' public API (`rosbags.rosbag2`, `rosbags.typesys`) is used.
"""
from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

from llmos_ros import kinds
from llmos_ros.core.frames import STRING, Frame, stamp_to_ns
from llmos_ros.core.mcap_recovery import complete_part, mcap_file
from llmos_ros.core.messages import Flavour, header
from llmos_ros.errors import BagError

CUSTOM_TYPES = ('AudioChunk', 'TactileArray', 'LatentState', 'Surprise')

def norm_topic(topic: str) -> str:
    """Absolute topic name: '/camera/image_raw' for 'camera/image_raw' or '/camera/image_raw'."""
    return '/' + str(topic).strip().lstrip('/')


def msg_dir() -> Path:
    """
    Folder of this package's .msg files (CUSTOM_TYPES), where the package has them.

    Looked for in a source checkout (msg/ beside llmos_ros/), in share/llmos_ros/msg of every
    prefix on AMENT_PREFIX_PATH (a colcon install: rosidl_generate_interfaces installs them
    there), and where `pip install` put setup.py's data files (share/llmos_ros/msg of its
    scheme, found through the installed distribution's file list). BagError names the places
    looked at when none holds them all.
    """
    candidates = [Path(__file__).resolve().parents[2] / 'msg']
    prefixes = [p for p in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p]
    candidates += [Path(p) / 'share' / 'llmos_ros' / 'msg' for p in prefixes]
    candidates += _pip_installed_msg_dirs()
    for folder in candidates:
        if all((folder / f'{name}.msg').is_file() for name in CUSTOM_TYPES):
            return folder
    raise BagError(f'the llmos_ros message definitions ({", ".join(CUSTOM_TYPES)}.msg) are '
                   f'in none of {", ".join(map(str, dict.fromkeys(candidates)))}: install the '
                   f'package (colcon build or pip install) or run from its source checkout')


def _pip_installed_msg_dirs() -> list[Path]:
    """Folders of the .msg files the installed llmos_ros distribution lists (pip data files)."""
    from importlib import metadata
    try:
        dist = metadata.distribution('llmos_ros')
    except metadata.PackageNotFoundError:
        return []
    folders = (Path(dist.locate_file(f)).resolve().parent for f in dist.files or []
               if f.suffix == '.msg')
    return list(dict.fromkeys(folders))


@lru_cache(maxsize=1)
def typestore():
    """Kilted (or the newest known) type store with the llmos_ros messages from `msg_dir()`."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore
    store = get_typestore(getattr(Stores, 'ROS2_KILTED', Stores.LATEST))
    folder = msg_dir()
    types: dict = {}
    for name in CUSTOM_TYPES:
        types.update(get_types_from_msg((folder / f'{name}.msg').read_text(),
                                        f'llmos_ros/msg/{name}'))
    store.register(types)
    return store


def _check_path(path) -> Path:
    p = Path(path)
    if not p.exists():
        raise BagError(f'bag not found: {p}')
    if p.is_dir():
        if not (p / 'metadata.yaml').is_file():
            files = [f for f in p.iterdir() if f.suffix in ('.mcap', '.db3')]
            if len(files) == 1:
                return files[0]
            raise BagError(f'{p} is not a rosbag2 folder (no metadata.yaml)')
    elif p.suffix not in ('.mcap', '.db3'):
        raise BagError(f'{p} is not a bag: expected a rosbag2 folder, .mcap or .db3 file')
    return p


@contextmanager
def _reader(path) -> Iterator[tuple[Any, bool]]:
    """
    (open rosbags Reader, cut short) of a bag; closed afterwards.

    An MCAP file without a valid footer (a recording cut short) is read up to its last complete
    record (`core/mcap_recovery.py`) and flagged, so callers say how much was readable.
    """
    from rosbags.rosbag2 import Reader
    p = _check_path(path)
    reader, failure = Reader(p), None
    try:
        reader.open()
    except Exception as exc:  # noqa: BLE001 - rosbags raises many kinds on bad files
        failure = f'{type(exc).__name__}: {exc}'
    if failure is None:
        try:
            yield reader, False
        finally:
            reader.close()
        return
    file = mcap_file(p)
    if file is None:
        raise BagError(f'cannot open bag {path}: corrupt, truncated or not a bag '
                       f'(0 messages read): {failure}')
    with complete_part(file) as part:
        reader = Reader(part) if part is not None else None
        try:
            if reader is None:
                raise ValueError('no complete record after the MCAP header')
            reader.open()
        except Exception as exc:  # noqa: BLE001
            raise BagError(f'cannot open bag {path}: corrupt, truncated or not a bag '
                           f'(0 messages read): {failure}; {type(exc).__name__}: {exc}') from None
        try:
            yield reader, True
        finally:
            reader.close()


def _refuse_cut(path, reader, cut: bool) -> None:
    """BagError for a bag cut short, with the count of messages readable before the cut."""
    if cut:
        raise BagError(f'bag {path} is truncated or corrupt: the MCAP file has no valid '
                       f'footer; {reader.message_count} messages are readable before the cut')


def _register_bag_types(reader, path) -> None:
    """Register message types the store lacks from the definitions stored in the bag."""
    from rosbags.typesys import get_types_from_idl, get_types_from_msg
    store = typestore()
    for conn in reader.connections:
        if conn.msgtype in store.fielddefs:
            continue
        msgdef = getattr(conn, 'msgdef', None)
        text = getattr(msgdef, 'data', '') if msgdef is not None else ''
        fmt = str(getattr(getattr(msgdef, 'format', None), 'name', '')).lower()
        if not text:
            raise BagError(f'bag {path}: unknown message type {conn.msgtype} on {conn.topic} '
                           f'and the bag stores no definition of it')
        try:
            types = (get_types_from_idl(text) if fmt == 'idl'
                     else get_types_from_msg(text, conn.msgtype))
            store.register(types)
        except Exception as exc:  # noqa: BLE001
            raise BagError(f'bag {path}: cannot use message type {conn.msgtype} on '
                           f'{conn.topic}: {exc}') from None


def bag_topics(path) -> dict[str, str]:
    """{absolute topic: message type} of a bag."""
    with _reader(path) as (reader, cut):
        _refuse_cut(path, reader, cut)
        return {c.topic: c.msgtype for c in reader.connections}


def bag_info(path) -> dict[str, Any]:
    """Topics, per-topic message counts, start/end log times of a bag."""
    with _reader(path) as (reader, cut):
        _refuse_cut(path, reader, cut)
        counts: dict[str, int] = {}
        for c in reader.connections:
            counts[c.topic] = counts.get(c.topic, 0) + int(c.msgcount)
        return {'topics': {c.topic: c.msgtype for c in reader.connections}, 'counts': counts,
                'start_ns': int(reader.start_time), 'end_ns': int(reader.end_time),
                'message_count': int(reader.message_count)}


def read_bag(path, topics: Iterable[str] | None = None) -> Iterator[tuple[str, str, int, Any]]:
    """
    Yield (topic, msg_type, stamp_ns, msg) in log-time order.

    stamp_ns is header.stamp when the message has a header, else the log time. `topics` may be
    relative or absolute; unknown topics are simply not read. Raises BagError; a bag cut short
    yields what it holds, then raises BagError with the count read.
    """
    n = 0
    with _reader(path) as (reader, cut):
        _register_bag_types(reader, path)
        store = typestore()
        conns = reader.connections
        if topics is not None:
            wanted = {norm_topic(t) for t in topics}
            conns = [c for c in conns if norm_topic(c.topic) in wanted]
        deserialize = store.deserialize_cdr
        try:
            for conn, log_ns, raw in (reader.messages(connections=conns) if conns else ()):
                msg = deserialize(raw, conn.msgtype)
                n += 1
                yield conn.topic, conn.msgtype, _stamp(msg, log_ns), msg
        except Exception as exc:  # noqa: BLE001
            raise BagError(f'bag {path} is corrupt or truncated: failed after {n} messages '
                           f'read: {type(exc).__name__}: {exc}') from None
        if cut:
            raise BagError(f'bag {path} is truncated or corrupt (the MCAP file has no valid '
                           f'footer): {n} messages read before the cut')


def _stamp(msg, log_ns: int) -> int:
    header = getattr(msg, 'header', None)
    if header is None:
        return int(log_ns)
    return stamp_to_ns(header.stamp)


# -------------------------------------------------------------------------------------------------

def _bag_class(msg_type: str):
    return typestore().types[msg_type]


# rosbags messages take numpy arrays as they are (core/messages.py has the field mapping)
MESSAGES = Flavour(_bag_class, lambda values: values)


def make_header(stamp_ns: int, frame_id: str = ''):
    """A rosbags std_msgs/msg/Header."""
    return header(stamp_ns, frame_id, MESSAGES)


def frame_to_msg(frame: Frame) -> tuple[str, Any]:
    """Frame record -> (msg_type, rosbags message) of the contract type."""
    return kinds.frame_message(frame, MESSAGES)


class BagWriter:
    """
    Write a rosbag2 bag (format 9) with rosbags.

    with BagWriter(path, storage='mcap') as w:
        w.write_frame('camera/image_raw', frame); w.write_label('episode/label', t, '3')

    Log time = the message stamp. compress=True: zstd chunk compression (mcap) / per message.
    """

    def __init__(self, path, storage: str = 'mcap', compress: bool = False):
        from rosbags.rosbag2 import Writer
        from rosbags.rosbag2.enums import CompressionFormat, CompressionMode, StoragePlugin
        plugins = {'mcap': StoragePlugin.MCAP, 'sqlite3': StoragePlugin.SQLITE3}
        if storage not in plugins:
            raise BagError(f'unknown bag storage {storage!r}; use one of {sorted(plugins)}')
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f'cannot write bag {self.path}: it exists already')
        try:
            self._writer = Writer(self.path, version=9, storage_plugin=plugins[storage])
        except Exception as exc:  # noqa: BLE001
            raise BagError(f'cannot write bag {self.path}: {exc}') from None
        if compress:
            mode = CompressionMode.STORAGE if storage == 'mcap' else CompressionMode.MESSAGE
            self._writer.set_compression(mode, CompressionFormat.ZSTD)
        self._conns: dict[str, Any] = {}
        self._open = False
        self.count = 0

    def __enter__(self) -> BagWriter:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def open(self) -> None:
        if not self._open:
            self._writer.open()
            self._open = True

    def close(self) -> None:
        if self._open:
            self._writer.close()
            self._open = False

    def _conn(self, topic: str, msg_type: str):
        topic = norm_topic(topic)
        conn = self._conns.get(topic)
        if conn is None:
            store = typestore()
            if msg_type not in store.fielddefs:
                raise BagError(f'unknown message type {msg_type} for {topic}')
            conn = self._writer.add_connection(topic, msg_type, typestore=store)
            self._conns[topic] = conn
        elif conn.msgtype != msg_type:
            raise BagError(f'topic {topic} already holds {conn.msgtype}, not {msg_type}')
        return conn

    def write(self, topic: str, msg_type: str, stamp_ns: int, msg) -> None:
        """Write an already-built rosbags message with log time stamp_ns."""
        self.open()
        conn = self._conn(topic, msg_type)
        self._writer.write(conn, int(stamp_ns), typestore().serialize_cdr(msg, msg_type))
        self.count += 1

    def write_raw(self, topic: str, msg_type: str, stamp_ns: int, cdr: bytes) -> None:
        """Write an already serialized (CDR) message, e.g. from rclpy.serialization."""
        self.open()
        self._writer.write(self._conn(topic, msg_type), int(stamp_ns), bytes(cdr))
        self.count += 1

    def write_frame(self, topic: str, frame: Frame) -> None:
        """Write a frame record as its contract message type."""
        msg_type, msg = frame_to_msg(frame)
        self.write(topic, msg_type, frame.stamp_ns, msg)

    def write_label(self, topic: str, stamp_ns: int, text: str) -> None:
        """Write a std_msgs/msg/String (e.g. /episode/label) at log time stamp_ns."""
        self.write(topic, STRING, stamp_ns, typestore().types[STRING](data=str(text)))
