"""Downloading dataset files: mirrors tried in turn, every failure falls through, checksums
verified, sizes and times bounded, atomic writes.

Only the standard library (urllib) is used. A file is streamed into a temporary file next to its
destination while its MD5 is computed; it is renamed into place only when the digest matches the
published one, so the cache never holds a file that failed verification. Whatever goes wrong with
one mirror (an HTTP error, a connection refused or dropped mid-file, a server that does not speak
HTTP, a timeout, a body longer than the published size, a trickle slower than the deadline
allows, a redirect off http/https, a bad checksum) is reported and the next mirror is tried.

Bounds: a mirror never gets more than the published size (plus one byte, to notice) written to
disk; a download of ``size`` bytes must finish within ``deadline`` seconds (by default
``timeout + size / MIN_RATE``), checked after every read, and each read waits at most
``timeout`` seconds (so a mirror is cut off at most one read timeout after its deadline). The
deadline covers the whole exchange, redirects and the response's status line and headers
included: a server that trickles its headers a byte at a time is cut off like a slow body.

A busy mirror (HTTP 429 Too Many Requests or 503 Service Unavailable) that says when to come back
(a ``Retry-After`` header: delta-seconds or an HTTP-date) is waited for and asked again, at most
``MAX_RETRIES`` times per file, and only when the wait is at most ``MAX_RETRY_AFTER`` seconds and
ends within that mirror's deadline (which covers the waits and every attempt); a longer wait is
reported and the next mirror tried. A 429 or 503 without ``Retry-After``, or with one that is no
usable hint (garbage, negative, more than a day away), falls through to the next mirror at once,
like any other HTTP error: another mirror is likelier to help than asking again blindly.
"""

from __future__ import annotations

import email.utils
import functools
import hashlib
import http.client
import io
import math
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import closing
from datetime import timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, TextIO

from .._files import atomic_open

CHUNK = 1 << 16
#: the slowest average rate (bytes/s) the default deadline allows: ``timeout + size / MIN_RATE``
MIN_RATE = 20_000
#: the most bytes taken from a mirror for a file whose size is not published
MAX_BYTES = 1 << 30
#: the URL schemes fetched and the only ones redirects may lead to
SCHEMES = ("http", "https")
#: the longest wait (seconds) a mirror's ``Retry-After`` may ask for and still be waited for
MAX_RETRY_AFTER = 30.0
#: how many times one mirror is asked again for one file after a 429 or 503 with ``Retry-After``
MAX_RETRIES = 2
#: the HTTP statuses whose ``Retry-After`` is honoured: Too Many Requests, Service Unavailable
RETRY_STATUSES = (429, 503)
#: a ``Retry-After`` further away than this (seconds, a day) is nonsense, not a hint
ABSURD_RETRY_AFTER = 86_400.0

#: how waits are made (tests replace it to check the waits without making them)
_sleep = time.sleep


class ChecksumMismatch(ValueError):
    """A file whose digest differs from the published one; the message names file and digests."""


class DownloadFailed(OSError):
    """Every mirror failed for one file; the message lists each URL and why."""


class _MirrorFailed(Exception):
    """One mirror failed to deliver one file; ``dead``: skip that mirror for the next files;
    ``retry_after``: the seconds it asked to wait before asking again (429 or 503), if any."""

    def __init__(self, reason: str, dead: bool = False, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.dead, self.retry_after = dead, retry_after


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects to http and https URLs only (urllib would also follow ftp)."""

    def http_error_302(self, req: Any, fp: Any, code: int, msg: str, headers: Any) -> Any:
        location = headers.get("location") or headers.get("uri") or ""
        newurl = urllib.parse.urljoin(req.full_url, location)
        if urllib.parse.urlsplit(newurl).scheme not in SCHEMES:
            raise _MirrorFailed(
                f"redirected ({code}) to {newurl[:200]}; only http and https are followed",
                dead=True,
            )
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


class _DeadlineReader(io.RawIOBase):
    """The reads of a response's socket file, refused once the deadline (a `time.monotonic`
    value) has passed: every read of the status line, the headers and the body checks it, so a
    server trickling bytes just within each read timeout is still cut off."""

    def __init__(self, inner: Any, end: float, seconds: float) -> None:
        self.inner, self.end, self.seconds = inner, end, seconds

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if time.monotonic() > self.end:
            raise TimeoutError(
                f"too slow: the response was not complete after the {self.seconds:.1f} s "
                f"deadline; cut off"
            )
        data = self.inner.read1(len(buffer))  # one read of the socket at most
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self.inner.close()
        super().close()


class _DeadlineResponse(http.client.HTTPResponse):
    """An HTTP response that reads its socket through a `_DeadlineReader`."""

    def __init__(self, sock: Any, *args: Any, end: float, seconds: float, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        self.fp = io.BufferedReader(_DeadlineReader(self.fp, end, seconds))


#: urllib's handlers of http and https (the latter exists where Python has ssl)
_HANDLERS = tuple(
    getattr(urllib.request, name)
    for name in ("HTTPHandler", "HTTPSHandler")
    if hasattr(urllib.request, name)
)


class _Deadline(*_HANDLERS):  # type: ignore[misc]
    """Opens http and https connections whose responses honour one deadline (module docstring);
    urllib's own handlers give the connection arguments (TLS context and the like)."""

    def __init__(self, end: float, seconds: float) -> None:
        for handler in _HANDLERS:
            handler.__init__(self)
        self.end, self.seconds = end, seconds

    def do_open(self, http_class: Any, req: Any, **kwargs: Any) -> Any:
        def connection(host: str, **args: Any) -> Any:
            conn = http_class(host, **args)
            conn.response_class = functools.partial(
                _DeadlineResponse, end=self.end, seconds=self.seconds
            )
            return conn

        return super().do_open(connection, req, **kwargs)


def _opener(end: float, seconds: float) -> urllib.request.OpenerDirector:
    """An opener that follows redirects to http and https only and gives up at ``end``."""
    return urllib.request.build_opener(_Redirects, _Deadline(end, seconds))


def download(
    filename: str,
    mirrors: Iterable[str],
    dest_dir: str | os.PathLike,
    md5: str,
    *,
    size: int | None = None,
    timeout: float = 30.0,
    deadline: float | None = None,
    quiet: bool = False,
    dead: set[str] | None = None,
) -> Path:
    """Fetch ``filename`` from the first mirror (an http or https base URL) that serves it with
    the published ``md5`` (and ``size`` in bytes, when given), into ``dest_dir/filename``;
    returns that path.

    Every failure of one mirror is reported (on stderr unless ``quiet``) and the next mirror is
    tried; nothing is left behind. A mirror that cannot be reached, does not speak HTTP, is too
    slow or redirects off http/https is added to ``dead`` (when given) and skipped for the next
    files. ``timeout`` bounds each connection attempt and read, ``deadline`` the whole file from
    one mirror (default: ``timeout + size / MIN_RATE`` seconds). A mirror answering 429 or 503
    with a ``Retry-After`` of at most ``MAX_RETRY_AFTER`` seconds that ends within its deadline
    is waited for and asked again, ``MAX_RETRIES`` times at most (module docstring). A failure
    to write ``dest_dir/filename`` (no such directory, no space left) is no mirror's fault: it
    is raised at once, as the OSError it is.

    Raises:
        DownloadFailed: no mirror gave a verified file (the message lists every attempt).
    """
    dest = Path(dest_dir) / filename
    if deadline is None:
        deadline = timeout + (size if size is not None else MAX_BYTES) / MIN_RATE
    mirrors = list(mirrors)
    failures = []
    for n, base in enumerate(mirrors, 1):
        url = base.rstrip("/") + "/" + filename
        if dead is not None and base in dead:
            failures.append(f"{url}: skipped (mirror failed earlier)")
            continue
        try:
            _fetch_retrying(url, dest, md5, size, timeout, deadline, None if quiet else sys.stderr)
            return dest
        except _MirrorFailed as exc:
            failures.append(f"{url}: {exc}")
            if exc.dead and dead is not None:
                dead.add(base)
            if not quiet:
                then = "trying the next mirror" if n < len(mirrors) else "no mirror left"
                print(f"{url}: {exc}; {then}", file=sys.stderr, flush=True)
    raise DownloadFailed(f"could not download {filename}:\n  " + "\n  ".join(failures))


def _fetch_retrying(
    url: str,
    dest: Path,
    md5: str,
    size: int | None,
    timeout: float,
    deadline: float,
    stream: TextIO | None,
) -> None:
    """`_fetch_verified`, asked again after the wait a 429 or 503 asks for, while that wait is
    at most ``MAX_RETRY_AFTER``, ends within ``deadline`` seconds of the first attempt and
    ``MAX_RETRIES`` are not spent; otherwise the mirror's failure is raised, saying why."""
    start = time.monotonic()
    for retry in range(MAX_RETRIES + 1):
        try:
            return _fetch_verified(url, dest, md5, size, timeout, deadline, stream, start)
        except _MirrorFailed as exc:
            wait = exc.retry_after
            if wait is None:
                raise
            left = start + deadline - time.monotonic()
            if retry == MAX_RETRIES:
                why = f"still busy after {MAX_RETRIES} retries"
            elif wait > MAX_RETRY_AFTER:
                why = (
                    f"asks to retry after {wait:.0f} s, more than the {MAX_RETRY_AFTER:.0f} s "
                    f"allowed"
                )
            elif wait >= left:
                why = (
                    f"asks to retry after {wait:.0f} s, more than the {max(left, 0):.1f} s left "
                    f"of the {deadline:.1f} s deadline"
                )
            else:
                if stream is not None:
                    print(
                        f"{url}: {exc}; waiting {wait:.0f} s as the server asks "
                        f"(retry {retry + 1} of {MAX_RETRIES})",
                        file=stream,
                        flush=True,
                    )
                _sleep(wait)
                continue
            raise _MirrorFailed(f"{exc}; {why}") from exc


def _fetch_verified(
    url: str,
    dest: Path,
    md5: str,
    size: int | None,
    timeout: float,
    deadline: float,
    stream: TextIO | None,
    start: float,
) -> None:
    """Stream ``url`` into ``dest`` if it is verified by ``start + deadline`` (`time.monotonic`
    values). A failure of the mirror is a _MirrorFailed; a failure to write ``dest`` (no such
    directory, no space left) is raised as the OSError it is: no other mirror would help, and
    this one is not to blame."""
    chunks = _verified_chunks(url, md5, size, timeout, deadline, stream, start)
    with atomic_open(dest) as out, closing(chunks):  # a failed write closes the connection now
        for chunk in chunks:
            try:
                out.write(chunk)
            except OSError as exc:
                if exc.filename is None:  # ENOSPC and the like name no file: name dest
                    raise type(exc)(exc.errno, exc.strerror, str(dest)) from exc
                raise


def _verified_chunks(
    url: str,
    md5: str,
    size: int | None,
    timeout: float,
    deadline: float,
    stream: TextIO | None,
    start: float,
) -> Iterator[bytes]:
    """The body of ``url`` in chunks, ending normally only if all of it is verified (size and
    MD5) by ``start + deadline``; any failure of the mirror is a _MirrorFailed."""
    if urllib.parse.urlsplit(url).scheme not in SCHEMES:
        raise _MirrorFailed("not an http or https URL", dead=True)
    limit = size if size is not None else MAX_BYTES
    done = 0
    left = max(start + deadline - time.monotonic(), 0.01)
    try:
        with _opener(start + deadline, deadline).open(url, timeout=min(timeout, left)) as response:
            announced = response.headers.get("Content-Length")
            announced = int(announced) if announced and announced.isdigit() else None
            if announced is not None and announced > limit:
                raise _MirrorFailed(f"announces {announced} bytes, the published size is {limit}")
            bar = _Bar(url, size or announced or 0, stream)
            h = hashlib.md5()
            while chunk := response.read1(CHUNK):
                done += len(chunk)
                if done > limit:
                    raise _MirrorFailed(f"sent more than the published {limit} bytes; cut off")
                yield chunk
                h.update(chunk)
                bar.update(len(chunk))
                if time.monotonic() - start > deadline:
                    raise _MirrorFailed(
                        f"too slow: {done} of {size or '?'} bytes after the {deadline:.1f} s "
                        f"deadline; cut off",
                        dead=True,
                    )
            expected = size if size is not None else announced
            if expected is not None and done != expected:
                raise _MirrorFailed(f"the body ended after {done} of {expected} bytes")
            if h.hexdigest() != md5:  # raising here deletes the temporary file: nothing is kept
                raise _MirrorFailed(
                    f"MD5 {h.hexdigest()} does not match the published {md5}; not kept"
                )
            bar.close()
    except _MirrorFailed:
        raise
    except urllib.error.HTTPError as exc:
        reason = f"HTTP {exc.code} " + " ".join(str(exc.reason).split())  # one line, not three
        busy = exc.code in RETRY_STATUSES and exc.headers is not None
        hint = exc.headers.get("Retry-After") if busy else None
        wait = None if hint is None else retry_after_seconds(hint, time.time())
        if hint is not None and wait is None:
            reason += f"; Retry-After {hint[:40]!r} is not a usable hint"
        raise _MirrorFailed(reason, retry_after=wait) from exc
    except urllib.error.URLError as exc:  # DNS, refused, timeout while connecting
        raise _MirrorFailed(str(getattr(exc, "reason", exc)), dead=True) from exc
    except http.client.IncompleteRead as exc:
        raise _MirrorFailed(f"the connection dropped mid-file after {done} bytes") from exc
    except http.client.RemoteDisconnected as exc:
        raise _MirrorFailed("closed the connection without a response", dead=True) from exc
    except http.client.HTTPException as exc:  # BadStatusLine, LineTooLong, ...
        raise _MirrorFailed(
            f"does not speak HTTP ({type(exc).__name__}: {str(exc)[:100]!r})", dead=True
        ) from exc
    except (OSError, ValueError) as exc:  # timeouts, resets, bad headers
        raise _MirrorFailed(f"{type(exc).__name__}: {exc}", dead=True) from exc
    finally:
        if stream is not None and stream.isatty() and done:
            print(file=stream, flush=True)  # end the progress line


def retry_after_seconds(value: str, now: float) -> float | None:
    """The wait, in seconds from ``now`` (a `time.time` value), that the ``Retry-After`` header
    ``value`` asks for: delta-seconds (``"120"``) or an HTTP-date (rounded up to whole seconds;
    one already past: 0). None where it is no usable hint: garbage, a negative or fractional
    number, a date that does not exist, a wait of more than ``ABSURD_RETRY_AFTER`` (a day)."""
    value = value.strip()
    if re.fullmatch(r"[0-9]{1,12}", value, re.ASCII):
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
            if when.tzinfo is None:  # "-0000": UTC, says RFC 5322
                when = when.replace(tzinfo=timezone.utc)
            seconds = float(max(math.ceil(when.timestamp() - now), 0))  # 1 s resolution
        except (TypeError, ValueError, IndexError, OverflowError):  # not a date
            return None
    return seconds if seconds <= ABSURD_RETRY_AFTER else None


class _Bar:
    """Download progress on ``stream``: redrawn in place on a terminal (percentage and rate),
    start and end lines otherwise; nothing when ``stream`` is None."""

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
            rate = self.done / max(now - self.start, 1e-9) / 1e6
            print(
                f"\rdownloading {self.url} {pct}{self.done / 1e6:.1f} MB ({rate:.1f} MB/s)",
                end="",
                file=self.stream,
                flush=True,
            )

    def close(self) -> None:
        if self.stream is None:
            return
        seconds = time.perf_counter() - self.start
        line = f"downloaded {self.url} ({self.done / 1e6:.1f} MB in {seconds:.1f} s)"
        print(
            ("\r" + line) if self.tty else line,
            file=self.stream,
            end="" if self.tty else "\n",
            flush=True,
        )
