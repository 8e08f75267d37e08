"""`Sequential`: layers in a row, trained with the seed document's four steps (docs/math.md §1);
the loop itself (`fit`, `evaluate`, `predict`, callbacks) is `ailib.training`."""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Sequence

from . import backends, batches, losses, optimizers, training
from .backends import Backend
from .callbacks import Callback
from .layers.base import Layer
from .training import Progress, TrainingDiverged

__all__ = ["Sequential", "TrainingDiverged"]


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
        self.output: Any = None  # the last forward output
        self.training = True
        self.stop_training = False  # a callback sets it to end `fit`
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
        first layer with trainable parameters fills only its gradients
        (`Layer.backward_params`), the layers before it (frozen or without parameters) are
        skipped, and None is returned."""
        with self.backend.context():
            return self._backward(grad, input_grad)

    def _backward(self, grad: Any, input_grad: bool) -> Any:
        layers = self.layers
        if input_grad:
            for layer in reversed(layers):
                grad = layer.backward(grad)
            return grad
        first = next(
            (i for i, layer in enumerate(layers) if layer.params and layer.trainable), len(layers)
        )
        for layer in reversed(layers[first + 1 :]):
            grad = layer.backward(grad)
        if first < len(layers):
            layers[first].backward_params(grad)
        return None

    def train_step(
        self, x: Any, y: Any, loss: losses.Loss | str, optimizer: optimizers.Optimizer | str
    ) -> Any:
        """One iteration of the seed's loop on a batch already on the device (`training.train_step`:
        feed input, forward, error, backward, update); returns E (0-d).

        An optimizer given by name is made once and kept (``self.optimizer``) while the same
        name is given, so its state (momenta, moments) carries over from call to call."""
        loss = losses.get(loss)
        if isinstance(optimizer, str):
            keep = self.optimizer
            same = keep is not None and optimizers.OPTIMIZERS.get(optimizer.lower()) is type(keep)
            optimizer = keep if same else optimizers.get(optimizer)
        self.loss, self.optimizer = loss, optimizer
        return training.train_step(self, x, y, loss, optimizer)[0]

    # -- modes -------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> Sequential:
        """Train mode (dropout active, batch statistics); `eval()` switches it off."""
        self.training = bool(mode)
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
        from . import io as model_io  # io builds Sequential models: imported when needed

        return model_io.save(self, path)

    # -- data at the boundary, training and evaluation (ailib.training) -----------------------
    def _inputs(self, x: Any, who: str) -> Any:
        return batches.model_inputs(self, x, who)

    def fit(
        self,
        x: Any,
        y: Any = None,
        *,
        loss: losses.Loss | str = "softmax_cross_entropy",
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
        verbose: bool = False,
        progress: Progress | None = None,
        checkpoint: str | os.PathLike | None = None,
        resume: bool = False,
        lr_schedule: Callable[[int], float] | None = None,
    ) -> dict[str, list[Any]]:
        """Train on (x, y) arrays, or on an iterable of (x, y) batches, for ``epochs`` passes;
        returns the history. See `ailib.training.fit` for every argument."""
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
            progress=progress,
            checkpoint=checkpoint,
            resume=resume,
            lr_schedule=lr_schedule,
        )

    def predict(self, x: Any, batch_size: int | None = None) -> Any:
        """The model's output for x (NumPy or this backend's array), in eval mode (the mode is
        restored after), as an array of this backend. With ``batch_size``, runs in batches to
        bound memory."""
        return training.predict(self, x, batch_size)

    def evaluate(
        self,
        x: Any,
        y: Any = None,
        *,
        loss: losses.Loss | str | None = None,
        batch_size: int = 1024,
    ) -> dict[str, float]:
        """Mean loss and, for classification, accuracy on (x, y) (or an iterable of batches),
        in eval mode (the mode is restored after); a diverged model gives a NaN loss.
        ``loss`` defaults to the one last used by `fit`; without either, only accuracy."""
        return training.evaluate(self, x, y, loss=loss, batch_size=batch_size)
