"""The contenders of the MLP benchmark: one MLP (784-256-128-10, ReLU, softmax cross-entropy,
plain SGD, float32), trained on the same data from the same initial weights by

- `Ailib`: ``ailib.Sequential(ailib.zoo.mlp(...))`` and its own `fit`, on any ailib backend;
- `NumpyReference`: the fastest plain NumPy we could write by hand (manual backward, in-place
  updates, preallocated buffers, ``np.dot(..., out=)``); the yardstick for ailib on NumPy;
- `TorchEager`: the natural PyTorch loop (``nn.Sequential`` + ``F.cross_entropy`` +
  ``torch.optim.SGD``, autograd), on the CPU or CUDA; the peer.

Every contender exposes the same four calls: ``load`` (data onto the device, once, untimed),
``epoch`` (one shuffled pass over the first ``samples`` rows; returns the mean loss, read back
once at the end), ``predict`` (inference on the loaded test rows) and ``synchronize``.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np

#: the initial weights every contender starts from: [(W (out, in), b (out,)), ...], float32
Weights = list[tuple[np.ndarray, np.ndarray]]

LR = 0.05


def make_weights(
    hidden: Sequence[int] = (256, 128), features: int = 784, classes: int = 10, seed: int = 0
) -> Weights:
    """Initial weights drawn by ailib itself (He normal, Glorot uniform at the output)."""
    import ailib
    import ailib.zoo

    model = ailib.Sequential(
        ailib.zoo.mlp(features, tuple(hidden), classes, backend="numpy"), backend="numpy", seed=seed
    )
    dense = [layer for layer in model.layers if "W" in layer.params]
    return [(np.array(d.params["W"]), np.array(d.params["b"])) for d in dense]


def make_data(
    n: int, features: int = 784, classes: int = 10, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic Fashion-MNIST-shaped data: pixels in [0, 1) around one random template per
    class (so the loss falls and contenders can be checked against each other), int64 labels."""
    rng = np.random.default_rng(seed)
    templates = rng.random((classes, features), dtype=np.float32)
    y = rng.integers(0, classes, n)
    x = rng.random((n, features), dtype=np.float32)
    x *= 0.7
    x += 0.3 * templates[y]
    return x, y.astype(np.int64)


class Contender:
    """The interface the runner times. ``name`` is the row label; ``kind`` is one of
    "reference", "peer" or "ailib"; ``backend`` names the array library underneath."""

    name = "?"
    kind = "?"
    backend = "?"
    device = "cpu"

    def load(self, x: np.ndarray, y: np.ndarray, x_test: np.ndarray) -> None:
        raise NotImplementedError

    def epoch(self, samples: int, batch_size: int) -> float:
        raise NotImplementedError

    def predict(self) -> None:
        raise NotImplementedError

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on the CPU)."""


# -- ailib -------------------------------------------------------------------------------------
class Ailib(Contender):
    """ailib's own path: `Sequential.fit` (device shuffling, losses read every 50 steps) and
    `Sequential.predict`."""

    kind = "ailib"

    def __init__(
        self, backend: str, weights: Weights, seed: int = 0, compiled: bool | None = None
    ) -> None:
        import ailib

        self.be = ailib.backends.get(backend)
        self.backend, self.name = self.be.name, f"ailib[{backend}]"
        if compiled is not None:
            self.name = f"ailib[{backend}, {'compiled' if compiled else 'eager'} steps]"
        self.device = str(self.be.device)
        hidden = tuple(w.shape[0] for w, _ in weights[:-1])
        features, classes = weights[0][0].shape[1], weights[-1][0].shape[0]
        self.model = ailib.Sequential(
            ailib.zoo.mlp(features, hidden, classes, backend=self.be), backend=self.be, seed=seed
        )
        dense = [layer for layer in self.model.layers if "W" in layer.params]
        for layer, (w, b) in zip(dense, weights):
            # copies: the model owns its parameters, as every other contender does
            layer.params["W"] = self.be.asarray(np.array(w))
            layer.params["b"] = self.be.asarray(np.array(b))
        self.model.compile_steps = compiled  # None: the backend's default (ailib.compiling)
        self.optimizer = ailib.optimizers.SGD(lr=LR)
        #: what ailib warned while training (a compiled step that runs uncompiled: a CUDA
        #: graph that could not be captured), for the results' notes
        self.notes: list[str] = []

    def load(self, x: np.ndarray, y: np.ndarray, x_test: np.ndarray) -> None:
        self.x, self.y = self.be.asarray(x), self.be.asarray(y)
        self.cut: dict[int, tuple[Any, Any]] = {}  # (x, y)'s first rows, per size (`epoch`)
        self.x_test = self.be.asarray(x_test)

    def epoch(self, samples: int, batch_size: int) -> float:
        if samples >= self.x.shape[0]:
            x, y = self.x, self.y
        else:
            # the first rows, cut once per size: JAX's slices are copies (40 MB for a short
            # run), which the other contenders, whose slices are views, do not pay per round
            if samples not in self.cut:
                self.cut[samples] = (self.x[:samples, ...], self.y[:samples])
            x, y = self.cut[samples]
        with warnings.catch_warnings(record=True) as caught:
            history = self.model.fit(
                x,
                y,
                loss="softmax_cross_entropy",
                optimizer=self.optimizer,
                epochs=1,
                batch_size=batch_size,
                verbose=False,  # timed: no progress display
            )
        for w in caught:
            note = f"{self.name}: {w.category.__name__}: {w.message}"
            if note not in self.notes:
                self.notes.append(note)
        return history["loss"][-1]

    def predict(self) -> None:
        self.output = self.model.predict(self.x_test)

    def synchronize(self) -> None:
        self.be.synchronize()
        if getattr(self, "output", None) is not None:
            # NOTE: reading one value back is what proves the prediction exists: JAX dispatches
            # asynchronously and its synchronize (effects_barrier) does not wait for computations.
            self.be.to_host(self.output[:1, ...])
            self.output = None


# -- the hand-written NumPy reference -------------------------------------------------------
class NumpyReference(Contender):
    """Forward, manual backward and SGD in plain NumPy, written for speed:

    - activations, gradients and the ReLU masks live in buffers allocated once per batch size;
      every product is ``np.dot(..., out=buffer)`` and every elementwise step is in place;
    - the learning rate is folded into dE/dZ of the output layer (scaled by lr/N once), so the
      weight gradients come out as lr·dE/dW and the update is a single ``W -= G``;
    - the first layer's dE/dX is never computed (nothing needs it).
    """

    name, kind, backend = "numpy reference", "reference", "numpy"

    def __init__(self, weights: Weights, seed: int = 0) -> None:
        self.W = [np.array(w, dtype=np.float32) for w, _ in weights]
        self.b = [np.array(b, dtype=np.float32) for _, b in weights]
        self.G = [np.empty_like(w) for w in self.W]
        self.g = [np.empty_like(b) for b in self.b]
        self.rng = np.random.default_rng(seed + 1)
        self._size = -1

    def load(self, x: np.ndarray, y: np.ndarray, x_test: np.ndarray) -> None:
        self.x, self.y, self.x_test = x, y, x_test

    def _buffers(self, n: int) -> None:
        if n == self._size:
            return
        self._size = n
        self.xb = np.empty((n, self.W[0].shape[1]), np.float32)
        self.yb = np.empty(n, np.int64)
        self.z = [np.empty((n, w.shape[0]), np.float32) for w in self.W]  # activations
        self.d = [np.empty((n, w.shape[0]), np.float32) for w in self.W[:-1]]  # dE/dA
        self.mask = [np.empty((n, w.shape[0]), np.bool_) for w in self.W[:-1]]
        self.rows = np.arange(n)

    def _forward(self, x: np.ndarray, z: list[np.ndarray]) -> np.ndarray:
        a = x
        for i, (w, b) in enumerate(zip(self.W, self.b)):
            np.dot(a, w.T, out=z[i])
            z[i] += b
            if i < len(self.W) - 1:
                np.maximum(z[i], 0.0, out=z[i])
            a = z[i]
        return a

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        n = x.shape[0]
        self._buffers(n)
        z, d, last = self.z, self.d, len(self.W) - 1
        logits = self._forward(x, z)
        # softmax cross-entropy, in place: logits -> shifted -> exp -> p -> lr·(p - onehot)/N
        logits -= logits.max(axis=1, keepdims=True)
        picked = logits[self.rows, y]
        np.exp(logits, out=logits)
        total = logits.sum(axis=1, keepdims=True)
        loss = float(np.mean(np.log(total[:, 0]) - picked))
        logits /= total
        logits[self.rows, y] -= 1.0
        logits *= LR / n
        delta = logits
        for i in range(last, -1, -1):
            a_prev = x if i == 0 else z[i - 1]
            np.dot(delta.T, a_prev, out=self.G[i])
            np.sum(delta, axis=0, out=self.g[i])
            if i > 0:
                np.dot(delta, self.W[i], out=d[i - 1])
                np.greater(a_prev, 0.0, out=self.mask[i - 1])
                d[i - 1] *= self.mask[i - 1]
                delta = d[i - 1]
            self.W[i] -= self.G[i]
            self.b[i] -= self.g[i]
        return loss

    def epoch(self, samples: int, batch_size: int) -> float:
        order = self.rng.permutation(samples)
        total = 0.0
        for start in range(0, samples, batch_size):
            index = order[start : start + batch_size]
            if index.shape[0] == batch_size:
                self._buffers(batch_size)
                xb, yb = (
                    np.take(self.x, index, axis=0, out=self.xb),
                    np.take(self.y, index, out=self.yb),
                )
            else:
                xb, yb = self.x[index], self.y[index]
            total += self.step(xb, yb) * index.shape[0]
        return total / samples

    def predict(self) -> None:
        n = self.x_test.shape[0]
        if getattr(self, "_pred", None) is None or self._pred[0].shape[0] != n:
            self._pred = [np.empty((n, w.shape[0]), np.float32) for w in self.W]
        self._forward(self.x_test, self._pred)


# -- PyTorch eager -----------------------------------------------------------------------------
class TorchEager(Contender):
    """The textbook PyTorch loop: ``nn.Sequential`` of ``nn.Linear``/``nn.ReLU``,
    ``F.cross_entropy``, ``torch.optim.SGD``, autograd; ``randperm`` shuffling on the device and
    the running loss summed on the device and read once per epoch (``.item()`` per step would
    add a sync per step on CUDA)."""

    name, kind, backend = "torch eager", "peer", "torch"

    def __init__(self, weights: Weights, device: str = "cpu", seed: int = 0) -> None:
        import torch

        self.torch = torch
        self.device = device
        if device != "cpu":
            self.name = f"torch eager [{device}]"
        layers: list[Any] = []
        for i, (w, b) in enumerate(weights):
            linear = torch.nn.Linear(w.shape[1], w.shape[0])
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(w))
                linear.bias.copy_(torch.from_numpy(b))
            layers.append(linear)
            if i < len(weights) - 1:
                layers.append(torch.nn.ReLU())
        self.net = torch.nn.Sequential(*layers).to(device)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=LR)
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(seed + 1)

    def load(self, x: np.ndarray, y: np.ndarray, x_test: np.ndarray) -> None:
        torch = self.torch
        self.x = torch.from_numpy(x).to(self.device)
        self.y = torch.from_numpy(y).to(self.device)
        self.x_test = torch.from_numpy(x_test).to(self.device)

    def epoch(self, samples: int, batch_size: int) -> float:
        torch, net, opt = self.torch, self.net, self.opt
        f = torch.nn.functional
        order = torch.randperm(samples, device=self.device, generator=self.gen)
        total = torch.zeros((), device=self.device)
        for start in range(0, samples, batch_size):
            index = order[start : start + batch_size]
            xb, yb = self.x[index], self.y[index]
            loss = f.cross_entropy(net(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * index.shape[0]
        return total.item() / samples

    def predict(self) -> None:
        with self.torch.no_grad():
            self.net(self.x_test)

    def synchronize(self) -> None:
        if self.device != "cpu":
            self.torch.cuda.synchronize()


def flops_per_sample(sizes: Sequence[int]) -> tuple[int, int]:
    """(forward, forward+backward) multiply-adds x 2 per sample for Dense layers of ``sizes``
    (e.g. [784, 256, 128, 10]); backward skips dE/dX of the first layer, as every contender
    does, and elementwise work (a few flops per activation) is left out."""
    pairs = list(zip(sizes[:-1], sizes[1:]))
    forward = sum(2 * a * b for a, b in pairs)
    backward = sum(2 * a * b for a, b in pairs) + sum(2 * a * b for a, b in pairs[1:])
    return forward, forward + backward


def build(name: str, weights: Weights) -> Contender:
    """A contender by row name: "reference", "torch", "torch:cuda" or "ailib:<backend>", the
    backend optionally followed by "+compiled" or "+eager" (compiled steps forced on or off,
    `ailib.compiling`; default: the backend's choice)."""
    if name == "reference":
        return NumpyReference(weights)
    if name.startswith("torch"):
        _, _, device = name.partition(":")
        return TorchEager(weights, device or "cpu")
    if name.startswith("ailib:"):
        backend, _, mode = name.split(":", 1)[1].partition("+")
        return Ailib(backend, weights, compiled={"": None, "compiled": True, "eager": False}[mode])
    raise ValueError(f"unknown contender {name!r}")


__all__ = [
    "Ailib",
    "Contender",
    "NumpyReference",
    "TorchEager",
    "build",
    "flops_per_sample",
    "make_data",
    "make_weights",
]
