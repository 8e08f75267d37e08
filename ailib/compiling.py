"""Compiled training steps: forward, loss, backward and update as one call (docs/performance.md).

`ailib.training.train_step` runs the seed's four steps one array operation at a time. Where the
backend has a compiler (``Backend.compiler``: ``jax.jit`` on JAX; a traced replay of the step's
own calls on NumPy and PyTorch's CPU, `ailib.backends.ReplayStep`; CUDA graphs on CuPy, when
asked), `step_for` turns the same four steps into one compiled function, by running them once on
the compiler's tracers:

    (parameters, buffers, optimizer state, lr, x, y)
        -> (new parameters, buffers, state, gradients, E, Y, correct count)

a pure function of its arguments, traced from the unchanged layers, loss and optimizer (their
arrays are swapped for the tracer's inputs during the trace, and the outputs put back after
each call). XLA then fuses the step's elementwise work and dispatches it once.

What is an argument, so that it can change without a recompile: every array, the learning rate
(a Python float: schedules change it) and integer state such as Adam's step count (a Python int
passed in; integer state entries are taken to be step counts, +1 per step, and stay Python ints
on the host, so checkpoints and the step never wait for the device). What is a constant of the
compiled function: shapes, dtypes, hyperparameters other than lr, the layer structure and train
mode. Each step compares the layers (their arrays' names, ``trainable`` and ``training`` flags)
and the optimizer's settings (``get_config()`` but lr) with those it was compiled for, and
compiles again where they changed: a layer frozen between two `fit` calls is not updated, a
momentum changed is used. (`fit` over arrays, whose callbacks have no batch hooks or only
report, runs nothing that changes the model between steps: there the comparison is made once
per epoch, `unchanged`.) A layer's own settings (a BatchNorm's momentum) are not compared:
layers are configured when they are made.
The compiler recompiles when a shape changes: the last, shorter batch of an epoch compiles once
more (then both versions are cached; ``drop_last=True`` avoids it).

The optimizer's state is an argument of every call, the first included: before the first
step it is made zeroed (`ailib.optimizers.Optimizer.init_state`: zero moments and a step count
of 0, from which every rule's first update is the one it makes from no state).

Left to the uncompiled path: the first step of an optimizer whose rule makes its own state
(`Optimizer.initial_state` None: a rule of a subclass), the first step of a model whose
weights wait for the first batch (``Dense(128)`` without an input size: they are made by that
step's forward pass, which a trace must not do), gradient accumulation
(``update=False``), models that draw random numbers per step (Dropout: its masks would become
constants of the trace; such models are never compiled, since the first compiled
call is the real step on NumPy and CuPy, and consumes its inputs on JAX), steps that cannot be
traced (an `Embedding` checks its indices on the host: the trace fails, the step runs eagerly
from then on) and ``model.compile_steps = False``. A compiled step that fails otherwise, where
the uncompiled step then runs, is a fault of the compiler: a RuntimeWarning says so, once. The
result equals the uncompiled step up to rounding (float64 to 1e-12, float32 to 1e-5 over 20
steps; tests/test_compiling.py).

Several steps in one call (`Backend.loop_compiler`, JAX): `fit` over arrays hands the compiled
step the whole data set, the epoch's permutation and where to start (`CompiledStep.run_steps`),
so each batch is gathered inside the call rather than by a dispatch of its own; and where
nothing may change the model between two steps (the `unchanged` case above), one call takes
every step up to the next read of the losses (``log_every``, 50 by default): a loop inside
``jax.jit`` carries parameters and state from step to step and returns each step's error, the
summed correct count and the last step's gradients and output. Dispatching a step costs the
thread that dispatches it, which on a small CPU shares the cores with XLA's own threads. The
results equal the uncompiled `fit`'s as the single steps' do (float64 1e-12, float32 1e-5;
tests/test_compiled_loops.py).

On JAX the parameters and optimizer state are donated to the compiled step (`Backend.compiler`):
it writes their new values into the same memory, and the arrays passed in are deleted. An
array read from ``model.params`` (or ``layer.params``) before a training step is no longer
valid after it there; keep a copy (``np.asarray(a)``) to compare before and after.
"""

from __future__ import annotations

import contextlib
import warnings
import weakref
from typing import Any, Callable, Iterator

from .backends import TraceError

#: the compiled step of each model: [(loss key, optimizer, CompiledStep)] (one entry: a model
#: trained with another optimizer or loss compiles afresh)
_STEPS: weakref.WeakKeyDictionary[Any, list[tuple[Any, Any, CompiledStep]]] = (
    weakref.WeakKeyDictionary()
)


#: models inside `unchanged`: model -> that block's token
_UNCHANGED: weakref.WeakKeyDictionary[Any, object] = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def unchanged(model: Any) -> Iterator[None]:
    """A block in which the caller vouches that nothing but ``model``'s own training steps
    runs between them: no layer is frozen, added or given new arrays, and the optimizer's
    settings stay as they are (`fit` over arrays, whose callbacks have no batch hooks or only
    report, ``Callback.writes``). The compiled step then compares the layers and settings
    with those it was compiled for once in the block, not every step (a few microseconds a
    step, which at small batches is a few percent)."""
    previous = _UNCHANGED.get(model)
    _UNCHANGED[model] = object()
    try:
        yield
    finally:
        if previous is None:
            _UNCHANGED.pop(model, None)
        else:
            _UNCHANGED[model] = previous


def _loss_key(loss: Any) -> tuple[Any, ...]:
    """Losses of one class and settings compute the same (`fit` makes a new one per call):
    the settings as its repr states them and as its plain attributes hold them (a loss of
    the user's whose repr does not name its settings)."""
    plain = (bool, int, float, str)
    settings = [(k, v) for k, v in vars(loss).items() if isinstance(v, plain)]
    return type(loss), repr(loss), tuple(sorted(settings))


def step_for(model: Any, loss: Any, optimizer: Any) -> Callable[[Any, Any], Any] | None:
    """The compiled step of ``model`` with ``loss`` and ``optimizer``, or None where the step
    runs uncompiled (see the module docstring). ``model.compile_steps``: True or False to
    force it on or off; None (default) compiles where the backend has a compiler."""
    step = compiled_step(model, loss, optimizer)
    return None if step is None else step.bind(loss)


def compiled_step(model: Any, loss: Any, optimizer: Any) -> CompiledStep | None:
    """`step_for`'s `CompiledStep` itself (`fit` calls its `CompiledStep.run_steps`), or None
    where the next step runs uncompiled."""
    setting = getattr(model, "compile_steps", None)
    compiler = getattr(model.backend, "compiler", None)
    if setting is False or compiler is None or not model.training:
        return None
    if not getattr(model, "built", True):
        # weights made by this step's forward pass (sizes from the first batch) would be made
        # inside the trace: constants of it, or JAX's tracers leaking out; it runs uncompiled
        return None
    if setting is None and not model.backend.compile_default:
        return None
    steps = _STEPS.get(model)
    if steps:  # the model's step, if it is for this loss and optimizer
        known_loss, known_optimizer, step = steps[0]
        if known_optimizer is optimizer and (
            loss is step.loss or loss is step.equal_loss or known_loss == _loss_key(loss)
        ):
            step.equal_loss = (
                loss  # (a new loss object per `fit` call: compared once, not per step)
            )
            if step.off or step.tracing:
                return None
            return step
    if any(hasattr(layer, "rng") for layer in model.layers):
        # a step that draws (Dropout) cannot be compiled (its masks would be constants), and
        # the first compiled call is the real step (NumPy's trace, CuPy's first run) or
        # consumes its inputs (JAX donates them): it must not run only to be undone, so such
        # models are never compiled (a layer added later: `CompiledStep` checks again)
        return None
    step = CompiledStep(model, loss, optimizer, compiler)
    _STEPS[model] = [(_loss_key(loss), optimizer, step)]
    if _has_state(model, optimizer) or _init_state(model, optimizer):
        return step  # the state is an argument of the first call (made zeroed, or resumed)
    return None  # a rule that makes its own state: the first step runs uncompiled to make it


def release(model: Any) -> bool:
    """Forget ``model``'s compiled steps, and with them what they keep: jax.jit's compiled
    functions, NumPy's and PyTorch's replays with their buffers (one set of intermediate
    arrays per batch shape, kept while the model lives), CuPy's graphs. The next training step
    compiles afresh. True if there was anything to forget."""
    inference = _INFERENCE.pop(model, None) is not None
    inference = _EVALUATION.pop(model, None) is not None or inference
    return _STEPS.pop(model, None) is not None or inference


class CompiledStep:
    """One model + loss + optimizer's step, compiled (see the module docstring)."""

    def __init__(self, model: Any, loss: Any, optimizer: Any, compiler: Any) -> None:
        self._model = weakref.ref(model)  # `_STEPS` is keyed by the model: no strong reference
        self.loss, self.optimizer = loss, optimizer
        self.compiler = compiler
        self.structure: Any = None
        self.compiled: Any = None
        self.tracing = False
        self.off = False  # set when the step cannot be traced (then it runs uncompiled)

    @property
    def model(self) -> Any:
        return self._model()

    def bind(self, loss: Any) -> Callable[[Any, Any], Any]:
        """``(x, y) -> self(x, y, loss)`` (one per loss object, kept for the next step)."""
        bound = self._bound
        if bound is None or bound[0] is not loss:
            bound = self._bound = (loss, lambda x, y: self(x, y, loss))
        return bound[1]

    _bound: tuple[Any, Callable[[Any, Any], Any]] | None = None
    equal_loss: Any = None  # the last loss object found equal to ``loss`` (`compiled_step`)

    # -- the arrays the step reads and writes -------------------------------------------------
    def _fingerprint(self, model: Any) -> tuple[Any, ...]:
        """What `_refs` and the traced function depend on besides shapes and settings: the
        layers, their arrays' names and trainable and train-mode flags (a layer frozen after
        the step was compiled must not be updated by it), and the optimizer state's layout;
        with the identity of every dict that holds the step's arrays (`_refs` keeps them).
        Cheaper to compare than the refs are to make."""
        state = self.optimizer.state
        return (
            id(state),
            tuple(map(id, state.values())),
            sum(map(len, state.values())),
            *[
                (
                    layer,
                    layer.trainable,
                    layer.training,
                    id(params := layer.params),
                    tuple(params),
                    id(buffers := layer.buffers),
                    tuple(buffers),
                )
                for layer in model.layers
            ],
        )

    def _refs(self, model: Any) -> tuple[list[tuple[str, Any, str]], list[tuple[Any, str]]]:
        """The step's arrays as (kind, owner, name) refs, and as (the dict that holds it,
        key) pairs: the same dicts as long as the fingerprint is the same (it has their ids,
        and the pairs keep them alive)."""
        fingerprint = self._fingerprint(model)
        if fingerprint == self._known[0]:
            return self._known[1]
        refs = self._make_refs(model)
        state = self.optimizer.state
        pairs = [
            (state[owner] if kind == "state" else getattr(owner, kind), name)
            for kind, owner, name in refs
        ]
        self._known = (fingerprint, (refs, pairs))
        return refs, pairs

    _known: tuple[Any, Any] = (None, None)
    _compiled_for: Any = None  # the refs `compiled` was made for
    _settings: Any = None  # and the optimizer's settings
    _owners: list[tuple[Any, str]] = []  # the (layer, name) of each "params" ref, in order
    _counts: list[bool] = []  # per ref: whether the step updates it (state of a trainable layer)

    def _make_refs(self, model: Any) -> list[tuple[str, Any, str]]:
        refs: list[tuple[str, Any, str]] = []
        state = self.optimizer.state
        for layer in model.layers:
            refs += [("params", layer, name) for name in sorted(layer.params)]
            refs += [("buffers", layer, name) for name in sorted(layer.buffers)]
            for name in sorted(layer.params):
                refs += [
                    ("state", (layer, name), slot) for slot in sorted(state.get((layer, name), {}))
                ]
        return refs

    def _get(self, refs: list[tuple[str, Any, str]]) -> list[Any]:
        state = self.optimizer.state
        return [
            state[owner][name] if kind == "state" else getattr(owner, kind)[name]
            for kind, owner, name in refs
        ]

    def _put(self, refs: list[tuple[str, Any, str]], values: list[Any]) -> None:
        state = self.optimizer.state
        for (kind, owner, name), value in zip(refs, values):
            if kind == "state":
                state[owner][name] = value
            else:
                getattr(owner, kind)[name] = value

    # -- the pure function -------------------------------------------------------------------
    def _pure(
        self, refs: list[tuple[str, Any, str]], count_hits: bool = False
    ) -> Callable[..., Any]:
        """The step as a pure function (see the module docstring); with ``count_hits`` the
        correct count is formed even where the loss does not form it (`fit`'s own count,
        `ailib.training.correct_count`): steps run in one call leave no Y to count from."""
        from .training import formed_or_counted, train_step

        loss, optimizer = self.loss, self.optimizer

        def step(values: list[Any], lr: Any, x: Any, y: Any) -> Any:
            model = self.model  # (not kept by the compiled function: the model may be freed)
            self.tracing = True
            saved_lr = optimizer.lr
            try:
                self._put(refs, values)
                optimizer.lr = lr
                error, y_pred = train_step(model, x, y, loss, optimizer)
                if count_hits:
                    hits = formed_or_counted(model.backend, loss, y_pred, y)
                else:
                    hits = loss.correct(y_pred, y) if hasattr(loss, "correct") else None
                grads = [layer.grads.get(name) for kind, layer, name in refs if kind == "params"]
                out = (self._get(refs), grads, optimizer.grad_norm, error, y_pred, hits)
            finally:
                optimizer.lr = saved_lr
                self.tracing = False
            return out

        return step

    def __call__(self, x: Any, y: Any, loss: Any = None) -> tuple[Any, Any]:
        """One step on the batch (x, y); ``loss`` (an equal loss object, default the one
        traced) receives the correct count (`ailib.losses.Loss.correct`)."""
        model, optimizer = self._model(), self.optimizer
        checked = self._checked(model)
        if checked is None:
            return self._eager(model, x, y, loss)  # this step runs uncompiled
        refs, pairs = checked
        values = [holder[name] for holder, name in pairs]
        iterations = optimizer.iterations
        try:
            with model.backend.context():
                out = self.compiled(values, float(optimizer.lr), x, y)
        except Warning:
            # a warning turned into an error (``-W error``): raised where the uncompiled step
            # raises it too, or after the step ran (a replay's failed check); either way it is
            # the caller's, and running the step again here would run it twice
            raise
        except Exception as exc:
            self._failed(exc, refs, values, iterations)
            return self._uncompiled_after(exc, model, x, y, loss)
        new, grads, grad_norm, error, y_pred, hits = out
        self._store(model, pairs, values, new, grads, grad_norm, y_pred, iterations, 1)
        if hits is not None:
            (loss or self.loss).last_correct = (y_pred, y, hits)
        return error, y_pred

    def run_steps(
        self,
        arrays: Any,
        order: Any,
        start: int,
        size: int,
        count: int,
        most: int,
        loss: Any = None,
    ) -> tuple[int, Any, Any, Any, Any]:
        """``count`` steps (1 <= count <= most) as one compiled call, where the backend
        has a `Backend.loop_compiler` (JAX): step i trains on the rows
        ``order[start + i·size : start + (i+1)·size]`` of ``arrays`` = (x, y), gathered inside
        the call. ``most`` (a constant of the compiled function, as ``size`` is) bounds the
        steps of one call, so that one compile serves every count.

        Returns (steps taken, E, correct count, Y of the last step, y): after compiled steps,
        E is the list of the steps' errors (0-d arrays, in order), the count their sum of
        correct rows (None where the loss has none), and y is None.
        Where this step runs uncompiled (new optimizer settings that need new state; a
        step that cannot be traced), one step is taken on the gathered batch, and
        E, count, Y and y are `train_step`'s E (0-d), None, Y and the batch's labels."""
        model, optimizer = self._model(), self.optimizer
        compiler = model.backend.loop_compiler
        checked = self._checked(model) if compiler is not None else None
        if checked is None:
            return self._one_uncompiled(model, arrays, order, start, size, loss)
        refs, pairs = checked
        if self.looped is None:
            self.looped = compiler(self._pure(refs, count_hits=True))
        values = [holder[name] for holder, name in pairs]
        iterations = optimizer.iterations
        try:
            with model.backend.context():
                out = self.looped(
                    values, float(optimizer.lr), arrays, order, start, count, size, most
                )
        except Warning:
            raise  # the caller's (see `__call__`)
        except Exception as exc:
            self._failed(exc, refs, values, iterations)
            x, y = model.backend.take_batch(arrays, order, start, start + size)
            error, y_pred = self._uncompiled_after(exc, model, x, y, loss)
            return 1, error, None, y_pred, y
        new, grads, grad_norm, errors, hits, y_pred = out
        self._store(model, pairs, values, new, grads, grad_norm, y_pred, iterations, count)
        return count, errors[:count], hits, y_pred, None

    def _one_uncompiled(
        self, model: Any, arrays: Any, order: Any, start: int, size: int, loss: Any
    ) -> tuple[int, Any, Any, Any, Any]:
        x, y = model.backend.take_batch(arrays, order, start, start + size)
        error, y_pred = self._eager(model, x, y, loss)
        return 1, error, None, y_pred, y

    def _store(
        self,
        model: Any,
        pairs: list[tuple[Any, str]],
        values: list[Any],
        new: list[Any],
        grads: list[Any],
        grad_norm: Any,
        y_pred: Any,
        iterations: int,
        steps: int,
    ) -> None:
        """Put the results of ``steps`` compiled steps where the uncompiled steps leave
        them: the new arrays in their dicts, the last step's gradients in the layers, the
        optimizer's step count (``iterations`` before the call), the last output in
        ``model.output``."""
        optimizer = self.optimizer
        # integer state entries are step counts (Adam's t): +1 per step of a trainable layer
        # (a frozen one's stays), kept on the host
        for (holder, name), value, result, counts in zip(pairs, values, new, self._counts):
            if isinstance(value, int):
                holder[name] = value + steps if counts else value
            else:
                holder[name] = result
        for layer in model.layers:
            layer.zero_grad()
        for (layer, name), grad in zip(self._owners, grads):
            if grad is not None:
                layer.grads[name] = grad
        # (the trace, on the first call, counted a step of its own: ``iterations`` is the
        # count before the call)
        optimizer.iterations, optimizer.grad_norm = iterations + steps, grad_norm
        model.backprops, model.output = [], y_pred

    def _failed(self, exc: Exception, refs: Any, values: list[Any], iterations: int) -> None:
        """After a compiled call raised ``exc``: compiling is off for this model from now on
        and the arrays the trace swapped in are put back, or, where JAX had already taken
        (donated) them, RuntimeError: the parameters are lost."""
        self._checked_in = None
        self.off = True  # a step that cannot be traced (an Embedding checks its indices)
        if any(_deleted(v) for v in values):
            # JAX had already taken (donated) the step's inputs when it failed: there is
            # nothing left to run the step uncompiled on
            raise RuntimeError(
                f"ailib: the compiled training step failed after taking its inputs "
                f"({type(exc).__name__}: {exc}); the model's parameters are lost. Rebuild "
                f"or reload the model; model.compile_steps = False runs steps uncompiled"
            ) from exc
        # undo what the trace swapped in; this step and every later one run eagerly
        self._put(refs, values)
        self.optimizer.iterations = iterations

    def _uncompiled_after(
        self, exc: Exception, model: Any, x: Any, y: Any, loss: Any
    ) -> tuple[Any, Any]:
        """The step on (x, y), uncompiled, after the compiled one failed with ``exc``; a
        RuntimeWarning, once, where that was a fault and not a refusal."""
        result = self._eager(model, x, y, loss)  # (a fault of the step raises here)
        if not isinstance(exc, (TraceError, *model.backend.trace_refusals)):
            # the uncompiled step runs where the compiled one failed: a fault of the
            # compiler's, not a step it refuses; said, so it is not silently slow
            warnings.warn(
                f"ailib: the compiled training step failed ({type(exc).__name__}: {exc}) "
                f"where the uncompiled step runs; this model's steps run uncompiled from "
                f"now on",
                RuntimeWarning,
                stacklevel=5,
            )
        return result

    def _check(self, model: Any) -> tuple[Any, Any] | None:
        """(refs, pairs) of the step's arrays, the compiled function made anew where the
        layers or the optimizer's settings changed since it was compiled; or None where this
        step has to run uncompiled (the caller runs it)."""
        optimizer = self.optimizer
        refs, pairs = self._refs(model)
        settings = _settings(optimizer)
        if refs is not self._compiled_for or settings != self._settings:
            if any(hasattr(layer, "rng") for layer in model.layers):
                self.off = True  # a layer that draws was added: see `step_for`
                return None
            changed = self._settings is not None and settings != self._settings
            missing = not _has_state(model, optimizer)
            if missing and not changed and _init_state(model, optimizer):
                missing, (refs, pairs) = False, self._refs(model)  # a layer unfrozen
            if changed or missing:
                # new settings (a momentum where there was none) or a layer unfrozen may need
                # optimizer state the compiled step does not have, and a trace must not make
                # it (JAX: it would leak a tracer): this step runs uncompiled and makes it,
                # the next one compiles afresh
                self._settings, self._compiled_for, self.structure = settings, None, None
                return None
            structure = (
                [
                    (kind, id(owner[0] if kind == "state" else owner), name)
                    for kind, owner, name in refs
                ],
                [(layer, *flags[:2]) for layer, *flags in self._known[0][3:]],
                settings,
            )
            if structure != self.structure:
                self.structure, self.compiled = structure, self.compiler(self._pure(refs))
                self.looped = None
            self._compiled_for, self._settings = refs, settings
            self._owners = [(layer, name) for kind, layer, name in refs if kind == "params"]
            self._counts = [kind == "state" and owner[0].trainable for kind, owner, _ in refs]
        return refs, pairs

    _checked_in: object = None  # the `unchanged` block whose first step checked the layers
    looped: Any = None  # `compiled`'s steps through `Backend.loop_compiler`, made on first use

    def _checked(self, model: Any) -> tuple[Any, Any] | None:
        """`_check`, or what it found earlier in this `unchanged` block."""
        token = _UNCHANGED.get(model)
        if token is not None and token is self._checked_in:
            return self._known[1]  # checked earlier in this `unchanged` block
        checked = self._check(model)
        if checked is not None:
            self._checked_in = token
        return checked

    def _eager(self, model: Any, x: Any, y: Any, loss: Any) -> tuple[Any, Any]:
        from .training import train_step

        return train_step(model, x, y, loss or self.loss, self.optimizer, compiled=False)


def _has_state(model: Any, optimizer: Any) -> bool:
    """Whether every trainable parameter has its optimizer state (made by its first update)."""
    state = optimizer.state
    return all((la, name) in state for la in model.layers if la.trainable for name in la.params)


def _init_state(model: Any, optimizer: Any) -> bool:
    """Give the trainable parameters without optimizer state their zeroed state
    (`ailib.optimizers.Optimizer.init_state`); whether every one has state now."""
    init = getattr(optimizer, "init_state", None)
    return bool(init(model.layers)) if init is not None else False


def _settings(optimizer: Any) -> dict[str, Any]:
    """The optimizer's settings that are constants of a compiled step: all but the learning
    rate (an argument of every call). A change (``opt.momentum = 0.5`` between two `fit`
    calls) makes the step compile again."""
    settings = optimizer.get_config()
    settings.pop("lr", None)
    return settings


#: the compiled inference of each model (`infer_for`)
_INFERENCE: weakref.WeakKeyDictionary[Any, CompiledInference] = weakref.WeakKeyDictionary()


def infer_for(model: Any, run: Callable[[list[Any]], list[Any]]) -> CompiledInference | None:
    """``run`` (the model's eval-mode forward pass over a list of inputs, keeping nothing for
    backward) compiled where the backend compiles inference (`Backend.inference_compiler`:
    ``jax.jit`` on JAX, where eager inference dispatches every operation separately), or None.
    Off with ``model.compile_steps = False``, in train mode, and for a model whose forward
    pass cannot be traced (it then runs uncompiled from then on)."""
    compiler = getattr(model.backend, "inference_compiler", None)
    if compiler is None or model.training or getattr(model, "compile_steps", None) is False:
        return None
    entry = _INFERENCE.get(model)
    if entry is None:
        entry = _INFERENCE[model] = CompiledInference(model, run, compiler)
    return None if entry.off else entry


class CompiledInference:
    """A model's eval-mode forward pass as one compiled call: a pure function of the layers'
    parameters and buffers and the inputs, traced with them swapped in (as `CompiledStep`
    does for training). Compiled once per input shape and per set of arrays the layers hold
    (the arrays' names are a static argument: a layer given a new parameter retraces)."""

    def __init__(self, model: Any, run: Callable[[list[Any]], list[Any]], compiler: Any) -> None:
        # weak: `_INFERENCE` is keyed by the model (``run`` is one of its methods)
        self._model, self._run = weakref.ref(model), weakref.WeakMethod(run)  # type: ignore[arg-type]
        self.off = False
        self.compiled = compiler(self._pure, static_argnums=(2,))

    @property
    def model(self) -> Any:
        return self._model()

    def _refs(self) -> tuple[tuple[int, str, str], ...]:
        return tuple(
            (i, kind, name)
            for i, layer in enumerate(self.model.layers)
            for kind in ("params", "buffers")
            for name in sorted(getattr(layer, kind))
        )

    def _arrays(self, refs: tuple[tuple[int, str, str], ...]) -> list[Any]:
        layers = self.model.layers
        return [getattr(layers[i], kind)[name] for i, kind, name in refs]

    def _swap(self, refs: tuple[tuple[int, str, str], ...], values: list[Any]) -> list[Any]:
        layers, old = self.model.layers, []
        for (i, kind, name), value in zip(refs, values):
            arrays = getattr(layers[i], kind)
            old.append(arrays[name])
            arrays[name] = value
        return old

    def _pure(self, values: list[Any], xs: list[Any], refs: Any) -> list[Any]:
        saved = self._swap(refs, values)
        try:
            return self._run()(xs)
        finally:
            self._swap(refs, saved)

    def __call__(self, xs: list[Any]) -> list[Any]:
        """The outputs for inputs ``xs``. A forward pass that cannot be traced (an Embedding
        that checks its indices on the host) runs uncompiled, now and from then on; one that
        fails otherwise where the uncompiled pass runs is a fault, said once with a warning."""
        refs = self._refs()
        values = self._arrays(refs)
        try:
            return list(self.compiled(values, xs, refs))
        except Exception as exc:
            self.off = True
            outs = self._run()(xs)  # uncompiled (a fault of the pass itself raises here)
            if not isinstance(exc, (TraceError, *self.model.backend.trace_refusals)):
                warnings.warn(
                    f"ailib: the compiled forward pass failed ({type(exc).__name__}: {exc}) "
                    f"where the uncompiled pass runs; this model's inference runs uncompiled "
                    f"from now on",
                    RuntimeWarning,
                    stacklevel=4,
                )
            return outs


#: the compiled evaluations of each model, per loss (`evaluation_for`)
_EVALUATION: weakref.WeakKeyDictionary[Any, dict[Any, CompiledEvaluation]] = (
    weakref.WeakKeyDictionary()
)


def evaluation_for(
    model: Any, run: Callable[[list[Any]], list[Any]], loss: Any
) -> CompiledEvaluation | None:
    """``run`` (as for `infer_for`) with ``loss``'s value and the count of correct rows on
    its output, compiled as one call where the backend compiles inference (JAX), or None
    (then, or once it failed, the caller scores the uncompiled output). One per model and
    loss settings; off where `infer_for` is."""
    compiler = getattr(model.backend, "inference_compiler", None)
    if compiler is None or model.training or getattr(model, "compile_steps", None) is False:
        return None
    kept = _EVALUATION.get(model)
    if kept is None:
        kept = _EVALUATION[model] = {}
    key = _loss_key(loss)
    entry = kept.get(key)
    if entry is None:
        entry = kept[key] = CompiledEvaluation(model, run, compiler, loss)
    return None if entry.off else entry


class CompiledEvaluation(CompiledInference):
    """A model's eval-mode forward pass, the loss's value E on its output and the number of
    rows it predicts right, as one compiled call (`evaluation_for`): what `evaluate` and
    `fit`'s validation need of a batch. The loss's gradient, formed with E, is never used,
    and the compiler leaves it out."""

    def __init__(
        self, model: Any, run: Callable[[list[Any]], list[Any]], compiler: Any, loss: Any
    ) -> None:
        self.loss = loss
        super().__init__(model, run, compiler)

    def _pure(self, values: list[Any], xs: list[Any], refs: Any, y: Any = None) -> Any:
        from .training import formed_or_counted

        (out,) = super()._pure(values, xs, refs)
        error = self.loss.value_and_grad(out, y, check=False)[0]
        return out, error, formed_or_counted(self.model.backend, self.loss, out, y)

    def __call__(self, xs: list[Any], y: Any = None) -> Any:  # type: ignore[override]
        """(Y, E, correct count) for inputs ``xs`` and targets ``y``; None where the call
        failed (the caller then runs the uncompiled pass, now and from then on). A failure
        that is not a refusal to trace is said once with a warning."""
        refs = self._refs()
        values = self._arrays(refs)
        try:
            return tuple(self.compiled(values, xs, refs, y))
        except Exception as exc:
            self.off = True
            if not isinstance(exc, (TraceError, *self.model.backend.trace_refusals)):
                warnings.warn(
                    f"ailib: the compiled evaluation failed ({type(exc).__name__}: {exc}); "
                    f"this model's evaluation runs uncompiled from now on",
                    RuntimeWarning,
                    stacklevel=4,
                )
            return None
        finally:
            if hasattr(self.loss, "last_correct"):
                self.loss.last_correct = None  # the trace's, of tracers


def _deleted(value: Any) -> bool:
    """Whether ``value`` is an array whose memory was given away (a donated JAX array)."""
    is_deleted = getattr(value, "is_deleted", None)
    return bool(is_deleted()) if callable(is_deleted) else False


__all__ = [
    "CompiledEvaluation",
    "CompiledInference",
    "CompiledStep",
    "evaluation_for",
    "infer_for",
    "release",
    "step_for",
]
