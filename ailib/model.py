"""`Sequential`: layers in a row, trained with the seed document's four steps (docs/math.md §1)."""

from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, Iterable

from . import backends, losses, optimizers
from .backends import Backend
from .layers.base import Layer

Progress = Callable[[dict[str, Any]], None]


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite during `Sequential.fit`; the message gives the step."""


class Sequential:
    """A stack of layers; the output of each is the input of the next.

    Args:
        layers: the layers, first to last. They are moved to ``backend`` and cast to ``dtype``.
        backend: a backend name ("numpy", "cupy", "torch", "jax", "array_api_strict") or
            `Backend`; None uses the process-wide default (`ailib.set_backend`).
        dtype: the floating dtype of parameters and activations (float32 by default).
        seed: if given, every layer's parameters are re-drawn in order from this seed, so the same
            seed gives the same initial weights on every backend; it also seeds shuffling.
    """

    def __init__(
        self,
        layers: Iterable[Layer],
        backend: str | Backend | None = None,
        dtype: Any = "float32",
        seed: int | None = None,
    ) -> None:
        self.backend = backends.get(backend)
        self.dtype = self.backend.dtype(dtype)
        self.layers: list[Layer] = list(layers)
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: item {i} is {type(layer).__name__}, not a Layer")
            if layer.backend is not self.backend or layer.dtype != self.dtype:
                layer.to(self.backend, self.dtype)
        self.seed = seed
        if seed is not None:
            rng = self.backend.random(seed)
            for layer in self.layers:
                layer.reset_parameters(rng)
        self.rng = self.backend.random(None if seed is None else seed + 1)
        self.loss: losses.Loss | None = None
        self.optimizer: optimizers.Optimizer | None = None
        self.output: Any = None  # the last forward output, kept for metrics
        #: what the model was trained on (JSON-serialisable; saved in its file, see `ailib.io`)
        self.meta: dict[str, Any] = {}

    def __repr__(self) -> str:
        inner = ",\n".join(f"  {layer!r}" for layer in self.layers)
        return (
            f"Sequential([\n{inner}\n], backend={self.backend.name!r}, "
            f"dtype={self.backend.dtype_name(self.dtype)!r})"
        )

    @property
    def xp(self) -> Any:
        return self.backend.xp

    # -- the seed's steps --------------------------------------------------------------------
    def forward(self, x: Any) -> Any:
        """Forward propagate: Y = layerₖ(… layer₁(X)); each layer keeps what backward needs."""
        with self.backend.context():  # CuPy: this backend's GPU is the current one
            for layer in self.layers:
                x = layer.forward(x)
        self.output = x
        return x

    def backward(self, grad: Any, *, input_grad: bool = True) -> Any:
        """Backpropagate dE/dY from the last layer to the first; returns dE/dX of the input.

        With ``input_grad=False`` (what training uses) no dE/dX of the input is formed: the
        first layer with parameters fills only its gradients (`Layer.backward_params`), the
        layers before it are skipped, and None is returned."""
        with self.backend.context():
            return self._backward(grad, input_grad)

    def _backward(self, grad: Any, input_grad: bool) -> Any:
        layers = self.layers
        if input_grad:
            for layer in reversed(layers):
                grad = layer.backward(grad)
            return grad
        first = next((i for i, layer in enumerate(layers) if layer.params), len(layers))
        for layer in reversed(layers[first + 1 :]):
            grad = layer.backward(grad)
        if first < len(layers):
            layers[first].backward_params(grad)
        return None

    def train_step(
        self, x: Any, y: Any, loss: losses.Loss | str, optimizer: optimizers.Optimizer | str
    ) -> Any:
        """One iteration of the seed's loop on a batch already on the device; returns E (0-d)."""
        loss, optimizer = losses.get(loss), optimizers.get(optimizer)
        with self.backend.context():  # CuPy: kernels and allocations on this backend's GPU
            y_pred = self.forward(x)  # 1-2. feed input, forward propagate
            error, grad = loss.value_and_grad(y_pred, y, check=False)  # 3. calculate error
            self.backward(grad, input_grad=False)  # 4. backpropagate
            optimizer.step(self.layers)  #    and step the weights
        return error

    # -- modes -------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> Sequential:
        """Train mode (dropout active, batch statistics); `eval()` switches it off."""
        for layer in self.layers:
            layer.train(mode)
        return self

    def eval(self) -> Sequential:
        return self.train(False)

    @property
    def params(self) -> dict[str, Any]:
        """Every parameter as ``{"<layer index>.<name>": array}``."""
        return {
            f"{i}.{k}": v for i, layer in enumerate(self.layers) for k, v in layer.params.items()
        }

    def save(self, path: str | os.PathLike) -> Any:
        """Write the architecture and weights to one ``.npz`` file; `ailib.load` reads it back
        on any backend (format: `ailib.io`)."""
        from . import io as model_io  # io imports this module

        return model_io.save(self, path)

    # -- data at the boundary ----------------------------------------------------------------
    def _inputs(self, x: Any, who: str, check_values: bool = True) -> Any:
        """``x`` checked, still where it was (`_device` moves it): NumPy arrays and lists hold
        real floats without NaN or inf (checked on the host), of a shape that fits the first
        layer. Arrays of this backend are checked with two reductions and one read back
        (``check_values=False`` skips that); arrays of another backend or device are refused."""
        be = self.backend
        host = backends.host_numbers(x, who, "x")
        x = host if host is not None else self._own(x, who, "x")
        floating = x.dtype.kind == "f" if host is not None else be.is_floating(x.dtype)
        if not floating:
            name = x.dtype.name if host is not None else be.dtype_name(x.dtype)
            raise TypeError(
                f"{who}: x has dtype {name} but the model needs floats "
                f"({be.dtype_name(self.dtype)}); scale it first, e.g. "
                f"ailib.datasets.to_float(x) for uint8 pixels"
            )
        first = self.layers[0] if self.layers else None
        features = getattr(first, "in_features", None)
        if features is not None and (x.ndim != 2 or x.shape[1] != features):
            raise ValueError(
                f"{who}: the first layer ({first.name}) expects x of shape (N, {features}), "
                f"received {tuple(x.shape)}"
            )
        if host is not None or check_values:
            self._finite(x, who, "x")
        return x

    def _device(self, a: Any, dtype: Any) -> Any:
        """A checked array on the model's device as ``dtype`` (NumPy arrays are cast on the
        host first: no float64 copy on the device)."""
        return self.backend.asarray(a, dtype=dtype)

    def _targets(
        self, y: Any, n: int, loss: losses.Loss, who: str, check_values: bool = True
    ) -> tuple[Any, Any]:
        """(``y`` checked, the dtype the loss needs it in): int64 labels in range of the model's
        outputs, or floats of the model's dtype without NaN or inf. NumPy arrays and lists are
        checked on the host and stay there (`_device` moves them)."""
        be = self.backend
        host = backends.host_numbers(y, who, "y")
        y = host if host is not None else self._own(y, who, "y")
        if y.ndim == 0 or y.shape[0] != n:
            raise ValueError(f"{who}: x has {n} samples but y has {y.shape[0] if y.ndim else 0}")
        integral = (
            (y.dtype.kind in "iu") if host is not None else be.xp.isdtype(y.dtype, "integral")
        )
        floating = (y.dtype.kind == "f") if host is not None else be.is_floating(y.dtype)
        classes = self._num_outputs() if loss.accepts_labels else None
        if integral and loss.accepts_labels:
            if y.ndim != 1:
                raise ValueError(
                    f"{who}: integer y holds class labels and must have shape ({n},), received "
                    f"{tuple(y.shape)}"
                )
            if classes is not None and n and (host is not None or check_values):
                low, high = backends.extremes(be, y)
                if low < 0 or high >= classes:
                    raise ValueError(
                        f"{who}: y's labels must lie in [0, {classes - 1}] for {classes} classes, "
                        f"received labels in [{low}, {high}] (the model has {classes} outputs)"
                    )
            return y, be.index_dtype
        if floating and loss.accepts_labels and classes is not None:
            if y.ndim != 2 or y.shape[1] != classes:
                raise ValueError(
                    f"{who}: float y must be one-hot or probability rows of shape ({n}, "
                    f"{classes}) for {loss.name}, received {tuple(y.shape)}; pass integer "
                    f"class labels of shape ({n},) instead"
                )
        if floating and n and (host is not None or check_values):
            self._finite(y, who, "y")
        return y, self.dtype

    def _finite(self, a: Any, who: str, what: str) -> None:
        """Raise ValueError naming ``what`` when the floating array ``a`` holds NaN or inf."""
        if math.prod(a.shape) == 0:
            return
        low, high = backends.extremes(self.backend, a)
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError(
                f"{who}: {what} holds {'NaN' if math.isnan(low) or math.isnan(high) else 'inf'} "
                f"values (its range is [{low}, {high}]); remove or impute them first"
            )

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

    def _num_outputs(self) -> int | None:
        for layer in reversed(self.layers):
            if hasattr(layer, "out_features"):
                return int(layer.out_features)
        return None

    def _batches(self, n: int, batch_size: int, order: Any = None) -> Iterable[tuple[int, Any]]:
        """(batch length, index) pairs: a slice, or a block of the device permutation ``order``."""
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            yield stop - start, slice(start, stop) if order is None else order[start:stop]

    def _take(self, a: Any, index: Any) -> Any:
        if isinstance(index, slice):
            return a[index, ...]
        return self.xp.take(a, index, axis=0)

    # -- training and evaluation -------------------------------------------------------------
    def fit(
        self,
        x: Any,
        y: Any,
        *,
        loss: losses.Loss | str = "softmax_cross_entropy",
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
        who = "Sequential.fit"
        if epochs < 1 or batch_size < 1 or log_every < 1:
            raise ValueError(
                f"{who}: epochs, batch_size and log_every must be positive, received "
                f"{epochs}, {batch_size}, {log_every}"
            )
        self.loss = loss = losses.get(loss)
        self.optimizer = optimizer = optimizers.get(optimizer)
        x = self._inputs(x, who)
        n = x.shape[0]
        if n == 0:
            raise ValueError(f"{who}: x has no samples")
        y, y_dtype = self._targets(y, n, loss, who)
        if validation_data is not None:
            vx = self._inputs(validation_data[0], who + " (validation_data)")
            vy, vy_dtype = self._targets(
                validation_data[1], vx.shape[0], loss, who + " (validation_data)"
            )
            vx, vy = self._device(vx, self.dtype), self._device(vy, vy_dtype)
        x, y = self._device(x, self.dtype), self._device(y, y_dtype)  # all checked: now move
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
                val = self._evaluate(vx, vy, loss, 1024)
                if not math.isfinite(val.get("loss", 0.0)):
                    raise TrainingDiverged(
                        f"{who}: the validation loss became {val['loss']} after epoch {epoch}; "
                        f"lower the learning rate"
                    )
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
        """The model's output for x (NumPy or this backend's array), in eval mode, as an array of
        this backend. With ``batch_size``, runs in batches to bound memory."""
        x = self._device(self._inputs(x, "Sequential.predict", check_values=False), self.dtype)
        self.eval()
        try:
            if batch_size is None or x.shape[0] <= batch_size:
                return self.forward(x)
            outs = [
                self.forward(self._take(x, idx)) for _, idx in self._batches(x.shape[0], batch_size)
            ]
            return self.xp.concat(outs, axis=0)
        finally:
            self.train()

    def evaluate(
        self, x: Any, y: Any, *, loss: losses.Loss | str | None = None, batch_size: int = 1024
    ) -> dict[str, float]:
        """Mean loss and, for classification, accuracy on (x, y), in eval mode.

        ``loss`` defaults to the one last used by `fit`; without either, only accuracy is given.
        """
        who = "Sequential.evaluate"
        loss = losses.get(loss) if loss is not None else self.loss
        x = self._inputs(x, who)
        y, y_dtype = self._targets(y, x.shape[0], loss or losses.SoftmaxCrossEntropy(), who)
        return self._evaluate(
            self._device(x, self.dtype), self._device(y, y_dtype), loss, batch_size
        )

    def _evaluate(
        self, x: Any, y: Any, loss: losses.Loss | None, batch_size: int
    ) -> dict[str, float]:
        """`evaluate` on inputs already checked and on the device."""
        meter = _Meter(self, loss)
        self.eval()
        try:
            for size, idx in self._batches(x.shape[0], batch_size):
                yb = self._take(y, idx)
                out = self.forward(self._take(x, idx))
                value = loss.value_and_grad(out, yb, check=False)[0] if loss is not None else None
                meter.add(value, out, yb, size)
        finally:
            self.train()
        meter.read(0, 0, strict=False)
        result = {}
        if loss is not None:
            result["loss"] = meter.mean_loss
        if meter.accuracy is not None:
            result["accuracy"] = meter.accuracy
        return result


class _Meter:
    """Running sums of loss and correct predictions kept on the device; read back on request."""

    def __init__(self, model: Sequential, loss: losses.Loss | None) -> None:
        self.xp, self.backend = model.xp, model.backend
        self.pending: list[Any] = []  # per-step mean losses not yet read back
        self.sizes: list[int] = []
        self.loss_sum = 0.0
        self.samples = 0
        self.read_samples = 0
        self.correct: Any = None
        self.classify = loss is None or loss.accepts_labels
        self.binary = isinstance(loss, losses.BinaryCrossEntropy)
        self.threshold = 0.0 if getattr(loss, "from_logits", False) else 0.5  # logit 0 = p 0.5
        self.accuracy: float | None = None
        self.mean_loss = math.nan

    def add(self, value: Any, y_pred: Any, y_true: Any, size: int) -> None:
        if value is not None:
            self.pending.append(value)
            self.sizes.append(size)
        self.samples += size
        with self.backend.context():  # CuPy: count on the model's GPU
            hits = self._hits(y_pred, y_true)
            if hits is not None:
                self.correct = hits if self.correct is None else self.correct + hits

    def _hits(self, y_pred: Any, y_true: Any) -> Any:
        xp = self.xp
        if self.binary and y_pred.shape[-1] == 1:
            hits = (y_pred > self.threshold) == (y_true > 0.5)
            return xp.sum(xp.astype(hits, self.backend.index_dtype))
        if not self.classify or y_pred.ndim != 2 or y_pred.shape[1] < 2:
            return None
        guess = xp.argmax(y_pred, axis=1)
        truth = y_true if y_true.ndim == 1 else xp.argmax(y_true, axis=1)
        return xp.sum(xp.astype(guess == truth, self.backend.index_dtype))

    def read(self, epoch: int, step: int, accuracy: bool = True, strict: bool = True) -> None:
        """Read pending losses back (one transfer) and, if ``accuracy``, the count of correct
        predictions (one more); raise TrainingDiverged at a non-finite loss when ``strict``
        (else the mean loss becomes NaN or inf)."""
        if self.pending:
            values = self.backend.to_host(self.xp.stack(self.pending)).tolist()
            first = step - len(values) + 1
            for k, (value, size) in enumerate(zip(values, self.sizes)):
                if strict and not math.isfinite(value):
                    raise TrainingDiverged(
                        f"Sequential.fit: the loss became {value} at epoch {epoch}, step "
                        f"{first + k}; lower the learning rate or check the inputs for NaN/inf"
                    )
                self.loss_sum += value * size
                self.read_samples += size
            self.pending, self.sizes = [], []
            self.mean_loss = self.loss_sum / self.read_samples
        if accuracy and self.correct is not None:
            self.accuracy = int(self.backend.to_host(self.correct)) / max(1, self.samples)
