"""Saving and loading models and training checkpoints: one ``.npz`` file, no pickle.

A model file is a NumPy ``.npz`` archive holding
- ``config.json``: UTF-8 JSON (as a uint8 array) with ``format`` ("ailib.model"), ``version``,
  the floating ``dtype`` and, per layer, its class (a name in `ailib.layers.LAYERS`), its
  ``get_config()`` and the name, shape and dtype of each parameter and buffer;
- ``losses``: the model's loss, ``model.loss``, as a list of ``{"class": <a class of
  ailib.losses>, "config": <its get_config()>}``, one per output for a model of several outputs
  (`OutputLosses`); null for no loss, or for a loss of a class of one's own, which a file cannot
  name (the model then loads without one). ``loss`` (the class name) and ``loss_from_logits``
  are what ailib before ``losses`` read, and still reads from its files (default settings,
  BCE's from_logits; no loss for several outputs). ``losses`` came without a version change,
  as ``meta`` did: older ailib ignores it;
- optionally ``meta``: `Sequential.meta`, what the model was trained on (``ailib train`` records
  "dataset", "classes" and "model"; `metadata` reads it without building the model);
- ``layers.<i>.params.<name>`` and ``layers.<i>.buffers.<name>``: the arrays, on the host.

A graph model (`ailib.Model`) also has a ``graph`` entry (and ``version`` 2; a `Sequential`
file stays version 1): ``inputs`` (one sample's ``shape`` and a ``name`` each), ``nodes`` (one
per layer call, in topological order: the index of its ``layer`` in ``layers`` and its
``inbound`` arrays), ``outputs``, and whether inputs and outputs are single arrays or lists.
Arrays are numbered inputs first (0..I-1), then node j's output (I + j); a node reads only
arrays numbered below its own, so the graph is acyclic by construction. A shared layer is one
entry of ``layers`` named by several nodes. ``nodes`` is empty where every output is an input
(``Model(x, x)``); an array may be listed twice in ``outputs``; an input may feed nothing.

A checkpoint is a model file whose config also has a ``checkpoint`` entry (epoch, history, the
optimizer's class, settings and scalar state, and each random source's `Random.get_state`: the
host generator and the device stream of the model's shuffling and of every Dropout layer, so a
resumed run draws exactly what the uninterrupted one would have) and whose archive also
holds ``optimizer.<param>.<slot>`` arrays. `ailib.load` reads either as a model.

Files are written atomically (`ailib._files`: a temporary file in the same directory, then
`os.replace`; a killed save leaves the old file, and the next save removes its debris). Reading
checks the whole file before allocating anything (`ailib._modelfile`): the .npy headers (never a
pickle), the config's structure, every layer's shapes against the stored arrays, and sizes
against what the file can hold; any fault is a `ModelFileError` naming the file and the
problem, never another exception. Layers are then built around the stored arrays, without
drawing initial weights first. Limits and guarantees: docs/reliability.md.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import backends, losses, optimizers
from ._files import atomic_open
from ._modelfile import (
    LOSS_CLASSES,
    META_RULES,
    Archive,
    ModelFileError,
    check_arrays,
    check_config,
    check_finite,
    loss_items,
    meta_fault,
)
from .backends import Backend
from .graph import Input
from .layers import LAYERS

if TYPE_CHECKING:  # model.py and the callbacks call this module; it imports model.py on use
    from .model import Model

FORMAT = "ailib.model"
#: the newest format this ailib reads and writes (2: graph models; Sequential files are 1)
VERSION = 2
CONFIG_KEY = "config.json"
OPTIMIZER_CLASSES = {cls.__name__: cls for cls in optimizers.OPTIMIZERS.values()}


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
    settings: dict[str, Any] | None = None,
) -> Path:
    """Write the model plus everything `fit` needs to continue after ``epoch``: the optimizer's
    state, the history so far and the random generators' states. ``settings``: the optimizer's
    settings as training began (`Optimizer.get_config` before any schedule changed them; default:
    the current ones), which a resumed run must match."""
    config, arrays = _model_entries(model)
    state = {}
    for key, slots in optimizer.named_state(model.layers).items():
        state[key] = {"scalars": {}, "arrays": []}
        for slot, value in slots.items():
            if getattr(value, "ndim", None) == 0 and model.xp.isdtype(value.dtype, "integral"):
                value = int(model.backend.to_host(value))  # a step count a compiled step kept
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
            "settings": optimizer.get_config() if settings is None else settings,
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
        if not layer.built and not layer.sized:
            raise ValueError(
                f"save: layer {i} ({layer.name}) has no weights yet: its input size is not "
                f"known; build the model first (model.build(input_shapes), or fit or predict "
                f"on data), then save"
            )
        entry: dict[str, Any] = {"class": layer.name, "config": layer.get_config()}
        for kind in ("params", "buffers"):
            entry[kind] = {}
            for name, value in getattr(layer, kind).items():
                host = np.ascontiguousarray(model.backend.to_host(value))
                if host.dtype.kind == "f" and not np.isfinite(host).all():
                    raise ValueError(
                        f"save: layer {i} ({layer.name}) {kind} {name!r} holds NaN or infinite "
                        f"values; expected finite weights (a file of them could not be loaded)"
                    )
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
        "losses": _loss_entries(model.loss),
    }
    if getattr(model.loss, "from_logits", False):  # what ailib before "losses" reads
        config["loss_from_logits"] = True
    meta = getattr(model, "meta", None)
    if meta:
        try:
            config["meta"] = json.loads(json.dumps(meta, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"save: model.meta must be plain JSON: {exc}") from exc
        fault = meta_fault(config["meta"])
        if fault:  # a file load would refuse: not written
            raise ValueError(f"save: model.{fault}; model.meta may hold {META_RULES}")
    from .model import Sequential  # model.py imports this module

    if not isinstance(model, Sequential):
        config["version"], config["graph"] = 2, _graph_entry(model)
    return config, arrays


def _outside_ailib() -> int:
    """The ``stacklevel`` of the first caller outside ailib (for a warning to name the user's
    line, however deep inside ailib it is raised: `save`, a checkpoint callback, ...)."""
    frame, level = sys._getframe(2), 2  # the caller of the function that asks
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith("ailib."):
        frame, level = frame.f_back, level + 1
    return level


def _loss_entries(loss: Any) -> list[dict[str, Any]] | None:
    """The ``losses`` entry for a model's loss: one ``{"class", "config"}`` per loss (per output
    for several outputs); None for no loss, or for a loss of a class of one's own, which a file
    cannot name (the model then loads without a loss)."""
    from .model import OutputLosses  # model.py imports this module

    if loss is None:
        return None
    items = loss.items if isinstance(loss, OutputLosses) else [loss]
    own = sorted(
        {type(i).__name__ for i in items if LOSS_CLASSES.get(type(i).__name__) is not type(i)}
    )
    if own:
        warnings.warn(  # once per call site and loss (checkpoints save every epoch)
            f"save: the loss {', '.join(own)} is a class of your own, which a model file cannot "
            f"name: the file keeps no loss (give loss= to fit or evaluate after ailib.load)",
            UserWarning,
            stacklevel=_outside_ailib(),
        )
        return None
    entries = []
    for item in items:
        settings = json.loads(json.dumps(item.get_config(), allow_nan=False))
        entries.append({"class": type(item).__name__, "config": settings})
    return entries


def _check_losses(path: Path, config: dict[str, Any]) -> None:
    """The ``losses`` entry (checked by `check_config`) has one loss, or one per output."""
    graph = config.get("graph")
    loss_items(path, config.get("losses"), len(graph["outputs"]) if graph else 1)


def _write(path: Path, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> Path:
    try:  # what load checks first: a file it would refuse is not written
        check_config(path, config, range(1, VERSION + 1), FORMAT)
        _check_graph(path, config)
        _check_losses(path, config)
    except ModelFileError as exc:
        reason = str(exc).removeprefix(f"{path}: ")
        raise ValueError(
            f"save: load would refuse this model's file ({reason}); not written"
        ) from None
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


def metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``meta`` entry of the model file ``path`` (`Sequential.meta` when it was saved: e.g.
    ``{"dataset": "mnist", "classes": [...], "model": "mlp"}`` for ``ailib train``), ``{}`` when it
    has none; the file's config is checked as `load` checks it, its arrays are not read.

    Raises:
        ModelFileError: the file is not a readable ailib model file.
    """
    path = Path(path)
    with Archive(path) as archive:
        config = archive.config()
        check_config(path, config, range(1, VERSION + 1), FORMAT)
    return dict(config.get("meta", {}))


def checkpoint_state(path: str | os.PathLike) -> tuple[int, dict[str, list[float]]]:
    """(the last completed epoch, the history so far) of the checkpoint ``path``, read from its
    config (checked as `load` checks it; the arrays are not read).

    Raises:
        ModelFileError: not a readable ailib file, or a model file without training state.
    """
    path = Path(path)
    with Archive(path) as archive:
        config = archive.config()
        check_config(path, config, range(1, VERSION + 1), FORMAT)
    ckpt = config.get("checkpoint")
    try:
        history = {k: [_from_json_number(v) for v in vs] for k, vs in ckpt["history"].items()}
        return int(ckpt["epoch"]), history
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelFileError(
            f"{path}: not a checkpoint, or damaged training state ({type(exc).__name__}: {exc})"
        ) from exc


def restore_checkpoint(
    model: Model, path: str | os.PathLike, optimizer: optimizers.Optimizer
) -> tuple[int, dict[str, list[float]]]:
    """Put the checkpoint's weights into ``model``, its state into ``optimizer`` and its random
    states into the model's generators; returns the last completed epoch and the history so far.

    The checkpoint must come from the same run: the same layers with the same settings, and an
    optimizer of the same class whose settings as training began equal ``optimizer``'s now
    (a resumed run then equals an uninterrupted one). The learning rate continues from the
    checkpoint's (a schedule or `ReduceLROnPlateau` may have changed it).

    Raises:
        ModelFileError: the file is not a usable checkpoint.
        CheckpointMismatch: it belongs to another model or other optimizer settings; the
            message says which.
    """
    path = Path(path)
    config, arrays = _read(path)
    saved = _build(path, config, arrays, model.backend, model.backend.dtype_name(model.dtype))
    ckpt = config.get("checkpoint")
    if not isinstance(ckpt, dict):
        raise ModelFileError(f"{path}: a model file, not a checkpoint (no training state)")
    difference = _first_difference(_architecture(saved), _architecture(model))
    difference = difference or _wiring_difference(saved, model)
    if difference:
        raise CheckpointMismatch(path, f"the checkpoint is of another model: {difference}")
    try:
        opt = ckpt["optimizer"]
        if opt["class"] != type(optimizer).__name__:
            raise CheckpointMismatch(
                path,
                f"the checkpoint was written with a {opt['class']} optimizer, fit was given a "
                f"{type(optimizer).__name__}",
            )
        before, now = opt.get("settings"), optimizer.get_config()
        if before is not None:
            before = {**_defaults(type(optimizer), set(now) - set(before)), **before}
            changed = [
                f"{key} {before.get(key)!r} (checkpoint) vs {now.get(key)!r} (now)"
                for key in sorted(set(before) | set(now))
                if before.get(key) != now.get(key)
            ]
            if changed:
                raise CheckpointMismatch(
                    path,
                    f"the checkpoint was written with other {opt['class']} settings: "
                    f"{'; '.join(changed)}",
                )
        lr = float(opt["config"]["lr"])
        state = {}
        for key, slots in opt["state"].items():
            state[key] = dict(slots["scalars"])
            for slot in slots["arrays"]:
                state[key][slot] = model.backend.asarray(arrays[f"optimizer.{key}.{slot}"])
        rng_states = ckpt["rng"]
        iterations = int(opt["iterations"])
        epoch = int(ckpt["epoch"])
        history = {k: [_from_json_number(v) for v in vs] for k, vs in ckpt["history"].items()}
        model.rng.set_state(rng_states["model"])
        for index, layer_state in rng_states["layers"].items():
            model.layers[int(index)].rng.set_state(layer_state)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, ArithmeticError) as exc:
        if isinstance(exc, ModelFileError):
            raise
        raise ModelFileError(
            f"{path}: damaged training state ({type(exc).__name__}: {exc})"
        ) from exc
    try:
        optimizer.load_named_state(model.layers, state)
    except ValueError as exc:
        raise ModelFileError(f"{path}: {exc}") from exc
    optimizer.iterations = iterations
    if math.isfinite(lr) and lr >= 0:
        optimizer.lr = lr
    for layer, source in zip(model.layers, saved.layers):
        layer.params.update(source.params)
        layer.buffers.update(source.buffers)
    return epoch, history


def _defaults(cls: type, names: set[str]) -> dict[str, Any]:
    """The default values of ``cls``'s constructor arguments ``names`` (those it has): what a
    checkpoint written before a setting existed (Adam's ``amsgrad``) trained with."""
    params = inspect.signature(cls).parameters
    return {
        name: params[name].default
        for name in names
        if name in params and params[name].default is not inspect.Parameter.empty
    }


class CheckpointMismatch(ModelFileError):
    """A checkpoint of another model, or written with other optimizer settings, than the run
    that would resume from it; the message says what differs. (A `ModelFileError`: the file
    cannot be used for this run.)

    Attributes: ``path``; ``difference``: what differs, in words.
    """

    #: how to go on, from Python (the ``ailib`` command words its own)
    ADVICE = "resume with the same settings, or start afresh (resume=False, or another path)"

    def __init__(self, path: Path, difference: str) -> None:
        super().__init__(f"{path}: {difference}; {self.ADVICE}")
        self.path, self.difference = path, difference


def _first_difference(saved: list[tuple[str, Any]], current: list[tuple[str, Any]]) -> str:
    """What first differs between two `_architecture` lists, in words ("" if nothing)."""
    if len(saved) != len(current):
        return f"{len(saved)} layers in the checkpoint, {len(current)} in the model"
    for k, ((name_a, conf_a), (name_b, conf_b)) in enumerate(zip(saved, current), 1):
        if name_a != name_b:
            return f"layer {k} is a {name_a} in the checkpoint, a {name_b} in the model"
        if conf_a != conf_b:
            keys = sorted(set(conf_a) | set(conf_b), key=str)
            changed = [
                f"{key} {conf_a.get(key)!r} (checkpoint) vs {conf_b.get(key)!r} (model)"
                for key in keys
                if conf_a.get(key) != conf_b.get(key)
            ]
            return f"layer {k} ({name_b}): {'; '.join(changed)}"
    return ""


def _wiring_difference(saved: Model, current: Model) -> str:
    """What first differs between the graphs of two models of the same layers, in words ("" if
    nothing): the number of inputs, a call's layer or the arrays it reads (numbered inputs
    first, then one per call), or the outputs."""
    if len(saved.inputs) != len(current.inputs):
        return f"{len(saved.inputs)} inputs in the checkpoint, {len(current.inputs)} in the model"
    calls = [_calls(saved), _calls(current)]
    if len(calls[0]) != len(calls[1]):
        return f"{len(calls[0])} layer calls in the checkpoint, {len(calls[1])} in the model"
    for k, ((layer_a, reads_a), (layer_b, reads_b)) in enumerate(zip(*calls), 1):
        if layer_a != layer_b:
            return (
                f"call {k} is of layer {layer_a + 1} in the checkpoint, {layer_b + 1} in the model"
            )
        if reads_a != reads_b:
            return (
                f"call {k} ({current.layers[layer_b].name}) reads arrays {reads_a} in the "
                f"checkpoint, {reads_b} in the model (inputs first, then one array per call)"
            )
    if saved.output_slots != current.output_slots:
        return (
            f"the outputs are arrays {saved.output_slots} in the checkpoint, "
            f"{current.output_slots} in the model"
        )
    return ""


def _calls(model: Model) -> list[tuple[int, list[int]]]:
    """(layer index, arrays read) of each call of ``model``, in its order."""
    index = {id(layer): i for i, layer in enumerate(model.layers)}
    return [(index[id(layer)], list(ins)) for layer, ins, _, _ in model.wiring]


def _architecture(model: Model) -> list[tuple[str, Any]]:
    return [(layer.name, json.loads(json.dumps(layer.get_config()))) for layer in model.layers]


def _read(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The config and every array of ``path``, each checked before anything is allocated
    (`ailib._modelfile`), or a ModelFileError saying why not."""
    with Archive(path) as archive:
        config = archive.config()
        specs = check_config(path, config, range(1, VERSION + 1), FORMAT)
        _check_graph(path, config)
        _check_losses(path, config)
        check_arrays(archive, specs, config["dtype"])
        arrays = {key: archive.read(key) for key in archive.members if key != CONFIG_KEY}
    check_finite(path, arrays)
    return config, arrays


def _build(
    path: Path,
    config: dict[str, Any],
    arrays: dict[str, np.ndarray],
    be: Backend,
    dtype: str | None,
) -> Model:
    """Build the layers of a checked config (`_read`) around its arrays."""
    dtype = dtype or config["dtype"]
    layers = []
    for i, spec in enumerate(check_config(path, config, range(1, VERSION + 1), FORMAT)):
        stored = {
            kind: {name: arrays[f"layers.{i}.{kind}.{name}"] for name in shapes}
            for kind, shapes in spec.shapes.items()
        }
        try:
            layer = spec.cls.from_arrays(
                spec.kwargs, stored["params"], stored["buffers"], backend=be, dtype=dtype
            )
        except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
            raise ModelFileError(
                f"{path}: layer {i} ({spec.cls.__name__}) cannot be built from its config "
                f"{config['layers'][i]['config']}: {exc}"
            ) from exc
        layers.append(layer)
    from .model import Sequential  # model.py imports this module

    if "graph" in config:
        model: Model = _graph_model(path, config["graph"], layers, be, dtype)
    else:
        try:
            model = Sequential(layers, backend=be, dtype=dtype)
        except (TypeError, ValueError) as exc:  # e.g. a layer taking several inputs
            raise ModelFileError(f"{path}: no 'graph' entry, and not a Sequential: {exc}") from exc
    model.seed = config.get("seed")
    model.meta = dict(config.get("meta", {}))
    _seed_random_sources(model)
    model.loss = _loaded_loss(path, config, model)
    return model


def _loaded_loss(path: Path, config: dict[str, Any], model: Model) -> Any:
    """The loss a checked config stores for ``model``: from its ``losses`` entry (every
    setting; one per output), or, in files written before it, from the class name ``loss``
    (default settings but BCE's ``from_logits``; a model of several outputs had none)."""
    if "losses" in config:
        items = loss_items(path, config["losses"], len(model.outputs))
        if items is None:
            return None
        return model.loss_for(items if len(items) > 1 else items[0])
    loss = LOSS_CLASSES.get(config.get("loss") or "")
    if loss is losses.BinaryCrossEntropy:
        return loss(from_logits=config.get("loss_from_logits") is True)
    return loss() if loss is not None else None


def _seed_random_sources(model: Model) -> None:
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

    if "graph" not in config:
        return
    graph = config["graph"]
    layers = config.get("layers")
    if config.get("version") != 2 or not isinstance(layers, list):
        raise fault("a graph needs format version 2 and a 'layers' list")
    if (
        not isinstance(graph, dict)
        or not all(isinstance(graph.get(k), list) for k in ("inputs", "nodes", "outputs"))
        or not (graph["inputs"] and graph["outputs"])
    ):  # no nodes: every output is an input (Model(x, x))
        raise fault(
            "expected an object with non-empty 'inputs' and 'outputs' lists and a 'nodes' list"
        )
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
    from .model import Model  # model.py imports this module

    model = Model(
        inputs[0] if graph["single_input"] else inputs,
        outputs[0] if graph["single_output"] else outputs,
        backend=be,
        dtype=dtype,
    )
    if len(model.nodes) != len(graph["nodes"]):
        raise ModelFileError(f"{path}: graph: some nodes lead to no output")
    return model
