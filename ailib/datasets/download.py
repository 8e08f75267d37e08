"""Downloading dataset files: mirrors tried in turn, checksums verified, atomic writes.

Only the standard library (urllib) is used. A file is streamed into a temporary file next to its
destination while its MD5 is computed; it is renamed into place only when the digest matches the
published one, so the cache never holds a file that failed verification.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterable, TextIO

from .._files import atomic_open

CHUNK = 1 << 16


class ChecksumMismatch(ValueError):
    """A file whose digest differs from the published one; the message names file and digests."""


class DownloadFailed(OSError):
    """Every mirror failed for one file; the message lists each URL and why."""


def download(
    filename: str,
    mirrors: Iterable[str],
    dest_dir: str | os.PathLike,
    md5: str,
    *,
    timeout: float = 30.0,
    quiet: bool = False,
    dead: set[str] | None = None,
) -> Path:
    """Fetch ``filename`` from the first mirror (base URL) that serves it with the published
    ``md5``, into ``dest_dir/filename``; returns that path.

    A mirror that cannot be reached is added to ``dead`` (when given) and skipped for the next
    files; a checksum mismatch moves on to the next mirror and leaves nothing behind.

    Raises:
        DownloadFailed: no mirror gave a verified file (the message lists every attempt).
    """
    dest = Path(dest_dir) / filename
    failures = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + filename
        if dead is not None and base in dead:
            failures.append(f"{url}: skipped (mirror unreachable earlier)")
            continue
        try:
            _fetch_verified(url, dest, md5, timeout, quiet)
            return dest
        except ChecksumMismatch as exc:
            failures.append(str(exc))
        except urllib.error.HTTPError as exc:
            failures.append(f"{url}: HTTP {exc.code} {exc.reason}")
        except (urllib.error.URLError, OSError) as exc:  # DNS, refused, timeout, reset
            failures.append(f"{url}: {getattr(exc, 'reason', exc)}")
            if dead is not None:
                dead.add(base)
    raise DownloadFailed(f"could not download {filename}:\n  " + "\n  ".join(failures))


def _fetch_verified(url: str, dest: Path, md5: str, timeout: float, quiet: bool) -> None:
    h = hashlib.md5()
    with urllib.request.urlopen(url, timeout=timeout) as response, atomic_open(dest) as out:
        total = int(response.headers.get("Content-Length") or 0)
        bar = _Bar(url, total, None if quiet else sys.stderr)
        for chunk in iter(lambda: response.read(CHUNK), b""):
            out.write(chunk)
            h.update(chunk)
            bar.update(len(chunk))
        bar.close()
        if h.hexdigest() != md5:  # raising here deletes the temporary file: nothing is cached
            raise ChecksumMismatch(
                f"{url}: MD5 {h.hexdigest()} does not match the published {md5}; not kept"
            )


class _Bar:
    """Download progress on ``stream``: redrawn in place on a terminal, start and end lines
    otherwise; nothing when ``stream`` is None."""

    def __init__(self, url: str, total: int, stream: TextIO | None) -> None:
        self.url, self.total, self.stream = url, total, stream
        self.done, self.start, self.shown = 0, time.perf_counter(), 0.0
        self.tty = stream is not None and stream.isatty()
        if stream is not None and not self.tty:
            print(f"downloading {url}", file=stream, flush=True)

    def update(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if self.tty and now - self.shown > 0.1:
            self.shown = now
            pct = f"{100 * self.done / self.total:5.1f}% " if self.total else ""
            print(
                f"\rdownloading {self.url} {pct}{self.done / 1e6:.1f} MB",
                end="",
                file=self.stream,
                flush=True,
            )

    def close(self) -> None:
        if self.stream is None:
            return
        seconds = time.perf_counter() - self.start
        line = f"downloaded {self.url} ({self.done / 1e6:.1f} MB in {seconds:.1f} s)"
        print(("\r" + line) if self.tty else line, file=self.stream, flush=True)
