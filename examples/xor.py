"""XOR, the classic first network: 2-3-1 with tanh activations and mean squared error.

    python examples/xor.py --backend numpy      # or torch, array_api_strict, jax, cupy, auto

Each epoch is the seed document's loop: feed input, forward propagate, calculate error,
backpropagate (and step the weights) — see `ailib.Sequential.train_step`.
"""

from __future__ import annotations

import argparse

import numpy as np

import ailib
from ailib.layers import Dense, Tanh
from ailib.optimizers import SGD


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backend",
        default="numpy",
        help="numpy (default), torch, array_api_strict, jax, cupy, or auto",
    )
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        backend = ailib.backends.get(args.backend)
    except (ValueError, ailib.BackendUnavailable) as exc:  # one line, no traceback
        parser.exit(2, f"{parser.prog}: error: --backend: {exc}\n")

    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    y = np.array([[0], [1], [1], [0]], dtype=np.float32)
    model = ailib.Sequential(
        [Dense(2, 3), Tanh(), Dense(3, 1), Tanh()], backend=backend, seed=args.seed
    )
    history = model.fit(
        x,
        y,
        loss="mse",
        optimizer=SGD(lr=0.1, momentum=0.9),
        epochs=args.epochs,
        batch_size=4,
        log_every=1000,
    )
    pred = model.backend.to_host(model.predict(x))
    print(f"backend: {model.backend.name}   final loss: {history['loss'][-1]:.6f}")
    for xi, pi in zip(x, pred):
        print(f"  {xi.astype(int).tolist()} -> {pi[0]:+.4f}")
    return history["loss"][-1]


if __name__ == "__main__":
    main()
