"""
Output paths checked before any work starts (ROS-free).

`check_output_file(path, what)` and `check_output_dir(path, what)` raise `LlmosError` with one
line naming the option and the cause when the path cannot be written: a file in the way of a
folder (or a folder in the way of a file), no permission, a read-only or pseudo file system. They
probe by creating (and removing) a temporary file in the folder, or in its nearest existing
parent when the folder does not exist yet (nothing is left behind), so they answer what a write
would.
"""
from __future__ import annotations

import os
from pathlib import Path
import tempfile

from llmos_ros.errors import LlmosError


def check_output_dir(path: str | os.PathLike, what: str) -> Path:
    """Check folder `path` can be created (if missing) and written in; returns it."""
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = '' if existing == path else f' (its parent {existing} is a file)'
        raise LlmosError(f'{what} {path} is a file, not a folder{where}')
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise LlmosError(f'{what} {path} cannot be written: {exc.strerror or exc}') from None
    return path


def check_output_file(path: str | os.PathLike, what: str) -> Path:
    """Check file `path` can be written (its folder is created if needed); returns it."""
    path = Path(path)
    if path.is_dir():
        raise LlmosError(f'{what} {path} is a folder, not a file')
    check_output_dir(path.parent if str(path.parent) else Path('.'), f'{what} folder')
    if path.exists() and not os.access(path, os.W_OK):
        raise LlmosError(f'{what} {path} cannot be written: permission denied')
    return path
