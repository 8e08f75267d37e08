"""Model files: round trips across backends and through every layer class, damaged files refused,
atomic writes, and checkpoints that resume exactly."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import ailib
from ailib import io, zoo
from ailib.datasets import read_idx, write_idx
from ailib.layers import (
    GELU,
    LAYERS,
    Add,
    AvgPool2D,
    BatchNorm1D,
    BatchNorm2D,
    Concatenate,
    Conv2D,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    GlobalAvgPool2D,
    Identity,
    LayerNorm,
    LeakyReLU,
    MaxPool2D,
    Multiply,
    ReLU,
    Reshape,
    Sigmoid,
    SiLU,
    Softmax,
    Tanh,
)
from ailib.optimizers import SGD, Adam, AdamW, RMSprop

from .helpers import assert_close, host
from .hostile import config_npy, dense_config, npy, write_zip

X = np.random.default_rng(0).random((16, 64), dtype=np.float32)
Y = np.arange(16) % 3


def every_layer() -> list[ailib.layers.Layer]:
    """One model holding every class of ailib.layers.LAYERS."""
    return [
        Reshape((1, 8, 8)),
        Conv2D(1, 2, 3, padding=2, dilation=2),
        BatchNorm2D(2),
        ReLU(),
        Conv2D(2, 4, 3, padding="same", groups=2),
        MaxPool2D(3, 2, padding=1, ceil_mode=True),  # 8 x 8 -> 5 x 5 (4 x 4 without)
        AvgPool2D(2, 2, count_include_pad=False, ceil_mode=True),  # a last window past X
        GlobalAvgPool2D(),
        Flatten(),
        Dense(4, 6),
        LayerNorm(),
        BatchNorm1D(6),
        GELU(),
        SiLU(),
        Tanh(),
        Sigmoid(),
        LeakyReLU(0.2),
        Identity(),
        Dropout(0.3),
        Dense(6, 3),
        Softmax(),
    ]


def test_the_round_trip_models_cover_every_layer_class() -> None:
    names = {layer.name for layer in every_layer()}
    names |= {layer.name for layer in graph_model("numpy").layers}
    names |= {layer.name for layer in index_model("numpy").layers}
    assert names == set(LAYERS)


def index_model(backend: Any, seed: int = 0) -> ailib.Model:
    """Integer tokens (N, 6) -> Embedding -> LayerNorm -> GELU(tanh) -> Flatten -> Dense."""
    tokens = ailib.Input((6,), name="tokens")
    h = GELU("tanh")(LayerNorm()(Embedding(20, 4)(tokens)))
    return ailib.Model(tokens, Dense(3)(Flatten()(h)), backend=backend, seed=seed)


def test_a_model_fed_indices_trains_and_loads_on_every_backend(
    backend: ailib.backends.Backend, tmp_path: Path
) -> None:
    tokens = np.random.default_rng(3).integers(0, 20, size=(16, 6))
    model = index_model("numpy")
    history = model.fit(tokens, Y, optimizer=Adam(lr=0.05), epochs=3, batch_size=8)
    assert history["loss"][-1] < history["loss"][0]
    there = ailib.load(model.save(tmp_path / "tokens.npz"), backend=backend)
    _assert_same_model(there, model)
    assert_close(there.predict(tokens), model.predict(tokens))
    back = ailib.load(there.save(tmp_path / f"{backend.name}.npz"), backend="numpy")
    _assert_same_model(back, model)


def graph_model(backend: Any, seed: int = 0) -> ailib.Model:
    """A graph with two inputs, two outputs, a shared layer, a residual Add, a Concatenate and
    a Multiply (plus BatchNorm and Dropout, whose state must survive the trip)."""
    rows, extra = ailib.Input((64,), name="rows"), ailib.Input((5,), name="extra")
    h = BatchNorm1D()(Tanh()(Dense(8)(rows)))
    shared = Dense(8)
    h = Add()([h, Tanh()(shared(Tanh()(shared(h))))])
    g = Sigmoid()(Dense(8)(extra))
    h = Dropout(0.2)(Concatenate()([Multiply()([h, g]), Tanh()(Dense(4)(extra))]))
    return ailib.Model(
        [rows, extra], [Dense(3)(h), Dense(1)(h)], backend=backend, dtype="float32", seed=seed
    )


def _trained_graph() -> ailib.Model:
    model = graph_model("numpy")
    extra = np.random.default_rng(1).random((16, 5), dtype=np.float32)
    model.fit(
        [X, extra],
        [Y, X[:, :1]],
        loss=["softmax_cross_entropy", "mse"],
        optimizer=Adam(lr=0.01),
        epochs=2,
        batch_size=8,
    )
    return model


def _table(model: ailib.Model) -> str:
    """The summary without the backend it names."""
    return model.summary().rsplit("; backend", 1)[0]


def test_graph_models_load_on_every_backend(
    backend: ailib.backends.Backend, tmp_path: Path
) -> None:
    model = _trained_graph()
    extra = np.random.default_rng(2).random((16, 5), dtype=np.float32)
    there = ailib.load(model.save(tmp_path / "graph.npz"), backend=backend)
    assert type(there) is ailib.Model and there.backend is backend
    assert _table(there) == _table(model)
    _assert_same_model(there, model)
    for got, expected in zip(there.predict([X, extra]), model.predict([X, extra])):
        assert_close(got, expected)
    back = ailib.load(there.save(tmp_path / f"{backend.name}.npz"), backend="numpy")
    assert _table(back) == _table(model)
    _assert_same_model(back, model)


def test_a_graph_file_names_each_shared_layer_once(tmp_path: Path) -> None:
    model = graph_model("numpy")
    with np.load(model.save(tmp_path / "g.npz"), allow_pickle=False) as npz:
        config = json.loads(npz["config.json"].tobytes())
    assert config["version"] == 2 and len(config["layers"]) == len(model.layers)
    graph = config["graph"]
    assert [entry["shape"] for entry in graph["inputs"]] == [[64], [5]]
    assert len(graph["nodes"]) == len(model.layers) + 1  # the shared Dense is called twice
    assert graph["nodes"][0] == {"layer": 0, "inbound": [0]}


def small_layers() -> list[ailib.layers.Layer]:
    return [Dense(64, 6), BatchNorm1D(6), Tanh(), Dropout(0.3), Dense(6, 3), Softmax()]


def _trained(layers: list[ailib.layers.Layer]) -> ailib.Sequential:
    model = ailib.Sequential(layers, backend="numpy", seed=0)
    model.fit(
        X, Y, loss="categorical_cross_entropy", optimizer=Adam(lr=0.01), epochs=2, batch_size=8
    )  # moves BatchNorm's running statistics away from 0 and 1
    return model


def _assert_same_model(a: ailib.Model, b: ailib.Model) -> None:
    assert [repr(layer) for layer in a.layers] == [repr(layer) for layer in b.layers]
    for mine, theirs in zip(a.layers, b.layers):
        for store in ("params", "buffers"):
            assert set(getattr(mine, store)) == set(getattr(theirs, store))
            for name, value in getattr(theirs, store).items():
                np.testing.assert_array_equal(host(getattr(mine, store)[name]), host(value))


def test_save_on_one_backend_load_on_another(
    backend: ailib.backends.Backend, tmp_path: Path
) -> None:
    model = _trained(small_layers())
    there = ailib.load(model.save(tmp_path / "numpy.npz"), backend=backend)
    assert there.backend is backend and there.dtype == backend.float_dtype
    _assert_same_model(there, model)
    assert_close(there.predict(X), model.predict(X))
    assert type(there.loss).__name__ == "CategoricalCrossEntropy"
    back = ailib.load(there.save(tmp_path / f"{backend.name}.npz"), backend="numpy")
    _assert_same_model(back, model)


def test_every_layer_class_round_trips(tmp_path: Path) -> None:
    model = _trained(every_layer())
    there = ailib.load(model.save(tmp_path / "m.npz"), backend="array_api_strict")
    _assert_same_model(there, model)
    assert_close(there.predict(X), model.predict(X))


def test_file_is_plain_npz_with_a_json_config(tmp_path: Path) -> None:
    path = ailib.Sequential(zoo.mlp(4, (3,), 2), backend="numpy", seed=0).save(tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as npz:
        config = json.loads(npz["config.json"].tobytes())
        assert sorted(npz.files) == [
            "config.json",
            "layers.0.params.W",
            "layers.0.params.b",
            "layers.2.params.W",
            "layers.2.params.b",
        ]
    assert config["format"] == "ailib.model" and config["version"] == 1  # readable by older ailib
    assert config["layers"][0] == {
        "class": "Dense",
        "config": {"in_features": 4, "out_features": 3, "init": "he_normal", "bias": True},
        "params": {
            "W": {"shape": [3, 4], "dtype": "float32"},
            "b": {"shape": [3], "dtype": "float32"},
        },
        "buffers": {},
    }


def test_float64_models_keep_their_dtype(tmp_path: Path) -> None:
    model = ailib.Sequential(zoo.mlp(4, (3,), 2), backend="numpy", dtype="float64", seed=0)
    loaded = ailib.load(model.save(tmp_path / "m.npz"))
    assert loaded.layers[0].params["W"].dtype == np.float64


def test_saving_over_a_fifo_or_a_link_to_one_is_refused_and_leaves_it(tmp_path: Path) -> None:
    """The rename of an atomic save would replace it (run as root, `save("/dev/null")` replaced
    the device with a regular file)."""
    model = ailib.Sequential(zoo.mlp(4, (3,), 2), backend="numpy", seed=1)
    fifo, link = tmp_path / "fifo", tmp_path / "link.npz"
    os.mkfifo(fifo)
    link.symlink_to(fifo)
    for target in (fifo, link):
        with pytest.raises(FileExistsError, match=f"^{re.escape(str(target))} exists and is not"):
            model.save(target)
        with pytest.raises(FileExistsError, match="not a regular file"):
            write_idx(target, np.zeros(3, np.uint8))
    x, y = np.zeros((8, 4), np.float32), np.arange(8) % 2
    with pytest.raises(FileExistsError, match="ModelCheckpoint: .*fifo exists and is not a"):
        model.fit(x, y, checkpoint=fifo, verbose=0)  # refused before training, as a directory
    assert stat.S_ISFIFO(fifo.stat().st_mode) and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "link.npz"]


def test_save_refuses_a_layer_outside_the_registry(tmp_path: Path) -> None:
    class Custom(ReLU):
        pass

    with pytest.raises(ValueError, match="not in ailib.layers.LAYERS"):
        ailib.Sequential([Dense(2, 2), Custom()], backend="numpy").save(tmp_path / "m.npz")


def _graph_of(shape: tuple[int, ...]) -> ailib.Model:
    x = ailib.Input(shape)
    return ailib.Model(x, Flatten()(x), backend="numpy")


# a model whose file load would refuse -> what save says
LOAD_REFUSES = {
    "10,001 layers": (
        lambda: ailib.Sequential([Dense(2, 2)] + [ReLU() for _ in range(10_000)], backend="numpy"),
        "10001 layers, more than 10000",
    ),
    "a 9-axis input": (lambda: _graph_of((1,) * 9), "graph: input 0 needs a 'shape' of 1 to 8"),
    "an input axis of 2**31 + 1": (
        lambda: _graph_of((2**31 + 1,)),
        "graph: input 0 needs a 'shape' of 1 to 8 positive ints",
    ),
    "a Reshape to 65 axes": (
        lambda: ailib.Sequential([Dense(2, 2), Reshape((1,) * 64 + (2,))], backend="numpy"),
        r"layer 1 \(Reshape\) cannot be built from its config",
    ),
}


@pytest.mark.parametrize("case", list(LOAD_REFUSES))
def test_save_refuses_a_model_whose_file_load_would_refuse(tmp_path: Path, case: str) -> None:
    """Save checks the config as load does (before: the file was written, and never loaded)."""
    build, message = LOAD_REFUSES[case]
    with pytest.raises(ValueError, match=f"^save: load would refuse this model's file .{message}"):
        build().save(tmp_path / "m.npz")
    assert not any(tmp_path.iterdir())


META_LOAD_REFUSES = {
    "a long string": ({"notes": "x" * 300}, "meta entry 'notes' is not a short JSON scalar"),
    "an object": ({"a": {"b": 1}}, "meta entry 'a' is not a short JSON scalar"),
    "a list of 100,001": ({"classes": [0] * 100_001}, "meta entry 'classes' is not a short"),
    "lists of lists of lists": ({"grid": [[[0]]]}, "meta entry 'grid' is not a short"),
    "65 entries": ({str(i): i for i in range(65)}, "meta entry is not an object of at most 64"),
}


@pytest.mark.parametrize("case", list(META_LOAD_REFUSES))
def test_save_refuses_meta_that_load_would_refuse(tmp_path: Path, case: str) -> None:
    """Before: the file was written, and every load of it failed (ModelFileError)."""
    meta, message = META_LOAD_REFUSES[case]
    model = ailib.Sequential(zoo.mlp(4, (3,), 2), backend="numpy", seed=1)
    model.meta = meta
    with pytest.raises(ValueError, match=f"^save: model.{message}.*may hold at most 64 entries"):
        model.save(tmp_path / "m.npz")
    # CIFAR-100's or ImageNet's class names fit
    model.meta = {"notes": "fine", "classes": [f"class {i}" for i in range(21_841)]}
    assert ailib.load(model.save(tmp_path / "m.npz")).meta == model.meta
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]


def test_save_names_meta_that_is_not_plain_json(tmp_path: Path) -> None:
    model = ailib.Sequential(zoo.mlp(4, (3,), 2), backend="numpy", seed=1)
    for meta in ({"x": {1, 2}}, {"x": float("nan")}):
        model.meta = meta
        with pytest.raises(TypeError, match="^save: model.meta must be plain JSON: "):
            model.save(tmp_path / "m.npz")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "layer",
    [Dense(3), LayerNorm(), BatchNorm1D(), Conv2D(None, 2, 3)],
    ids=lambda layer: layer.name,
)
def test_save_refuses_a_layer_whose_input_size_is_not_known_yet(
    tmp_path: Path, layer: ailib.layers.Layer
) -> None:
    """Such a layer has no weights, so its file could not be loaded (Dense, BatchNorm1D,
    Conv2D) or would load a model failing at its first batch (LayerNorm: KeyError 'gamma')."""
    model = ailib.Sequential([Dense(4, 6), layer], backend="numpy", seed=0)
    with pytest.raises(ValueError, match=rf"save: layer 1 \({layer.name}\) has no weights yet"):
        model.save(tmp_path / "m.npz")
    assert not any(tmp_path.iterdir())


def test_a_file_with_an_unbuilt_layer_norm_loads_and_builds_on_its_first_batch(
    tmp_path: Path,
) -> None:
    """A LayerNorm without its size holds no arrays (as older ailib saved it, before it was
    called): it loads unbuilt and makes its weights from the first batch."""
    config = dense_config(4, 3)
    config["layers"].append(
        {"class": "LayerNorm", "config": {"normalized_shape": None}, "params": {}, "buffers": {}}
    )
    weights = {
        "layers.0.params.W.npy": npy(np.ones((3, 4), np.float32)),
        "layers.0.params.b.npy": npy(np.zeros(3, np.float32)),
    }
    path = write_zip(tmp_path / "m.npz", {"config.json.npy": config_npy(config), **weights})
    model = ailib.load(path, backend="numpy")
    y = host(model.predict(np.arange(8, dtype=np.float32).reshape(2, 4)))
    assert y.shape == (2, 3) and model.layers[1].built
    np.testing.assert_allclose(y, np.zeros((2, 3)), atol=1e-6)  # equal rows: centred to 0


# -- damaged files --------------------------------------------------------------------------
@pytest.fixture
def saved(tmp_path: Path) -> Path:
    return ailib.Sequential(zoo.mlp(4, (3,), 2), backend="numpy", seed=0).save(tmp_path / "m.npz")


def _rewrite(path: Path, change: Callable[[dict[str, Any], dict[str, np.ndarray]], None]) -> None:
    """Re-save ``path`` after ``change(config, arrays)`` edits its content."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    config = json.loads(arrays.pop("config.json").tobytes())
    change(config, arrays)
    np.savez(
        path, **{"config.json": np.frombuffer(json.dumps(config).encode(), np.uint8)}, **arrays
    )


def _set(mapping: dict, key: str, value: Any) -> None:
    mapping[key] = value


DAMAGE = {
    "wrong shape": (
        lambda c, a: _set(a, "layers.0.params.W", np.zeros((4, 3), np.float32)),
        r"layers.0.params.W has shape \(4, 3\)",
    ),
    "wrong dtype": (
        lambda c, a: _set(a, "layers.0.params.b", np.zeros(3)),
        "layers.0.params.b has dtype float64",
    ),
    "config shape lies": (
        lambda c, a: _set(c["layers"][0]["params"]["W"], "shape", [3, 5]),
        r"config says \[3, 5\]",
    ),
    "missing array": (lambda c, a: a.pop("layers.2.params.b"), "missing array layers.2.params.b"),
    "extra array": (
        lambda c, a: _set(a, "layers.1.params.W", np.zeros(1, np.float32)),
        "not described by the config: layers.1.params.W",
    ),
    "unknown layer": (
        lambda c, a: _set(c["layers"][1], "class", "os.system"),
        "'os.system', not one of ailib.layers.LAYERS",
    ),
    "bad layer config": (
        lambda c, a: _set(c["layers"][0]["config"], "units", 3),
        "cannot be built from its config",
    ),
    "params listed wrong": (lambda c, a: _set(c["layers"][0], "params", {}), "lists params"),
    "newer version": (
        lambda c, a: _set(c, "version", io.VERSION + 1),
        f"format version {io.VERSION + 1}",
    ),
    "other format": (lambda c, a: _set(c, "format", "keras"), "not an ailib model file"),
    "pickled object array": (
        lambda c, a: _set(a, "layers.0.params.b", np.array([{"x": 1}, None, 3], dtype=object)),
        "pickle",
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_file_is_refused_naming_file_and_fault(saved: Path, damage: str) -> None:
    change, message = DAMAGE[damage]
    _rewrite(saved, change)
    with pytest.raises(ailib.ModelFileError, match=message) as info:
        ailib.load(saved)
    assert str(saved) in str(info.value)


@pytest.fixture
def saved_graph(tmp_path: Path) -> Path:
    return graph_model("numpy").save(tmp_path / "graph.npz")


GRAPH_DAMAGE = {
    "reads a later array": (
        lambda g: _set(g["nodes"][0], "inbound", [5]),
        r"node 0 may only read arrays 0 to 1",
    ),
    "no such layer": (lambda g: _set(g["nodes"][1], "layer", 99), "node 1 needs a 'layer' index"),
    "merge with one input": (
        lambda g: _set(g["nodes"][7], "inbound", [3]),
        "node 7 gives Add 1 inputs; it takes a list of at least two",
    ),
    "uncalled layer": (
        lambda g: _set(g["nodes"][2], "layer", 0),
        r"layers \[2\] are called by no node",
    ),
    "output out of range": (lambda g: _set(g, "outputs", [0, 1000]), "outputs must name arrays"),
    "single input that is not": (lambda g: _set(g, "single_input", True), "'single_input' must"),
    "bad input shape": (
        lambda g: _set(g["inputs"][0], "shape", [64, -1]),
        "input 0 needs a 'shape' of 1 to 8 positive ints",
    ),
    "shapes that do not fit": (
        lambda g: _set(g["inputs"][0], "shape", [32]),
        r"node 0 \(Dense\): Dense: expected samples of shape \(64,\), received \(32,\)",
    ),
    "not an object": (lambda g: g.clear(), "non-empty 'inputs' and 'outputs' lists and a 'nodes'"),
}


@pytest.mark.parametrize("damage", list(GRAPH_DAMAGE))
def test_damaged_graph_is_refused_naming_file_and_fault(saved_graph: Path, damage: str) -> None:
    change, message = GRAPH_DAMAGE[damage]
    _rewrite(saved_graph, lambda config, arrays: change(config["graph"]))
    with pytest.raises(ailib.ModelFileError, match=message) as info:
        ailib.load(saved_graph)
    assert str(saved_graph) in str(info.value)


def test_a_graph_in_a_version_1_file_is_refused(saved_graph: Path) -> None:
    _rewrite(saved_graph, lambda config, arrays: _set(config, "version", 1))
    with pytest.raises(ailib.ModelFileError, match="a graph needs format version 2"):
        ailib.load(saved_graph)


def test_a_graph_entry_that_is_null_or_missing_is_refused(saved_graph: Path) -> None:
    """null is not a graph; without one, layers taking several inputs (Add) are no Sequential
    (both were a raw TypeError)."""
    _rewrite(saved_graph, lambda config, arrays: _set(config, "graph", None))
    with pytest.raises(ailib.ModelFileError, match="graph: expected an object with non-empty"):
        ailib.load(saved_graph)
    _rewrite(saved_graph, lambda config, arrays: config.pop("graph"))
    with pytest.raises(ailib.ModelFileError, match="no 'graph' entry, and not a Sequential: Add"):
        ailib.load(saved_graph)


@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9, 0.99])
def test_truncated_file_is_refused(saved: Path, keep: float) -> None:
    data = saved.read_bytes()
    saved.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ailib.ModelFileError, match=f"{saved}: .*truncated or damaged"):
        ailib.load(saved)


@pytest.mark.parametrize("content", [b"", b"not a model", b'{"format": "ailib.model"}'])
def test_other_files_are_refused(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.npz"
    path.write_bytes(content)
    with pytest.raises(ailib.ModelFileError, match=str(path)):
        ailib.load(path)


def test_a_fifo_or_a_directory_as_a_file_to_read_is_refused_at_once(tmp_path: Path) -> None:
    """Opening a FIFO for reading waited for a writer forever (load, metadata, read_idx); a
    directory is named as one. An alarm bounds the test should opening block again."""

    def blocked(signum: int, frame: object) -> None:
        pytest.fail("opening the FIFO blocked")  # not an OSError, which may be expected

    fifo = tmp_path / "model.npz"
    os.mkfifo(fifo)
    before = signal.signal(signal.SIGALRM, blocked)
    signal.setitimer(signal.ITIMER_REAL, 5.0)
    try:
        for read in (ailib.load, io.metadata, io.checkpoint_state, read_idx):
            with pytest.raises(OSError, match="not a regular file .a FIFO, device or socket") as e:
                read(fifo)
            assert e.value.filename == str(fifo)
            with pytest.raises(IsADirectoryError, match="is a directory, not a file"):
                read(tmp_path)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)


def test_bad_json_and_npy_files_are_refused(saved: Path, tmp_path: Path) -> None:
    with np.load(saved) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["config.json"] = np.frombuffer(b'{"format": "ailib.model", ', np.uint8)
    np.savez(saved, **arrays)
    with pytest.raises(ailib.ModelFileError, match="not valid JSON"):
        ailib.load(saved)
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(ailib.ModelFileError, match="single .npy array"):
        ailib.load(tmp_path / "one.npy")
    with pytest.raises(FileNotFoundError):
        ailib.load(tmp_path / "absent.npz")


def test_a_failed_save_leaves_the_old_file_and_no_debris(
    saved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = saved.read_bytes()

    def crash(file: Any, **arrays: Any) -> None:
        file.write(b"PK half an archive")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        ailib.Sequential(zoo.mlp(4, (3,), 2), backend="numpy", seed=1).save(saved)
    assert saved.read_bytes() == before
    assert [p.name for p in saved.parent.iterdir()] == [saved.name]


def test_a_read_only_directory_is_named_with_the_target(
    saved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The error named the hidden temporary file (``.m.npz.x1y2z3w4.tmp``) the user never asked
    for. (The tests run as root, which writes anywhere, so the refusal is simulated.)"""
    before = saved.read_bytes()

    def read_only(dir: str, prefix: str, suffix: str) -> tuple[int, str]:
        raise PermissionError(13, "Permission denied", f"{dir}/{prefix}x1y2z3w4{suffix}")

    monkeypatch.setattr(ailib._files.tempfile, "mkstemp", read_only)
    with pytest.raises(PermissionError) as info:
        ailib.Sequential(zoo.mlp(4, (3,), 2), backend="numpy", seed=1).save(saved)
    assert info.value.filename == str(saved) and ".tmp" not in str(info.value)
    assert f"cannot create a file in {saved.parent}" in str(info.value)
    assert saved.read_bytes() == before


def test_saving_over_a_directory_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """The message names the directory (it named a temporary file beside it), no temporary file
    is made, and fit refuses such a checkpoint path before training, not after the first epoch."""
    model = ailib.Sequential(zoo.mlp(4, (3,), 2), backend="numpy", seed=1)
    target = tmp_path / "runs"
    target.mkdir()
    with pytest.raises(IsADirectoryError, match=f"^{re.escape(str(target))} is a directory"):
        model.save(target)
    assert [p.name for p in tmp_path.iterdir()] == ["runs"] and not any(target.iterdir())
    x, y = np.zeros((8, 4), np.float32), np.arange(8) % 2
    before = host(model.layers[0].params["W"]).copy()
    with pytest.raises(IsADirectoryError, match="ModelCheckpoint: .*runs is a directory"):
        model.fit(x, y, checkpoint=target, verbose=0)
    np.testing.assert_array_equal(host(model.layers[0].params["W"]), before)  # not trained


# -- checkpoints ----------------------------------------------------------------------------
class Interrupt(Exception):
    pass


def _model() -> ailib.Sequential:
    return ailib.Sequential(
        [Dense(64, 16), ReLU(), Dropout(0.2), Dense(16, 3)], backend="numpy", seed=5
    )


OPTIMIZERS = {
    "sgd": lambda: SGD(lr=0.05, momentum=0.9),
    "adam": lambda: Adam(lr=0.01),
    "adamw-clipped": lambda: AdamW(lr=0.01, clip_norm=0.5),
    "rmsprop-centered-momentum": lambda: RMSprop(lr=0.01, momentum=0.5, centered=True),
    "adam-amsgrad": lambda: Adam(lr=0.01, amsgrad=True),
    "adamw-amsgrad-clipped": lambda: AdamW(lr=0.01, amsgrad=True, clip_norm=0.5),
}


def _fit(
    model: ailib.Sequential,
    optimizer: Any,
    path: Path | None = None,
    resume: bool = False,
    stop_at: int | None = None,
) -> dict[str, list[float]]:
    def progress(event: dict[str, Any]) -> None:
        if event["event"] == "step" and event["epoch"] == stop_at:
            raise Interrupt

    return model.fit(
        X,
        Y,
        optimizer=optimizer,
        epochs=4,
        batch_size=4,
        checkpoint=path,
        resume=resume,
        validation_data=(X[:6], Y[:6]),
        progress=progress,
    )


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_resume_gives_the_uninterrupted_result(tmp_path: Path, name: str) -> None:
    reference = _model()
    expected = _fit(reference, OPTIMIZERS[name]())

    path = tmp_path / "ckpt.npz"
    with pytest.raises(Interrupt):  # killed during epoch 3: the checkpoint holds epoch 2
        _fit(_model(), OPTIMIZERS[name](), path, stop_at=3)
    assert json.loads(np.load(path)["config.json"].tobytes())["checkpoint"]["epoch"] == 2

    fresh = ailib.Sequential(
        [Dense(64, 16), ReLU(), Dropout(0.2), Dense(16, 3)], backend="numpy", seed=99
    )  # other weights: all come from the file
    history = _fit(fresh, OPTIMIZERS[name](), path, resume=True)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert history[key] == expected[key], key
    for mine, theirs in zip(fresh.layers, reference.layers):
        for key in theirs.params:
            np.testing.assert_array_equal(mine.params[key], theirs.params[key])


def test_checkpoint_loads_as_a_model_and_resume_without_one_starts_afresh(tmp_path: Path) -> None:
    path = tmp_path / "new" / "ckpt.npz"
    history = _fit(_model(), Adam(lr=0.01), path, resume=True)
    assert len(history["loss"]) == 4
    model = ailib.load(path, backend="array_api_strict")
    assert [layer.name for layer in model.layers] == ["Dense", "ReLU", "Dropout", "Dense"]
    again = _fit(_model(), Adam(lr=0.01), path, resume=True)  # already done: nothing to train
    assert again["loss"] == history["loss"]


def test_resume_refuses_another_architecture_or_optimizer(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.npz"
    _fit(_model(), Adam(lr=0.01), path, stop_at=None)
    with pytest.raises(ailib.ModelFileError, match="optimizer"):
        _fit(_model(), SGD(lr=0.1), path, resume=True)
    other = ailib.Sequential([Dense(64, 8), ReLU(), Dropout(0.2), Dense(8, 3)], backend="numpy")
    with pytest.raises(ailib.CheckpointMismatch, match=str(path)) as caught:
        _fit(other, Adam(lr=0.01), path, resume=True)
    assert "layer 1 (Dense): out_features 16 (checkpoint) vs 8 (model)" in str(caught.value)
    with pytest.raises(ailib.CheckpointMismatch, match=r"lr 0.01 \(checkpoint\) vs 0.02 \(now\)"):
        _fit(_model(), Adam(lr=0.02), path, resume=True)  # another learning rate: refused
    plain = tmp_path / "plain.npz"
    _model().save(plain)
    with pytest.raises(ailib.ModelFileError, match="not a checkpoint"):
        _fit(_model(), Adam(lr=0.01), plain, resume=True)


def test_an_amsgrad_checkpoint_holds_v_max_and_resumes_only_with_amsgrad(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.npz"
    model, opt = _model(), Adam(lr=0.01, amsgrad=True)
    with pytest.raises(Interrupt):
        _fit(model, opt, path, stop_at=3)
    with np.load(path) as npz:
        saved = {key: npz[key] for key in npz.files if key.endswith(".V_max")}
        config = json.loads(npz["config.json"].tobytes())["checkpoint"]["optimizer"]
    assert sorted(saved) == [f"optimizer.{i}.{k}.V_max" for i in (0, 3) for k in ("W", "b")]
    assert config["settings"]["amsgrad"] is True
    for i, k in ((0, "W"), (3, "b")):
        v_max = saved[f"optimizer.{i}.{k}.V_max"]
        assert (v_max > 0).any() and (v_max >= np.load(path)[f"optimizer.{i}.{k}.V"]).all()
    with pytest.raises(
        ailib.CheckpointMismatch, match=r"amsgrad True \(checkpoint\) vs False \(now\)"
    ):
        _fit(_model(), Adam(lr=0.01), path, resume=True)


def test_a_checkpoint_from_before_amsgrad_resumes_with_its_default(tmp_path: Path) -> None:
    """Checkpoints written before Adam had ``amsgrad`` have no such setting: it was False."""
    path = tmp_path / "ckpt.npz"
    with pytest.raises(Interrupt):
        _fit(_model(), Adam(lr=0.01), path, stop_at=3)
    _rewrite(
        path,
        lambda config, arrays: [
            config["checkpoint"]["optimizer"][entry].pop("amsgrad")
            for entry in ("settings", "config")
        ],
    )
    with pytest.raises(
        ailib.CheckpointMismatch, match=r"amsgrad False \(checkpoint\) vs True \(now\)"
    ):
        _fit(_model(), Adam(lr=0.01, amsgrad=True), path, resume=True)
    history = _fit(_model(), Adam(lr=0.01), path, resume=True)
    assert history["loss"] == _fit(_model(), Adam(lr=0.01))["loss"]


def test_resume_refuses_a_graph_of_the_same_layers_wired_otherwise(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.npz"
    rng = np.random.default_rng(0)
    x_train, y_train = rng.standard_normal((20, 4)), rng.integers(0, 4, 20)

    def fit(model: ailib.Model, resume: bool) -> None:
        model.fit(x_train, y_train, epochs=2, verbose=False, checkpoint=path, resume=resume)

    x = ailib.Input((4,))
    h = Dense(4)(x)
    fit(ailib.Model(x, Add()([h, Dense(4)(h)]), backend="numpy", seed=0), False)
    x = ailib.Input((4,))  # the same layers, in the same order, on other arrays
    other = ailib.Model(x, Add()([x, Dense(4)(Dense(4)(x))]), backend="numpy", seed=0)
    with pytest.raises(ailib.CheckpointMismatch, match=r"call 3 \(Add\) reads arrays \[1, 2\]"):
        fit(other, True)
    x = ailib.Input((4,))  # wired as the checkpoint's model: resumed
    h = Dense(4)(x)
    fit(ailib.Model(x, Add()([h, Dense(4)(h)]), backend="numpy", seed=0), True)


def _adam_w0(change: Callable[[dict], None]) -> Callable[[dict[str, Any], Any], None]:
    return lambda config, arrays: change(config["checkpoint"]["optimizer"]["state"]["0.W"])


# damage to a checkpoint's training state -> what the ModelFileError says
STATE_DAMAGE = {
    "iterations missing": (
        lambda config, arrays: config["checkpoint"]["optimizer"].pop("iterations"),
        "damaged training state .KeyError: 'iterations'",
    ),
    "a step count that is a float": (
        _adam_w0(lambda s: s["scalars"].update(t=1.5)),
        r"optimizer state 0.W.t is 1.5, expected a step count \(an int >= 0\)",
    ),
    "a negative step count": (
        _adam_w0(lambda s: s["scalars"].update(t=-1)),
        "optimizer state 0.W.t is -1, expected a step count",
    ),
    "a moment missing": (
        _adam_w0(lambda s: s["arrays"].remove("V")),
        r"optimizer state of 0.W holds \['M', 't'\], Adam keeps \['M', 'V', 't'\]",
    ),
    "a moment as a number": (
        _adam_w0(lambda s: (s["arrays"].remove("V"), s["scalars"].update(V=0))),
        r"optimizer state 0.W.V is int of shape None, expected an array of shape \(16, 64\)",
    ),
    "a random state out of range": (
        lambda config, arrays: config["checkpoint"]["rng"]["model"]["host"].update(uinteger=2**40),
        "damaged training state .OverflowError",
    ),
}


@pytest.mark.parametrize("damage", list(STATE_DAMAGE))
def test_damaged_training_state_is_refused_naming_the_file(tmp_path: Path, damage: str) -> None:
    """Before: KeyError, AttributeError, ZeroDivisionError or OverflowError, some only at the
    first step of the resumed run."""
    path = tmp_path / "ckpt.npz"
    with pytest.raises(Interrupt):
        _fit(_model(), Adam(lr=0.01), path, stop_at=3)
    change, message = STATE_DAMAGE[damage]
    _rewrite(path, change)
    with pytest.raises(ailib.ModelFileError, match=message) as info:
        _fit(_model(), Adam(lr=0.01), path, resume=True)
    assert str(info.value).startswith(f"{path}: ")


def test_a_loaded_model_trains_reproducibly(tmp_path: Path) -> None:
    """Its shuffling and its Dropout masks are seeded (from the saved seed), not drawn from
    the operating system's entropy."""
    path = tmp_path / "model.npz"
    _model().save(path)
    weights = []
    for _ in range(2):
        model = ailib.load(path)
        model.fit(X, Y, epochs=2, batch_size=4, shuffle=True, optimizer="sgd")
        weights.append([np.asarray(p) for p in model.params.values()])
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


def test_a_bce_from_logits_model_loads_with_its_loss(tmp_path: Path) -> None:
    model = ailib.Sequential([Dense(64, 1)], backend="numpy", seed=0)
    model.loss = ailib.losses.BinaryCrossEntropy(from_logits=True)
    model.save(tmp_path / "m.npz")
    assert ailib.load(tmp_path / "m.npz").loss.from_logits


# -- the loss a model was trained with ------------------------------------------------------
def _head(loss: ailib.losses.Loss, h: Any, n: int, seed: int) -> tuple[Any, np.ndarray]:
    """An output symbol on ``h`` fit for ``loss``, and targets for n rows."""
    rng = np.random.default_rng(seed)
    if isinstance(loss, ailib.losses.MSE):
        return Dense(3)(h), rng.standard_normal((n, 3))
    if isinstance(loss, ailib.losses.BinaryCrossEntropy):
        out = Dense(3)(h) if loss.from_logits else Sigmoid()(Dense(3)(h))
        return out, rng.integers(0, 2, (n, 3)).astype(np.float64)
    if isinstance(loss, ailib.losses.CategoricalCrossEntropy):
        return Softmax()(Dense(3)(h)), rng.integers(0, 3, n)
    return Dense(3)(h), rng.integers(0, 3, n)  # SoftmaxCrossEntropy: logits


#: one model's losses per case, every class of ailib.losses with settings other than its defaults
LOSS_CASES = {
    "MSE": [ailib.losses.MSE()],
    "BCE(eps)": [ailib.losses.BinaryCrossEntropy(eps=0.05)],
    "BCE(eps, from_logits)": [ailib.losses.BinaryCrossEntropy(0.01, from_logits=True)],
    "CCE(eps)": [ailib.losses.CategoricalCrossEntropy(eps=0.2)],
    "SCE(label_smoothing)": [ailib.losses.SoftmaxCrossEntropy(label_smoothing=0.3)],
    "two outputs": [
        ailib.losses.SoftmaxCrossEntropy(label_smoothing=0.1),
        ailib.losses.BinaryCrossEntropy(0.02, from_logits=True),
    ],
    "three outputs, one loss for all": [ailib.losses.CategoricalCrossEntropy(eps=0.3)] * 3,
}


def test_the_loss_cases_cover_every_loss_class() -> None:
    classes = {type(loss) for items in LOSS_CASES.values() for loss in items}
    assert classes == set(ailib.losses.LOSSES.values())


def _fit_and_reload(items: list[Any], tmp_path: Path) -> tuple[Any, Any, np.ndarray, Any]:
    """(model, its saved-and-loaded copy, x, targets): a graph model with one output per loss
    of ``items`` (12 rows, float64), fit one epoch with them before saving."""
    n = 12
    x = ailib.Input((5,))
    h = Tanh()(Dense(4)(x))
    heads = [_head(loss, h, n, seed=k) for k, loss in enumerate(items)]
    outputs = heads[0][0] if len(items) == 1 else [out for out, _ in heads]
    targets = heads[0][1] if len(items) == 1 else [y for _, y in heads]
    model = ailib.Model(x, outputs, backend="numpy", dtype="float64", seed=0)
    xs = np.random.default_rng(9).standard_normal((n, 5))
    model.fit(xs, targets, loss=items if len(items) > 1 else items[0], epochs=1, verbose=0)
    return model, ailib.load(model.save(tmp_path / "m.npz")), xs, targets


@pytest.mark.parametrize("case", list(LOSS_CASES))
def test_a_loaded_model_computes_the_losses_it_was_saved_with(tmp_path: Path, case: str) -> None:
    """Every setting of every loss, and one loss per output, survive save and load: evaluate
    gives the same value to the bit (float64), and training on with the loaded loss the same
    weights. Before, a file kept the class name (and BCE's from_logits) only: eps and
    label_smoothing came back as defaults, and a model of several outputs came back with no
    loss (evaluate: 'no loss to report')."""
    model, loaded, xs, targets = _fit_and_reload(LOSS_CASES[case], tmp_path)
    assert repr(loaded.loss) == repr(model.loss)
    assert loaded.evaluate(xs, targets)["loss"] == model.evaluate(xs, targets)["loss"]
    for m in (model, loaded):
        m.fit(xs, targets, loss=m.loss, optimizer="sgd", epochs=1, shuffle=False, verbose=0)
    _assert_same_model(loaded, model)


@pytest.mark.parametrize("case", ["MSE", "two outputs"])
def test_fit_without_a_loss_trains_on_with_the_models_own(tmp_path: Path, case: str) -> None:
    """``fit`` without ``loss=`` uses the model's own loss (an earlier fit's, or its file's):
    a loaded MSE model trains on with MSE, not with the softmax cross-entropy that was fit's
    fixed default (which, for regression targets, was a silent change of the objective, and
    for two outputs an error)."""
    model, loaded, xs, targets = _fit_and_reload(LOSS_CASES[case], tmp_path)
    items = LOSS_CASES[case]
    model.fit(xs, targets, loss=items if len(items) > 1 else items[0], shuffle=False, verbose=0)
    loaded.fit(xs, targets, shuffle=False, verbose=0)  # no loss: the file's
    assert repr(loaded.loss) == repr(model.loss)
    _assert_same_model(loaded, model)


def test_a_file_written_before_losses_were_stored_still_loads(tmp_path: Path) -> None:
    """Files of format versions 1 and 2 without a 'losses' entry (ailib before it) name the
    loss class in 'loss' (with 'loss_from_logits' for BCE): they load as they did, with the
    default settings, and 'OutputLosses' (several outputs) as no loss."""
    seq = ailib.Sequential([Dense(64, 1)], backend="numpy", seed=0)
    seq.loss = ailib.losses.BinaryCrossEntropy(from_logits=True)
    graph = _trained_graph()
    for model, name in ((seq, "seq.npz"), (graph, "graph.npz")):
        path = model.save(tmp_path / name)
        _rewrite(path, lambda config, arrays: config.pop("losses"))
        with np.load(path, allow_pickle=False) as npz:
            config = json.loads(npz["config.json"].tobytes())
        assert "losses" not in config and config["version"] == (1 if model is seq else 2)
    assert repr(ailib.load(tmp_path / "seq.npz").loss) == "BinaryCrossEntropy(from_logits=True)"
    old = ailib.load(tmp_path / "graph.npz")
    assert old.loss is None
    _assert_same_model(old, graph)


LOSS_FAULTS = {
    "an unknown class": (
        [{"class": "os.system", "config": {}}],
        r"loss 0 is 'os.system', not one of ailib.losses \(MSE, BinaryCrossEntropy, ",
    ),
    "not an object": (["MSE"], "loss 0 is 'MSE', not an object {'class': ..., 'config': ...}"),
    "an unknown setting": (
        [{"class": "SoftmaxCrossEntropy", "config": {"delta": 1.0}}],
        r"loss 0 \(SoftmaxCrossEntropy\) cannot be built from its config \{'delta': 1.0\}: got "
        r"an unexpected keyword argument 'delta' \(its settings: label_smoothing\)",
    ),
    "a setting out of range": (
        [{"class": "SoftmaxCrossEntropy", "config": {"label_smoothing": 1.5}}],
        r"label_smoothing must lie in \[0, 1\), received 1.5",
    ),
    "a setting that is not a number": (
        [{"class": "CategoricalCrossEntropy", "config": {"eps": "small"}}],
        "eps must be a number, received 'small'",
    ),
    "a flag that is not a bool": (
        [{"class": "BinaryCrossEntropy", "config": {"from_logits": "false"}}],
        "from_logits must be true or false, received 'false'",
    ),
    "settings that are not an object": (
        [{"class": "MSE", "config": [1]}],
        "expected an object of plain JSON settings",
    ),
    "an empty list": ([], r"losses \[\] is not a non-empty list"),
    "one loss too many": (
        [{"class": "MSE", "config": {}}] * 2,
        "2 losses for 1 output; expected one per output or one for all of them",
    ),
}


@pytest.mark.parametrize("fault", list(LOSS_FAULTS))
def test_a_file_naming_a_bad_loss_is_refused(saved: Path, fault: str) -> None:
    """Before the 'losses' entry a file named a loss by class only, and an unknown one loaded
    as no loss; an entry ailib cannot build is now a ModelFileError saying what it expected."""
    entries, message = LOSS_FAULTS[fault]
    _rewrite(saved, lambda config, arrays: _set(config, "losses", entries))
    with pytest.raises(ailib.ModelFileError, match=message) as info:
        ailib.load(saved)
    assert str(info.value).startswith(f"{saved}: ")


def test_a_loss_of_ones_own_class_is_not_stored(tmp_path: Path) -> None:
    """A file cannot name a class outside ailib.losses (nothing is pickled): such a model
    saves, and loads without a loss, even where its class is a subclass of one of ailib's."""

    class Huber(ailib.losses.MSE):
        pass

    model = ailib.Sequential([Dense(64, 1)], backend="numpy", seed=0)
    model.loss = Huber()
    with pytest.warns(UserWarning, match="save: the loss Huber is a class of your own.*no loss"):
        saved = model.save(tmp_path / "m.npz")
    with np.load(saved, allow_pickle=False) as npz:
        config = json.loads(npz["config.json"].tobytes())
    assert config["loss"] == "Huber" and config["losses"] is None
    assert ailib.load(tmp_path / "m.npz").loss is None


def _graphs_whose_outputs_are_inputs_or_repeated() -> dict[str, Callable[[], ailib.Model]]:
    def model(outputs: Callable[[Any, Any], Any], inputs: int = 1) -> Callable[[], ailib.Model]:
        def build() -> ailib.Model:
            xs = [ailib.Input((4,)) for _ in range(inputs)]
            x = xs[0] if inputs == 1 else xs
            return ailib.Model(x, outputs(xs, Dense(2)(xs[0])), backend="numpy", seed=0)

        return build

    return {
        "Model(x, x)": model(lambda xs, y: xs[0]),
        "Model(x, [x, x])": model(lambda xs, y: [xs[0], xs[0]]),
        "Model(x, [y, y])": model(lambda xs, y: [y, y]),
        "Model(x, [x, y])": model(lambda xs, y: [xs[0], y]),
        "Model([a, b], [b, a])": model(lambda xs, y: [xs[1], xs[0]], inputs=2),
        "Model([a, b], y), b unused": model(lambda xs, y: y, inputs=2),
    }


GRAPHS_OF_INPUTS = _graphs_whose_outputs_are_inputs_or_repeated()


@pytest.mark.parametrize("case", list(GRAPHS_OF_INPUTS))
def test_a_graph_whose_outputs_are_inputs_or_repeated_round_trips(
    tmp_path: Path, case: str
) -> None:
    """Model(x, x) has no layer call; its file has an empty 'nodes' list, which load refused
    (so save did: 'load would refuse this model's file'). An output listed twice is one array
    read twice. The loaded model evaluates with the loss fit set, one per output."""
    model = GRAPHS_OF_INPUTS[case]()
    loss = "mse"
    xs = [np.random.default_rng(k).standard_normal((6, 4)).astype(np.float32) for k in range(2)]
    x = xs[0] if model.single_input else xs[: len(model.inputs)]
    y = model.predict(x)
    model.fit(x, y, loss=loss, epochs=1, verbose=0)
    loaded = ailib.load(model.save(tmp_path / "m.npz"))
    assert (loaded.single_input, loaded.single_output) == (model.single_input, model.single_output)
    assert loaded.output_slots == model.output_slots and len(loaded.inputs) == len(model.inputs)
    _assert_same_model(loaded, model)
    got, expected = loaded.predict(x), model.predict(x)
    if model.single_output:
        got, expected = [got], [expected]
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(host(a), host(b))
    assert loaded.evaluate(x, y) == model.evaluate(x, y)


def test_every_layer_declares_the_shapes_it_holds() -> None:
    """`Layer.array_shapes(config)` (what loading checks files against, without allocating) is
    what the built layer holds, and `Layer.from_arrays` rebuilds the layer from those arrays."""
    for layer in every_layer() + [Dense(3, 2, bias=False), Conv2D(2, 4, (3, 1), bias=False)]:
        config = json.loads(json.dumps(layer.get_config()))  # as stored: lists for tuples
        shapes = type(layer).array_shapes(config)
        for kind in ("params", "buffers"):
            held = {k: tuple(v.shape) for k, v in getattr(layer, kind).items()}
            assert shapes[kind] == held, (layer.name, kind)
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
        rebuilt = type(layer).from_arrays(
            kwargs,
            {k: host(v) for k, v in layer.params.items()},
            {k: host(v) for k, v in layer.buffers.items()},
            backend="array_api_strict",
        )
        assert repr(rebuilt) == repr(layer) and rebuilt.backend.name == "array_api_strict"
        for kind in ("params", "buffers"):
            for name, value in getattr(layer, kind).items():
                np.testing.assert_array_equal(host(getattr(rebuilt, kind)[name]), host(value))
