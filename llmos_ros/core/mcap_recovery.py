"""
The readable part of an MCAP file that a recording left without its footer (cut short).

rosbags opens an MCAP file only through its footer. A recorder killed mid-write leaves none; its
complete records are still good. `complete_part(file)` copies the file up to its last complete
top-level record (or its DataEnd record) into a temporary file and appends a footer that
declares no summary section, which the MCAP format allows: rosbags' public `Reader` then scans
the data section itself (decompressing chunks, registering schemas and channels). Only the MCAP
record framing is read here (opcode byte, uint64 length; https://mcap.dev/spec): no chunk is
decoded, so a chunk cut in half is simply left out. Without a summary rosbags reads in file order
and stops at a message whose log time goes back (ReaderError, reported with the count read):
recorders that log the receive time (rosbag2) write monotonic log times; a bag logged by header
stamp (`nodes/recorder.py`) and cut short is read up to its first step back.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
import struct
import tempfile
from typing import Iterator

MAGIC = b'\x89MCAP0\r\n'
OP_HEADER, OP_FOOTER, OP_DATA_END = 0x01, 0x02, 0x0F
# Footer record: summary start 0 (none), summary offset start 0, summary CRC 0; then the magic.
EMPTY_FOOTER = bytes([OP_FOOTER]) + struct.pack('<QQQI', 20, 0, 0, 0) + MAGIC
COPY_BLOCK = 1 << 20


def mcap_file(path: Path) -> Path | None:
    """The MCAP file of a bag path (a file, or a folder holding one), if it has the magic."""
    if path.is_dir():
        files = sorted(path.glob('*.mcap'))
        if len(files) != 1:
            return None
        path = files[0]
    try:
        with open(path, 'rb') as f:
            return path if f.read(len(MAGIC)) == MAGIC else None
    except OSError:
        return None


def records_end(file: Path) -> int:
    """Offset just after the last complete top-level record; 0 if the first is no Header."""
    size = file.stat().st_size
    offset = len(MAGIC)
    with open(file, 'rb') as f:
        while offset + 9 <= size:
            f.seek(offset)
            op, length = struct.unpack('<BQ', f.read(9))
            if offset == len(MAGIC) and op != OP_HEADER:
                return 0
            if op == OP_FOOTER or offset + 9 + length > size:
                break
            offset += 9 + length
            if op == OP_DATA_END:
                break
    return offset if offset > len(MAGIC) else 0


@contextmanager
def complete_part(file: Path) -> Iterator[Path | None]:
    """A temporary MCAP file of `file`'s complete records and an empty footer; None if none."""
    end = records_end(file)
    if not end:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix='llmos_mcap_') as folder:
        part = Path(folder) / file.name
        with open(file, 'rb') as src, open(part, 'wb') as dst:
            left = end
            while left > 0:
                block = src.read(min(COPY_BLOCK, left))
                if not block:
                    break
                dst.write(block)
                left -= len(block)
            dst.write(EMPTY_FOOTER)
        yield part
