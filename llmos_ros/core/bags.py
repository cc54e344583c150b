"""
rosbag2 I/O without ROS, with the `rosbags` library (MCAP and sqlite3 storage).

- `typestore()`: the Kilted message store plus llmos_ros/msg/{AudioChunk,TactileArray,LatentState,
  Surprise}.
- `bag_topics(path)`, `read_bag(path, topics)`: messages in log-time order, stamp = header stamp
  when the message has one, else the log time.
- `BagWriter(path, storage)`: `write_frame`, `write_label`, `write`.

Topics are matched ignoring the leading slash; bags store absolute names. Every failure raises
`BagError` naming the bag and, for a failure while reading, how many messages were read before it.
"""
from __future__ import annotations

from functools import lru_cache
import os
from pathlib import Path
import sys
from typing import Any, Iterable, Iterator

from llmos_ros.core.frames import STRING, Frame, stamp_to_ns
from llmos_ros.core.messages import Flavour, frame_message, header
from llmos_ros.errors import BagError

CUSTOM_TYPES = ('AudioChunk', 'TactileArray', 'LatentState', 'Surprise')

# Used only when neither the repo's msg/ nor an installed share/llmos_ros/msg is found; identical
# definitions (comments left out) to the .msg files.
_EMBEDDED_MSGS = {
    'AudioChunk': 'std_msgs/Header header\nuint32 sample_rate\nuint16 channels\n'
                  'float32[] samples\n',
    'TactileArray': 'std_msgs/Header header\nuint16 rows\nuint16 cols\nuint16 channels\n'
                    'float32[] values\n',
    'LatentState': 'std_msgs/Header header\nstring model_id\nstring fusion\nfloat32[] mean\n'
                   'float32[] std\nuint32 shared_dim\nuint32 private_dim\n'
                   'string[] private_modalities\nstring[] modalities\n'
                   'builtin_interfaces/Time[] modality_stamps\n'
                   'float32[] modality_ages\nfloat32[] modality_weights\n',
    'Surprise': 'std_msgs/Header header\nstring model_id\nstring[] modalities\n'
                'float32[] scores\nfloat32[] tail_probabilities\n',
}


def norm_topic(topic: str) -> str:
    """Absolute topic name: '/camera/image_raw' for 'camera/image_raw' or '/camera/image_raw'."""
    return '/' + str(topic).strip().lstrip('/')


def msg_dir() -> Path | None:
    """Folder holding this package's .msg files (repo msg/ or an installed share/llmos_ros/msg)."""
    here = Path(__file__).resolve()
    candidates = [here.parents[2] / 'msg']
    prefixes = [p for p in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p]
    prefixes += [sys.prefix]
    candidates += [Path(p) / 'share' / 'llmos_ros' / 'msg' for p in prefixes]
    for c in candidates:
        if all((c / f'{name}.msg').is_file() for name in CUSTOM_TYPES):
            return c
    return None


@lru_cache(maxsize=1)
def typestore():
    """Kilted (or the newest known) type store with the llmos_ros messages registered."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore
    store = get_typestore(getattr(Stores, 'ROS2_KILTED', Stores.LATEST))
    folder = msg_dir()
    types: dict = {}
    for name in CUSTOM_TYPES:
        text = (folder / f'{name}.msg').read_text() if folder else _EMBEDDED_MSGS[name]
        types.update(get_types_from_msg(text, f'llmos_ros/msg/{name}'))
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


def _open(path):
    """Open a bag; None for an MCAP file that has no footer (truncated), read by _scan_mcap."""
    from rosbags.rosbag2 import Reader
    p = _check_path(path)
    reader = Reader(p)
    try:
        reader.open()
    except Exception as exc:  # noqa: BLE001 - rosbags raises many kinds on bad files
        if _mcap_file(p) is not None:
            return None
        raise BagError(f'cannot open bag {path}: corrupt, truncated or not a bag '
                       f'(0 messages read): {type(exc).__name__}: {exc}') from None
    return reader


def _open_full(path):
    reader = _open(path)
    if reader is None:
        n = sum(1 for _ in _scan_mcap(_mcap_file(Path(path)), path))
        raise BagError(f'bag {path} is truncated or corrupt: the MCAP file has no valid '
                       f'footer; {n} messages are readable before the cut')
    return reader


def _mcap_file(p: Path) -> Path | None:
    """The MCAP file of a bag path if it starts with the MCAP magic, else None."""
    if p.is_dir():
        files = sorted(p.glob('*.mcap'))
        if len(files) != 1:
            return None
        p = files[0]
    try:
        with open(p, 'rb') as f:
            return p if f.read(8) == MCAP_MAGIC else None
    except OSError:
        return None


MCAP_MAGIC = b'\x89MCAP0\r\n'


def _scan_mcap(file: Path, path):
    """
    Yield (topic, msg_type, log_ns, raw) of an MCAP file in file order, record by record.

    Stops at the first incomplete or undecodable record (a truncated file); used only when the
    file cannot be opened normally.
    """
    import struct
    try:
        from rosbags.rosbag2.storage_mcap import DECOMPRESSORS
    except ImportError:  # pragma: no cover - private rosbags API
        DECOMPRESSORS = {'': lambda x, _: x}
    data = memoryview(file.read_bytes())
    schemas: dict[int, str] = {}
    channels: dict[int, tuple[str, str]] = {}

    def string(buf, off):
        (n,) = struct.unpack_from('<I', buf, off)
        return bytes(buf[off + 4:off + 4 + n]).decode(), off + 4 + n

    def records(buf, off, end):
        while off + 9 <= end:
            op = buf[off]
            (n,) = struct.unpack_from('<Q', buf, off + 1)
            if off + 9 + n > end:
                return
            yield op, buf[off + 9:off + 9 + n]
            off += 9 + n

    def handle(op, body):
        if op == 0x03:  # schema
            (sid,) = struct.unpack_from('<H', body, 0)
            schemas[sid], _ = string(body, 2)
        elif op == 0x04:  # channel
            cid, sid = struct.unpack_from('<HH', body, 0)
            topic, _ = string(body, 4)
            channels[cid] = (topic, schemas.get(sid, ''))
        elif op == 0x05:  # message
            (cid,) = struct.unpack_from('<H', body, 0)
            (log_ns,) = struct.unpack_from('<Q', body, 6)
            if cid in channels:
                topic, mtype = channels[cid]
                yield topic, mtype, int(log_ns), bytes(body[22:])
        elif op == 0x06:  # chunk
            _, _, size, _ = struct.unpack_from('<QQQI', body, 0)
            comp, off = string(body, 28)
            (n,) = struct.unpack_from('<Q', body, off)
            inner = DECOMPRESSORS[comp](bytes(body[off + 8:off + 8 + n]), size)
            inner = memoryview(inner)
            for op2, body2 in records(inner, 0, len(inner)):
                yield from handle(op2, body2)

    try:
        for op, body in records(data, 8, len(data)):
            yield from handle(op, body)
    except Exception:  # noqa: BLE001 - a damaged record ends the readable part
        return


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
    reader = _open_full(path)
    try:
        return {c.topic: c.msgtype for c in reader.connections}
    finally:
        reader.close()


def bag_info(path) -> dict[str, Any]:
    """Topics, per-topic message counts, start/end log times of a bag."""
    reader = _open_full(path)
    try:
        counts: dict[str, int] = {}
        for c in reader.connections:
            counts[c.topic] = counts.get(c.topic, 0) + int(c.msgcount)
        return {'topics': {c.topic: c.msgtype for c in reader.connections}, 'counts': counts,
                'start_ns': int(reader.start_time), 'end_ns': int(reader.end_time),
                'message_count': int(reader.message_count)}
    finally:
        reader.close()


def read_bag(path, topics: Iterable[str] | None = None) -> Iterator[tuple[str, str, int, Any]]:
    """
    Yield (topic, msg_type, stamp_ns, msg) in log-time order.

    stamp_ns is header.stamp when the message has a header, else the log time. `topics` may be
    relative or absolute; unknown topics are simply not read. Raises BagError.
    """
    reader = _open(path)
    if reader is None:
        yield from _read_truncated(path, topics)
        return
    n = 0
    try:
        _register_bag_types(reader, path)
        store = typestore()
        conns = reader.connections
        if topics is not None:
            wanted = {norm_topic(t) for t in topics}
            conns = [c for c in conns if norm_topic(c.topic) in wanted]
            if not conns:
                return
        deserialize = store.deserialize_cdr
        try:
            for conn, log_ns, raw in reader.messages(connections=conns):
                msg = deserialize(raw, conn.msgtype)
                n += 1
                yield conn.topic, conn.msgtype, _stamp(msg, log_ns), msg
        except BagError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise BagError(f'bag {path} is corrupt or truncated: failed after {n} messages '
                           f'read: {type(exc).__name__}: {exc}') from None
    finally:
        reader.close()


def _stamp(msg, log_ns: int) -> int:
    header = getattr(msg, 'header', None)
    if header is None:
        return int(log_ns)
    return stamp_to_ns(header.stamp)


def _read_truncated(path, topics):
    """Yield what a truncated MCAP file holds, then raise BagError with the count."""
    store = typestore()
    wanted = None if topics is None else {norm_topic(t) for t in topics}
    n = 0
    for topic, mtype, log_ns, raw in _scan_mcap(_mcap_file(Path(path)), path):
        if mtype not in store.fielddefs:
            raise BagError(f'bag {path}: unknown message type {mtype} on {topic} '
                           f'(truncated file, {n} messages read)')
        n += 1
        if wanted is not None and norm_topic(topic) not in wanted:
            continue
        try:
            msg = store.deserialize_cdr(raw, mtype)
        except Exception as exc:  # noqa: BLE001
            raise BagError(f'bag {path} is corrupt: message {n} cannot be decoded '
                           f'({exc})') from None
        yield topic, mtype, _stamp(msg, log_ns), msg
    raise BagError(f'bag {path} is truncated or corrupt (the MCAP file has no valid footer): '
                   f'{n} messages read before the cut')


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
    return frame_message(frame, MESSAGES)


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
