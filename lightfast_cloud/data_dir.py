"""The data directory (LIGHTFAST_DATA_DIR) is private: 0700, and the files in it 0600."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

logger = logging.getLogger(__name__)

DIRECTORY_MODE = 0o700
FILE_MODE = 0o600
# The umask of the launcher and its children: new files 0600, new directories 0700.
PRIVATE_UMASK = 0o077


def data_dir_secure(path: Path) -> None:
    """Create `path` 0700 if missing, make it 0700, and make its top-level regular files 0600.

    Entries owned by another user are left alone (chmod would fail) and logged; subdirectories
    (media, redis's appendonlydir) are reached only through `path`, which is what protects them.
    """
    path.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
    _chmod(path, DIRECTORY_MODE)
    for entry in path.iterdir():
        try:
            info = entry.lstat()
        except FileNotFoundError:
            continue  # removed meanwhile (a -shm file, a socket)
        if stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) & 0o077:
            _chmod(entry, FILE_MODE)


def sqlite_file_create(name: str) -> None:
    """Create the SQLite database file `name` empty and 0600 unless it exists (or is not a file path).

    An empty file is a valid empty database; SQLite then gives its -wal and -shm files its mode.
    """
    if not name or name == ":memory:" or name.startswith("file:") or not Path(name).parent.is_dir():
        return
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    except FileExistsError:
        return
    os.close(fd)


def _chmod(path: Path, mode: int) -> None:
    try:
        if stat.S_IMODE(path.lstat().st_mode) != mode:
            os.chmod(path, mode, follow_symlinks=False)
    except PermissionError:
        logger.warning("cannot make %s private (mode %o): not its owner", path, mode)
    except NotImplementedError:
        pass  # a symlink on a platform without lchmod: its target is not ours to change
