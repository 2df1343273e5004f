"""Small helpers shared across the package: atomic files and derived seeds."""

import contextlib
import hashlib
import json
import os


@contextlib.contextmanager
def atomic_path(path: str):
    """Yields a temporary path beside `path`, renamed onto it only on success.

    A kill at any moment leaves either the old file or the new one, never half of one.
    """
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path: str, text: str):
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)


def write_json(path: str, value):
    write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def read_json(path: str):
    with open(path) as f:
        return json.load(f)


@contextlib.contextmanager
def exclusive_lock(path: str, wait: bool = True):
    """Holds an exclusive advisory lock on the file `path`; yields whether it is held.

    With `wait`, waits for any other holder (and always yields True); without, yields
    False at once when another process holds it. Where file locks are unavailable
    (not POSIX), nothing is locked and it yields True.
    """
    try:
        import fcntl  # pylint: disable=import-outside-toplevel
    except ImportError:  # pragma: no cover
        yield True
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def spans(numbers) -> str:
    """Sorted distinct numbers as ranges: [1, 2, 3, 5] -> '1-3, 5'."""
    parts, start = [], None
    numbers = list(numbers)
    for i, n in enumerate(numbers):
        if start is None:
            start = n
        if i + 1 == len(numbers) or numbers[i + 1] != n + 1:
            parts.append(str(start) if start == n else f"{start}-{n}")
            start = None
    return ", ".join(parts)


def derive_seed(*parts) -> int:
    """A 31-bit seed determined by `parts` (ints and strings), stable across runs and platforms."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF
