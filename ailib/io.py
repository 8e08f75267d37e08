"""Saving and loading models and training checkpoints: one ``.npz`` file, no pickle.

A model file is a NumPy ``.npz`` archive holding
- ``config.json``: UTF-8 JSON (as a uint8 array) with ``format`` ("ailib.model"), ``version``,
  the floating ``dtype`` and, per layer, its class (a name in `ailib.layers.LAYERS`), its
  ``get_config()`` and the name, shape and dtype of each parameter and buffer;
- ``layers.<i>.params.<name>`` and ``layers.<i>.buffers.<name>``: the arrays, on the host.

A graph model (`ailib.Model`) also has a ``graph`` entry (and ``version`` 2; a `Sequential`
file stays version 1): ``inputs`` (one sample's ``shape`` and a ``name`` each), ``nodes`` (one
per layer call, in topological order: the index of its ``layer`` in ``layers`` and its
``inbound`` arrays), ``outputs``, and whether inputs and outputs are single arrays or lists.
Arrays are numbered inputs first (0..I-1), then node j's output (I + j); a node reads only
arrays numbered below its own, so the graph is acyclic by construction. A shared layer is one
entry of ``layers`` named by several nodes.

A checkpoint is a model file whose config also has a ``checkpoint`` entry (epoch, history, the
optimizer's class, settings and scalar state, random-generator states) and whose archive also
holds ``optimizer.<param>.<slot>`` arrays. `ailib.load` reads either as a model.

Files are written atomically (a temporary file in the same directory, then `os.replace`) and
read with ``allow_pickle=False``; every array is checked against the config, and any damage is
reported as a `ModelFileError` naming the file and the problem.
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from . import backends, losses, optimizers
from ._files import atomic_open
from .backends import Backend
from .graph import Input
from .layers import LAYERS
from .model import Model, Sequential

FORMAT = "ailib.model"
#: the newest format this ailib reads and writes (2: graph models; Sequential files are 1)
VERSION = 2
CONFIG_KEY = "config.json"
LOSS_CLASSES = {cls.__name__: cls for cls in losses.LOSSES.values()}
OPTIMIZER_CLASSES = {cls.__name__: cls for cls in optimizers.OPTIMIZERS.values()}


class ModelFileError(ValueError):
    """A model or checkpoint file that cannot be used; the message names the file and the fault."""


# -- writing --------------------------------------------------------------------------------
def save(model: Model, path: str | os.PathLike) -> Path:
    """Write ``model``'s architecture and weights to ``path`` (see the module docstring)."""
    config, arrays = _model_entries(model)
    return _write(Path(path), config, arrays)


def save_checkpoint(
    model: Model,
    path: str | os.PathLike,
    optimizer: optimizers.Optimizer,
    epoch: int,
    history: dict[str, list[float]],
) -> Path:
    """Write the model plus everything `fit` needs to continue after ``epoch``: the optimizer's
    state, the history so far and the random generators' states."""
    config, arrays = _model_entries(model)
    state = {}
    for key, slots in optimizer.state.items():
        state[key] = {"scalars": {}, "arrays": []}
        for slot, value in slots.items():
            if isinstance(value, (int, float)):
                state[key]["scalars"][slot] = value
            else:
                arrays[f"optimizer.{key}.{slot}"] = np.asarray(model.backend.to_host(value))
                state[key]["arrays"].append(slot)
    config["checkpoint"] = {
        "epoch": int(epoch),
        "history": history,
        "optimizer": {
            "class": type(optimizer).__name__,
            "config": optimizer.get_config(),
            "iterations": optimizer.iterations,
            "state": state,
        },
        "rng": {
            "model": model.rng.host.bit_generator.state,
            "layers": {
                str(i): layer.rng.host.bit_generator.state
                for i, layer in enumerate(model.layers)
                if _has_rng(layer)
            },
        },
    }
    return _write(Path(path), config, arrays)


def _has_rng(layer: Any) -> bool:
    return isinstance(getattr(layer, "rng", None), backends.Random)


def _model_entries(model: Model) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    from . import __version__

    arrays: dict[str, np.ndarray] = {}
    layers = []
    for i, layer in enumerate(model.layers):
        if LAYERS.get(layer.name) is not type(layer):
            raise ValueError(
                f"save: layer {i} ({type(layer).__qualname__}) is not in "
                f"ailib.layers.LAYERS, so a saved file could not name it"
            )
        entry: dict[str, Any] = {"class": layer.name, "config": layer.get_config()}
        for kind in ("params", "buffers"):
            entry[kind] = {}
            for name, value in getattr(layer, kind).items():
                host = np.ascontiguousarray(model.backend.to_host(value))
                arrays[f"layers.{i}.{kind}.{name}"] = host
                entry[kind][name] = {"shape": list(host.shape), "dtype": host.dtype.name}
        layers.append(entry)
    config = {
        "format": FORMAT,
        "version": 1,  # a graph model: 2, set below
        "ailib_version": __version__,
        "dtype": model.backend.dtype_name(model.dtype),
        "seed": model.seed,
        "saved_from": model.backend.name,
        "layers": layers,
        "loss": type(model.loss).__name__ if model.loss is not None else None,
    }
    if not isinstance(model, Sequential):
        config["version"], config["graph"] = 2, _graph_entry(model)
    return config, arrays


def _write(path: Path, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> Path:
    text = json.dumps(config, allow_nan=False)
    arrays = {CONFIG_KEY: np.frombuffer(text.encode("utf-8"), dtype=np.uint8), **arrays}
    with atomic_open(path) as f:
        np.savez(f, **arrays)
    return path


# -- reading --------------------------------------------------------------------------------
def load(
    path: str | os.PathLike, backend: str | Backend | None = None, dtype: str | None = None
) -> Model:
    """The model saved in ``path`` (a model or a checkpoint file), on ``backend`` (None: the
    default backend), in the saved floating dtype unless ``dtype`` is given.

    Raises:
        ModelFileError: the file is damaged, truncated, not an ailib model, or its arrays do not
            match its config (the message names the file and what is wrong).
    """
    path = Path(path)
    config, arrays = _read(path)
    return _build(path, config, arrays, backends.get(backend), dtype)


def restore_checkpoint(
    model: Model, path: str | os.PathLike, optimizer: optimizers.Optimizer
) -> tuple[int, dict[str, list[float]]]:
    """Put the checkpoint's weights into ``model``, its state into ``optimizer`` (same class;
    its settings are kept) and its random states into the model's generators; returns the last
    completed epoch and the history so far."""
    path = Path(path)
    config, arrays = _read(path)
    saved = _build(path, config, arrays, model.backend, model.backend.dtype_name(model.dtype))
    ckpt = config.get("checkpoint")
    if not isinstance(ckpt, dict):
        raise ModelFileError(f"{path}: a model file, not a checkpoint (no training state)")
    if _architecture(saved) != _architecture(model):
        raise ModelFileError(
            f"{path}: the checkpoint's layers {_architecture(saved)} differ from "
            f"the model's {_architecture(model)}"
        )
    try:
        opt = ckpt["optimizer"]
        if opt["class"] != type(optimizer).__name__:
            raise ModelFileError(
                f"{path}: checkpoint of a {opt['class']} optimizer, fit was given "
                f"a {type(optimizer).__name__}"
            )
        state = {}
        for key, slots in opt["state"].items():
            state[key] = dict(slots["scalars"])
            for slot in slots["arrays"]:
                state[key][slot] = model.backend.asarray(arrays[f"optimizer.{key}.{slot}"])
        rng_states = ckpt["rng"]
        epoch, history = int(ckpt["epoch"]), {k: list(v) for k, v in ckpt["history"].items()}
        model.rng.host.bit_generator.state = rng_states["model"]
        for index, layer_state in rng_states["layers"].items():
            model.layers[int(index)].rng.host.bit_generator.state = layer_state
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        if isinstance(exc, ModelFileError):
            raise
        raise ModelFileError(
            f"{path}: damaged training state ({type(exc).__name__}: {exc})"
        ) from exc
    optimizer.state, optimizer.iterations = state, int(opt["iterations"])
    for layer, source in zip(model.layers, saved.layers):
        layer.params.update(source.params)
        layer.buffers.update(source.buffers)
    return epoch, history


def _architecture(model: Model) -> list[tuple[str, Any]]:
    return [(layer.name, json.loads(json.dumps(layer.get_config()))) for layer in model.layers]


def _read(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The config and every array of ``path``, or a ModelFileError saying why not."""
    try:
        with open(path, "rb") as f:  # np.load leaks its own handle when the archive is damaged
            npz = np.load(f, allow_pickle=False)
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise ModelFileError(f"{path}: a single .npy array, not an ailib model archive")
            arrays = {key: npz[key] for key in npz.files}
    except (FileNotFoundError, ModelFileError):
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, zlib.error) as exc:
        raise ModelFileError(
            f"{path}: not a readable ailib model file, truncated or damaged "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    raw = arrays.pop(CONFIG_KEY, None)
    if raw is None or raw.dtype != np.uint8 or raw.ndim != 1:
        raise ModelFileError(f"{path}: no {CONFIG_KEY} entry; not an ailib model file")
    try:
        config = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: {CONFIG_KEY} is not valid JSON ({exc})") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ModelFileError(
            f"{path}: not an ailib model file (format {config.get('format')!r} is not {FORMAT!r})"
            if isinstance(config, dict)
            else f"{path}: {CONFIG_KEY} is not a JSON object"
        )
    version = config.get("version")
    if not isinstance(version, int) or not 1 <= version <= VERSION:
        raise ModelFileError(
            f"{path}: format version {version!r}; this ailib reads versions 1 "
            f"to {VERSION} (upgrade ailib for newer files)"
        )
    return config, arrays


def _build(
    path: Path,
    config: dict[str, Any],
    arrays: dict[str, np.ndarray],
    be: Backend,
    dtype: str | None,
) -> Model:
    """Rebuild the layers from the config and fill them with validated arrays."""
    _check_graph(path, config)
    saved_dtype = config.get("dtype")
    if saved_dtype not in ("float32", "float64") or not isinstance(config.get("layers"), list):
        raise ModelFileError(
            f"{path}: config needs a 'dtype' (float32/float64) and a 'layers' list"
        )
    dtype = dtype or saved_dtype
    used, layers = set(), []
    for i, entry in enumerate(config["layers"]):
        layer = _layer(path, i, entry, be, dtype)
        for kind in ("params", "buffers"):
            fresh, listed = getattr(layer, kind), entry.get(kind)
            if not isinstance(listed, dict) or set(listed) != set(fresh):
                raise ModelFileError(
                    f"{path}: layer {i} ({layer.name}) lists {kind} "
                    f"{listed if not isinstance(listed, dict) else sorted(listed)}"
                    f", the layer has {sorted(fresh)}"
                )
            for name, spec in listed.items():
                key = f"layers.{i}.{kind}.{name}"
                array = _checked(path, key, arrays, spec, fresh[name], be, saved_dtype)
                fresh[name] = be.asarray(array, dtype=fresh[name].dtype)
                used.add(key)
        layers.append(layer)
    unknown = sorted(k for k in arrays if k not in used and not k.startswith("optimizer."))
    if unknown:
        raise ModelFileError(f"{path}: arrays not described by the config: {', '.join(unknown)}")
    if "graph" in config:
        model: Model = _graph_model(path, config["graph"], layers, be, dtype)
    else:
        model = Sequential(layers, backend=be, dtype=dtype)
    model.seed = config.get("seed")
    loss = LOSS_CLASSES.get(config.get("loss") or "")
    model.loss = loss() if loss is not None else None
    return model


def _layer(path: Path, i: int, entry: Any, be: Backend, dtype: str) -> Any:
    if not isinstance(entry, dict) or entry.get("class") not in LAYERS:
        name = entry.get("class") if isinstance(entry, dict) else entry
        raise ModelFileError(
            f"{path}: layer {i} is {name!r}, not one of ailib.layers.LAYERS ({', '.join(LAYERS)})"
        )
    kwargs = entry.get("config")
    if not isinstance(kwargs, dict):
        raise ModelFileError(f"{path}: layer {i} ({entry['class']}) has no config object")
    try:
        return LAYERS[entry["class"]](**_tuples(kwargs), backend=be, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ModelFileError(
            f"{path}: layer {i} ({entry['class']}) cannot be built from its config {kwargs}: {exc}"
        ) from exc


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples layers were configured with."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def _checked(
    path: Path,
    key: str,
    arrays: dict[str, np.ndarray],
    spec: Any,
    fresh: Any,
    be: Backend,
    float_dtype: str,
) -> np.ndarray:
    """arrays[key], after checking it against its config entry and the freshly built layer."""
    if key not in arrays:
        raise ModelFileError(f"{path}: missing array {key}")
    array = arrays[key]
    if not isinstance(spec, dict):
        raise ModelFileError(f"{path}: config entry for {key} is not an object")
    expected_shape = tuple(fresh.shape)
    if list(array.shape) != spec.get("shape") or tuple(array.shape) != expected_shape:
        raise ModelFileError(
            f"{path}: {key} has shape {tuple(array.shape)}, the config says "
            f"{spec.get('shape')} and the layer needs {expected_shape}"
        )
    floating = be.is_floating(fresh.dtype)
    needed = float_dtype if floating else be.dtype_name(fresh.dtype)
    if array.dtype.name != spec.get("dtype") or array.dtype.name != needed:
        raise ModelFileError(
            f"{path}: {key} has dtype {array.dtype}, the config says "
            f"{spec.get('dtype')!r} and the model needs {needed}"
        )
    return array


# -- graph models ---------------------------------------------------------------------------
def _graph_entry(model: Model) -> dict[str, Any]:
    """The ``graph`` entry of a graph model's config (see the module docstring)."""
    index = {id(layer): i for i, layer in enumerate(model.layers)}
    return {
        "inputs": [{"shape": list(s.shape), "name": s.name} for s in model.inputs],
        "nodes": [
            {"layer": index[id(layer)], "inbound": list(ins)} for layer, ins, _, _ in model.wiring
        ],
        "outputs": list(model.output_slots),
        "single_input": model.single_input,
        "single_output": model.single_output,
    }


def _check_graph(path: Path, config: dict[str, Any]) -> None:
    """Check a config's ``graph`` entry, if any, before anything is built: its structure, that
    every index is in range and names an earlier array, that each node gives its layer as many
    inputs as the layer takes, and that every layer is called."""

    def fault(message: str) -> ModelFileError:
        return ModelFileError(f"{path}: graph: {message}")

    graph = config.get("graph")
    if graph is None:
        return
    layers = config.get("layers")
    if config.get("version") != 2 or not isinstance(layers, list):
        raise fault("a graph needs format version 2 and a 'layers' list")
    if not isinstance(graph, dict) or not all(
        isinstance(graph.get(k), list) and graph[k] for k in ("inputs", "nodes", "outputs")
    ):
        raise fault("expected an object with non-empty 'inputs', 'nodes' and 'outputs' lists")
    inputs, nodes, outputs = graph["inputs"], graph["nodes"], graph["outputs"]
    for k, entry in enumerate(inputs):
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if (
            not isinstance(shape, list)
            or not 1 <= len(shape) <= 8
            or not all(_index(d, 1, 2**31) for d in shape)
            or not isinstance(entry.get("name", ""), str)
        ):
            raise fault(f"input {k} needs a 'shape' of 1 to 8 positive ints, received {entry!r}")
    called = set()
    for j, node in enumerate(nodes):
        layer = node.get("layer") if isinstance(node, dict) else None
        inbound = node.get("inbound") if isinstance(node, dict) else None
        if not _index(layer, 0, len(layers) - 1) or not isinstance(inbound, list):
            raise fault(
                f"node {j} needs a 'layer' index below {len(layers)} and an 'inbound' list, "
                f"received {node!r}"
            )
        if not inbound or not all(_index(i, 0, len(inputs) + j - 1) for i in inbound):
            raise fault(
                f"node {j} may only read arrays 0 to {len(inputs) + j - 1} (inputs and earlier "
                f"nodes), received inbound {inbound!r}"
            )
        entry = layers[layer]
        cls = LAYERS.get(entry.get("class")) if isinstance(entry, dict) else None
        if cls is not None and (len(inbound) >= 2) != cls.multi_input:
            takes = "a list of at least two" if cls.multi_input else "one"
            raise fault(f"node {j} gives {cls.__name__} {len(inbound)} inputs; it takes {takes}")
        called.add(layer)
    if called != set(range(len(layers))):
        raise fault(f"layers {sorted(set(range(len(layers))) - called)} are called by no node")
    if not all(_index(i, 0, len(inputs) + len(nodes) - 1) for i in outputs):
        raise fault(
            f"outputs must name arrays 0 to {len(inputs) + len(nodes) - 1}, received {outputs!r}"
        )
    for key, items in (("single_input", inputs), ("single_output", outputs)):
        if not isinstance(graph.get(key), bool) or (graph[key] and len(items) != 1):
            raise fault(
                f"'{key}' must be true (with one entry) or false, received {graph.get(key)!r}"
            )


def _index(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _graph_model(
    path: Path, graph: dict[str, Any], layers: list[Any], be: Backend, dtype: str
) -> Model:
    """Replay a checked ``graph`` entry on built ``layers``: the same calls, hence the same
    shapes (checked again as the calls are made) and the same topological order."""
    inputs = [Input(entry["shape"], entry.get("name", "")) for entry in graph["inputs"]]
    arrays = list(inputs)
    for j, node in enumerate(graph["nodes"]):
        layer = layers[node["layer"]]
        parts = [arrays[i] for i in node["inbound"]]
        try:
            arrays.append(layer(parts if layer.multi_input else parts[0]))
        except (TypeError, ValueError) as exc:
            raise ModelFileError(f"{path}: graph: node {j} ({layer.name}): {exc}") from exc
    outputs = [arrays[i] for i in graph["outputs"]]
    model = Model(
        inputs[0] if graph["single_input"] else inputs,
        outputs[0] if graph["single_output"] else outputs,
        backend=be,
        dtype=dtype,
    )
    if len(model.nodes) != len(graph["nodes"]):
        raise ModelFileError(f"{path}: graph: some nodes lead to no output")
    return model
