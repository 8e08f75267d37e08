"""Saving and loading models and training checkpoints: one ``.npz`` file, no pickle.

A model file is a NumPy ``.npz`` archive holding
- ``config.json``: UTF-8 JSON (as a uint8 array) with ``format`` ("ailib.model"), ``version``,
  the floating ``dtype`` and, per layer, its class (a name in `ailib.layers.LAYERS`), its
  ``get_config()`` and the name, shape and dtype of each parameter and buffer;
- ``layers.<i>.params.<name>`` and ``layers.<i>.buffers.<name>``: the arrays, on the host.

A checkpoint is a model file whose config also has a ``checkpoint`` entry (epoch, history, the
optimizer's class, settings and scalar state, and each random source's `Random.get_state`: the
host generator and the device stream of the model's shuffling and of every Dropout layer, so a
resumed run draws exactly what the uninterrupted one would have) and whose archive also
holds ``optimizer.<param>.<slot>`` arrays. `ailib.load` reads either as a model.

Files are written atomically (a temporary file in the same directory, then `os.replace`) and
read with ``allow_pickle=False``; every array is checked against the config, and any damage is
reported as a `ModelFileError` naming the file and the problem.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import backends, losses, optimizers
from ._files import atomic_open
from .backends import Backend
from .layers import LAYERS

if TYPE_CHECKING:  # model.py and the callbacks call this module; it imports model.py on use
    from .model import Sequential

FORMAT = "ailib.model"
VERSION = 1
CONFIG_KEY = "config.json"
LOSS_CLASSES = {cls.__name__: cls for cls in losses.LOSSES.values()}
OPTIMIZER_CLASSES = {cls.__name__: cls for cls in optimizers.OPTIMIZERS.values()}


class ModelFileError(ValueError):
    """A model or checkpoint file that cannot be used; the message names the file and the fault."""


# -- writing --------------------------------------------------------------------------------
def save(model: Sequential, path: str | os.PathLike) -> Path:
    """Write ``model``'s architecture and weights to ``path`` (see the module docstring)."""
    config, arrays = _model_entries(model)
    return _write(Path(path), config, arrays)


def save_checkpoint(
    model: Sequential,
    path: str | os.PathLike,
    optimizer: optimizers.Optimizer,
    epoch: int,
    history: dict[str, list[float]],
) -> Path:
    """Write the model plus everything `fit` needs to continue after ``epoch``: the optimizer's
    state, the history so far and the random generators' states."""
    config, arrays = _model_entries(model)
    state = {}
    for key, slots in optimizer.named_state(model.layers).items():
        state[key] = {"scalars": {}, "arrays": []}
        for slot, value in slots.items():
            if isinstance(value, (int, float)):
                state[key]["scalars"][slot] = value
            else:
                arrays[f"optimizer.{key}.{slot}"] = np.asarray(model.backend.to_host(value))
                state[key]["arrays"].append(slot)
    config["checkpoint"] = {
        "epoch": int(epoch),
        "history": {k: [_json_number(v) for v in values] for k, values in history.items()},
        "optimizer": {
            "class": type(optimizer).__name__,
            "config": optimizer.get_config(),
            "iterations": optimizer.iterations,
            "state": state,
        },
        "rng": {
            "model": model.rng.get_state(),
            "layers": {
                str(i): layer.rng.get_state()
                for i, layer in enumerate(model.layers)
                if _has_rng(layer)
            },
        },
    }
    return _write(Path(path), config, arrays)


def _json_number(value: Any) -> Any:
    """NaN and ±inf (a diverged validation loss) as strings: JSON has no such numbers."""
    return str(value) if isinstance(value, float) and not math.isfinite(value) else value


def _from_json_number(value: Any) -> Any:
    return float(value) if value in ("nan", "inf", "-inf") else value


def _has_rng(layer: Any) -> bool:
    return isinstance(getattr(layer, "rng", None), backends.Random)


def _model_entries(model: Sequential) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
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
        "version": VERSION,
        "ailib_version": __version__,
        "dtype": model.backend.dtype_name(model.dtype),
        "seed": model.seed,
        "saved_from": model.backend.name,
        "layers": layers,
        "loss": type(model.loss).__name__ if model.loss is not None else None,
    }
    if getattr(model.loss, "from_logits", False):
        config["loss_from_logits"] = True
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
) -> Sequential:
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
    model: Sequential, path: str | os.PathLike, optimizer: optimizers.Optimizer
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
        epoch = int(ckpt["epoch"])
        history = {k: [_from_json_number(v) for v in vs] for k, vs in ckpt["history"].items()}
        model.rng.set_state(rng_states["model"])
        for index, layer_state in rng_states["layers"].items():
            model.layers[int(index)].rng.set_state(layer_state)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        if isinstance(exc, ModelFileError):
            raise
        raise ModelFileError(
            f"{path}: damaged training state ({type(exc).__name__}: {exc})"
        ) from exc
    try:
        optimizer.load_named_state(model.layers, state)
    except ValueError as exc:
        raise ModelFileError(f"{path}: {exc}") from exc
    optimizer.iterations = int(opt["iterations"])
    for layer, source in zip(model.layers, saved.layers):
        layer.params.update(source.params)
        layer.buffers.update(source.buffers)
    return epoch, history


def _architecture(model: Sequential) -> list[tuple[str, Any]]:
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
) -> Sequential:
    """Rebuild the layers from the config and fill them with validated arrays."""
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
    from .model import Sequential

    model = Sequential(layers, backend=be, dtype=dtype)
    model.seed = config.get("seed")
    _seed_random_sources(model)
    loss = LOSS_CLASSES.get(config.get("loss") or "")
    if loss is losses.BinaryCrossEntropy:
        model.loss = loss(from_logits=config.get("loss_from_logits") is True)
    else:
        model.loss = loss() if loss is not None else None
    return model


def _seed_random_sources(model: Sequential) -> None:
    """Seed a loaded model's shuffling (as `Sequential` does: the model's seed + 1) and its
    Dropout masks from the saved seed (0 when none was saved), so that training a loaded model
    is reproducible; weights are not touched."""
    seed = model.seed if isinstance(model.seed, int) else 0
    model.rng = model.backend.random(seed + 1)
    layer_seeds = model.backend.random(seed)
    for layer in model.layers:
        if _has_rng(layer):
            layer.seed = int(layer_seeds.host.integers(2**31))
            layer.rng = model.backend.random(layer.seed)


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
