"""The file watch bench's baseline: bare watchfiles (no Django, no database, no queue) over one
directory, recursive, counting the distinct files it reports as added.

    python -m bench._bare_watchfiles DIRECTORY

Prints ``ready`` once listening, then after each batch ``<distinct files added> <time.time()>``."""

from __future__ import annotations

import os
import sys
import time

import watchfiles


def main(directory: str) -> None:
    seen: set[str] = set()
    first = True
    for changes in watchfiles.watch(
        directory, watch_filter=None, debounce=200, step=50, rust_timeout=200, yield_on_timeout=True,
        raise_interrupt=False,
    ):  # fmt: skip
        if first:
            print("ready", flush=True)
            first = False
        before = len(seen)
        for change, path in changes:
            if change == watchfiles.Change.added and not os.path.isdir(path):
                seen.add(path)
        if len(seen) != before:
            print(len(seen), time.time(), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
