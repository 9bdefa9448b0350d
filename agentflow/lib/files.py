"""The data folder's permissions: it holds the SQLite database and the device keys.

The folder is 0700 and the files in it 0600; the settings call :func:`secure_data_dir` at
start-up (after setting the process umask to 077, so SQLite's own -wal/-shm files and every
file written later are owner-only too). A folder or file found looser is tightened, with one
warning line.
"""

from __future__ import annotations

import logging
import stat
from pathlib import Path

log = logging.getLogger("agentflow.files")

DIR_MODE = 0o700
FILE_MODE = 0o600
# What holds secrets: the SQLite database and its journals, device identities.
SECRET_PATTERNS = ("*.sqlite3", "*.sqlite3-wal", "*.sqlite3-shm", "*.sqlite3-journal", "devices/*.json")


def secure_data_dir(path: Path) -> list[Path]:
    """Create ``path`` 0700 or tighten it, and make its secret files 0600; returns what changed."""
    path.mkdir(parents=True, exist_ok=True)
    changed = []
    targets = [(path, DIR_MODE)]
    devices = path / "devices"
    if devices.is_dir():
        targets.append((devices, DIR_MODE))
    for pattern in SECRET_PATTERNS:
        targets += [(p, FILE_MODE) for p in sorted(path.glob(pattern)) if p.is_file()]
    for target, mode in targets:
        try:
            current = stat.S_IMODE(target.stat().st_mode)
            if current & ~mode:
                target.chmod(current & mode)
                changed.append(target)
        except OSError as exc:  # not ours (a shared mount): say so, start anyway
            log.warning("cannot tighten %s to %o: %s", target, mode, exc)
    if changed:
        log.warning(
            "tightened the permissions of %d path(s) in %s to owner-only: %s",
            len(changed),
            path,
            ", ".join(str(p.relative_to(path)) if p != path else "." for p in changed),
        )
    return changed
