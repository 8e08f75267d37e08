"""Models: `Model`, a graph of layers from `ailib.Input` symbols to outputs, and `Sequential`,
layers in a row (the simplest graph); both trained with the seed document's four steps
(docs/math.md §1; graphs: docs/models.md and docs/math.md §12)."""

from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, Iterable, Sequence

from . import backends, graph, losses, optimizers
from .backends import Backend
from .graph import Symbol
from .layers.base import Layer

Progress = Callable[[dict[str, Any]], None]


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite during `fit`; the message gives the step."""


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
        self.backend = backends.get(backend)
        self.dtype = self.backend.dtype(dtype)
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
        self.output: Any = None  # the last forward output, kept for metrics
        self.backprops: list[Any] = []  # one per layer call, from the last forward

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
            f"backend={self.backend.name!r}, dtype={self.backend.dtype_name(self.dtype)!r})"
        )

    def summary(self) -> str:
        """A table of the layer calls in order: output shape (one sample), parameter count and
        the calls each reads from; then the total. (Returned, not printed.)"""
        names = [f"input {k}" for k in range(len(self.inputs))]
        names += [f"{j + 1} {node.layer.name}" for j, node in enumerate(self.nodes)]
        rows = [("call", "output shape", "params", "reads")]
        rows += [(names[k], str(self.shapes[k] or "?"), "0", "") for k in range(len(self.inputs))]
        counted: set[int] = set()
        for (layer, ins, out, _), name in zip(self.wiring, names[len(self.inputs) :]):
            count = sum(math.prod(v.shape) for v in layer.params.values())
            shared = id(layer) in counted
            counted.add(id(layer))
            rows.append(
                (
                    name,
                    str(self.shapes[out] or "?"),
                    f"{count} (shared)" if shared else str(count),
                    ", ".join(names[i] for i in ins),
                )
            )
        widths = [max(len(row[c]) for row in rows) for c in range(4)]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
        total = sum(math.prod(v.shape) for v in self.params.values())
        lines.insert(1, "-" * len(lines[0]))
        lines.append(f"total: {total} parameters in {len(self.layers)} layers")
        return "\n".join(lines)

    @property
    def xp(self) -> Any:
        return self.backend.xp

    # -- the seed's steps --------------------------------------------------------------------
    def forward(self, x: Any) -> Any:
        """Forward propagate: run every layer call in topological order on x (an array, or a
        list with one array per input) and return the output (or list of outputs). Each call's
        backprop is kept for `backward` (the previous pass's are dropped first)."""
        xs = [x] if self.single_input else list(x)
        if not self.built:
            self.build([graph.sample_shape(a) for a in xs])
        self.backprops = []
        outs = self._run(xs, self.backprops)
        self.output = outs[0] if self.single_output else outs
        return self.output

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
        needs: calls with no parameters at or before them are skipped, the first calls with
        parameters fill only their gradients, and None is returned."""
        grads = [grad] if self.single_output else list(grad)
        if len(self.backprops) != len(self.wiring):
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        if len(grads) != len(self.outputs):
            raise ValueError(
                f"{type(self).__name__}.backward: expected {len(self.outputs)} gradients, one "
                f"per output, received {len(grads)}"
            )
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
        only where a call before them has parameters."""
        n = len(self.wiring)
        if input_grad:
            return [True] * n, [True] * n
        needed, upstream = [False] * n, [False] * n
        for j, (layer, ins, _, _) in enumerate(self.wiring):
            upstream[j] = any(
                self.producer[i] is not None and needed[self.producer[i]] for i in ins
            )
            needed[j] = upstream[j] or bool(layer.params)
        return needed, upstream

    def train_step(self, x: Any, y: Any, loss: Any, optimizer: optimizers.Optimizer | str) -> Any:
        """One iteration of the seed's loop on a batch already on the device; returns E (0-d)."""
        loss, optimizer = self._losses(loss), optimizers.get(optimizer)
        y_pred = self.forward(x)  # 1-2. feed input, forward propagate
        error, grad = loss.value_and_grad(y_pred, y, check=False)  # 3. calculate error (and dE/dY)
        self.backward(grad, input_grad=False)  # 4. backpropagate
        optimizer.step(self.layers)  #    and step the weights
        return error

    def _losses(self, loss: Any) -> Any:
        """The loss object; for several outputs an `OutputLosses` (a list is matched to the
        outputs in order, a single loss serves every output)."""
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
        from . import io as model_io  # io imports this module

        return model_io.save(self, path)

    # -- data at the boundary ----------------------------------------------------------------
    def _inputs(self, x: Any, who: str) -> Any:
        """x as the model's inputs: one array (or, for several inputs, a list of arrays with as
        many samples each) of the model's dtype on its device."""
        if self.single_input:
            return self._input(x, who, 0)
        count = len(self.inputs)
        if not isinstance(x, (list, tuple)) or len(x) != count:
            raise ValueError(
                f"{who}: the model has {count} inputs; pass x as a list of {count} arrays, "
                f"received {type(x).__name__}"
                + (f" of {len(x)}" if isinstance(x, (list, tuple)) else "")
            )
        xs = [self._input(a, who, k) for k, a in enumerate(x)]
        sizes = [a.shape[0] for a in xs]
        if len(set(sizes)) > 1:
            raise ValueError(f"{who}: the inputs have different numbers of samples: {sizes}")
        return xs

    def _input(self, x: Any, who: str, k: int) -> Any:
        """Input k as a floating array of the model's dtype on its device; NumPy arrays are moved
        once, arrays of another backend or device are refused. An input read only by layers
        that take indices (`Embedding`) may be an integer array, kept as it is."""
        be = self.backend
        what = "x" if self.single_input else f"x[{k}]"
        if (
            type(x).__module__ == "numpy"
            and getattr(x, "dtype", None) is not None
            and x.dtype.kind == "f"
            and not be.owns(x)
        ):
            x = be.asarray(x, dtype=self.dtype)  # cast on the host: no float64 copy on the device
        x = self._own(x, who, what)
        if self.xp.isdtype(x.dtype, "integral") and self._reads_indices(k):
            self._check_input_shape(x, who, k)
            return x
        if not be.is_floating(x.dtype):
            raise TypeError(
                f"{who}: {what} has dtype {be.dtype_name(x.dtype)} but the model needs floats "
                f"({be.dtype_name(self.dtype)}); scale it first, e.g. "
                f"ailib.datasets.to_float(x) for uint8 pixels"
            )
        if x.dtype != self.dtype:
            x = self.xp.astype(x, self.dtype)
        self._check_input_shape(x, who, k)
        return x

    def _reads_indices(self, k: int) -> bool:
        """Whether every layer call that reads input k takes indices (``takes_indices``)."""
        readers = [layer for layer, ins, _, _ in self.wiring if k in ins]
        return bool(readers) and all(getattr(la, "takes_indices", False) for la in readers)

    def _check_input_shape(self, x: Any, who: str, k: int) -> None:
        shape = self.inputs[k].shape
        if shape is not None and (x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape):
            what = "x" if self.single_input else f"x[{k}]"
            raise ValueError(
                f"{who}: the model's input {k} expects {what} of shape (N, "
                f"{', '.join(map(str, shape))}), received {tuple(x.shape)}"
            )

    def _targets(self, y: Any, n: int, loss: Any, who: str) -> Any:
        if self.single_output:
            return self._target(y, n, loss, who, 0)
        count = len(self.outputs)
        if not isinstance(y, (list, tuple)) or len(y) != count:
            raise ValueError(
                f"{who}: the model has {count} outputs; pass y as a list of {count} target "
                f"arrays, received {type(y).__name__}"
            )
        return [self._target(t, n, item, who, k) for k, (t, item) in enumerate(zip(y, loss.items))]

    def _target(self, y: Any, n: int, loss: losses.Loss, who: str, k: int) -> Any:
        be = self.backend
        y = self._own(y, who, "y" if self.single_output else f"y[{k}]")
        if y.shape[0] != n:
            raise ValueError(f"{who}: x has {n} samples but y has {y.shape[0]}")
        if self.xp.isdtype(y.dtype, "integral"):
            if not loss.accepts_labels:
                y = self.xp.astype(y, self.dtype)
            else:
                classes = self._num_outputs(k)
                if classes is not None:
                    losses.check_labels(self.xp, y, classes, who)
                if y.dtype != self.xp.int64:
                    y = self.xp.astype(y, self.xp.int64)
        elif y.dtype != self.dtype:
            y = self.xp.astype(y, self.dtype)
        return be.asarray(y)

    def _own(self, a: Any, who: str, what: str) -> Any:
        be = self.backend
        if be.owns(a):
            return a
        if type(a).__module__ == "numpy" or isinstance(a, (list, tuple)):
            return be.asarray(a)
        where = f"{type(a).__module__}.{type(a).__name__}"
        if be._is_array(a):
            where += f" on device {be.device_of(a)!r}"
        raise TypeError(
            f"{who}: {what} must be a NumPy array or an array of backend {be.name!r} on device "
            f"{be.device!r}, received {where}"
        )

    def _num_outputs(self, k: int = 0) -> int | None:
        """The number of classes output k scores, where its shape says (one axis)."""
        shape = self.shapes[self.output_slots[k]]
        return int(shape[0]) if shape is not None and len(shape) == 1 else None

    def _count(self, x: Any) -> int:
        return (x if self.single_input else x[0]).shape[0]

    def _batches(self, n: int, batch_size: int, order: Any = None) -> Iterable[tuple[int, Any]]:
        """(batch length, index) pairs: a slice, or a block of the device permutation ``order``."""
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            yield stop - start, slice(start, stop) if order is None else order[start:stop]

    def _take(self, a: Any, index: Any) -> Any:
        if isinstance(a, list):
            return [self._take(item, index) for item in a]
        if isinstance(index, slice):
            return a[index, ...]
        return self.xp.take(a, index, axis=0)

    # -- training and evaluation -------------------------------------------------------------
    def fit(
        self,
        x: Any,
        y: Any,
        *,
        loss: Any = "softmax_cross_entropy",
        optimizer: optimizers.Optimizer | str = "sgd",
        epochs: int = 1,
        batch_size: int = 32,
        shuffle: bool = True,
        validation_data: tuple[Any, Any] | None = None,
        verbose: bool = False,
        progress: Progress | None = None,
        log_every: int = 50,
        checkpoint: str | os.PathLike | None = None,
        resume: bool = False,
        lr_schedule: Callable[[int], float] | None = None,
    ) -> dict[str, list[float]]:
        """Train on (x, y) for ``epochs`` passes of mini-batches; returns the history.

        x and y may be NumPy arrays (moved to the device once, here) or arrays of this backend.
        Each epoch shuffles on the device (one permutation per epoch, drawn from the model's seed),
        then runs `train_step` per batch. Losses stay on the device and are read back every
        ``log_every`` steps and at the end of the epoch, never per step; a NaN or infinite loss
        stops training with `TrainingDiverged` naming the exact epoch and step.

        With ``checkpoint`` (a path), the model, the optimizer's state, the epoch and the history
        are saved there after every epoch (`ailib.io.save_checkpoint`). With ``resume=True`` too,
        a checkpoint already there is restored first and training continues after its epoch up
        to ``epochs`` (the same result as an uninterrupted run); without one it starts afresh.

        ``lr_schedule(epoch)`` (epochs count from 1), if given, sets the optimizer's learning rate
        at the start of each epoch (e.g. `ailib.optimizers.cosine_schedule`); history gains "lr".

        Returns:
            ``{"loss": [...], "accuracy": [...], "val_loss": [...], "val_accuracy": [...]}``, one
            entry per epoch (accuracy only for classification losses).
        """
        who = f"{type(self).__name__}.fit"
        if epochs < 1 or batch_size < 1 or log_every < 1:
            raise ValueError(
                f"{who}: epochs, batch_size and log_every must be positive, received "
                f"{epochs}, {batch_size}, {log_every}"
            )
        self.loss = loss = self._losses(loss)
        self.optimizer = optimizer = optimizers.get(optimizer)
        x = self._inputs(x, who)
        n = self._count(x)
        if n == 0:
            raise ValueError(f"{who}: x has no samples")
        y = self._targets(y, n, loss, who)
        if validation_data is not None:
            vx = self._inputs(validation_data[0], who + " (validation_data)")
            vy = self._targets(
                validation_data[1], self._count(vx), loss, who + " (validation_data)"
            )
        history: dict[str, list[float]] = {}
        done = 0
        if checkpoint is not None:
            from . import io as model_io  # io imports this module

            if resume and os.path.exists(checkpoint):
                done, history = model_io.restore_checkpoint(self, checkpoint, optimizer)
        steps = math.ceil(n / batch_size)
        for epoch in range(done + 1, epochs + 1):
            if lr_schedule is not None:
                optimizer.lr = float(lr_schedule(epoch))
            self.train()
            start = time.perf_counter()
            order = self.rng.permutation(n) if shuffle else None
            meter = _Meter(self, loss)
            for step, (size, index) in enumerate(self._batches(n, batch_size, order), 1):
                xb, yb = self._take(x, index), self._take(y, index)
                meter.add(self.train_step(xb, yb, loss, optimizer), self.output, yb, size)
                if step % log_every == 0 or step == steps:
                    meter.read(epoch, step, accuracy=step == steps)
                    if progress is not None:
                        progress(
                            {
                                "event": "step",
                                "epoch": epoch,
                                "epochs": epochs,
                                "step": step,
                                "steps": steps,
                                "loss": meter.mean_loss,
                                "samples": meter.samples,
                                "seconds": time.perf_counter() - start,
                            }
                        )
            record = {"loss": meter.mean_loss}
            if lr_schedule is not None:
                record["lr"] = optimizer.lr
            if meter.accuracy is not None:
                record["accuracy"] = meter.accuracy
            if validation_data is not None:
                val = self.evaluate(vx, vy, loss=loss)
                record.update({f"val_{k}": v for k, v in val.items()})
            record["seconds"] = time.perf_counter() - start
            for key, value in record.items():
                history.setdefault(key, []).append(value)
            if checkpoint is not None:
                model_io.save_checkpoint(self, checkpoint, optimizer, epoch, history)
            if progress is not None:
                progress({"event": "epoch_end", "epoch": epoch, "epochs": epochs, **record})
            if verbose:
                print(
                    f"epoch {epoch}/{epochs}: "
                    + ", ".join(f"{k}={v:.4f}" for k, v in record.items()),
                    flush=True,
                )
        return history

    def predict(self, x: Any, batch_size: int | None = None) -> Any:
        """The model's output for x (NumPy or this backend's array; a list for several inputs),
        in eval mode, as an array of this backend (a list for several outputs). With
        ``batch_size``, runs in batches to bound memory."""
        x = self._inputs(x, f"{type(self).__name__}.predict")
        self.eval()
        try:
            n = self._count(x)
            if batch_size is None or n <= batch_size:
                return self._infer(x)
            outs = [self._infer(self._take(x, idx)) for _, idx in self._batches(n, batch_size)]
            if self.single_output:
                return self.xp.concat(outs, axis=0)
            return [self.xp.concat(list(parts), axis=0) for parts in zip(*outs)]
        finally:
            self.train()

    def _infer(self, x: Any) -> Any:
        """The output for x without keeping backprops (each array is dropped once used)."""
        xs = [x] if self.single_input else x
        if not self.built:
            self.build([graph.sample_shape(a) for a in xs])
        outs = self._run(xs, None)
        return outs[0] if self.single_output else outs

    def evaluate(
        self, x: Any, y: Any, *, loss: Any = None, batch_size: int = 1024
    ) -> dict[str, float]:
        """Mean loss and, for classification, accuracy on (x, y), in eval mode.

        ``loss`` defaults to the one last used by `fit`; without either, only accuracy is given.
        """
        who = f"{type(self).__name__}.evaluate"
        loss = self._losses(loss) if loss is not None else self.loss
        x = self._inputs(x, who)
        if loss is None and not self.single_output:
            loss = self._losses("softmax_cross_entropy")
        y = self._targets(y, self._count(x), loss or losses.SoftmaxCrossEntropy(), who)
        meter = _Meter(self, loss)
        self.eval()
        try:
            for size, idx in self._batches(self._count(x), batch_size):
                yb = self._take(y, idx)
                out = self._infer(self._take(x, idx))
                value = loss.value_and_grad(out, yb, check=False)[0] if loss is not None else None
                meter.add(value, out, yb, size)
        finally:
            self.train()
        meter.read(0, 0)
        result = {}
        if loss is not None:
            result["loss"] = meter.mean_loss
        if meter.accuracy is not None:
            result["accuracy"] = meter.accuracy
        return result


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
            f"Sequential([\n{inner}\n], backend={self.backend.name!r}, "
            f"dtype={self.backend.dtype_name(self.dtype)!r})"
        )

    def _check_input_shape(self, x: Any, who: str, k: int) -> None:
        first = self.layers[0] if self.layers else None
        features = getattr(first, "in_features", None)
        if features is not None and (x.ndim != 2 or x.shape[1] != features):
            raise ValueError(
                f"{who}: the first layer ({first.name}) expects x of shape (N, {features}), "
                f"received {tuple(x.shape)}"
            )
        super()._check_input_shape(x, who, k)

    def _num_outputs(self, k: int = 0) -> int | None:
        for layer in reversed(self.layers):
            if hasattr(layer, "out_features"):
                return int(layer.out_features)
        return super()._num_outputs(k)


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


class _Meter:
    """Running sums of loss and correct predictions kept on the device; read back on request."""

    def __init__(self, model: Model, loss: Any) -> None:
        self.xp, self.backend = model.xp, model.backend
        self.who = f"{type(model).__name__}.fit"
        self.pending: list[Any] = []  # per-step mean losses not yet read back
        self.sizes: list[int] = []
        self.loss_sum = 0.0
        self.samples = 0
        self.read_samples = 0
        self.correct: Any = None
        self.classify = loss is None or loss.accepts_labels
        self.binary = isinstance(loss, losses.BinaryCrossEntropy)
        self.accuracy: float | None = None
        self.mean_loss = math.nan

    def add(self, value: Any, y_pred: Any, y_true: Any, size: int) -> None:
        if value is not None:
            self.pending.append(value)
            self.sizes.append(size)
        self.samples += size
        hits = self._hits(y_pred, y_true)
        if hits is not None:
            self.correct = hits if self.correct is None else self.correct + hits

    def _hits(self, y_pred: Any, y_true: Any) -> Any:
        xp = self.xp
        if self.binary and y_pred.shape[-1] == 1:
            return xp.sum(xp.astype((y_pred > 0.5) == (y_true > 0.5), xp.int64))
        if not self.classify or y_pred.ndim != 2 or y_pred.shape[1] < 2:
            return None
        guess = xp.argmax(y_pred, axis=1)
        truth = y_true if y_true.ndim == 1 else xp.argmax(y_true, axis=1)
        return xp.sum(xp.astype(guess == truth, xp.int64))

    def read(self, epoch: int, step: int, accuracy: bool = True) -> None:
        """Read pending losses back (one transfer) and, if ``accuracy``, the count of correct
        predictions (one more); raise TrainingDiverged at a non-finite loss."""
        if self.pending:
            values = self.backend.to_host(self.xp.stack(self.pending)).tolist()
            first = step - len(values) + 1
            for k, (value, size) in enumerate(zip(values, self.sizes)):
                if not math.isfinite(value):
                    raise TrainingDiverged(
                        f"{self.who}: the loss became {value} at epoch {epoch}, step "
                        f"{first + k}; lower the learning rate or check the inputs for NaN/inf"
                    )
                self.loss_sum += value * size
                self.read_samples += size
            self.pending, self.sizes = [], []
            self.mean_loss = self.loss_sum / self.read_samples
        if accuracy and self.correct is not None:
            self.accuracy = int(self.backend.to_host(self.correct)) / max(1, self.samples)
