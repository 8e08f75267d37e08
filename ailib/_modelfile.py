"""Reading a model file that may come from anyone: every check before any allocation.

A model file (the format is described in `ailib.io`) is read in stages, each bounded by what the
file itself holds, and any fault is a `ModelFileError` naming the file and the fault:

1. the zip directory (as `zipfile` parses it): at most `MAX_MEMBERS` members, unique names ending
   in ``.npy``, stored or deflated, not encrypted;
2. each member's ``.npy`` header (shape, dtype), read without its data: plain numbers only (no
   Python objects, so never a pickle); the uncompressed size the zip declares must be exactly the
   header plus shape x itemsize, and no more than deflate can produce from the bytes stored,
   which must lie within the file;
3. ``config.json``: at most `MAX_CONFIG_BYTES`, JSON without NaN, Infinity or numbers that
   overflow a float (1e400), nested at most `MAX_DEPTH` deep, of the documented structure:
   field types, layer classes from `ailib.layers.LAYERS` only (a name, never imported),
   constructor arguments the class takes; the same for the losses (`loss_items`);
4. the params and buffers each layer's config implies (`Layer.array_shapes`, nothing allocated)
   against the config's own list and the stored headers; optimizer arrays against the params
   they belong to;
5. only then the arrays, each read into one buffer of its declared size (`Archive.read`), and
   the layers' params and buffers checked to be finite (`check_finite`: a model whose weights
   hold NaN or infinity only ever predicts NaN).

So memory never exceeds the arrays the file really holds, and a config claiming a huge layer is
refused from a few hundred bytes of headers. `LayerSpec` (steps 3-4 for one layer) is what a model
format with more structure builds on.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ._files import open_regular
from .layers import LAYERS
from .layers.base import Layer
from .losses import LOSSES, Loss

CONFIG_MEMBER = "config.json.npy"
MAX_MEMBERS = 100_000
MAX_CONFIG_BYTES = 16 << 20
MAX_DEPTH = 32
MAX_LAYERS = 10_000
MAX_HEADER_BYTES = 10_000
#: deflate's largest possible expansion (zlib's technical notes: 1032:1), plus slack
MAX_DEFLATE_RATIO = 1032
CHUNK = 1 << 20
#: dtypes a model file may hold (config.json is uint8)
DTYPES = ("float32", "float64", "uint8", "int32", "int64")
#: the loss classes a model file may name (``losses`` entry), by class name
LOSS_CLASSES = {cls.__name__: cls for cls in LOSSES.values()}
#: what a stored array may be named: layers.<i>.<params|buffers>.<name>, optimizer.<i>.<param>.<slot>
LAYER_ARRAY = re.compile(r"layers\.(\d+)\.(params|buffers)\.(.+)")
OPTIMIZER_ARRAY = re.compile(r"optimizer\.(\d+\.[^.]+)\.(.+)")


#: what zipfile, zlib and NumPy's header parser raise for damaged input
READ_ERRORS = (
    zipfile.BadZipFile,
    ValueError,
    OSError,
    EOFError,
    zlib.error,
    RecursionError,
    NotImplementedError,  # zipfile: an unsupported zip feature
)


class ModelFileError(ValueError):
    """A model or checkpoint file that cannot be used; the message names the file and the fault."""


@dataclass(frozen=True)
class Member:
    """One ``.npy`` member of the archive, known from its header only."""

    key: str  # the name without ".npy"
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    info: zipfile.ZipInfo

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


@dataclass(frozen=True)
class LayerSpec:
    """One layer entry of a config, checked: its class, constructor arguments (tuples for JSON
    lists) and the shapes of its params and buffers (``{"params": {name: shape}, ...}``)."""

    cls: type[Layer]
    kwargs: dict[str, Any]
    shapes: dict[str, dict[str, tuple[int, ...]]]


# -- the archive ----------------------------------------------------------------------------
class Archive:
    """An opened model file whose members' headers have been read and checked (steps 1-2)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: BinaryIO = open_regular(path)  # closed by close()
        try:
            magic = self.file.read(6)
            if magic == b"\x93NUMPY":
                self.fail("a single .npy array, not an ailib model archive")
            try:
                self.zip = zipfile.ZipFile(self.file)
            except READ_ERRORS as exc:  # NotImplementedError: a newer zip version than zipfile's
                self.fail(f"not a readable ailib model file, truncated or damaged ({_why(exc)})")
            self.members = self._members()
        except BaseException:
            self.file.close()
            raise

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.file.close()

    def fail(self, message: str) -> None:
        raise ModelFileError(f"{self.path}: {message}")

    def _members(self) -> dict[str, Member]:
        infos = self.zip.infolist()
        if len(infos) > MAX_MEMBERS:
            self.fail(f"{len(infos)} members, more than an ailib model holds ({MAX_MEMBERS})")
        size = os.fstat(self.file.fileno()).st_size
        members: dict[str, Member] = {}
        for info in infos:
            name = info.filename
            if not name.endswith(".npy"):
                self.fail(f"member {name!r} is not a .npy array")
            if name[:-4] in members:
                self.fail(f"member {name!r} appears twice")
            if info.flag_bits & 0x1:
                self.fail(f"member {name!r} is encrypted")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                self.fail(f"member {name!r} uses compression method {info.compress_type}")
            if info.header_offset + info.compress_size > size:
                self.fail(
                    f"member {name!r} claims {info.compress_size} stored bytes from offset "
                    f"{info.header_offset}, the file holds {size} bytes; truncated or damaged"
                )
            limit = info.compress_size * (
                MAX_DEFLATE_RATIO if info.compress_type == zipfile.ZIP_DEFLATED else 1
            )
            if info.file_size > limit + 1024:
                self.fail(
                    f"member {name!r} claims {info.file_size} bytes from {info.compress_size} "
                    f"stored bytes, more than its compression can produce"
                )
            members[name[:-4]] = self._member(info)
        return members

    def _member(self, info: zipfile.ZipInfo) -> Member:
        name = info.filename
        try:
            with self.zip.open(info) as f:
                shape, fortran_order, dtype = _npy_header(f)
                header = f.tell()
        except ModelFileError as exc:
            self.fail(f"member {name!r}: {exc}")
        except Exception as exc:  # NumPy's header parser raises whatever malformed text makes
            # it raise (TypeError, SyntaxError, tokenize.TokenError...), zipfile its READ_ERRORS
            self.fail(f"member {name!r} is not a readable .npy array ({_why(exc)})")
        member = Member(name[:-4], shape, dtype, fortran_order, info)
        if info.file_size != header + member.nbytes:
            self.fail(
                f"member {name!r} declares {info.file_size} bytes, its header says "
                f"{header + member.nbytes} ({dtype.name} {shape}); truncated or damaged"
            )
        return member

    def read(self, key: str) -> np.ndarray:
        """The array ``key``, read into one buffer of its declared size (checked by CRC)."""
        member = self.members[key]
        buffer = np.empty(member.nbytes, dtype=np.uint8)
        try:
            with self.zip.open(member.info) as f:
                if _npy_header(f) != (member.shape, member.fortran_order, member.dtype):
                    self.fail(f"member {key}.npy changed while being read")
                view, done = memoryview(buffer), 0
                while done < member.nbytes:
                    n = f.readinto(view[done : done + CHUNK])
                    if not n:
                        self.fail(f"member {key}.npy ends early; truncated or damaged")
                    done += n
        except ModelFileError:
            raise
        except READ_ERRORS as exc:
            self.fail(f"not a readable ailib model file, truncated or damaged ({_why(exc)})")
        array = buffer.view(member.dtype).reshape(
            member.shape, order="F" if member.fortran_order else "C"
        )
        return array if array.dtype.isnative else array.astype(array.dtype.newbyteorder("="))

    def config(self) -> dict[str, Any]:
        """The parsed and structurally checked ``config.json`` (step 3, up to the layers)."""
        member = self.members.get(CONFIG_MEMBER[:-4])
        if member is None or member.dtype != np.uint8 or len(member.shape) != 1:
            self.fail("no config.json entry; not an ailib model file")
        if member.nbytes > MAX_CONFIG_BYTES:
            self.fail(f"config.json holds {member.nbytes} bytes, more than {MAX_CONFIG_BYTES}")
        raw = self.read(member.key).tobytes()
        try:
            config = json.loads(
                raw.decode("utf-8"), parse_constant=_no_constant, parse_float=_finite
            )
        except RecursionError:
            self.fail(f"config.json is nested more than {MAX_DEPTH} deep")
        except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
            self.fail(f"config.json is not valid JSON ({exc})")
        if _depth(config) > MAX_DEPTH:
            self.fail(f"config.json is nested more than {MAX_DEPTH} deep")
        return config


def _npy_header(f: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) from an .npy header, leaving ``f`` at the data."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(
            f, max_header_size=MAX_HEADER_BYTES
        )
    elif version == (2, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(
            f, max_header_size=MAX_HEADER_BYTES
        )
    else:
        raise ModelFileError(f".npy format version {version} is not supported")
    if dtype.hasobject:
        raise ModelFileError(
            "holds Python objects, which only a pickle can restore; ailib files never do"
        )
    if dtype.fields is not None or dtype.subdtype is not None or dtype.name not in DTYPES:
        raise ModelFileError(f"dtype {dtype} is not one of {', '.join(DTYPES)}")
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ModelFileError(f"bad shape {shape!r}")
    return tuple(shape), bool(fortran_order), dtype


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number ailib writes")


def _finite(text: str) -> float:
    """A JSON number as a float, refused where it overflows to infinity (1e400)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:50]} is not a number ailib writes (it overflows a float)")
    return value


def _depth(value: Any) -> int:
    """How deeply ``value`` nests lists and objects (iteratively: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, depth)
            if depth <= MAX_DEPTH:
                stack.extend(
                    (v, depth + 1) for v in (item.values() if isinstance(item, dict) else item)
                )
    return deepest


def _why(exc: BaseException) -> str:
    """``exc`` on one short line."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text if len(text) <= 200 else text[:200] + '...'}"


# -- the config -----------------------------------------------------------------------------
def layer_spec(path: Path, where: str, entry: Any) -> LayerSpec:
    """Check one layer entry of a config (``where`` names it in errors, e.g. "layer 3"): its
    class, its constructor arguments and the arrays it lists; nothing is built."""

    def fail(message: str) -> None:
        raise ModelFileError(f"{path}: {where} {message}")

    if not isinstance(entry, dict) or not isinstance(entry.get("class"), str):
        name = entry.get("class") if isinstance(entry, dict) else entry
        fail(f"is {_short(name)}, not one of ailib.layers.LAYERS ({', '.join(LAYERS)})")
    name = entry["class"]
    if name not in LAYERS:
        fail(f"is {_short(name)}, not one of ailib.layers.LAYERS ({', '.join(LAYERS)})")
    cls, config = LAYERS[name], entry.get("config")
    where = f"{where} ({name})"
    if not isinstance(config, dict):
        fail("has no config object")
    bad = [k for k, v in config.items() if k in ("backend", "dtype") or not _plain(v)]
    try:
        if bad:
            raise ValueError(f"argument {bad[0]!r} is not a setting a saved layer can have")
        kwargs = {k: _tuples(v) for k, v in config.items()}
        inspect.signature(cls).bind(**kwargs)
        shapes = cls.array_shapes(config)
    except (TypeError, ValueError) as exc:
        fail(f"cannot be built from its config {_short(config)}: {exc}")
    for kind in ("params", "buffers"):
        listed, needed = entry.get(kind), shapes[kind]
        if not isinstance(listed, dict) or set(listed) != set(needed):
            shown = sorted(listed) if isinstance(listed, dict) else _short(listed)
            fail(f"lists {kind} {shown}, the layer has {sorted(needed)}")
        for array, spec in listed.items():
            key = f"{kind}.{array}"
            if not isinstance(spec, dict) or not isinstance(spec.get("dtype"), str):
                fail(f"has no dtype for {key}")
            if spec.get("shape") != list(needed[array]):
                fail(
                    f"needs {key} of shape {list(needed[array])} by its settings, the config "
                    f"says {_short(spec.get('shape'))}"
                )
    return LayerSpec(cls, kwargs, shapes)


def _plain(value: Any, depth: int = 0, most: int = 64) -> bool:
    """A layer setting: a JSON scalar (short string) or a list of at most ``most`` of them,
    or of such lists."""
    if value is None or isinstance(value, (bool, int, float)):
        return True
    if isinstance(value, str):
        return len(value) <= 256
    return (
        isinstance(value, list)
        and depth < 2
        and len(value) <= most
        and all(_plain(v, depth + 1, most) for v in value)
    )


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples layers were configured with."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


def check_config(path: Path, config: Any, versions: range, format_name: str) -> list[LayerSpec]:
    """Check a model config's top-level fields and every layer entry; the layers' specs."""

    def fail(message: str) -> None:
        raise ModelFileError(f"{path}: {message}")

    if not isinstance(config, dict):
        fail("config.json is not a JSON object")
    if config.get("format") != format_name:
        fail(
            f"not an ailib model file (format {_short(config.get('format'))} is not {format_name!r})"
        )
    version = config.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version not in versions:
        fail(
            f"format version {_short(version)}; this ailib reads versions {versions.start} to "
            f"{versions.stop - 1} (upgrade ailib for newer files)"
        )
    layers = config.get("layers")
    if config.get("dtype") not in ("float32", "float64") or not isinstance(layers, list):
        fail("config needs a 'dtype' (float32/float64) and a 'layers' list")
    if len(layers) > MAX_LAYERS:
        fail(f"{len(layers)} layers, more than {MAX_LAYERS}")
    seed = config.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        fail(f"seed {_short(seed)} is not a non-negative int")
    for field in ("loss", "ailib_version", "saved_from"):
        if config.get(field) is not None and not isinstance(config.get(field), str):
            fail(f"{field} {_short(config.get(field))} is not a string")
    if "checkpoint" in config and not isinstance(config["checkpoint"], dict):
        fail("checkpoint entry is not an object")
    fault = meta_fault(config.get("meta", {}))
    if fault:
        fail(fault)
    loss_items(path, config.get("losses"))
    return [layer_spec(path, f"layer {i}", entry) for i, entry in enumerate(layers)]


def loss_items(path: Path, entries: Any, outputs: int | None = None) -> list[Loss] | None:
    """The losses a config's ``losses`` entry names, each built from its settings (a loss holds
    no arrays), or None for none (null or absent). The entry is a list of
    ``{"class": <a class of ailib.losses>, "config": <its get_config()>}``: one per output, or
    one for every output; with ``outputs`` (the model's count), any other length is refused.
    Settings are checked as the constructor checks them, and a bool setting must be a bool."""

    def fail(message: str) -> None:
        raise ModelFileError(f"{path}: {message}")

    if entries is None:
        return None
    if not isinstance(entries, list) or not entries:
        fail(f"losses {_short(entries)} is not a non-empty list")
    if outputs is not None and len(entries) not in (1, outputs):
        fail(
            f"{len(entries)} losses for {outputs} output{'s' if outputs != 1 else ''}; expected "
            f"one per output or one for all of them"
        )
    items = []
    for k, entry in enumerate(entries):
        if not isinstance(entry, dict):
            fail(f"loss {k} is {_short(entry)}, not an object {{'class': ..., 'config': ...}}")
        name = entry.get("class")
        cls = LOSS_CLASSES.get(name) if isinstance(name, str) else None
        if cls is None:
            fail(f"loss {k} is {_short(name)}, not one of ailib.losses ({', '.join(LOSS_CLASSES)})")
        settings = entry.get("config", {})
        where = f"loss {k} ({name}) cannot be built from its config {_short(settings)}"
        if not isinstance(settings, dict) or not all(_plain(v) for v in settings.values()):
            fail(f"{where}: expected an object of plain JSON settings")
        signature = inspect.signature(cls)
        parameters = signature.parameters
        try:
            signature.bind(**settings)
            for key, value in settings.items():
                if isinstance(parameters[key].default, bool) and not isinstance(value, bool):
                    raise TypeError(f"{key} must be true or false, received {value!r}")
            items.append(cls(**settings))
        except (TypeError, ValueError) as exc:
            fail(f"{where}: {exc} (its settings: {', '.join(parameters) or 'none'})")
    return items


#: the longest list a model file's ``meta`` may hold (class names: ImageNet's 21,841 fit)
MAX_META_LIST = 100_000

#: what a model file's ``meta`` may hold, in words
META_RULES = (
    "at most 64 entries, names of up to 64 characters, each value a JSON scalar (strings of up "
    f"to 256 characters) or a list of up to {MAX_META_LIST:,} of them, or of such lists (all "
    f"of config.json within {MAX_CONFIG_BYTES >> 20} MB)"
)


def meta_fault(meta: Any) -> str | None:
    """What makes ``meta`` (a config's ``meta`` entry) unfit for a model file, or None: what
    loading refuses and saving checks first, so that no file is written that cannot be read."""
    if not isinstance(meta, dict) or len(meta) > 64:
        return "meta entry is not an object of at most 64 entries"
    for key, value in meta.items():
        if not isinstance(key, str) or len(key) > 64 or not _plain(value, most=MAX_META_LIST):
            return f"meta entry {_short(key)} is not a short JSON scalar or list: {_short(value)}"
    return None


# -- arrays against the config ----------------------------------------------------------------
def check_arrays(archive: Archive, specs: list[LayerSpec], float_dtype: str) -> None:
    """Every stored array is one the config describes, of the shape its layer needs and the
    config's float dtype; optimizer arrays have the shape of their parameter (step 4)."""
    path, members = archive.path, archive.members
    needed: dict[str, tuple[int, ...]] = {}
    for i, spec in enumerate(specs):
        for kind, shapes in spec.shapes.items():
            for name, shape in shapes.items():
                needed[f"layers.{i}.{kind}.{name}"] = shape
    for key, shape in needed.items():
        member = members.get(key)
        if member is None:
            raise ModelFileError(f"{path}: missing array {key}")
        if member.shape != shape:
            raise ModelFileError(
                f"{path}: {key} has shape {member.shape}, the config says {list(shape)} and "
                f"the layer needs {shape}"
            )
        if member.dtype.name != float_dtype:
            raise ModelFileError(
                f"{path}: {key} has dtype {member.dtype.name}, the config says "
                f"{float_dtype!r} and the model needs {float_dtype}"
            )
    unknown = []
    for key, member in members.items():
        if key in needed or key == CONFIG_MEMBER[:-4]:
            continue
        match = OPTIMIZER_ARRAY.fullmatch(key)
        param = match and needed.get(f"layers.{match[1].replace('.', '.params.', 1)}")
        if param is None:
            unknown.append(key)
        elif member.shape != param or member.dtype.name != float_dtype:
            raise ModelFileError(
                f"{path}: {key} holds {member.dtype.name} {member.shape}, its parameter is "
                f"{float_dtype} {param}"
            )
    if unknown:
        raise ModelFileError(
            f"{path}: arrays not described by the config: {', '.join(sorted(unknown)[:20])}"
        )


def check_finite(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Every layer array (``layers.<i>.<params|buffers>.<name>``) holds finite numbers only (step
    5); optimizer state is not checked."""
    for key, array in arrays.items():
        if not LAYER_ARRAY.fullmatch(key) or array.dtype.kind != "f":
            continue
        bad = array.size - int(np.count_nonzero(np.isfinite(array)))
        if bad:
            raise ModelFileError(
                f"{path}: {key} holds {bad} NaN or infinite values of {array.size}; expected "
                f"finite weights (was the model saved after its training diverged?)"
            )
