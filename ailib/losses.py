"""Losses: the seed's "calculate error" step (docs/math.md §5).

A loss object is called as ``loss(y_pred, y_true)`` and returns the mean error E over the batch
as a 0-d array (reading it as a Python float waits for the device, so ailib does that rarely; no
loss reads anything back from the device on its own: clamps are ``maximum``/``minimum``, never
``clip``, which array-api-compat implements with boolean masks on CuPy);
``loss.grad(y_pred, y_true)`` returns dE/dY_pred, the first dE/dY that backpropagation needs.
``value_and_grad`` gives both from one pass (what `Sequential.train_step` uses).

Targets: `MSE` and `BinaryCrossEntropy` take targets of y_pred's shape; `CategoricalCrossEntropy`
and `SoftmaxCrossEntropy` take integer class labels (N,) or one-hot / probability rows (N, C).
"""

from __future__ import annotations

import math
from typing import Any

import array_api_compat

from . import backends
from ._checks import flag, number
from .layers.activations import softmax


class Loss:
    """Base class: subclasses implement `_value_and_grad(xp, y_pred, target) -> (E, dE/dY)`."""

    #: whether integer class labels are accepted as targets (then converted to one-hot rows)
    accepts_labels = False

    @property
    def name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        return f"{self.name}()"

    def get_config(self) -> dict[str, Any]:
        """The constructor's arguments (plain JSON): ``type(loss)(**loss.get_config())`` computes
        exactly what ``loss`` does. What a model file stores (`ailib.io`)."""
        return {}

    def __call__(self, y_pred: Any, y_true: Any) -> Any:
        """E(y_pred, y_true) as a 0-d array."""
        return self.value_and_grad(y_pred, y_true)[0]

    def grad(self, y_pred: Any, y_true: Any) -> Any:
        """dE/dY_pred, an array of y_pred's shape."""
        return self.value_and_grad(y_pred, y_true)[1]

    def value_and_grad(self, y_pred: Any, y_true: Any, *, check: bool = True) -> tuple[Any, Any]:
        """(E, dE/dY_pred) from one pass. ``check=False`` skips the label-range check, which
        reads the labels back from the device (`Sequential.fit` checks once, before training)."""
        xp = backends.namespace(y_pred)
        with backends.device_context(y_pred):  # CuPy: kernels on y_pred's GPU
            target = self.target(xp, y_pred, y_true, check=check)
            return self._value_and_grad(xp, y_pred, target)

    def _value_and_grad(self, xp: Any, y_pred: Any, target: Any) -> tuple[Any, Any]:
        raise NotImplementedError

    def correct(self, y_pred: Any, y_true: Any) -> Any:
        """The number of rows of ``y_pred`` whose top class is their label in ``y_true`` (a 0-d
        integer array), where the last `value_and_grad` formed it with the error (it was on
        this very ``y_pred`` and these labels); None otherwise (the caller counts)."""
        last = self.last_correct
        if last is None or last[0] is not y_pred or last[1] is not y_true:
            return None
        return last[2]

    #: (y_pred, y_true, count) of the last value_and_grad that formed the count
    last_correct: tuple[Any, Any, Any] | None = None

    # -- targets -----------------------------------------------------------------------------
    def target(self, xp: Any, y_pred: Any, y_true: Any, *, check: bool = True) -> Any:
        """y_true as a floating array of y_pred's shape, dtype and device (labels -> one-hot)."""
        labels = self.labels(xp, y_pred, y_true, check=check)
        if labels is not None:
            return one_hot(xp, labels, y_pred.shape[1], y_pred.dtype)
        if tuple(y_true.shape) != tuple(y_pred.shape):
            hint = ""
            if self.accepts_labels and tuple(y_true.shape) == tuple(y_pred.shape[:1]):
                hint = (
                    f" of dtype {y_true.dtype}; class labels must be integers: cast them, e.g. "
                    f"xp.astype(y_true, xp.int64)"
                )
            raise ValueError(
                f"{self.name}: y_true must have y_pred's shape {tuple(y_pred.shape)}, received "
                f"{tuple(y_true.shape)}{hint}"
            )
        if y_true.dtype != y_pred.dtype:
            y_true = xp.astype(y_true, y_pred.dtype)
        return y_true

    def labels(self, xp: Any, y_pred: Any, y_true: Any, *, check: bool = True) -> Any:
        """y_true when it holds integer class labels (checked: shape (N,), and with ``check``
        their range), None when it is floating; a TypeError for anything else."""
        if not _isdtype(xp, y_pred.dtype, "real floating"):
            raise TypeError(f"{self.name}: y_pred must be floating, received dtype {y_pred.dtype}")
        try:
            same_library = backends.namespace(y_true) is backends.namespace(y_pred)
        except TypeError:
            same_library = False
        if not same_library or backends.device_of(y_true) != backends.device_of(y_pred):
            raise TypeError(
                f"{self.name}: y_true must be an array of y_pred's library and device "
                f"({type(y_pred).__module__}, {array_api_compat.device(y_pred)!r}), received "
                f"{type(y_true).__module__}.{type(y_true).__name__}"
            )
        integral = _isdtype(xp, y_true.dtype, "integral")
        if integral and not self.accepts_labels:
            raise TypeError(f"{self.name}: y_true must be floating, received {y_true.dtype}")
        if self.accepts_labels and (y_pred.ndim != 2 or y_pred.shape[1] < 1):
            # NOTE: E is a mean over the N rows of y_pred (N, C): a row (C,), or (N, T, C), was
            # divided by C, or by N, without an error, and a 0-d y_pred raised an IndexError
            targets = "integer labels" if integral else "one-hot or probability rows"
            raise ValueError(
                f"{self.name}: {targets} need y_pred of shape (N, classes), received y_pred of "
                f"shape {tuple(y_pred.shape)}" + ("; it has no classes" if y_pred.ndim == 2 else "")
            )
        if integral:
            if tuple(y_true.shape) != (y_pred.shape[0],):
                raise ValueError(
                    f"{self.name}: integer labels must have shape ({y_pred.shape[0]},) for "
                    f"y_pred of shape {tuple(y_pred.shape)}, received {tuple(y_true.shape)}"
                )
            if check:
                check_labels(xp, y_true, y_pred.shape[1], self.name)
            return y_true
        return None


#: `_isdtype`'s answers by (dtype's type, dtype, kind): the namespace's ``isdtype`` costs
#: microseconds, and every training step asks twice. (The type first: array-api-strict warns
#: when its dtypes are compared with NumPy's.)
_KINDS: dict[tuple[Any, Any, str], bool] = {}


def _isdtype(xp: Any, dtype: Any, kind: str) -> bool:
    key = (type(dtype), dtype, kind)
    known = _KINDS.get(key)
    if known is None:
        known = _KINDS[key] = bool(xp.isdtype(dtype, kind))
    return known


def one_hot(xp: Any, labels: Any, num_classes: int, dtype: Any) -> Any:
    """Rows e_{label}: built from a comparison with arange, never by scatter (which is undefined
    for repeated indices on some devices). Labels of a dtype too narrow for num_classes − 1
    (uint8 labels of 300 classes, whose 0…C−1 would wrap) are compared in the namespace's
    default integer dtype."""
    device = array_api_compat.device(labels)
    if xp.iinfo(labels.dtype).max >= num_classes - 1:
        classes = xp.arange(num_classes, dtype=labels.dtype, device=device)
    else:
        classes = xp.arange(num_classes, device=device)
        labels = xp.astype(labels, classes.dtype)
    return xp.astype(xp.expand_dims(labels, axis=1) == classes, dtype)


def check_labels(xp: Any, labels: Any, num_classes: int, who: str) -> None:
    """Raise ValueError unless every label is in [0, num_classes). Reads two numbers back, in
    one transfer."""
    if labels.shape[0] == 0:
        return
    low, high = (int(v) for v in backends.extremes(None, labels))
    if low < 0 or high >= num_classes:
        raise ValueError(
            f"{who}: labels must lie in [0, {num_classes - 1}] for {num_classes} classes, "
            f"received labels in [{low}, {high}]"
        )


class MSE(Loss):
    """E = (1/M) Σ (Ŷ − Y)² over all M entries; dE/dŶ = 2(Ŷ − Y)/M."""

    def _value_and_grad(self, xp: Any, y_pred: Any, target: Any) -> tuple[Any, Any]:
        size = max(1, math.prod(y_pred.shape))
        diff = y_pred - target
        return xp.sum(diff * diff) / size, diff * (2.0 / size)


class BinaryCrossEntropy(Loss):
    """E = −(1/M) Σ [Y log Ŷ + (1 − Y) log(1 − Ŷ)] over all M entries.

    On probabilities Ŷ ∈ (0, 1) (the default, e.g. after a `Sigmoid` layer):
    dE/dŶ = ((1 − Y)/(1 − Ŷ) − Y/Ŷ)/M, with Ŷ clamped to [eps, 1 − eps] (by ``maximum`` and
    ``minimum``) so a saturated sigmoid gives a large but finite error.

    With ``from_logits=True``, y_pred are logits Z and Ŷ = σ(Z) is fused in (docs/math.md §5):
    E = (1/M) Σ [max(Z, 0) − Z·Y + log(1 + e^−|Z|)], dE/dZ = (σ(Z) − Y)/M. Nothing is clamped,
    so a saturated logit still gets its true gradient (Z = 20, Y = 0: E ≈ 20, dE/dZ ≈ 1/M, where
    Sigmoid followed by this loss on probabilities gives dE/dZ = 0 in float32).
    """

    def __init__(self, eps: float = 1e-7, *, from_logits: bool = False) -> None:
        eps = number(eps, "eps", "BinaryCrossEntropy")
        if not 0.0 < eps < 0.5:
            raise ValueError(f"BinaryCrossEntropy: eps must lie in (0, 0.5), received {eps}")
        self.eps = float(eps)
        self.from_logits = flag(from_logits, "from_logits", "BinaryCrossEntropy")

    def __repr__(self) -> str:
        settings = [f"eps={self.eps!r}"] * (self.eps != 1e-7) + ["from_logits=True"] * (
            self.from_logits
        )
        return f"{self.name}({', '.join(settings)})"

    def get_config(self) -> dict[str, Any]:
        return {"eps": self.eps, "from_logits": self.from_logits}

    def _value_and_grad(self, xp: Any, y_pred: Any, target: Any) -> tuple[Any, Any]:
        size = max(1, math.prod(y_pred.shape))
        if self.from_logits:
            return self._from_logits(xp, y_pred, target, size)
        p = xp.minimum(xp.maximum(y_pred, self.eps), 1.0 - self.eps)
        value = -xp.sum(target * xp.log(p) + (1.0 - target) * xp.log(1.0 - p)) / size
        grad = ((1.0 - target) / (1.0 - p) - target / p) / size
        return value, grad

    @staticmethod
    def _from_logits(xp: Any, z: Any, target: Any, size: int) -> tuple[Any, Any]:
        # NOTE: e^−|Z| never overflows; σ(Z) = r for Z ≥ 0 and e^−|Z|·r for Z < 0, with
        # r = 1/(1 + e^−|Z|), keeps full relative precision on both sides.
        e = xp.exp(-xp.abs(z))
        value = xp.sum(xp.maximum(z, 0.0) - z * target + xp.log1p(e)) / size
        r = 1.0 / (1.0 + e)
        sigmoid = xp.where(z >= 0, r, e * r)
        return value, (sigmoid - target) / size


class CategoricalCrossEntropy(Loss):
    """E = −(1/N) Σₙ Σᵢ Yₙᵢ log Ŷₙᵢ on probability rows Ŷ (e.g. a `Softmax` layer's output);
    dE/dŶ = −Y/(N·Ŷ). Ŷ is clamped below at eps (by ``maximum``)."""

    accepts_labels = True

    def __init__(self, eps: float = 1e-7) -> None:
        eps = number(eps, "eps", "CategoricalCrossEntropy")
        if not 0.0 < eps < 1.0:
            raise ValueError(f"CategoricalCrossEntropy: eps must lie in (0, 1), received {eps}")
        self.eps = float(eps)

    def __repr__(self) -> str:
        return f"{self.name}(eps={self.eps!r})" if self.eps != 1e-7 else f"{self.name}()"

    def get_config(self) -> dict[str, Any]:
        return {"eps": self.eps}

    def _value_and_grad(self, xp: Any, y_pred: Any, target: Any) -> tuple[Any, Any]:
        n = max(1, y_pred.shape[0])
        p = xp.maximum(y_pred, self.eps)
        return -xp.sum(target * xp.log(p)) / n, -target / (p * n)


class SoftmaxCrossEntropy(Loss):
    """Softmax followed by cross-entropy, fused, on logits Z (N, C):
    E = −(1/N) Σₙ Σᵢ Yₙᵢ log softmax(Zₙ)ᵢ; for rows Y summing to 1 (labels, one-hot),
    dE/dZ = (softmax(Z) − Y)/N.

    The fused form never takes the log of a rounded-to-zero probability, and its gradient is the
    simple (p − y)/N derived in docs/math.md §5.

    Args:
        label_smoothing: ε in [0, 1): the targets become Y' = (1 − ε)·Y + ε/C before the loss
            (labels and one-hot rows: 1 − ε + ε/C on the true class, ε/C elsewhere), which keeps
            the model from pushing logits towards ±∞ to reach probabilities of exactly 0 and 1.
            Then dE/dZ = (softmax(Z) − Y')/N. Same definition as PyTorch's
            ``CrossEntropyLoss(label_smoothing=ε)``.
    """

    accepts_labels = True

    def __init__(self, label_smoothing: float = 0.0) -> None:
        label_smoothing = number(label_smoothing, "label_smoothing", "SoftmaxCrossEntropy")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(
                f"SoftmaxCrossEntropy: label_smoothing must lie in [0, 1), received "
                f"{label_smoothing}"
            )
        self.label_smoothing = float(label_smoothing)

    def __repr__(self) -> str:
        if not self.label_smoothing:
            return f"{self.name}()"
        return f"{self.name}(label_smoothing={self.label_smoothing!r})"

    def get_config(self) -> dict[str, Any]:
        return {"label_smoothing": self.label_smoothing}

    def value_and_grad(self, y_pred: Any, y_true: Any, *, check: bool = True) -> tuple[Any, Any]:
        """(E, dE/dZ) as `Loss.value_and_grad`; for integer labels (without label smoothing)
        formed from the labels directly, with the count of correct rows (`correct`)."""
        xp = backends.namespace(y_pred)
        with backends.device_context(y_pred):
            labels = self.labels(xp, y_pred, y_true, check=check)
            if labels is None or self.label_smoothing:
                target = self.target(xp, y_pred, y_true, check=False)
                return self._value_and_grad(xp, y_pred, target)
            value, grad, hits = self.from_labels(xp, y_pred, labels)
            self.last_correct = (y_pred, y_true, hits)
            return value, grad

    def from_labels(self, xp: Any, z: Any, labels: Any) -> tuple[Any, Any, Any]:
        """(E, dE/dZ, number of rows whose top logit is the label's) for logits Z (N, C) and
        integer labels y (N,), with no (N, C) one-hot target:

            E = (1/N) Σₙ (log Σᵢ e^(Zₙᵢ − mₙ) − (Z_{n,yₙ} − mₙ)),   mₙ = max Zₙ
            dE/dZ = (softmax(Z) − e_y)/N

        formed by `ailib.backends.softmax_cross_entropy`: 16 array operations of the standard
        (NumPy, JAX, array-api-strict), fewer kernels where the library has them (PyTorch 10,
        CuPy 3). Ties: the first top class counts, as ``argmax``."""
        return backends.softmax_cross_entropy(z, labels)

    def _value_and_grad(self, xp: Any, y_pred: Any, target: Any) -> tuple[Any, Any]:
        n = max(1, y_pred.shape[0])
        if self.label_smoothing:
            eps = self.label_smoothing
            target = target * (1.0 - eps) + eps / y_pred.shape[-1]
        shifted = y_pred - xp.max(y_pred, axis=-1, keepdims=True)
        e = xp.exp(shifted)
        total = xp.sum(e, axis=-1, keepdims=True)
        value = -xp.sum(target * (shifted - xp.log(total))) / n
        # NOTE: dE/dZ = (P·Σᵢ Yᵢ − Y)/N, which is (P − Y)/N for labels and one-hot rows; keeping
        # the row sum makes the gradient exact for soft targets that do not sum to 1 too.
        # P = e/Σe is formed in the fresh array e (in place where arrays are mutable).
        e *= xp.sum(target, axis=-1, keepdims=True) / total
        e -= target
        e /= n
        return value, e

    def probabilities(self, xp: Any, logits: Any) -> Any:
        return softmax(xp, logits)


LOSSES: dict[str, type[Loss]] = {
    "mse": MSE,
    "binary_cross_entropy": BinaryCrossEntropy,
    "bce": BinaryCrossEntropy,
    "categorical_cross_entropy": CategoricalCrossEntropy,
    "softmax_cross_entropy": SoftmaxCrossEntropy,
}


def get(loss: str | Loss) -> Loss:
    """A loss object from a name ("mse", "softmax_cross_entropy", ...) or the object itself."""
    if isinstance(loss, Loss):
        return loss
    try:
        return LOSSES[loss.lower()]()
    except (KeyError, AttributeError):
        raise ValueError(f"unknown loss {loss!r}; expected one of {', '.join(LOSSES)}") from None


__all__ = [
    "MSE",
    "BinaryCrossEntropy",
    "CategoricalCrossEntropy",
    "Loss",
    "SoftmaxCrossEntropy",
    "get",
]
