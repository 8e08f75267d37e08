"""Train the 784-256-128-10 MLP with the library API (the `ailib train` command does the same).

python examples/mnist.py                          # Fashion-MNIST (found locally or downloaded)
python examples/mnist.py --digits data/mnist-test   # MNIST's 10k test digits, split 8k/2k
TARGET_ACCURACY=0.88 python examples/mnist.py     # exit 1 if the target is missed
"""

import argparse
import os
import sys

import ailib
from ailib import datasets
from ailib.layers import Dense, ReLU
from ailib.optimizers import Adam

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--digits", metavar="DIR", help="a directory with MNIST's two t10k files")
parser.add_argument(
    "--backend", default="auto", help="auto (default), numpy, cupy, torch, jax, ..."
)
parser.add_argument("--epochs", type=int, default=5)
args = parser.parse_args()
try:  # before any data is read; a bad name is one line, not a traceback
    backend = ailib.backends.get(args.backend)
except (ValueError, ailib.BackendUnavailable) as exc:
    parser.exit(2, f"{parser.prog}: error: --backend: {exc}\n")
print(f"backend: {backend.name}")

# 1. data on the host: uint8 images -> float32 rows in [0, 1]
if args.digits:
    x, y = datasets.load_mnist_test(args.digits)
    (x_train, y_train), (x_test, y_test) = datasets.train_test_split(x, y, test_size=2000, seed=0)
else:
    (x_train, y_train), (x_test, y_test) = datasets.load_fashion_mnist()
x_train, x_test = (datasets.flatten(datasets.to_float(x)) for x in (x_train, x_test))

# 2. the model: the same code runs on every backend; the seed fixes the initial weights
model = ailib.Sequential(
    [
        Dense(784, 256, init="he_normal"),
        ReLU(),
        Dense(256, 128, init="he_normal"),
        ReLU(),
        Dense(128, 10),
    ],
    backend=backend,
    seed=0,
)

# 3. train; the checkpoint written after every epoch lets the same call with resume=True
#    continue an interrupted run where it stopped
history = model.fit(
    x_train,
    y_train,
    loss="softmax_cross_entropy",
    optimizer=Adam(lr=1e-3),
    epochs=args.epochs,
    batch_size=64,
    validation_data=(x_test, y_test),
    verbose=True,
    checkpoint="runs/example/checkpoint.npz",
)

# 4. evaluate, save, and load the file back on NumPy
accuracy = model.evaluate(x_test, y_test)["accuracy"]
model.save("runs/example/model.npz")
again = ailib.load("runs/example/model.npz", backend="numpy")
print(f"test accuracy {accuracy:.2%}; reloaded: {again.evaluate(x_test, y_test)['accuracy']:.2%}")

target = float(os.environ.get("TARGET_ACCURACY", 0))
if accuracy < target:
    sys.exit(f"accuracy {accuracy:.2%} is below TARGET_ACCURACY={target:.2%}")
