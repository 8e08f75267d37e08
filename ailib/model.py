"""Models: `Model`, a graph of layers from `ailib.Input` symbols to outputs, and `Sequential`,
layers in a row (the simplest graph); both trained with the seed document's four steps
(docs/math.md §1; graphs: docs/models.md and docs/math.md §12). The loop itself (`fit`,
`evaluate`, `predict`, callbacks) is `ailib.training`."""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Iterable, Sequence

from . import backends, batches, compiling, graph, losses, optimizers, training
from ._checks import floating_dtype
from ._checks import seed as checked_seed
from .backends import Backend
from .callbacks import Callback
from .graph import Symbol
from .layers.base import Layer
from .training import Progress, TrainingDiverged

__all__ = ["Model", "OutputLosses", "Sequential", "Summary", "TrainingDiverged"]

_ITEMSIZE = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}


class Summary(str):
    """`Model.summary`'s table: a str (print it, or compare it) that shows as the table, not as
    a quoted string, at the interactive prompt and in notebooks."""

    def __repr__(self) -> str:
        return str(self)


def _batch_shape(shape: Any) -> str:
    """``(N, 128)`` for one sample's shape (128,); ``?`` when unknown."""
    if shape is None:
        return "?"
    return "(" + ", ".join(["N", *(str(d) for d in shape)]) + ")"


def _bytes(size: int) -> str:
    for unit in ("bytes", "KiB", "MiB"):
        if size < 1024 or unit == "MiB":
            return f"{size} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


class Model:
    """A graph of layers: the layer calls that lead from ``inputs`` to ``outputs``.

        >>> x = ailib.Input((784,))
        >>> h = ReLU()(Dense(128)(x))
        >>> y = Dense(10)(Add()([h, ReLU()(Dense(128)(h))]))   # a residual block
        >>> model = ailib.Model(x, y, backend="numpy", seed=0)

    Forward runs the layer calls in topological order; backward runs their backprops in the
    reverse order and adds the dE/dX of every path that meets at an array (docs/math.md §12).
    A layer called at several places shares its weights; its gradient is the sum over its uses.

    Each layer's weights are made once, on the model's backend and dtype, when their shapes are
    known: here, at construction, from the constructor's sizes or the shapes flowing from the
    inputs; otherwise at the first forward, from the data (`Layer.build`). With a seed, they are
    drawn from it in that order, so one seed gives the same weights on every backend. A layer
    that already has weights keeps them (moved to the model's backend).

    Args:
        inputs: an `ailib.Input` symbol, or a list of them (then x is a list of arrays, in order).
        outputs: a symbol the inputs lead to, or a list of them (then forward and predict return
            a list, y is a list of targets, and the training error is the sum of one loss per
            output: `fit(loss=[...])`, or one loss for every output).
        backend: a backend name ("numpy", "cupy", "torch", "jax", "array_api_strict") or
            `Backend`; None uses the process-wide default (`ailib.set_backend`).
        dtype: the floating dtype of parameters and activations (float32 by default).
        seed: seed of the initial weights (and of dropout masks); ``seed + 1`` seeds shuffling.
    """

    def __init__(
        self,
        inputs: Symbol | Sequence[Symbol],
        outputs: Symbol | Sequence[Symbol],
        backend: str | Backend | None = None,
        dtype: Any = "float32",
        seed: int | None = None,
    ) -> None:
        kind = type(self).__name__
        seed = checked_seed(seed, kind)
        self.backend = backends.get(backend)
        self.dtype = floating_dtype(self.backend, dtype, kind)
        self.seed = seed
        self.single_input = isinstance(inputs, Symbol)
        self.single_output = isinstance(outputs, Symbol)
        self.inputs = _symbols(inputs, "inputs", kind)
        self.outputs = _symbols(outputs, "outputs", kind)
        for k, symbol in enumerate(self.inputs):
            if symbol.node is not None:
                raise ValueError(
                    f"{kind}: inputs[{k}] is the output of {symbol.node.layer.name}, not an "
                    f"ailib.Input"
                )
        if len({id(s) for s in self.inputs}) != len(self.inputs):
            raise ValueError(f"{kind}: an Input is listed twice in inputs")
        self.nodes = graph.topological_order(self.inputs, self.outputs)
        self._wire()
        for layer in self.layers:
            if layer.backend is not self.backend or layer.dtype != self.dtype:
                layer.to(self.backend, self.dtype)  # no copy for a layer without weights yet
        self.init_rng = None if seed is None else self.backend.random(seed)
        self.shapes: list[Any] = [None] * self.slots
        self.built = False
        self.build([s.shape for s in self.inputs])
        self.rng = self.backend.random(None if seed is None else seed + 1)
        self.loss: Any = None
        self.optimizer: optimizers.Optimizer | None = None
        self.output: Any = None  # the last forward output
        self.training = True
        self.stop_training = False  # a callback sets it to end `fit`
        #: compile each training step into one call where the backend can (None: where it
        #: can, i.e. JAX; False: never); see ailib.compiling
        self.compile_steps: bool | None = None
        self.backprops: list[Any] = []  # one per layer call, from the last forward
        self.plan_key: tuple[bool, ...] | None = None  # see _plan
        self.plan: tuple[list[bool], list[bool]] = ([], [])
        #: what the model was trained on (JSON-serialisable; saved in its file, see `ailib.io`)
        self.meta: dict[str, Any] = {}

    def _wire(self) -> None:
        """Number the arrays of the graph (inputs 0..I-1, then one per node) and list, per node,
        its layer, the numbers it reads, the number it writes and those no later node reads."""
        slot = {id(s): k for k, s in enumerate(self.inputs)}
        for j, node in enumerate(self.nodes):
            slot[id(node.output)] = len(self.inputs) + j
        self.slots = len(self.inputs) + len(self.nodes)
        self.output_slots = [slot[id(s)] for s in self.outputs]
        reads = [[slot[id(s)] for s in node.inbound] for node in self.nodes]
        last = {i: j for j, ins in enumerate(reads) for i in ins}
        keep = set(self.output_slots)
        self.wiring = [
            (
                node.layer,
                ins,
                len(self.inputs) + j,
                sorted({i for i in ins if last[i] == j and i not in keep}),
            )
            for j, (node, ins) in enumerate(zip(self.nodes, reads))
        ]
        self.producer = [None] * len(self.inputs) + list(range(len(self.nodes)))
        self.layers: list[Layer] = list({id(n.layer): n.layer for n in self.nodes}.values())

    def build(self, input_shapes: Sequence[Any] | None = None) -> Model:
        """Make the weights of every layer whose shapes are known, in call order, on the model's
        backend and dtype, from the model's seed; ``input_shapes`` gives one sample's shape per
        input (None where unknown). Layers whose input size is still unknown wait for data:
        `forward` calls this with the shapes of the first batch."""
        shapes: list[Any] = [None] * self.slots
        for k, shape in enumerate(input_shapes or [None] * len(self.inputs)):
            shapes[k] = None if shape is None else tuple(shape)
        for layer, ins, out, _ in self.wiring:
            parts = [shapes[i] for i in ins]
            known = all(p is not None for p in parts)
            shape = (parts if layer.multi_input else parts[0]) if known else None
            if not layer.built and (known or layer.sized):
                layer.build(shape, self.init_rng)
            shapes[out] = layer.compute_output_shape(shape) if known else None
        self.shapes = [new if new is not None else old for new, old in zip(shapes, self.shapes)]
        self.built = all(layer.built for layer in self.layers)
        return self

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(inputs={len(self.inputs)}, outputs={len(self.outputs)}, "
            f"layers=[{', '.join(layer.name for layer in self.layers)}], "
            f"backend={self.backend.spec!r}, dtype={self.backend.dtype_name(self.dtype)!r})"
        )

    def summary(self, input_shape: Any = None) -> Summary:
        """The model as a table: one row per layer call with its output shape (``N`` is the
        batch axis) and parameter count (a shared layer is counted once), the calls it reads
        from (graphs), then the total, its size in memory, the backend and the dtype.

        ``input_shape``: one sample's shape (a list of them for several inputs), for models
        whose input shape is not known yet; an unbuilt model is built for it first (its weights
        drawn from the seed, exactly as the first batch would). Shapes and counts still unknown
        show as ``?``.

        Returns a `Summary`, a str that shows as the table at the prompt; ``print(...)`` it in
        a script."""
        shapes = self.shapes
        if input_shape is not None:
            given = [input_shape] if self.single_input else list(input_shape)
            if len(given) != len(self.inputs):
                raise ValueError(
                    f"{type(self).__name__}.summary: the model has {len(self.inputs)} inputs, "
                    f"received {len(given)} input shapes"
                )
            if self.built:
                shapes = self._flow_shapes(given)
            else:
                shapes = self.build(given).shapes
        graph_view = type(self) is not Sequential
        names = [f"input {k}" if graph_view else "input" for k in range(len(self.inputs))]
        names += [f"{j + 1} {node.layer.name}" for j, node in enumerate(self.nodes)]
        head = ("layer", "output shape", "params") + (("reads",) if graph_view else ())
        rows = [head]
        rows += [
            (names[k], _batch_shape(shapes[k]), "0") + (("",) if graph_view else ())
            for k in range(len(self.inputs))
        ]
        counted: set[int] = set()
        unknown = False
        for (layer, ins, out, _), name in zip(self.wiring, names[len(self.inputs) :]):
            if not layer.built and not layer.sized:
                count, unknown = "?", True
            else:
                count = f"{sum(math.prod(v.shape) for v in layer.params.values()):,}"
                if id(layer) in counted:
                    count += " (shared)"
            counted.add(id(layer))
            row = (name, _batch_shape(shapes[out]), count)
            rows.append(row + ((", ".join(names[i] for i in ins),) if graph_view else ()))
        widths = [max(len(row[c]) for row in rows) for c in range(len(head))]
        align = [str.ljust, str.ljust, str.rjust, str.ljust]

        def line(row: tuple[str, ...]) -> str:
            cells = [align[c](cell, widths[c]) for c, cell in enumerate(row)]
            return "  ".join(cells).rstrip()

        lines = [line(row) for row in rows]
        rule = "-" * max(len(text) for text in lines)
        total = sum(math.prod(v.shape) for v in self.params.values())
        dtype = self.backend.dtype_name(self.dtype)
        size = total * _ITEMSIZE.get(dtype, 4)
        layers = len(self.layers)
        tail = (
            f"total: {'at least ' if unknown else ''}{total:,} parameters ({_bytes(size)}) in "
            f"{layers} layer{'s' if layers != 1 else ''}; backend {self.backend.spec}, {dtype}"
        )
        if unknown:
            tail += "\n(? = not known until the input shape is: summary(input_shape=...) or fit)"
        return Summary("\n".join([lines[0], rule, *lines[1:], rule, tail]))

    def _flow_shapes(self, input_shapes: Sequence[Any]) -> list[Any]:
        """One sample's shape at every slot for ``input_shapes``, without building anything."""
        shapes: list[Any] = [None] * self.slots
        for k, shape in enumerate(input_shapes):
            shapes[k] = None if shape is None else tuple(shape)
        for layer, ins, out, _ in self.wiring:
            parts = [shapes[i] for i in ins]
            if all(p is not None for p in parts):
                shapes[out] = layer.compute_output_shape(parts if layer.multi_input else parts[0])
        return shapes

    @property
    def xp(self) -> Any:
        return self.backend.xp

    # -- the seed's steps --------------------------------------------------------------------
    def forward(self, x: Any) -> Any:
        """Forward propagate: run every layer call in topological order on x (an array, or a
        list with one array per input) and return the output (or list of outputs). Each call's
        backprop is kept for `backward` (the previous pass's are dropped first)."""
        xs = self._input_list(x, "forward")
        if not self.built:
            self.build([graph.sample_shape(a) for a in xs])
        self.backprops = []
        with self.backend.context():  # CuPy: this backend's GPU is the current one
            outs = self._run(xs, self.backprops)
        self.output = outs[0] if self.single_output else outs
        return self.output

    def infer(self, x: Any) -> Any:
        """The output for x, like `forward`, but keeping no backprops: each array is dropped as
        soon as no later call reads it (what `predict` and `evaluate` use)."""
        xs = self._input_list(x, "infer")
        if not self.built:
            self.build([graph.sample_shape(a) for a in xs])
        with self.backend.context():
            compiled = compiling.infer_for(self, self._run_inference)
            outs = compiled(xs) if compiled is not None else self._run(xs, None)
        return outs[0] if self.single_output else outs

    def _input_list(self, x: Any, who: str) -> list[Any]:
        """x as a list of one array per input; ValueError where their number is not the
        model's."""
        if self.single_input:
            return [x]
        return batches.input_list(self, x, f"{type(self).__name__}.{who}")

    def infer_and_score(self, x: Any, y: Any, loss: Any) -> tuple[Any, Any, Any] | None:
        """(Y, E, correct count) for the batch (x, y): `infer`'s output, the loss's value on
        it and the number of rows predicted right (a 0-d integer array, or None where the loss
        does not classify), as one compiled call where the backend compiles inference (JAX:
        `ailib.compiling.evaluation_for`; eagerly, the loss and the count are some twenty
        operations dispatched, and compiled, one by one). None where there is no such call
        (other backends, several outputs, compiling off): the caller scores `infer`'s output."""
        if not self.single_output or not self.built:
            return None
        with self.backend.context():
            compiled = compiling.evaluation_for(self, self._run_inference, loss)
            if compiled is None:
                return None
            return compiled([x] if self.single_input else list(x), y)

    def _run_inference(self, xs: list[Any]) -> list[Any]:
        return self._run(xs, None)

    def _run(self, xs: list[Any], backprops: list[Any] | None) -> list[Any]:
        """The outputs for inputs ``xs``; appends each call's backprop to ``backprops`` unless
        it is None (inference), and drops every array as soon as no later call reads it."""
        values: list[Any] = [None] * self.slots
        values[: len(xs)] = xs
        for layer, ins, out, frees in self.wiring:
            if layer.multi_input:
                values[out], backprop = layer.call([values[i] for i in ins])
            else:
                values[out], backprop = layer.call(values[ins[0]])
            for i in frees:
                values[i] = None
            if backprops is not None:
                backprops.append(backprop)
        return [values[i] for i in self.output_slots]

    def backward(self, grad: Any, *, input_grad: bool = True) -> Any:
        """Backpropagate dE/dY (one per output, as forward returned them) through the calls of
        the last forward in reverse topological order; where paths meet, their dE/dX are added
        (docs/math.md §12). Every layer's gradients are zeroed first, then each call's backprop
        adds its share, so a shared layer gets the sum over its uses. Returns dE/dX of the input
        (a list for several inputs; None for an input that only feeds indices to an Embedding,
        which are not differentiable).

        With ``input_grad=False`` (what training uses) no dE/dX is formed that no parameter
        needs: calls with no trainable parameters at or before them (frozen or parameter-free
        layers) are skipped, the first calls with trainable parameters fill only their
        gradients, and None is returned."""
        grads = [grad] if self.single_output else list(grad)
        if len(self.backprops) != len(self.wiring):
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        if len(grads) != len(self.outputs):
            raise ValueError(
                f"{type(self).__name__}.backward: expected {len(self.outputs)} gradients, one "
                f"per output, received {len(grads)}"
            )
        with self.backend.context():
            return self._backward(grads, input_grad)

    def _backward(self, grads: list[Any], input_grad: bool) -> Any:
        for layer in self.layers:
            layer.zero_grad()
        calls, wants = self._plan(input_grad)
        dvals: list[Any] = [None] * self.slots
        for i, g in zip(self.output_slots, grads):
            dvals[i] = g if dvals[i] is None else dvals[i] + g
        for j in range(len(self.wiring) - 1, -1, -1):
            layer, ins, out, _ = self.wiring[j]
            g, dvals[out] = dvals[out], None
            if g is None or not calls[j]:
                continue
            dx = self.backprops[j](g, input_grad=wants[j])
            if not wants[j]:
                continue
            for i, d in zip(ins, dx if layer.multi_input else (dx,)):
                if d is None:  # an input without a gradient (an Embedding's indices)
                    continue
                dvals[i] = d if dvals[i] is None else dvals[i] + d  # the sum at a fork
        if not input_grad:
            return None
        return dvals[0] if self.single_input else dvals[: len(self.inputs)]

    def _plan(self, input_grad: bool) -> tuple[list[bool], list[bool]]:
        """Per call: whether to run its backprop, and whether it must form dE/dX. Everything,
        for dE/dX of the inputs; else only calls with parameters at or before them, and dE/dX
        only where a call before them has parameters. (Kept while the layers that have
        parameters stay the same.)"""
        n = len(self.wiring)
        if input_grad:
            return [True] * n, [True] * n
        key = tuple(bool(layer.params) and layer.trainable for layer in self.layers)
        if self.plan_key != key:
            needed, upstream = [False] * n, [False] * n
            for j, (layer, ins, _, _) in enumerate(self.wiring):
                for i in ins:
                    producer = self.producer[i]
                    if producer is not None and needed[producer]:
                        upstream[j] = True
                needed[j] = upstream[j] or (bool(layer.params) and layer.trainable)
            self.plan, self.plan_key = (needed, upstream), key
        return self.plan

    def train_step(self, x: Any, y: Any, loss: Any, optimizer: optimizers.Optimizer | str) -> Any:
        """One iteration of the seed's loop on a batch already on the device (`training.train_step`:
        feed input, forward, error, backward, update); returns E (0-d).

        An optimizer given by name is made once and kept (``self.optimizer``) while the same
        name is given, so its state (momenta, moments) carries over from call to call. The
        labels are not checked, as in `training.train_step` (`fit` checks them once)."""
        loss = self.loss_for(loss)
        if isinstance(optimizer, str):
            keep = self.optimizer
            same = keep is not None and optimizers.OPTIMIZERS.get(optimizer.lower()) is type(keep)
            optimizer = keep if same else optimizers.get(optimizer)
        self.loss, self.optimizer = loss, optimizer
        return training.train_step(self, x, y, loss, optimizer)[0]

    def loss_for(self, loss: Any) -> Any:
        """The loss object for ``loss`` (a name or a loss); for several outputs an
        `OutputLosses` (a list is matched to the outputs in order, one loss serves them all)."""
        if self.single_output:
            return losses.get(loss)
        if isinstance(loss, OutputLosses):
            items = loss.items
        elif isinstance(loss, (list, tuple)):
            items = [losses.get(item) for item in loss]
        else:
            items = [losses.get(loss)] * len(self.outputs)
        if len(items) != len(self.outputs):
            raise ValueError(
                f"{type(self).__name__}: expected one loss per output ({len(self.outputs)}), "
                f"received {len(items)}"
            )
        return OutputLosses(items)

    # -- modes -------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> Model:
        """Train mode (dropout active, batch statistics); `eval()` switches it off."""
        self.training = bool(mode)
        for layer in self.layers:
            layer.train(mode)
        return self

    def eval(self) -> Model:
        return self.train(False)

    @property
    def params(self) -> dict[str, Any]:
        """Every parameter as ``{"<layer index>.<name>": array}`` (layers in call order, each
        once however often it is called)."""
        return {
            f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.params.items()
        }

    def save(self, path: str | os.PathLike) -> Any:
        """Write the architecture and weights to one ``.npz`` file; `ailib.load` reads it back
        on any backend (format: `ailib.io`)."""
        from . import io as model_io  # io builds models: imported when needed

        return model_io.save(self, path)

    # -- data at the boundary (used by ailib.batches) -----------------------------------------
    def check_input_shape(self, x: Any, who: str, k: int = 0) -> None:
        """Raise ValueError unless array ``x`` (host or device) fits input k's shape."""
        shape = self.inputs[k].shape
        if shape is not None and (x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape):
            what = "x" if self.single_input else f"x[{k}]"
            raise ValueError(
                f"{who}: the model's input {k} expects {what} of shape (N, "
                f"{', '.join(map(str, shape))}), received {tuple(x.shape)}"
            )

    def reads_indices(self, k: int = 0) -> bool:
        """Whether input k may be an integer array, kept as integers: every layer call that
        reads it takes indices (``takes_indices``, e.g. `Embedding`) and it is not an output
        (a loss reads outputs as floats). So an input that nothing reads takes integers too."""
        if k in self.output_slots:
            return False
        readers = [layer for layer, ins, _, _ in self.wiring if k in ins]
        return all(getattr(layer, "takes_indices", False) for layer in readers)

    def num_classes(self, k: int = 0) -> int | None:
        """The number of classes output k scores, where its shape says (one axis)."""
        shape = self.shapes[self.output_slots[k]]
        return int(shape[0]) if shape is not None and len(shape) == 1 else None

    # -- training and evaluation (ailib.training) ----------------------------------------------
    def _inputs(self, x: Any, who: str) -> Any:
        return batches.model_inputs(self, x, who)

    def fit(
        self,
        x: Any,
        y: Any = None,
        *,
        loss: Any = None,
        optimizer: optimizers.Optimizer | str = "sgd",
        epochs: int = 1,
        batch_size: int = 32,
        shuffle: bool = True,
        validation_data: Any = None,
        callbacks: Sequence[Callback] = (),
        steps_per_epoch: int | None = None,
        accumulate: int = 1,
        drop_last: bool = False,
        log_every: int = 50,
        verbose: bool | int | str = "auto",
        validation_split: float = 0.0,
        progress: Progress | None = None,
        checkpoint: str | os.PathLike | None = None,
        resume: bool = False,
        lr_schedule: Callable[[int], float] | None = None,
        distributed: Any = None,
    ) -> dict[str, list[Any]]:
        """Train on (x, y) arrays, or on an iterable of (x, y) batches, for ``epochs`` passes;
        returns the history. For several inputs x is a list of arrays; for several outputs y is
        a list and ``loss`` a list (one per output) or one loss for all; without ``loss``, the
        model's own (an earlier fit's, or its file's), else softmax cross-entropy. ``distributed=comm``
        trains data-parallel (docs/distributed.md). See `ailib.training.fit` for every
        argument."""
        return training.fit(
            self,
            x,
            y,
            loss=loss,
            optimizer=optimizer,
            epochs=epochs,
            batch_size=batch_size,
            shuffle=shuffle,
            validation_data=validation_data,
            callbacks=callbacks,
            steps_per_epoch=steps_per_epoch,
            accumulate=accumulate,
            drop_last=drop_last,
            log_every=log_every,
            verbose=verbose,
            validation_split=validation_split,
            progress=progress,
            checkpoint=checkpoint,
            resume=resume,
            lr_schedule=lr_schedule,
            distributed=distributed,
        )

    def predict(self, x: Any, batch_size: int | None = training.INFERENCE_BATCH) -> Any:
        """The model's output for x (NumPy or this backend's array; a list for several inputs),
        in eval mode (the mode is restored after), as an array of this backend (a list for
        several outputs). Runs in batches of ``batch_size`` rows (1024 by default; None: all
        at once), keeping nothing for backward, so memory does not grow with the data."""
        return training.predict(self, x, batch_size)

    def evaluate(
        self,
        x: Any,
        y: Any = None,
        *,
        loss: Any = None,
        batch_size: int = training.INFERENCE_BATCH,
    ) -> dict[str, float]:
        """Mean loss and, for classification, accuracy on (x, y) (or an iterable of batches),
        in eval mode (the mode is restored after); a diverged model gives a NaN loss.
        ``loss`` defaults to the one last used by `fit`; without either, only accuracy."""
        return training.evaluate(self, x, y, loss=loss, batch_size=batch_size)


class Sequential(Model):
    """A stack of layers; the output of each is the input of the next: the simplest graph.

    Args:
        layers: the layers, first to last (each once; to call a layer twice, use `Model`).
        backend: a backend name ("numpy", "cupy", "torch", "jax", "array_api_strict") or
            `Backend`; None uses the process-wide default (`ailib.set_backend`).
        dtype: the floating dtype of parameters and activations (float32 by default).
        seed: if given, the layers' initial weights are drawn in order from this seed, so the
            same seed gives the same initial weights on every backend; it also seeds shuffling.
        input_shape: one sample's shape (without the batch axis), e.g. (784,); lets layers
            declared without their input size (``Dense(128)``) be built at once, instead of at
            the first batch.
    """

    def __init__(
        self,
        layers: Iterable[Layer],
        backend: str | Backend | None = None,
        dtype: Any = "float32",
        seed: int | None = None,
        input_shape: Sequence[int] | None = None,
    ) -> None:
        layers = list(layers)
        seen: dict[int, int] = {}
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: item {i} is {type(layer).__name__}, not a Layer")
            if id(layer) in seen:
                raise ValueError(
                    f"Sequential: item {i} is the same {layer.name} object as item "
                    f"{seen[id(layer)]}; to call a layer twice, build an ailib.Model"
                )
            seen[id(layer)] = i
        x = graph.Input(input_shape) if input_shape is not None else Symbol(None)
        y = x
        for layer in layers:
            y = graph.connect(layer, y)
        super().__init__(x, y, backend=backend, dtype=dtype, seed=seed)

    def __repr__(self) -> str:
        inner = ",\n".join(f"  {layer!r}" for layer in self.layers)
        return (
            f"Sequential([\n{inner}\n], backend={self.backend.spec!r}, "
            f"dtype={self.backend.dtype_name(self.dtype)!r})"
        )

    def check_input_shape(self, x: Any, who: str, k: int = 0) -> None:
        first = self.layers[0] if self.layers else None
        features = getattr(first, "in_features", None)
        if features is not None and (x.ndim != 2 or x.shape[1] != features):
            raise ValueError(
                f"{who}: the first layer ({first.name}) expects x of shape (N, {features}), "
                f"received {tuple(x.shape)}"
            )
        super().check_input_shape(x, who, k)

    def num_classes(self, k: int = 0) -> int | None:
        for layer in reversed(self.layers):
            if hasattr(layer, "out_features"):
                return int(layer.out_features)
        return super().num_classes(k)


class OutputLosses:
    """The error of a model with several outputs: E = Σₖ Eₖ(Ŷₖ, Yₖ), one loss per output, so
    dE/dŶₖ = dEₖ/dŶₖ. Used like one loss on lists: ``value_and_grad([Ŷ₁, …], [Y₁, …])``
    returns (E, [dE/dŶ₁, …]). (Accuracy is not reported for such models.)"""

    accepts_labels = False

    def __init__(self, items: Sequence[losses.Loss]) -> None:
        self.items = list(items)

    @property
    def name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        return f"OutputLosses({self.items!r})"

    def __call__(self, y_pred: Sequence[Any], y_true: Sequence[Any]) -> Any:
        return self.value_and_grad(y_pred, y_true)[0]

    def value_and_grad(
        self, y_pred: Sequence[Any], y_true: Sequence[Any], *, check: bool = True
    ) -> tuple[Any, list[Any]]:
        total, grads = None, []
        for loss, pred, target in zip(self.items, y_pred, y_true):
            error, grad = loss.value_and_grad(pred, target, check=check)
            total = error if total is None else total + error
            grads.append(grad)
        return total, grads


def _symbols(value: Any, what: str, who: str) -> list[Symbol]:
    items = [value] if isinstance(value, Symbol) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise TypeError(f"{who}: {what} must be a Symbol or a non-empty list of them")
    for k, item in enumerate(items):
        if not isinstance(item, Symbol):
            raise TypeError(
                f"{who}: {what}[{k}] is {type(item).__name__}, not a Symbol (from "
                f"ailib.Input or a layer called on one)"
            )
    return list(items)
