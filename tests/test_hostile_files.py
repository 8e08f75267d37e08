"""Hostile model files, built on the fly: each is refused with a ModelFileError naming the file,
before anything large is allocated (peak memory measured), without running or importing anything
the file names, and without writing anything. Saves killed half-way leave the old file loadable
and no debris once the next save has run."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import ailib
from ailib import zoo
from ailib._files import temp_pattern

from .hostile import config_npy, dense_config, npy, npy_header, peak_memory, write_zip

ROOT = Path(__file__).resolve().parents[1]
MiB = 1 << 20
#: what loading any hostile file may allocate at most (they are a few hundred bytes to 100 KB)
PEAK_LIMIT = 4 * MiB
PROBE = "ailib_hostile_probe"


def _dense_arrays(n_in: int = 4, n_out: int = 3) -> dict[str, bytes]:
    return {
        "layers.0.params.W.npy": npy(np.zeros((n_out, n_in), np.float32)),
        "layers.0.params.b.npy": npy(np.zeros(n_out, np.float32)),
    }


def _model(path: Path, config: Any, arrays: dict[str, bytes] | None = None, **kw: Any) -> Path:
    """A model file holding ``config`` and ``arrays`` (default: a Dense(4, 3)'s)."""
    members = {
        "config.json.npy": config_npy(config),
        **(_dense_arrays() if arrays is None else arrays),
    }
    return write_zip(path, members, **kw)


def _with(change: Callable[[dict], None]) -> dict:
    config = dense_config(4, 3)
    change(config)
    return config


def _layer(**fields: Any) -> Callable[[dict], None]:
    return lambda c: c["layers"][0].update(fields)


def _setting(**fields: Any) -> Callable[[dict], None]:
    return lambda c: c["layers"][0]["config"].update(fields)


def _batchnorm(path: Path, running_var: np.ndarray) -> Path:
    """A BatchNorm1D(3) file whose running variance is ``running_var``."""
    config = {
        **dense_config(4, 3),
        "layers": [
            {
                "class": "BatchNorm1D",
                "config": {"features": 3},
                "params": {n: {"shape": [3], "dtype": "float32"} for n in ("gamma", "beta")},
                "buffers": {
                    n: {"shape": [3], "dtype": "float32"} for n in ("running_mean", "running_var")
                },
            }
        ],
    }
    ones = npy(np.ones(3, np.float32))
    arrays = {
        "layers.0.params.gamma.npy": ones,
        "layers.0.params.beta.npy": ones,
        "layers.0.buffers.running_mean.npy": ones,
        "layers.0.buffers.running_var.npy": npy(running_var.astype(np.float32)),
    }
    return _model(path, config, arrays)


def _pickle_payload() -> np.ndarray:
    """An object array whose unpickling would import the probe module."""

    class Payload:
        def __reduce__(self) -> tuple:
            import importlib

            return importlib.import_module, (PROBE,)

    return np.array([Payload(), None], dtype=object)


# name -> (builder(path) -> path, the fault the message must name)
HOSTILE: dict[str, tuple[Callable[[Path], Path], str]] = {
    # -- memory before checks ----------------------------------------------------------------
    "config claims a 200000x200000 Dense, the arrays are small": (
        lambda p: _model(p, dense_config(200_000, 200_000)),
        r"layers.0.params.W has shape \(3, 4\), .* the layer needs \(200000, 200000\)",
    ),
    "config and .npy header claim 200000x200000, no data": (
        lambda p: _model(
            p,
            dense_config(200_000, 200_000),
            {
                "layers.0.params.W.npy": npy_header((200_000, 200_000)),
                "layers.0.params.b.npy": npy(np.zeros(200_000, np.float32)),
            },
        ),
        "declares 128 bytes, its header says 160000000128",
    ),
    "zip directory claims 3.6 GB for 128 stored bytes": (
        lambda p: _model(
            p,
            dense_config(30_000, 30_000),
            {
                "layers.0.params.W.npy": npy_header((30_000, 30_000)),
                "layers.0.params.b.npy": npy(np.zeros(30_000, np.float32)),
            },
            claims={"layers.0.params.W.npy": 128 + 30_000 * 30_000 * 4},
        ),
        "claims 3600000128 bytes from 128 stored bytes",
    ),
    "zip directory claims 3.6 GB stored in a file of 120 KB": (
        lambda p: _model(
            p,
            dense_config(30_000, 30_000),
            {
                "layers.0.params.W.npy": npy_header((30_000, 30_000)),
                "layers.0.params.b.npy": npy(np.zeros(30_000, np.float32)),
            },
            claims={"layers.0.params.W.npy": 128 + 30_000 * 30_000 * 4},
            stored_claims={"layers.0.params.W.npy": 128 + 30_000 * 30_000 * 4},
        ),
        r"claims 3600000128 stored bytes from offset \d+, the file holds 12\d{4} bytes",
    ),
    ".npy header claims 2**40 floats": (
        lambda p: _model(
            p,
            dense_config(4, 3),
            {**_dense_arrays(), "layers.0.params.b.npy": npy_header((2**40,)) + bytes(12)},
        ),
        "layers.0.params.b.npy' declares 140 bytes, its header says 4398046511232",
    ),
    "member inflates to 64 MiB, its header says 3 floats": (
        lambda p: _model(
            p,
            dense_config(4, 3),
            {**_dense_arrays(), "layers.0.params.b.npy": npy_header((3,)) + bytes(64 * MiB)},
            compression=zipfile.ZIP_DEFLATED,
        ),
        "declares 67108992 bytes, its header says 140",
    ),
    "member inflates to 64 MiB, the directory says 140 bytes": (
        lambda p: _model(
            p,
            dense_config(4, 3),
            {**_dense_arrays(), "layers.0.params.b.npy": npy_header((3,)) + bytes(64 * MiB)},
            compression=zipfile.ZIP_DEFLATED,
            claims={"layers.0.params.b.npy": 140},
        ),
        "Bad CRC-32",
    ),
    "config.json of 20 MB": (
        lambda p: _model(p, {"format": "ailib.model", "padding": "x" * (20 * MiB)}),
        "config.json holds 20971[0-9]+ bytes, more than 16777216",
    ),
    # -- malformed archives ------------------------------------------------------------------
    "config member without .npy": (
        lambda p: write_zip(p, {"config.json": b'{"format": "ailib.model"}'}),
        "member 'config.json' is not a .npy array",
    ),
    "a member that is not an array": (
        lambda p: _model(p, dense_config(4, 3), {**_dense_arrays(), "notes.txt": b"hello"}),
        "member 'notes.txt' is not a .npy array",
    ),
    "a .npy member that is not .npy": (
        lambda p: _model(p, dense_config(4, 3), {**_dense_arrays(), "x.npy": b"hello world"}),
        "member 'x.npy' is not a readable .npy array",
    ),
    "a .npy header of 1 MB": (
        lambda p: _model(
            p,
            dense_config(4, 3),
            {**_dense_arrays(), "x.npy": b"\x93NUMPY\x01\x00\xff\xff" + b" " * 65535},
        ),
        "member 'x.npy' is not a readable .npy array",
    ),
    "a negative dimension": (
        lambda p: _model(
            p,
            dense_config(4, 3),
            {**_dense_arrays(), "x.npy": npy_header((3,)).replace(b"(3,)", b"(-3,)")},
        ),
        r"member 'x.npy': bad shape \(-3,\)",
    ),
    "a header with an unclosed bracket": (
        lambda p: _model(
            p,
            dense_config(4, 3),
            {**_dense_arrays(), "x.npy": npy_header((3,)).replace(b"(3,)", b"(3,(") + bytes(12)},
        ),
        r"member 'x.npy' is not a readable .npy array \(TokenError: \('EOF in multi-line",
    ),
    "a header key as bytes": (
        lambda p: _model(
            p,
            dense_config(4, 3),
            {**_dense_arrays(), "x.npy": npy_header((3,)).replace(b"'shape'", b"b'sJpe'")},
        ),
        r"member 'x.npy' is not a readable .npy array \(TypeError: '<' not supported",
    ),
    "a header with a dtype NumPy cannot parse": (
        lambda p: _model(
            p,
            dense_config(4, 3),
            {**_dense_arrays(), "x.npy": npy_header((3,)).replace(b"'<f4'", b"',f4'")},
        ),
        r"member 'x.npy' is not a readable .npy array \(SyntaxError: ",
    ),
    "a header nested 4000 deep": (
        lambda p: _model(
            p,
            dense_config(4, 3),
            {
                **_dense_arrays(),
                "x.npy": b"\x93NUMPY\x01\x00"
                + (8118).to_bytes(2, "little")
                + b"(" * 4000
                + b")" * 4000
                + b" " * 117
                + b"\n",
            },
        ),
        "member 'x.npy' is not a readable .npy array",
    ),
    "bzip2-compressed members": (
        lambda p: _model(p, dense_config(4, 3), compression=zipfile.ZIP_BZIP2),
        "uses compression method 12",
    ),
    "a member twice": (
        lambda p: _duplicate(p),
        "appears twice",
    ),
    "a member needing zip version 6.4": (
        lambda p: _model(p, dense_config(4, 3), versions={"layers.0.params.b.npy": 64}),
        r"truncated or damaged \(NotImplementedError: zip file version 6.4\)",
    ),
    "a structured dtype": (
        lambda p: _model(
            p,
            dense_config(4, 3),
            {**_dense_arrays(), "x.npy": npy(np.zeros(2, dtype=[("a", "<f4"), ("b", "<i4")]))},
        ),
        "is not one of float32",
    ),
    "a pickled object array that would import a module": (
        lambda p: _model(
            p,
            dense_config(4, 3),
            {**_dense_arrays(), "layers.0.params.b.npy": npy(_pickle_payload())},
        ),
        "holds Python objects, which only a pickle can restore",
    ),
    "the config as float64": (
        lambda p: _model(
            p, dense_config(4, 3), {**_dense_arrays(), "config.json.npy": npy(np.zeros(3))}
        ),
        "no config.json entry",
    ),
    # -- malformed configs -------------------------------------------------------------------
    "layer class is a list": (
        lambda p: _model(p, _with(_layer(**{"class": ["Dense"]}))),
        r"layer 0 is \['Dense'\], not one of ailib.layers.LAYERS",
    ),
    "layer class is an object": (
        lambda p: _model(p, _with(_layer(**{"class": {"module": "os", "name": "system"}}))),
        "layer 0 is {'module': 'os', 'name': 'system'}, not one of",
    ),
    "layer class names a module": (
        lambda p: _model(p, _with(_layer(**{"class": f"{PROBE}.Layer"}))),
        f"layer 0 is '{PROBE}.Layer', not one of",
    ),
    "JSON nested 100000 deep": (
        lambda p: _model(
            p, '{"format": "ailib.model", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
        ),
        "config.json is nested more than 32 deep",
    ),
    "JSON nested 40 deep": (
        lambda p: _model(
            p,
            _with(
                lambda c: c.update(
                    x=[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]
                )
            ),
        ),
        "config.json is nested more than 32 deep",
    ),
    "NaN in the config": (
        lambda p: _model(p, '{"format": "ailib.model", "version": NaN}'),
        "NaN is not a number ailib writes",
    ),
    "a setting of 1e400 (infinity as a float)": (
        lambda p: _model(
            p, json.dumps(_with(lambda c: c.update(meta={"lr": 0.5}))).replace("0.5", "1e400")
        ),
        "1e400 is not a number ailib writes",
    ),
    "config is a list": (lambda p: _model(p, [1, 2]), "config.json is not a JSON object"),
    "layers is an object": (
        lambda p: _model(p, _with(lambda c: c.update(layers={"0": c["layers"][0]}))),
        "a 'layers' list",
    ),
    "version is true": (
        lambda p: _model(p, _with(lambda c: c.update(version=True))),
        "format version True",
    ),
    "seed is a string": (
        lambda p: _model(p, _with(lambda c: c.update(seed="0"))),
        "seed '0' is not a non-negative int",
    ),
    "seed is negative": (
        lambda p: _model(p, _with(lambda c: c.update(seed=-1))),
        "seed -1 is not a non-negative int",
    ),
    "loss is a list": (
        lambda p: _model(p, _with(lambda c: c.update(loss=["MSE"]))),
        r"loss \['MSE'\] is not a string",
    ),
    "checkpoint is a list": (
        lambda p: _model(p, _with(lambda c: c.update(checkpoint=[]))),
        "checkpoint entry is not an object",
    ),
    "layer config is a list": (
        lambda p: _model(p, _with(_layer(config=[4, 3]))),
        r"layer 0 \(Dense\) has no config object",
    ),
    "size is a string": (
        lambda p: _model(p, _with(_setting(in_features="4"))),
        "in_features must be a positive int, received '4'",
    ),
    "size is a float": (
        lambda p: _model(p, _with(_setting(out_features=1e300))),
        "out_features must be a positive int, received 1e",
    ),
    "size is a bool": (
        lambda p: _model(p, _with(_setting(out_features=True))),
        "out_features must be a positive int, received True",
    ),
    "bias is a string": (
        lambda p: _model(p, _with(_setting(bias="no"))),
        "bias must be true or false",
    ),
    "a setting is an object": (
        lambda p: _model(p, _with(_setting(init={"__class__": "os.system"}))),
        "argument 'init' is not a setting a saved layer can have",
    ),
    "a setting names the backend": (
        lambda p: _model(p, _with(_setting(backend="cupy"))),
        "argument 'backend' is not a setting",
    ),
    "an unknown setting": (
        lambda p: _model(p, _with(_setting(units=3))),
        "unexpected keyword argument 'units'",
    ),
    "an unknown initialiser": (
        lambda p: _model(p, _with(_setting(init="os.system"))),
        "cannot be built from its config",
    ),
    "params listed as a list": (
        lambda p: _model(p, _with(_layer(params=["W", "b"]))),
        r"lists params \['W', 'b'\], the layer has \['W', 'b'\]",
    ),
    "a param without a dtype": (
        lambda p: _model(p, _with(lambda c: c["layers"][0]["params"]["W"].pop("dtype"))),
        "has no dtype for params.W",
    ),
    "conv kernel size nested": (
        lambda p: _model(
            p,
            {
                **dense_config(4, 3),
                "layers": [
                    {
                        "class": "Conv2D",
                        "config": {"in_channels": 1, "out_channels": 2, "kernel_size": [[3], 3]},
                        "params": {},
                        "buffers": {},
                    }
                ],
            },
        ),
        "kernel_size must be an int >= 1 or a pair of them",
    ),
    "an optimizer array of the wrong shape": (
        lambda p: _model(
            p,
            dense_config(4, 3),
            {**_dense_arrays(), "optimizer.0.W.M.npy": npy(np.zeros(5, np.float32))},
        ),
        r"optimizer.0.W.M holds float32 \(5,\), its parameter is float32 \(3, 4\)",
    ),
    # -- values no trained model holds -----------------------------------------------------
    "NaN weights": (
        lambda p: _model(
            p,
            dense_config(4, 3),
            {**_dense_arrays(), "layers.0.params.W.npy": npy(np.full((3, 4), np.nan, np.float32))},
        ),
        "layers.0.params.W holds 12 NaN or infinite values of 12; expected finite weights",
    ),
    "an infinite bias": (
        lambda p: _model(
            p,
            dense_config(4, 3),
            {
                **_dense_arrays(),
                "layers.0.params.b.npy": npy(np.array([0, np.inf, 0], np.float32)),
            },
        ),
        "layers.0.params.b holds 1 NaN or infinite values of 3",
    ),
    "a NaN running variance": (
        lambda p: _batchnorm(p, np.array([1.0, np.nan, 1.0])),
        "layers.0.buffers.running_var holds 1 NaN",
    ),
    "a negative running variance": (
        lambda p: _batchnorm(p, np.array([1.0, -2.0, 1.0])),
        "running_var holds 1 negative values; expected variances >= 0",
    ),
    "an array nobody describes": (
        lambda p: _model(
            p, dense_config(4, 3), {**_dense_arrays(), "layers.9.params.W.npy": npy(np.zeros(2))}
        ),
        "arrays not described by the config: layers.9.params.W",
    ),
}


def _duplicate(path: Path) -> Path:
    members = {"config.json.npy": config_npy(dense_config(4, 3)), **_dense_arrays()}
    write_zip(path, members)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        with zipfile.ZipFile(path, "a") as z:
            z.writestr("layers.0.params.b.npy", npy(np.ones(3, np.float32)))
    return path


@pytest.fixture
def probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An importable module that leaves a marker file when imported."""
    marker = tmp_path / "probe-ran"
    (tmp_path / "modules").mkdir()
    (tmp_path / "modules" / f"{PROBE}.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nclass Layer: pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "modules"))
    return marker


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_model_file_is_refused_before_allocating(
    case: str, tmp_path: Path, probe: Path
) -> None:
    build, fault = HOSTILE[case]
    target = tmp_path / "files"
    target.mkdir()
    path = build(target / "model.npz")
    ailib.load(_model(tmp_path / "valid.npz", dense_config(4, 3)))  # what loading imports
    before = sorted(target.iterdir())
    modules = set(sys.modules)
    with peak_memory() as peak, pytest.raises(ailib.ModelFileError, match=fault) as info:
        ailib.load(path)
    assert str(info.value).startswith(f"{path}: ")
    assert len(str(info.value)) < 1000 and "\n" not in str(info.value)
    assert peak[0] < PEAK_LIMIT, f"peak {peak[0] / MiB:.1f} MiB"
    assert sorted(target.iterdir()) == before  # nothing written
    assert PROBE not in sys.modules and set(sys.modules) <= modules  # nothing imported
    assert not probe.exists()  # nothing run


def test_hostile_files_stay_within_an_address_space_limit(tmp_path: Path) -> None:
    """In a process that may map at most 1 GiB, every memory-claiming file is refused cleanly
    (no MemoryError), and the checks did not need the memory the files claim."""
    paths = []
    for i, case in enumerate(HOSTILE):
        if "claim" in case or "inflate" in case:
            paths.append(str(HOSTILE[case][0](tmp_path / f"{i}.npz")))
    script = textwrap.dedent(
        """
        import resource, sys
        import ailib
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        for path in sys.argv[1:]:
            try:
                ailib.load(path)
            except ailib.ModelFileError:
                print("refused")
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script, *paths],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["refused"] * len(paths) and len(paths) >= 5


def test_a_consistent_file_still_loads_after_all_checks(tmp_path: Path) -> None:
    """The crafting helpers make valid files when nothing lies: the checks above are not just
    refusing everything."""
    path = _model(tmp_path / "ok.npz", dense_config(4, 3))
    model = ailib.load(path)
    assert model.layers[0].params["W"].shape == (3, 4)
    deflated = _model(
        tmp_path / "deflated.npz", dense_config(4, 3), compression=zipfile.ZIP_DEFLATED
    )
    assert ailib.load(deflated).layers[0].out_features == 3


def test_a_model_with_non_finite_weights_is_not_saved(tmp_path: Path) -> None:
    """What `load` refuses, `save` does not write: the old file stays as it was."""
    model = ailib.Sequential(zoo.mlp(4, (3,), 2), backend="numpy", seed=0)
    path = model.save(tmp_path / "m.npz")
    before = path.read_bytes()
    model.layers[-1].params["b"] = model.backend.asarray(np.array([0.0, np.nan], np.float32))
    with pytest.raises(ValueError, match=r"layer 2 \(Dense\) params 'b' holds NaN or infinite"):
        model.save(path)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["m.npz"]


def test_loading_draws_no_initial_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = ailib.Sequential(zoo.mlp(64, (32,), 10), backend="numpy", seed=0).save(
        tmp_path / "m.npz"
    )

    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("an initial weight was drawn while loading")

    monkeypatch.setattr(ailib.backends.Random, "uniform", forbidden)
    monkeypatch.setattr(ailib.backends.Random, "normal", forbidden)
    model = ailib.load(path)
    assert model.layers[0].params["W"].shape == (32, 64)


# -- killed and concurrent saves ------------------------------------------------------------
KILLED_SAVE = """
import sys, time
import numpy as np
import ailib
from ailib import zoo

def stall(file, **arrays):
    file.write(b"PK" + bytes(1 << 20))  # a megabyte of a half-written archive
    file.flush()
    print("writing", flush=True)
    time.sleep(60)

np.savez = stall
ailib.Sequential(zoo.mlp(4, (3,), 2), backend="numpy", seed=1).save(sys.argv[1])
"""


def _killed_save(path: Path) -> None:
    """Run a save of ``path`` in a subprocess and SIGKILL it half-way through writing."""
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_SAVE, str(path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL


def _temps(path: Path) -> list[Path]:
    return sorted(p for p in path.parent.iterdir() if temp_pattern(path).fullmatch(p.name))


def test_a_killed_save_leaves_the_old_file_and_the_next_save_its_debris(tmp_path: Path) -> None:
    model = ailib.Sequential(zoo.mlp(4, (3,), 2), backend="numpy", seed=0)
    path = model.save(tmp_path / "m.npz")
    before = path.read_bytes()
    _killed_save(path)
    first = _temps(path)
    assert len(first) == 1 and first[0].stat().st_size >= MiB
    _killed_save(path)  # the next writer removes the first one's debris before writing
    stale = _temps(path)
    assert len(stale) == 1 and stale != first
    assert path.read_bytes() == before
    ailib.load(path)  # the old file is whole

    # what the cleanup must leave alone: other targets' temporary files, other files
    others = [
        tmp_path / ".other.npz.abcd1234.tmp",  # another target's temporary file
        tmp_path / ".m.npz.notours.tmp",  # not the mkstemp pattern
        tmp_path / ".m.npz.abcd1234.tmp.keep",
        tmp_path / "m.npz.abcd1234.tmp",  # not hidden
        tmp_path / ".m.npz.bak",
    ]
    for other in others:
        other.write_bytes(b"keep")
    model.save(path)
    assert _temps(path) == []
    assert all(other.read_bytes() == b"keep" for other in others)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["m.npz"] + [o.name for o in others]
    )


def test_a_live_writers_temporary_file_is_not_removed(tmp_path: Path) -> None:
    model = ailib.Sequential(zoo.mlp(4, (3,), 2), backend="numpy", seed=0)
    path = model.save(tmp_path / "m.npz")
    live = tmp_path / ".m.npz.live1234.tmp"
    live.write_bytes(b"being written")
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a writer in another process holds it
        model.save(path)
        assert live.exists()
    finally:
        os.close(fd)
    model.save(path)  # the writer is gone: now it is debris
    assert not live.exists() and ailib.load(path)


def test_a_fifo_named_like_a_temporary_file_does_not_block_the_save(tmp_path: Path) -> None:
    """The stale-file cleanup opened it for reading and waited for a writer forever; it is not
    ailib's (temporary files are regular files) and is left alone. An alarm bounds the test."""

    def blocked(signum: int, frame: object) -> None:
        pytest.fail("the save blocked")  # not an OSError, which the cleanup would swallow

    fifo = tmp_path / ".model.npz.abcdefgh.tmp"
    os.mkfifo(fifo)
    before = signal.signal(signal.SIGALRM, blocked)
    signal.setitimer(signal.ITIMER_REAL, 5.0)
    try:
        ailib.Sequential(zoo.mlp(4, (3,), 2), backend="numpy", seed=1).save(tmp_path / "model.npz")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)
    assert sorted(p.name for p in tmp_path.iterdir()) == [fifo.name, "model.npz"]
