"""Every optimizer against torch.optim in float64, on randomized settings: momentum, Nesterov,
L2 and decoupled weight decay, RMSprop's momentum and centering, Adam's and AdamW's amsgrad,
parameter groups, global-norm clipping (torch.nn.utils.clip_grad_norm_) and a learning rate
changed mid-run."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import ailib
from ailib.layers import BatchNorm1D, Dense
from ailib.optimizers import SGD, Adam, AdamW, RMSprop

from .helpers import host

torch = pytest.importorskip("torch", reason="torch is not installed: no reference to compare")

STEPS = 6
CONFIGS = 6  # randomized settings per optimizer


def _settings(kind: str, seed: int) -> dict[str, Any]:
    """Random hyperparameters for ``kind``; some parameters fall in a group of their own."""
    r = np.random.default_rng([seed, len(kind)])
    s: dict[str, Any] = {
        "lr": float(r.uniform(1e-3, 0.1)),
        "weight_decay": float(r.choice([0.0, r.uniform(1e-3, 0.1)])),
        "clip_norm": None if r.random() < 0.4 else float(r.uniform(0.5, 6.0)),
        "group": r.random() < 0.5,  # the last Dense gets its own lr and weight decay
        "group_lr": float(r.uniform(1e-3, 0.1)),
        "group_wd": float(r.uniform(0.0, 0.1)),
        "lr_factor": float(r.uniform(0.2, 0.9)),  # lr multiplied by this after step 3
    }
    if kind == "sgd":
        s["momentum"] = float(r.choice([0.0, r.uniform(0.5, 0.95)]))
        s["nesterov"] = bool(s["momentum"] > 0 and r.random() < 0.5)
    elif kind in ("adam", "adamw"):
        s["betas"] = (float(r.uniform(0.8, 0.95)), float(r.uniform(0.95, 0.9999)))
        s["eps"] = float(10 ** r.uniform(-9, -6))
        s["decay_vectors"] = bool(r.random() < 0.5)
        if kind == "adamw":
            s["weight_decay"] = float(r.uniform(1e-3, 0.2))
        s["amsgrad"] = bool(r.random() < 0.5)
    else:
        s["alpha"] = float(r.uniform(0.8, 0.99))
        s["eps"] = float(10 ** r.uniform(-9, -6))
        s["momentum"] = float(r.choice([0.0, r.uniform(0.5, 0.95)]))
        s["centered"] = bool(r.random() < 0.5)
    return s


def _ailib_optimizer(kind: str, s: dict[str, Any], layers: list[Any]) -> Any:
    common = {"weight_decay": s["weight_decay"], "clip_norm": s["clip_norm"]}
    if s["group"]:
        common["groups"] = [
            {"params": [layers[-1]], "lr": s["group_lr"], "weight_decay": s["group_wd"]}
        ]
    if kind == "sgd":
        return SGD(s["lr"], momentum=s["momentum"], nesterov=s["nesterov"], **common)
    if kind == "adam":
        return Adam(s["lr"], *s["betas"], eps=s["eps"], amsgrad=s["amsgrad"], **common)
    if kind == "adamw":
        return AdamW(
            s["lr"],
            *s["betas"],
            eps=s["eps"],
            amsgrad=s["amsgrad"],
            decay_vectors=s["decay_vectors"],
            **common,
        )
    return RMSprop(s["lr"], s["alpha"], s["eps"], s["momentum"], s["centered"], **common)


def _torch_optimizer(kind: str, s: dict[str, Any], params: list[tuple[Any, Any, bool]]) -> Any:
    """One torch param group per parameter, with the lr and weight decay ailib should give it
    (worked out here independently: group membership, AdamW's rule for 1-d parameters)."""
    groups = []
    for tensor, layer_is_last, is_vector in params:
        lr, wd = s["lr"], s["weight_decay"]
        if s["group"] and layer_is_last:
            lr, wd = s["group_lr"], s["group_wd"]
        elif kind == "adamw" and is_vector and not s["decay_vectors"]:
            wd = 0.0
        groups.append({"params": [tensor], "lr": lr, "weight_decay": wd})
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=s["lr"], momentum=s["momentum"], nesterov=s["nesterov"])
    if kind == "adam":
        return torch.optim.Adam(
            groups, lr=s["lr"], betas=s["betas"], eps=s["eps"], amsgrad=s["amsgrad"]
        )
    if kind == "adamw":
        return torch.optim.AdamW(
            groups, lr=s["lr"], betas=s["betas"], eps=s["eps"], amsgrad=s["amsgrad"]
        )
    return torch.optim.RMSprop(
        groups,
        lr=s["lr"],
        alpha=s["alpha"],
        eps=s["eps"],
        momentum=s["momentum"],
        centered=s["centered"],
    )


@pytest.mark.parametrize("seed", range(CONFIGS))
@pytest.mark.parametrize("kind", ["sgd", "rmsprop", "adam", "adamw"])
def test_optimizer_matches_torch_optim(
    kind: str, seed: int, backend: ailib.backends.Backend
) -> None:
    _compare_with_torch(kind, _settings(kind, seed), seed, backend, STEPS)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("kind", ["adam", "adamw"])
def test_amsgrad_matches_torch_over_many_steps(
    kind: str, seed: int, backend: ailib.backends.Backend
) -> None:
    """amsgrad=True over 24 steps whose gradients are large every sixth step and small in
    between, so that V falls and max(V_max, V) keeps the larger V_max (checked: the comparison
    would not see an amsgrad that did nothing)."""
    s = {**_settings(kind, seed), "amsgrad": True}
    ours = _compare_with_torch(
        kind, s, seed, backend, 24, lambda step: 4.0 if step % 6 == 1 else 0.3
    )
    held = [host(state["V_max"]) - host(state["V"]) for state in ours.state.values()]
    assert all((d >= 0).all() for d in held) and any((d > 0).any() for d in held)


def _compare_with_torch(
    kind: str,
    s: dict[str, Any],
    seed: int,
    backend: ailib.backends.Backend,
    steps: int,
    scale: Any = lambda step: 2.0,
) -> Any:
    """``steps`` steps of ailib's and torch's optimizer for ``s`` on the same gradients (N(0, 1)
    times ``scale(step)``): the parameters agree to float64 1e-9; returns ailib's optimizer."""
    layers = [
        Dense(4, 3, backend=backend, dtype="float64", seed=seed),
        BatchNorm1D(3, backend=backend, dtype="float64"),
        Dense(3, 2, backend=backend, dtype="float64", seed=seed + 1),
    ]
    rng = np.random.default_rng(seed)
    for layer in layers[1:2]:  # γ, β away from 1 and 0
        for name in layer.params:
            layer.params[name] = backend.asarray(rng.standard_normal(3))
    keys = [(layer, name) for layer in layers for name in layer.params]
    tensors = [torch.tensor(host(layer.params[name]), requires_grad=True) for layer, name in keys]
    reference = _torch_optimizer(
        kind, s, [(t, layer is layers[-1], t.ndim < 2) for t, (layer, _) in zip(tensors, keys)]
    )
    initial_lrs = [g["lr"] for g in reference.param_groups]
    ours = _ailib_optimizer(kind, s, layers)
    for step in range(1, steps + 1):
        if step == 4:  # a schedule's change: every group scales alike
            ours.lr *= s["lr_factor"]
            for group, lr in zip(reference.param_groups, initial_lrs):
                group["lr"] = lr * s["lr_factor"]
        for (layer, name), tensor in zip(keys, tensors):
            g = rng.standard_normal(tuple(tensor.shape)) * scale(step)
            layer.grads[name] = backend.asarray(g)
            tensor.grad = torch.tensor(g)
        if s["clip_norm"] is not None:
            torch.nn.utils.clip_grad_norm_(tensors, s["clip_norm"])
        reference.step()
        ours.step(layers)
    for (layer, name), tensor in zip(keys, tensors):
        np.testing.assert_allclose(
            host(layer.params[name]),
            tensor.detach().numpy(),
            rtol=1e-9,
            atol=1e-12,
            err_msg=f"{name} of {layer.name}, settings {s}",
        )
    return ours


def test_clipping_really_happens_in_the_randomized_settings() -> None:
    """The comparison above is only as good as its settings: some must clip, decay, group."""
    settings = [_settings(k, i) for k in ("sgd", "rmsprop", "adam", "adamw") for i in range(6)]
    # gradients: 27 entries of N(0, 4), global norm about 10, so every clip_norm (<= 6) clips
    assert sum(s["clip_norm"] is not None for s in settings) >= 8
    assert sum(s["group"] for s in settings) >= 4
    assert sum(s["weight_decay"] > 0 for s in settings) >= 8
    assert any(s.get("centered") and s.get("momentum") for s in settings)
    assert any(s.get("nesterov") for s in settings)
    assert sum(bool(s.get("amsgrad")) for s in settings) >= 3
