"""Optimizers: the "step towards a better model" that follows backpropagation (docs/math.md §6).

Layers compute gradients; an optimizer updates. Every optimizer shares one loop over the layers'
parameters (`Optimizer.step`: frozen layers skipped, gradients clipped, weight decay, parameter
groups) and differs only in the per-parameter rule (`update`), sorted here in order of
increasing complexity. docs/training.md shows them in use.

Updates are made in place and the result is stored back: on NumPy, CuPy and PyTorch the arrays
are updated in place (no new parameter arrays per step); on JAX, whose arrays are immutable, the
new array is what gets stored. The final step of every rule, W ← W − lr·D, is
`ailib.backends.subtract_scaled`: on NumPy one pass of BLAS's axpy (which may round the last
bit differently from ``p -= lr * d``); elsewhere ``p -= lr * d``.

Optimizer state (momenta, moments) is keyed by the parameter itself, ``(layer, name)``, so one
optimizer can serve layers in any order or any number of models; checkpoints store it under
the parameter's name in the model (`named_state`).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import array_api_compat

from . import backends
from ._checks import flag, number
from .layers.base import Layer
from .schedules import cosine_schedule

#: a parameter: the layer that holds it and its name there (``layer.params[name]``)
ParamKey = tuple[Layer, str]

#: the hyperparameters a parameter group may set (anything else is refused)
GROUP_KEYS = ("params", "lr", "weight_decay")


class Optimizer:
    """Base class. ``step(layers)`` applies `update` to every (parameter, gradient) pair of
    the layers whose ``trainable`` is True.

    Per step, in this order (PyTorch's order, so results agree with ``clip_grad_norm_`` followed
    by ``optimizer.step()``):
    1. clip: with ``clip_norm``, every gradient is scaled by min(1, c/(‖g‖ + 10⁻⁶)), ‖g‖ the
       global norm √(Σ over all parameters of Σ g²); computed on the device, never read back;
    2. L2 weight decay λ (not for decoupled optimizers such as `AdamW`): g ← g + λ·W;
    3. the rule: W ← update(W, g).

    Args:
        lr: the learning rate ("step size" in the seed). Schedules change ``optimizer.lr``.
        weight_decay: λ (0 = off).
        groups: parameter groups with their own lr and/or weight_decay, as in PyTorch:
            ``[{"params": [layer, (layer, "b"), ...], "lr": 0.01, "weight_decay": 0.0}]``;
            a Layer stands for all its parameters, ``(layer, name)`` for one. The first group
            that holds a parameter wins; the others use ``lr`` and ``weight_decay``. A group's
            lr is its rate while ``optimizer.lr`` is at its initial value: schedules scale every
            group alike.
        clip_norm: the largest global gradient norm (None = no clipping).
    """

    #: True where weight decay shrinks W directly (W ← W − lr·λ·W) instead of adding λ·W to g
    decoupled = False

    def __init__(
        self,
        lr: float,
        weight_decay: float = 0.0,
        *,
        groups: Sequence[dict[str, Any]] | None = None,
        clip_norm: float | None = None,
    ) -> None:
        who = type(self).__name__
        lr, weight_decay = number(lr, "lr", who), number(weight_decay, "weight_decay", who)
        if clip_norm is not None:
            clip_norm = number(clip_norm, "clip_norm", who)
        if not 0 < lr < math.inf:
            raise ValueError(f"{who}: lr must be positive and finite, received {lr}")
        if not 0 <= weight_decay < math.inf:
            raise ValueError(
                f"{who}: weight_decay must be >= 0 and finite, received {weight_decay}"
            )
        if clip_norm is not None and not clip_norm > 0:
            raise ValueError(f"{who}: clip_norm must be positive or None, received {clip_norm}")
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        self.state: dict[ParamKey, dict[str, Any]] = {}
        self.iterations = 0
        #: the global gradient norm of the last step (a 0-d device array), when clipping
        self.grad_norm: Any = None
        self.groups = [self._check_group(i, g) for i, g in enumerate(groups or ())]
        self._membership: dict[ParamKey, tuple[float, float | None]] = {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def get_config(self) -> dict[str, Any]:
        """The settings (JSON-serialisable; groups, which hold layers, are left out)."""
        return {"lr": self.lr, "weight_decay": self.weight_decay, "clip_norm": self.clip_norm}

    # -- the shared loop ---------------------------------------------------------------------
    def step(self, layers: Iterable[Layer]) -> None:
        """Update every parameter of the trainable ``layers`` from its gradient (filled by
        backward). Layers with ``trainable = False`` are left as they are.

        Where the backend asks for it (`Backend.flat_updates`: CuPy, PyTorch on CUDA) and every
        parameter has the same dtype, learning rate and weight decay, the parameters live in one flat buffer
        (``layer.params`` hold views of it, from the first step on) and the rule runs once on
        the whole buffer and the concatenated gradients: a handful of array operations per
        step instead of a handful per parameter, with the same arithmetic (`FlatParams`)."""
        self.iterations += 1
        todo = [
            (layer, name, grad)
            for layer in layers
            if layer.trainable
            for name, grad in layer.grads.items()
        ]
        if self.flat and self._flat_step(todo):
            return
        scale = self._clip_scale([grad for _, _, grad in todo]) if self.clip_norm else None
        for layer, name, grad in todo:
            key = (layer, name)
            param = layer.params[name]
            lr_scale, weight_decay = self._hyperparameters(key, param)
            if scale is not None:
                grad = grad * scale
            if weight_decay and not self.decoupled:
                grad = grad + weight_decay * param
            state = self.state.setdefault(key, {})
            lr = self.lr if lr_scale == 1.0 else self.lr * lr_scale
            layer.params[name] = self.update(param, grad, state, lr, weight_decay)

    def update(
        self, param: Any, grad: Any, state: dict[str, Any], lr: float, weight_decay: float
    ) -> Any:
        """The per-parameter rule: returns the updated parameter (in place where possible).
        ``lr`` and ``weight_decay`` are this parameter's (its group's)."""
        raise NotImplementedError

    def initial_state(self, param: Any) -> dict[str, Any] | None:
        """The state of ``param`` before its first update, made without a step: zeroed
        moments and a step count of 0, from which the rule's first update gives what its first
        update from no state gives (V ← μ·0 + g is g). None where the rule cannot say (the
        base class: a rule of a subclass makes its state in `update`)."""
        return None

    def init_state(self, layers: Iterable[Layer]) -> bool:
        """Give every parameter of the trainable ``layers`` that has no state yet its
        `initial_state`. True when every one has state after the call; False, changing
        nothing, where the rule cannot say for one of them. A compiled step
        (`ailib.compiling`) takes the state as arguments of its first call: made here, the
        first step of `fit` compiles too, instead of running uncompiled to make it."""
        missing = [
            (layer, name)
            for layer in layers
            if layer.trainable
            for name in layer.params
            if (layer, name) not in self.state
        ]
        made = []
        for layer, name in missing:
            with layer.backend.context():  # CuPy: allocated on the layer's GPU
                state = self.initial_state(layer.params[name])
            if state is None:
                return False
            made.append(state)
        self.state.update(zip(missing, made))
        return True

    #: whether `step` may keep the parameters in one flat buffer (see there)
    flat = True

    def _flat_step(self, todo: list[tuple[Layer, str, Any]]) -> bool:
        """`step` on one flat buffer; False (nothing done) where it does not apply."""
        if not todo or not all(layer.backend.flat_updates for layer, _, _ in todo):
            return False
        keys = [(layer, name) for layer, name, _ in todo]
        params = [layer.params[name] for layer, name in keys]
        hyper = {self._hyperparameters(key, p) for key, p in zip(keys, params)}
        dtypes = {p.dtype for p in params} | {g.dtype for _, _, g in todo}
        if len(hyper) != 1 or len(dtypes) != 1:
            return False
        flat = self._flat
        if flat is None or not flat.holds(keys, self.state):
            flat = FlatParams.place(keys, self.state)
            if flat is None:  # the parameters' states differ (some stepped alone): one by one
                return False
            self._flat = flat
        (lr_scale, weight_decay), param = hyper.pop(), flat.buffer
        xp = array_api_compat.array_namespace(param)
        grad = xp.concat([xp.reshape(g, (-1,)) for _, _, g in todo])
        if self.clip_norm:
            grad *= self._clip_scale([grad])
        if weight_decay and not self.decoupled:
            grad += weight_decay * param
        lr = self.lr if lr_scale == 1.0 else self.lr * lr_scale
        updated = self.update(param, grad, flat.state, lr, weight_decay)
        flat.settle(updated, self.state)
        return True

    _flat: FlatParams | None = None

    def _clip_scale(self, grads: list[Any]) -> Any:
        """min(1, c/(‖g‖ + 10⁻⁶)) as a 0-d device array (no host read: no sync per step)."""
        if not grads:
            return None
        xp = array_api_compat.array_namespace(grads[0])
        total = xp.sum(grads[0] * grads[0])
        for g in grads[1:]:
            total = total + xp.sum(g * g)
        self.grad_norm = xp.sqrt(total)
        coef = self.clip_norm / (self.grad_norm + 1e-6)
        return xp.where(coef < 1.0, coef, xp.ones_like(coef))

    # -- parameter groups --------------------------------------------------------------------
    def _check_group(self, index: int, group: dict[str, Any]) -> dict[str, Any]:
        who = f"{type(self).__name__}: groups[{index}]"
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"{who} must be a dict with a 'params' list, received {group!r}")
        unknown = sorted(set(group) - set(GROUP_KEYS))
        if unknown:
            raise ValueError(f"{who} has unknown keys {unknown}; expected {list(GROUP_KEYS)}")
        members: set[Any] = set()
        for item in group["params"]:
            if isinstance(item, Layer):
                members.add(item)
            elif (
                isinstance(item, tuple)
                and len(item) == 2
                and isinstance(item[0], Layer)
                and item[1] in item[0].params
            ):
                members.add(item)
            else:
                raise TypeError(
                    f"{who}: each entry of 'params' must be a Layer or a (layer, parameter "
                    f"name) pair naming one of its params, received {item!r}"
                )
        lr = number(group.get("lr", self.lr), "lr", who)
        if not 0 < lr < math.inf:
            raise ValueError(f"{who}: lr must be positive and finite, received {lr}")
        weight_decay = group.get("weight_decay")
        if weight_decay is not None:
            weight_decay = number(weight_decay, "weight_decay", who)
        if weight_decay is not None and not 0 <= weight_decay < math.inf:
            raise ValueError(
                f"{who}: weight_decay must be >= 0 and finite, received {weight_decay}"
            )
        return {
            "members": members,
            "lr_scale": lr / self.lr,
            "weight_decay": None if weight_decay is None else float(weight_decay),
        }

    def _hyperparameters(self, key: ParamKey, param: Any) -> tuple[float, float]:
        """(lr / self.lr, weight decay) for one parameter; looked up once, then cached."""
        found = self._membership.get(key)
        if found is None:
            found = (1.0, self.default_decay(key, param))
            for group in self.groups:
                if key in group["members"] or key[0] in group["members"]:
                    found = (group["lr_scale"], group["weight_decay"])
                    break
            self._membership[key] = found
        lr_scale, weight_decay = found
        return lr_scale, self.weight_decay if weight_decay is None else weight_decay

    def default_decay(self, key: ParamKey, param: Any) -> float | None:
        """The weight decay of a parameter outside every group; None means ``weight_decay``."""
        return None

    # -- checkpoints -------------------------------------------------------------------------
    def named_state(self, layers: Sequence[Layer]) -> dict[str, dict[str, Any]]:
        """The state as ``{"<index in layers>.<param name>": {slot: value}}`` (what checkpoints
        store: the parameter's name in the model)."""
        names = {(layer, k): f"{i}.{k}" for i, layer in enumerate(layers) for k in layer.params}
        return {names[key]: slots for key, slots in self.state.items() if key in names}

    def load_named_state(self, layers: Sequence[Layer], state: dict[str, dict[str, Any]]) -> None:
        """Replace the state with ``state`` as `named_state` gave it, for the same ``layers``.

        Raises:
            ValueError: a parameter the model does not have, or a parameter's state without the
                slots the rule keeps (`initial_state`: a step count as an int >= 0 or a 0-d
                array, arrays of the parameter's shape)."""
        keys = {f"{i}.{k}": (layer, k) for i, layer in enumerate(layers) for k in layer.params}
        unknown = sorted(set(state) - set(keys))
        if unknown:
            raise ValueError(f"optimizer state for parameters the model does not have: {unknown}")
        for name, slots in state.items():
            layer, k = keys[name]
            with layer.backend.context():  # CuPy: made on the layer's GPU, as by init_state
                fresh = self.initial_state(layer.params[k])
            if fresh is None:  # the rule cannot say what it keeps
                continue
            if set(slots) != set(fresh):
                raise ValueError(
                    f"optimizer state of {name} holds {sorted(slots)}, "
                    f"{type(self).__name__} keeps {sorted(fresh)}"
                )
            for slot, value in fresh.items():
                given = slots[slot]
                if isinstance(value, int):  # a count: kept as a 0-d array by compiled steps
                    if getattr(given, "ndim", None) != 0 and (type(given) is not int or given < 0):
                        raise ValueError(
                            f"optimizer state {name}.{slot} is {given!r}, expected a step "
                            f"count (an int >= 0)"
                        )
                elif getattr(given, "shape", None) != value.shape:
                    raise ValueError(
                        f"optimizer state {name}.{slot} is {type(given).__name__} of shape "
                        f"{getattr(given, 'shape', None)}, expected an array of shape "
                        f"{tuple(value.shape)}"
                    )
        self.state = {keys[name]: dict(slots) for name, slots in state.items()}


class FlatParams:
    """Parameters (and optimizer state) of several layers in one flat buffer each.

    ``buffer`` is the concatenation of the parameters, flattened in order; each
    ``layer.params[name]`` is replaced by a view of its piece, so updating the buffer in place
    updates every layer. Each state slot (a momentum, Adam's moments) is one flat array too,
    and ``optimizer.state[key]`` holds views of its pieces (what checkpoints save); other
    state entries (Adam's step count) are shared. Built by `place`; `holds` tells whether the
    layers and the state still use it (a layer whose parameter was replaced, a state loaded
    from a checkpoint, or another set of parameters make a new one).
    """

    def __init__(self, keys: list[ParamKey], buffer: Any, state: dict[str, Any]) -> None:
        self.keys = keys
        self.shapes = [tuple(layer.params[name].shape) for layer, name in keys]
        self.sizes = [math.prod(shape) for shape in self.shapes]
        self.buffer: Any = None
        self.views: list[Any] = []
        self.state = state
        self.slot_arrays: dict[str, Any] = {}
        self.key_states: list[dict[str, Any]] = []
        self.xp = array_api_compat.array_namespace(buffer)
        self._point(buffer)

    @classmethod
    def place(cls, keys: list[ParamKey], states: dict[ParamKey, dict[str, Any]]) -> Any:
        """Copy the parameters (and their states) into new flat buffers; None when the states
        of the parameters differ in their slots or step counts."""
        params = [layer.params[name] for layer, name in keys]
        xp = array_api_compat.array_namespace(params[0])
        mine = [states.get(key, {}) for key in keys]
        slots = {tuple(sorted(s)) for s in mine}
        if len(slots) != 1:
            return None
        state: dict[str, Any] = {}
        for slot in slots.pop():
            values = [s[slot] for s in mine]
            if _per_entry(values[0]):
                state[slot] = xp.concat([xp.reshape(v, (-1,)) for v in values])
            elif all(v is values[0] for v in values) or (
                not hasattr(values[0], "shape") and all(v == values[0] for v in values)
            ):
                state[slot] = values[0]  # one step count for all (a number or a 0-d array)
            else:
                return None
        buffer = xp.concat([xp.reshape(p, (-1,)) for p in params])
        flat = cls(keys, buffer, state)
        flat.settle(buffer, states)
        return flat

    def _pieces(self, array: Any) -> list[Any]:
        out, start = [], 0
        for shape, size in zip(self.shapes, self.sizes):
            out.append(self.xp.reshape(array[start : start + size], shape))
            start += size
        return out

    def _point(self, buffer: Any) -> None:
        self.buffer = buffer
        self.views = self._pieces(buffer)
        for (layer, name), view in zip(self.keys, self.views):
            layer.params[name] = view

    def settle(self, updated: Any, states: dict[ParamKey, dict[str, Any]]) -> None:
        """After the rule ran on the flat arrays: re-point the layers if the rule returned a
        new buffer, and give every parameter its views of the state."""
        if updated is not self.buffer:
            self._point(updated)
        if len(self.key_states) != len(self.keys):  # placed just now
            self.key_states = [{} for _ in self.keys]
        # new views where a per-entry slot is a new array (made by this step, or replaced each
        # step, as amsgrad's V_max), and the step count, go into the parameters' own dicts,
        # which stay (a compiled step holds them)
        for slot, value in self.state.items():
            if not _per_entry(value):
                for own in self.key_states:
                    own[slot] = value
            elif self.slot_arrays.get(slot) is not value or slot not in self.key_states[0]:
                for own, piece in zip(self.key_states, self._pieces(value)):
                    own[slot] = piece
        self.slot_arrays = dict(self.state)
        for key, own in zip(self.keys, self.key_states):
            states[key] = own

    def holds(self, keys: list[ParamKey], states: dict[ParamKey, dict[str, Any]]) -> bool:
        """Whether these parameters, in this order, and their states are still the ones placed
        here."""
        if keys != self.keys or len(self.key_states) != len(keys):
            return False
        for (layer, name), view, own in zip(keys, self.views, self.key_states):
            if layer.params[name] is not view or states.get((layer, name)) is not own:
                return False
            if own.keys() != self.state.keys():
                return False
        for slot, value in self.state.items():
            if _per_entry(value):
                continue
            held = [own[slot] for own in self.key_states]
            if all(h is value for h in held):
                continue
            if hasattr(held[0], "shape") and not hasattr(value, "shape"):
                if all(h is held[0] for h in held):
                    # a compiled step's count (ailib.compiling): one 0-d device array, a CUDA
                    # graph's input, in every parameter's state for the number kept here
                    self.state[slot] = held[0]
                    continue
                return False  # (arrays are never compared here: no read back to the host)
            if hasattr(value, "shape") or any(h != value for h in held):
                return False  # stepped one by one since (a step count moved on)
        return True


def _per_entry(value: Any) -> bool:
    """Whether a state entry has one value per parameter entry (an array of 1 or more axes),
    as opposed to one for the whole parameter (a step count: a number or a 0-d array)."""
    return getattr(value, "ndim", 0) > 0


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with momentum μ (and Nesterov's look-ahead).

    plain:     W ← W − lr·g
    momentum:  V ← μV + g;  W ← W − lr·V
    Nesterov:  V ← μV + g;  W ← W − lr·(g + μV)
    """

    def __init__(
        self,
        lr: float = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        *,
        groups: Sequence[dict[str, Any]] | None = None,
        clip_norm: float | None = None,
    ) -> None:
        super().__init__(lr, weight_decay, groups=groups, clip_norm=clip_norm)
        momentum = number(momentum, "momentum", "SGD")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"SGD: momentum must lie in [0, 1), received {momentum}")
        nesterov = flag(nesterov, "nesterov", "SGD")
        if nesterov and momentum == 0.0:
            raise ValueError("SGD: nesterov=True needs a momentum > 0")
        self.momentum, self.nesterov = float(momentum), nesterov

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}

    def initial_state(self, param: Any) -> dict[str, Any] | None:
        return {"V": _zeros_like(param)} if self.momentum else {}

    def update(
        self, param: Any, grad: Any, state: dict[str, Any], lr: float, weight_decay: float
    ) -> Any:
        if self.momentum == 0.0:
            return backends.subtract_scaled(param, lr, grad)
        if "V" not in state:
            state["V"] = grad * 1.0  # a copy: the first V is g
        else:
            v = state["V"]
            v *= self.momentum
            v += grad
            state["V"] = v
        step = grad + self.momentum * state["V"] if self.nesterov else state["V"]
        return backends.subtract_scaled(param, lr, step)


class RMSprop(Optimizer):
    """RMSprop (Hinton's lecture 6e), in PyTorch's form:

        V ← αV + (1 − α)g²                       (running mean square, from V = 0)
        centered:  G ← αG + (1 − α)g;  D = √(V − G²) + ε      else  D = √V + ε
        plain:     W ← W − lr·g/D
        momentum:  B ← μB + g/D;  W ← W − lr·B   (from B = 0)

    Args:
        lr, alpha (α), eps (ε), momentum (μ), centered; weight_decay: L2 (added to g).
    """

    def __init__(
        self,
        lr: float = 0.01,
        alpha: float = 0.99,
        eps: float = 1e-8,
        momentum: float = 0.0,
        centered: bool = False,
        weight_decay: float = 0.0,
        *,
        groups: Sequence[dict[str, Any]] | None = None,
        clip_norm: float | None = None,
    ) -> None:
        super().__init__(lr, weight_decay, groups=groups, clip_norm=clip_norm)
        alpha, eps = number(alpha, "alpha", "RMSprop"), number(eps, "eps", "RMSprop")
        momentum = number(momentum, "momentum", "RMSprop")
        if not 0.0 <= alpha < 1.0 or not 0.0 <= momentum < 1.0 or not 0 < eps < math.inf:
            raise ValueError(
                f"RMSprop: need 0 <= alpha < 1, 0 <= momentum < 1 and eps > 0, received "
                f"alpha={alpha}, momentum={momentum}, eps={eps}"
            )
        self.alpha, self.eps = float(alpha), float(eps)
        self.momentum, self.centered = float(momentum), flag(centered, "centered", "RMSprop")

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "alpha": self.alpha,
            "eps": self.eps,
            "momentum": self.momentum,
            "centered": self.centered,
        }

    def initial_state(self, param: Any) -> dict[str, Any] | None:
        slots = ["V"] + ["G"] * self.centered + ["B"] * bool(self.momentum)
        return {slot: _zeros_like(param) for slot in slots}

    def update(
        self, param: Any, grad: Any, state: dict[str, Any], lr: float, weight_decay: float
    ) -> Any:
        xp = array_api_compat.array_namespace(param)
        a = self.alpha
        if "V" not in state:
            state["V"] = (1.0 - a) * (grad * grad)
        else:
            v = state["V"]
            v *= a
            v += (1.0 - a) * (grad * grad)
            state["V"] = v
        if self.centered:
            if "G" not in state:  # (also where ``centered`` was turned on after some steps)
                state["G"] = (1.0 - a) * grad
            else:
                g = state["G"]
                g *= a
                g += (1.0 - a) * grad
                state["G"] = g
        v = state["V"] - state["G"] * state["G"] if self.centered else state["V"]
        step = grad / (xp.sqrt(v) + self.eps)
        if self.momentum:
            if "B" not in state:
                state["B"] = step
            else:
                b = state["B"]
                b *= self.momentum
                b += step
                state["B"] = b
            step = state["B"]
        return backends.subtract_scaled(param, lr, step)


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with bias correction:

        M ← β₁M + (1 − β₁)g;   V ← β₂V + (1 − β₂)g²
        W ← W − lr·√(1 − β₂ᵗ)/(1 − β₁ᵗ) · M / (√V + ε̂),   ε̂ = ε·√(1 − β₂ᵗ)

    (the bias corrections folded into the step size, as in the paper's section 2).
    ``weight_decay`` is the L2 penalty added to g (PyTorch's Adam); for decay decoupled from the
    moments use `AdamW`.

    ``amsgrad=True`` (Reddi et al., 2018; PyTorch's ``amsgrad``) also keeps the largest V so far,
    V_max ← max(V_max, V) (from V_max = 0), and divides by it instead of V:
    W ← W − lr·√(1 − β₂ᵗ)/(1 − β₁ᵗ) · M / (√V_max + ε̂), so that no entry's step grows because
    its V fell. V_max is one more array per parameter, in the state and in checkpoints
    (docs/math.md §6).
    """

    def __init__(
        self,
        lr: float = 0.001,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        groups: Sequence[dict[str, Any]] | None = None,
        clip_norm: float | None = None,
    ) -> None:
        super().__init__(lr, weight_decay, groups=groups, clip_norm=clip_norm)
        who = type(self).__name__
        if not isinstance(amsgrad, bool):
            raise TypeError(f"{who}: amsgrad must be True or False, received {amsgrad!r}")
        beta1, beta2 = number(beta1, "beta1", who), number(beta2, "beta2", who)
        eps = number(eps, "eps", who)
        for name, beta in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= beta < 1.0:
                raise ValueError(
                    f"{type(self).__name__}: {name} must lie in [0, 1), received {beta}"
                )
        if not 0.0 <= eps < math.inf:  # as PyTorch: 0 is allowed
            raise ValueError(f"{type(self).__name__}: eps must be >= 0 and finite, received {eps}")
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)
        self.amsgrad = amsgrad

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "beta1": self.beta1,
            "beta2": self.beta2,
            "eps": self.eps,
            "amsgrad": self.amsgrad,
        }

    def initial_state(self, param: Any) -> dict[str, Any] | None:
        state = {"t": 0, "M": _zeros_like(param), "V": _zeros_like(param)}
        if self.amsgrad:
            state["V_max"] = _zeros_like(param)
        return state

    def update(
        self, param: Any, grad: Any, state: dict[str, Any], lr: float, weight_decay: float
    ) -> Any:
        t = state.get("t", 0)
        t += 1  # a Python int; a 0-d device array in a compiled step (ailib.compiling)
        state["t"] = t
        if "M" not in state:
            state["M"] = (1.0 - self.beta1) * grad
            state["V"] = (1.0 - self.beta2) * (grad * grad)
        else:
            m, v = state["M"], state["V"]
            m *= self.beta1
            m += (1.0 - self.beta1) * grad
            v *= self.beta2
            v += (1.0 - self.beta2) * (grad * grad)
            state["M"], state["V"] = m, v
        xp = array_api_compat.array_namespace(param)
        v = state["V"]
        if self.amsgrad:
            # (no V_max yet: the first step from no state, or amsgrad turned on after some
            # steps; max(0, V) is V, copied since V is updated in place)
            v_max = state.get("V_max")
            v = state["V_max"] = v * 1.0 if v_max is None else xp.maximum(v_max, v)
        if isinstance(t, int):
            root, rest = (
                math.sqrt(_one_minus_power(math, self.beta2, t)),
                _one_minus_power(math, self.beta1, t),
            )
        else:  # an array: the bias corrections in the parameters' dtype
            t = xp.astype(t, param.dtype)
            root = xp.sqrt(_one_minus_power(xp, self.beta2, t))
            rest = _one_minus_power(xp, self.beta1, t)
        step = lr * root / rest
        eps_hat = self.eps * root
        return backends.subtract_scaled(param, step, state["M"] / (xp.sqrt(v) + eps_hat))


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019), in PyTorch's form:

        W ← W − lr·λ·W,   then the `Adam` rule on the undecayed g (with ``amsgrad``, Adam's).

    Unlike L2 (λ·W added to g), the decay is not divided by √V, so every weight shrinks at the
    same rate. By default parameters with fewer than two axes (biases, BatchNorm's γ and β) are
    not decayed, as usual for AdamW: shrinking them towards 0 only adds bias; ``decay_vectors=True``
    decays them too. Groups (see `Optimizer`) override both.
    """

    decoupled = True

    def __init__(
        self,
        lr: float = 0.001,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        amsgrad: bool = False,
        *,
        decay_vectors: bool = False,
        groups: Sequence[dict[str, Any]] | None = None,
        clip_norm: float | None = None,
    ) -> None:
        super().__init__(
            lr, beta1, beta2, eps, weight_decay, amsgrad, groups=groups, clip_norm=clip_norm
        )
        self.decay_vectors = decay_vectors  # checked by the setter

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "decay_vectors": self.decay_vectors}

    @property
    def decay_vectors(self) -> bool:
        return self._decay_vectors

    @decay_vectors.setter
    def decay_vectors(self, value: bool) -> None:
        self._decay_vectors = flag(value, "decay_vectors", type(self).__name__)
        self._membership = {}  # each parameter's decay, looked up again at its next step

    def default_decay(self, key: ParamKey, param: Any) -> float | None:
        return None if self.decay_vectors or param.ndim >= 2 else 0.0

    def update(
        self, param: Any, grad: Any, state: dict[str, Any], lr: float, weight_decay: float
    ) -> Any:
        if weight_decay:
            param *= 1.0 - lr * weight_decay
        return super().update(param, grad, state, lr, 0.0)


def _zeros_like(param: Any) -> Any:
    return array_api_compat.array_namespace(param).zeros_like(param)


def _one_minus_power(xp: Any, beta: float, t: Any) -> Any:
    """1 − βᵗ for a step count t, as −expm1(t·ln β): to the last bits of t's type (an int
    with ``xp`` the math module, or a floating array of ``xp``), the same formula on the host
    and in a compiled step. (1.0 − β**t in float32 would carry β's own rounding:
    float32(0.999) is 0.99900001, so 1 − β¹ came out 1.3·10⁻⁵ off, relatively, and Adam's
    first steps with it.) β = 0 gives 1."""
    if beta == 0.0:
        return 1.0 if xp is math else xp.ones_like(t)
    return -xp.expm1(t * math.log(beta))


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD,
    "rmsprop": RMSprop,
    "adam": Adam,
    "adamw": AdamW,
}


def get(optimizer: str | Optimizer, **kwargs: Any) -> Optimizer:
    """An optimizer from a name ("sgd", "rmsprop", "adam", "adamw") and keyword arguments, or
    the object itself."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    try:
        cls = OPTIMIZERS[optimizer.lower()]
    except (KeyError, AttributeError):
        raise ValueError(
            f"unknown optimizer {optimizer!r}; expected one of {', '.join(OPTIMIZERS)}"
        ) from None
    return cls(**kwargs)


__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "Optimizer",
    "RMSprop",
    "cosine_schedule",
    "get",
]
