"""Benchmarks: speed measured side by side, as ratios (not part of the test suite).

python -m benchmarks.mlp            # the MLP benchmark (see benchmarks/mlp.py --help)
bash benchmarks/gpu.sh --help       # the same on a CUDA machine (CuPy vs PyTorch CUDA)
"""
