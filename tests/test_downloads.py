"""Downloads from misbehaving mirrors on 127.0.0.1: every kind of failure is reported and falls
through to the next mirror, nothing but the verified file is left, oversized bodies are cut off at
once and trickling or endless ones within their deadline (1 s here)."""

from __future__ import annotations

import email.utils
import errno
import hashlib
import importlib
import io
import re
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest

from ailib import datasets
from ailib.datasets import DownloadFailed

from .datasets_helpers import dead_url, misbehaving, serve, tiny_arrays, tiny_dataset, write_tiny

NAME = "t10k-images-idx3-ubyte.gz"
BODY = np.random.default_rng(0).bytes(200_000)  # as incompressible as a real .gz
MD5 = hashlib.md5(BODY).hexdigest()
# a read timeout and a whole-file deadline short enough for a quick suite, long enough that a
# busy 2-core machine running the suite on both cores does not stall a healthy server past
# them (0.5 s once did: a TimeoutError where the server's own misbehaviour was expected)
TIMEOUT, DEADLINE = 1.0, 2.0
MiB = 1 << 20
#: the module (``ailib.datasets.download`` is the function)
download_module = importlib.import_module("ailib.datasets.download")


def _head(conn: socket.socket, status: str = "200 OK", **headers: object) -> None:
    lines = [f"HTTP/1.1 {status}"] + [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())


def _send_forever(conn: socket.socket, stats: dict, piece: bytes, pause: float = 0.0) -> None:
    while not stats["stop"].is_set():
        conn.sendall(piece)
        stats["sent"] += len(piece)
        time.sleep(pause)


def drops_chunked_mid_body(conn: socket.socket, stats: dict) -> None:
    _head(conn, Transfer_Encoding="chunked")
    half = BODY[: len(BODY) // 2]
    conn.sendall(f"{len(half):x}\r\n".encode() + half + b"\r\n" + b"ffff\r\n" + b"abc")


def not_http(conn: socket.socket, stats: dict) -> None:
    conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")


def binary_garbage(conn: socket.socket, stats: dict) -> None:
    conn.sendall(bytes(range(256)) * 4)


def endless(conn: socket.socket, stats: dict) -> None:
    _head(conn, Connection="close")  # no length: the body goes on until the server stops
    _send_forever(conn, stats, bytes(64 * 1024))


def endless_chunked(conn: socket.socket, stats: dict) -> None:
    _head(conn, Transfer_Encoding="chunked")
    _send_forever(conn, stats, b"10000\r\n" + bytes(0x10000) + b"\r\n")


def the_file_and_more(conn: socket.socket, stats: dict) -> None:
    _head(conn, Connection="close")  # no length announced
    conn.sendall(BODY + b"trailing")


def announces_256_mib(conn: socket.socket, stats: dict) -> None:
    _head(conn, Content_Length=256 * MiB, Connection="close")
    _send_forever(conn, stats, bytes(64 * 1024))


def trickles(conn: socket.socket, stats: dict) -> None:
    _head(conn, Content_Length=len(BODY))
    _send_forever(conn, stats, BODY[:4], pause=0.05)  # 80 bytes/s, within every read timeout


def trickles_unannounced(conn: socket.socket, stats: dict) -> None:
    _head(conn, Connection="close")
    _send_forever(conn, stats, BODY[:4], pause=0.05)


def trickles_its_headers(conn: socket.socket, stats: dict) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    _send_forever(conn, stats, b"X", pause=0.05)  # one endless header line, 20 bytes/s


def trickles_its_status_line(conn: socket.socket, stats: dict) -> None:
    _send_forever(conn, stats, b"H", pause=0.05)


def continues_forever(conn: socket.socket, stats: dict) -> None:
    _send_forever(conn, stats, b"HTTP/1.1 100 Continue\r\n\r\n", pause=0.001)


def stalls(conn: socket.socket, stats: dict) -> None:
    _head(conn, Content_Length=len(BODY))
    stats["stop"].wait(10)


def short_body(conn: socket.socket, stats: dict) -> None:
    _head(conn, Content_Length=len(BODY), Connection="close")
    conn.sendall(BODY[:100])


def other_bytes(conn: socket.socket, stats: dict) -> None:
    other = bytes(len(BODY))
    _head(conn, Content_Length=len(other), Connection="close")
    conn.sendall(other)


def _redirect(location: str) -> Callable[[socket.socket, dict], None]:
    def redirect(conn: socket.socket, stats: dict) -> None:
        _head(conn, "302 Found", Location=location, Content_Length=0)

    return redirect


def server_error(conn: socket.socket, stats: dict) -> None:
    _head(conn, "500 Internal Server Error", Content_Length=0)


def not_found(conn: socket.socket, stats: dict) -> None:
    _head(conn, "404 Not Found", Content_Length=0)


# name -> (behaviour, what the report says, whether the mirror is skipped for the next files)
MISBEHAVIOURS = {
    "drops a chunked body mid-way": (drops_chunked_mid_body, "dropped mid-file", False),
    "does not speak HTTP": (not_http, "does not speak HTTP .BadStatusLine", True),
    "sends binary garbage": (binary_garbage, "does not speak HTTP", True),
    "endless body": (endless, "more than the published 200000 bytes; cut off", False),
    "endless chunked body": (endless_chunked, "more than the published", False),
    "the file and more, unannounced": (the_file_and_more, "more than the published", False),
    "announces 256 MiB": (announces_256_mib, "announces 268435456 bytes", False),
    "trickles 80 bytes/s": (trickles, f"too slow: .* after the {DEADLINE} s deadline", True),
    "trickles its headers": (
        trickles_its_headers,
        f"too slow: .* after the {DEADLINE} s deadline",
        True,
    ),
    "trickles its status line": (
        trickles_its_status_line,
        f"too slow: .* after the {DEADLINE} s deadline",
        True,
    ),
    "sends '100 Continue' forever": (
        continues_forever,
        f"too slow: .* after the {DEADLINE} s deadline",
        True,
    ),
    "stalls after the headers": (stalls, "TimeoutError|timed out", True),
    "short body": (short_body, "ended after 100 of", False),
    "bad checksum": (other_bytes, "does not match the published", False),
    "redirects to file://": (_redirect("file:///etc/passwd"), "to file:///etc/passwd", True),
    "redirects to ftp://": (_redirect("ftp://127.0.0.1/x.gz"), "to ftp://127.0.0.1", True),
    "redirects to itself": (_redirect("/" + NAME), "HTTP 302 .* infinite loop", False),
    "HTTP 500": (server_error, "HTTP 500", False),
    "HTTP 404": (not_found, "HTTP 404 Not Found", False),
}


@pytest.fixture
def good(tmp_path: Path) -> str:
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / NAME).write_bytes(BODY)
    with serve(tmp_path / "good") as (url, _):
        yield url


@pytest.mark.parametrize("case", list(MISBEHAVIOURS))
def test_a_misbehaving_mirror_falls_through_to_a_good_one(
    case: str, tmp_path: Path, good: str, capsys: pytest.CaptureFixture[str]
) -> None:
    behaviour, reason, _ = MISBEHAVIOURS[case]
    dest = tmp_path / "cache"
    with misbehaving(behaviour) as (bad, stats):
        start = time.monotonic()
        path = datasets.download(
            NAME, [bad, good], dest, MD5, size=len(BODY), timeout=TIMEOUT, deadline=DEADLINE
        )
        seconds = time.monotonic() - start
    assert path.read_bytes() == BODY
    assert [p.name for p in dest.iterdir()] == [NAME]  # nothing else left behind
    assert set(stats["requests"]) == {f"GET /{NAME} HTTP/1.1"}
    # one request, or a few where a redirect loop is followed until urllib sees it repeat
    assert len(stats["requests"]) <= 5
    report = capsys.readouterr().err
    assert re.search(f"{re.escape(bad + NAME)}: .*({reason}).*; trying the next mirror", report)
    # cut off within the deadline plus one read timeout (generous margin for a loaded machine)
    assert seconds < DEADLINE + TIMEOUT + 3.0


@pytest.mark.parametrize("case", list(MISBEHAVIOURS))
def test_only_misbehaving_mirrors_fail_with_every_reason(case: str, tmp_path: Path) -> None:
    behaviour, reason, skipped = MISBEHAVIOURS[case]
    dead: set[str] = set()
    with misbehaving(behaviour) as (bad, stats):
        with pytest.raises(DownloadFailed, match=f"{re.escape(bad + NAME)}: .*({reason})"):
            datasets.download(
                NAME,
                [bad, dead_url()],
                tmp_path,
                MD5,
                size=len(BODY),
                timeout=TIMEOUT,
                deadline=DEADLINE,
                quiet=True,
                dead=dead,
            )
    assert (bad in dead) == skipped
    assert list(tmp_path.iterdir()) == []


def test_an_oversized_body_is_cut_off_at_once(tmp_path: Path) -> None:
    with misbehaving(endless) as (bad, stats):
        with pytest.raises(DownloadFailed, match="cut off"):
            datasets.download(NAME, [bad], tmp_path, MD5, size=len(BODY), quiet=True)
        time.sleep(0.2)
    # the server could push what the socket buffers hold, not the endless stream
    assert stats["sent"] < 64 * MiB


def test_the_default_deadline_follows_the_published_size(tmp_path: Path) -> None:
    with misbehaving(trickles_unannounced) as (bad, stats):
        start = time.monotonic()
        with pytest.raises(DownloadFailed, match=r"too slow: .* after the 2\.0 s deadline"):
            # timeout + size / MIN_RATE: 1 s + 20 KB at 20 KB/s = 2 s
            datasets.download(NAME, [bad], tmp_path, MD5, size=20_000, timeout=1.0, quiet=True)
    assert time.monotonic() - start < 2.0 + 1.0 + 3.0


def test_redirects_between_http_mirrors_are_followed(tmp_path: Path, good: str) -> None:
    with misbehaving(_redirect(good + NAME)) as (moved, _):
        path = datasets.download(NAME, [moved], tmp_path, MD5, size=len(BODY), quiet=True)
    assert path.read_bytes() == BODY


@pytest.mark.parametrize("mirror", ["file:///etc/", "ftp://127.0.0.1/", "data:,x"])
def test_mirrors_must_be_http(tmp_path: Path, mirror: str) -> None:
    with pytest.raises(DownloadFailed, match="not an http or https URL"):
        datasets.download(NAME, [mirror], tmp_path, MD5, quiet=True)


def test_a_destination_that_cannot_be_written_is_not_blamed_on_the_mirrors(
    tmp_path: Path,
) -> None:
    """The OSError is raised as it is, before any mirror is asked; before, every mirror was
    tried, reported as failing and marked dead for the next files."""
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / NAME).write_bytes(BODY)
    (tmp_path / "a-file").write_bytes(b"")
    dead: set[str] = set()
    with serve(tmp_path / "good") as (url, requests):
        with pytest.raises(NotADirectoryError) as info:
            datasets.download(
                NAME, [url, url], tmp_path / "a-file" / "cache", MD5, quiet=True, dead=dead
            )
    assert info.value.filename == str(tmp_path / "a-file" / "cache")
    assert requests == [] and dead == set()


def test_a_full_disk_stops_the_download_without_trying_other_mirrors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write failing mid-file (ENOSPC, simulated after 100 KB) is raised naming the file, the
    temporary file is removed, and no second mirror is asked to fill the disk again."""
    real = download_module.atomic_open

    class Full:
        def __init__(self, out: Any) -> None:
            self.out, self.written = out, 0

        def write(self, data: bytes) -> int:
            if self.written + len(data) > 100_000:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.written += len(data)
            return self.out.write(data)

    @contextmanager
    def filling(path: Path) -> Iterator[Full]:
        with real(path) as out:
            yield Full(out)

    monkeypatch.setattr(download_module, "atomic_open", filling)
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / NAME).write_bytes(BODY)
    cache, dead = tmp_path / "cache", set()
    with serve(tmp_path / "good") as (url, requests):
        with pytest.raises(OSError, match="No space left on device") as info:
            datasets.download(NAME, [url, url], cache, MD5, quiet=True, dead=dead)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(cache / NAME)
    assert requests == [f"/{NAME}"] and dead == set()
    assert list(cache.iterdir()) == []


def test_a_stale_temporary_file_of_a_killed_download_is_removed(tmp_path: Path, good: str) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    stale = cache / f".{NAME}.k1lled00.tmp"
    stale.write_bytes(BODY[:100])
    datasets.download(NAME, [good], cache, MD5, size=len(BODY), quiet=True)
    assert [p.name for p in cache.iterdir()] == [NAME]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_and_plain_lines_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with misbehaving(trickles) as (slow, _):
        mirrors = [slow]
        body = bytes(range(256)) * 4000  # 1 MB, served in pieces by the good server
        (tmp_path / "big").mkdir()
        (tmp_path / "big" / "big.bin").write_bytes(body)
        md5 = hashlib.md5(body).hexdigest()
        with serve(tmp_path / "big") as (url, _):
            mirrors.append(url)
            for stream in (Terminal(), io.StringIO()):
                monkeypatch.setattr("sys.stderr", stream)
                target = tmp_path / type(stream).__name__
                datasets.download(
                    "big.bin",
                    mirrors,
                    target,
                    md5,
                    size=len(body),
                    timeout=TIMEOUT,
                    deadline=DEADLINE,
                )
                text = stream.getvalue()
                if isinstance(stream, Terminal):
                    assert "\rdownloaded " + url in text and "too slow" in text
                else:
                    assert "\r" not in text
                    assert re.search(f"^downloading {re.escape(url)}big.bin$", text, re.M)
                    assert re.search(f"^downloaded {re.escape(url)}big.bin \\(1.0 MB", text, re.M)
    np.testing.assert_array_equal(
        np.frombuffer((tmp_path / "Terminal" / "big.bin").read_bytes(), np.uint8),
        np.frombuffer(body, np.uint8),
    )


def test_loading_a_dataset_falls_through_a_dropping_and_a_non_http_mirror(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AILIB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    spec = tiny_dataset()
    monkeypatch.setitem(datasets.DATASETS, "mnist", spec)
    write_tiny(tmp_path / "mirror", spec)
    with (
        misbehaving(drops_chunked_mid_body) as (dropping, _),
        misbehaving(not_http) as (ssh, ssh_stats),
        serve(tmp_path / "mirror") as (good, _),
    ):
        monkeypatch.setenv("AILIB_MNIST_MIRRORS", f"{dropping},{ssh},{good}")
        x, y = datasets.load_mnist_test(quiet=True)
    np.testing.assert_array_equal(y, tiny_arrays()["test_labels"])
    assert len(ssh_stats["requests"]) == 1  # not asked again for the second file
    cached = datasets.cache_dir() / "mnist"
    assert sorted(p.name for p in cached.iterdir()) == sorted(
        spec.files[k].name for k in ("test_images", "test_labels")
    )


# -- busy mirrors: 429 and 503 with Retry-After ---------------------------------------------
def busy(
    status: str, retry_after: str | None, times: int = 1
) -> Callable[[socket.socket, dict], None]:
    """Answers ``status`` (with ``Retry-After: retry_after`` unless None) to the first ``times``
    requests, then serves the file."""

    def behaviour(conn: socket.socket, stats: dict) -> None:
        if len(stats["requests"]) <= times:
            hint = {} if retry_after is None else {"Retry_After": retry_after}
            _head(conn, status, Content_Length=0, Connection="close", **hint)
        else:
            _head(conn, Content_Length=len(BODY), Connection="close")
            conn.sendall(BODY)

    return behaviour


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits the download makes, recorded instead of slept."""
    made: list[float] = []
    monkeypatch.setattr(download_module, "_sleep", made.append)
    return made


BUSY = ["503 Service Unavailable", "429 Too Many Requests"]


@pytest.mark.parametrize("status", BUSY)
def test_a_busy_mirror_is_waited_for_and_asked_again(
    status: str, tmp_path: Path, waits: list[float], capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: the busy mirror was given up at once (here, with no other mirror: failed)."""
    with misbehaving(busy(status, "1")) as (url, stats):
        path = datasets.download(
            NAME, [url], tmp_path, MD5, size=len(BODY), timeout=TIMEOUT, deadline=DEADLINE
        )
    assert path.read_bytes() == BODY
    assert waits == [1.0] and len(stats["requests"]) == 2
    report = capsys.readouterr().err
    code = status.split()[0]
    assert f"{url}{NAME}: HTTP {code} " in report
    assert "; waiting 1 s as the server asks (retry 1 of 2)" in report


def test_a_retry_after_date_is_waited_for(tmp_path: Path, waits: list[float]) -> None:
    when = email.utils.formatdate(time.time() + 3, usegmt=True)
    with misbehaving(busy("503 Service Unavailable", when)) as (url, stats):
        datasets.download(NAME, [url], tmp_path, MD5, size=len(BODY), timeout=5, quiet=True)
    assert len(waits) == 1 and 1 <= waits[0] <= 4
    assert len(stats["requests"]) == 2


def test_waiting_for_a_busy_mirror_is_quiet_when_asked(
    tmp_path: Path, waits: list[float], capsys: pytest.CaptureFixture[str]
) -> None:
    with misbehaving(busy("503 Service Unavailable", "1")) as (url, _):
        datasets.download(NAME, [url], tmp_path, MD5, size=len(BODY), quiet=True)
    assert waits == [1.0] and capsys.readouterr().err == ""


# Retry-After -> what the report says; the mirror is not waited for, the next one serves the file
NOT_WAITED_FOR = {
    "31 s": ("31", "asks to retry after 31 s, more than the 30 s allowed"),
    "past the deadline": (
        "5",
        f"asks to retry after 5 s, more than the .* s left of the {DEADLINE} s deadline",
    ),
    "a day and a second": ("86401", "Retry-After '86401' is not a usable hint"),
    "20 digits": ("9" * 20, "Retry-After '9{20}' is not a usable hint"),
    "4000 digits": ("9" * 4000, "Retry-After '9{40}' is not a usable hint"),
    "negative": ("-5", "Retry-After '-5' is not a usable hint"),
    "fractional": ("1.5", r"Retry-After '1\.5' is not a usable hint"),
    "garbage": ("soon", "Retry-After 'soon' is not a usable hint"),
    "far-future date": ("Fri, 31 Dec 9999 23:59:59 GMT", "Retry-After 'Fri, 31 Dec 9999.*' is not"),
    "impossible date": ("Mon, 99 Feb 2026 07:28:00 GMT", "Retry-After 'Mon, 99 Feb.*' is not"),
    "no Retry-After": (None, r"(Unavailable|Requests)"),
}


@pytest.mark.parametrize("status", BUSY)
@pytest.mark.parametrize("case", list(NOT_WAITED_FOR))
def test_a_busy_mirror_asking_too_much_falls_through_at_once(
    case: str,
    status: str,
    tmp_path: Path,
    good: str,
    waits: list[float],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before: the reason was not given (and nothing was waited for either)."""
    hint, reason = NOT_WAITED_FOR[case]
    with misbehaving(busy(status, hint)) as (bad, stats):
        path = datasets.download(
            NAME, [bad, good], tmp_path, MD5, size=len(BODY), timeout=TIMEOUT, deadline=DEADLINE
        )
    assert path.read_bytes() == BODY
    assert waits == [] and len(stats["requests"]) == 1
    report = capsys.readouterr().err
    code = status.split()[0]
    assert re.search(f"{re.escape(bad + NAME)}: HTTP {code} .*{reason}.*; trying the next", report)
    assert len(report) < 1000  # 4000 digits are not repeated


def test_a_mirror_busy_for_good_is_asked_twice_more_then_left(
    tmp_path: Path, good: str, waits: list[float], capsys: pytest.CaptureFixture[str]
) -> None:
    dead: set[str] = set()
    with misbehaving(busy("503 Service Unavailable", "1", times=100)) as (bad, stats):
        path = datasets.download(
            NAME, [bad, good], tmp_path, MD5, size=len(BODY), timeout=TIMEOUT, dead=dead
        )
    assert path.read_bytes() == BODY
    assert waits == [1.0, 1.0] and len(stats["requests"]) == 3
    assert bad not in dead  # busy is not dead: asked again for the next file
    assert re.search(
        f"{re.escape(bad + NAME)}: HTTP 503 .*; still busy after 2 retries; trying the next",
        capsys.readouterr().err,
    )


@pytest.mark.parametrize(
    "value, seconds",
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("Thu, 01 Jan 1970 00:02:30 GMT", 90.0),
        ("Thu, 01 Jan 1970 00:02:30 -0000", 90.0),  # no zone: UTC
        ("Thu, 01 Jan 1970 00:00:01 GMT", 0.0),  # already past: now
        ("", None),
        ("١٢", None),  # digits, but not ASCII ones
        ("1e3", None),
        ("Thu, 01 Jan 1970 25:00:00 GMT", None),
    ],
)
def test_retry_after_values(
    value: str, seconds: float | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "IST-5:30")  # a local time that is not UTC: "-0000" is UTC
    time.tzset()
    try:
        assert download_module.retry_after_seconds(value, now=60.0) == seconds
    finally:
        monkeypatch.undo()
        time.tzset()
