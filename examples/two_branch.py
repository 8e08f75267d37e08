"""A two-branch model with the graph API: a small CNN reads the image, an MLP reads each
image's ink profile (the ink in every row and every column), and a classifier reads both.

python examples/two_branch.py --digits ../shared/data/mnist   # MNIST's 10k test digits, 8k/2k
python examples/two_branch.py                                 # Fashion-MNIST
TARGET_ACCURACY=0.95 python examples/two_branch.py --digits ...   # exit 1 if the target is missed
"""

import argparse
import os
import sys

import numpy as np

import ailib
from ailib import datasets
from ailib.layers import (
    Concatenate,
    Conv2D,
    Dense,
    GlobalAvgPool2D,
    MaxPool2D,
    ReLU,
    Reshape,
)
from ailib.optimizers import Adam

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--digits", metavar="DIR", help="a directory with MNIST's two t10k files")
parser.add_argument("--backend", default="numpy", help="numpy, cupy, torch, jax, ...")
parser.add_argument("--epochs", type=int, default=3)
args = parser.parse_args()

# 1. data on the host: float32 pixel rows, and each image's row and column sums (56 numbers)
if args.digits:
    x, y = datasets.load_mnist_test(args.digits)
    (x_train, y_train), (x_test, y_test) = datasets.train_test_split(x, y, test_size=2000, seed=0)
else:
    (x_train, y_train), (x_test, y_test) = datasets.load_fashion_mnist()
x_train, x_test = (datasets.to_float(x) for x in (x_train, x_test))


def inputs(images: np.ndarray) -> list[np.ndarray]:
    profile = np.concatenate([images.sum(axis=2), images.sum(axis=1)], axis=1) / 28
    return [datasets.flatten(images), profile.astype(np.float32)]


# 2. the graph: two Inputs, two branches, one Concatenate; sizes flow from the Inputs, so
#    Conv2D and Dense need only their output sizes
pixels, profile = ailib.Input((784,), name="pixels"), ailib.Input((56,), name="profile")
image = Reshape((1, 28, 28))(pixels)
a = ReLU()(MaxPool2D(2)(Conv2D(out_channels=16, kernel_size=3, padding=1)(image)))
a = GlobalAvgPool2D()(ReLU()(Conv2D(out_channels=32, kernel_size=3, padding=1)(a)))
b = ReLU()(Dense(64, init="he_normal")(profile))
h = ReLU()(Dense(64, init="he_normal")(Concatenate()([a, b])))
model = ailib.Model([pixels, profile], Dense(10)(h), backend=args.backend, seed=0)
print(model.summary())

# 3. train: x is a list with one array per Input, in the order of the Model's inputs
model.fit(
    inputs(x_train),
    y_train,
    optimizer=Adam(lr=2e-3),
    epochs=args.epochs,
    batch_size=64,
    validation_data=(inputs(x_test), y_test),
    verbose=True,
)

# 4. evaluate, save (the graph is saved with the weights), load back on NumPy
accuracy = model.evaluate(inputs(x_test), y_test)["accuracy"]
model.save("runs/two_branch/model.npz")
again = ailib.load("runs/two_branch/model.npz", backend="numpy")
reloaded = again.evaluate(inputs(x_test), y_test)["accuracy"]
print(f"test accuracy {accuracy:.2%}; reloaded: {reloaded:.2%}")

target = float(os.environ.get("TARGET_ACCURACY", 0))
if accuracy < target:
    sys.exit(f"accuracy {accuracy:.2%} is below TARGET_ACCURACY={target:.2%}")
