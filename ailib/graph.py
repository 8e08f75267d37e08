"""Symbolic tensors: how a graph model is written down before any data exists (docs/models.md).

    >>> import ailib
    >>> from ailib.layers import Add, Dense, ReLU
    >>> x = ailib.Input((16,))                  # a Symbol: one sample is a vector of 16
    >>> h = ReLU()(Dense(16)(x))                 # calling a layer on a Symbol returns a Symbol
    >>> y = Dense(3)(Add()([x, h]))              # a residual connection: x feeds two paths
    >>> model = ailib.Model(x, y, backend="numpy", seed=0)

A `Symbol` knows one sample's shape (no batch axis) and the `Node` that produces it: one call of
one layer on its input symbols. A layer called at two places gives two nodes that share the
layer, hence its weights. `topological_order` lists the nodes a model needs, each after the
nodes it reads from; forward runs them in that order and backward in reverse (docs/math.md §12).
Shapes are checked here, as the graph is written, so a mismatch is reported where it is made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from ._checks import whole

if TYPE_CHECKING:
    from .layers.base import Layer

Shape = tuple[int, ...]


class Symbol:
    """A symbolic tensor: the input of a model (`Input`) or the output of one layer call.

    Attributes:
        shape: one sample's shape, without the batch axis (None where it is not known yet).
        node: the `Node` (layer call) that produces it; None for an `Input`.
        name: a label for messages and summaries.
    """

    def __init__(self, shape: Shape | None, node: Node | None = None, name: str = "") -> None:
        self.shape = shape
        self.node = node
        self.name = name

    def __repr__(self) -> str:
        origin = "Input" if self.node is None else self.node.layer.name
        return f"Symbol(shape={self.shape}, from={origin}{', ' + self.name if self.name else ''})"


class Node:
    """One call of ``layer`` on the symbols ``inbound``; ``output`` is the symbol it returns."""

    def __init__(self, layer: Layer, inbound: list[Symbol], output_shape: Shape | None) -> None:
        self.layer = layer
        self.inbound = inbound
        self.output = Symbol(output_shape, self)


def Input(shape: Sequence[int], name: str = "") -> Symbol:  # Keras spells it so
    """A model input: a `Symbol` for samples of ``shape`` (without the batch axis), e.g.
    ``Input((784,))`` for rows of 784 features or ``Input((1, 28, 28))`` for NCHW images."""
    try:
        dims = tuple(shape)
    except TypeError:
        dims = ()
    sizes = tuple(whole(d) for d in dims)
    if not sizes or not all(d is not None and d >= 1 for d in sizes):
        raise ValueError(
            f"Input: shape must be a non-empty sequence of positive ints (one sample's shape, "
            f"without the batch axis), received {shape!r}"
        )
    return Symbol(sizes, None, name)  # type: ignore[arg-type]


def is_symbolic(x: Any) -> bool:
    """Whether ``x`` is a Symbol or a list/tuple holding one."""
    if isinstance(x, (list, tuple)):
        return any(isinstance(item, Symbol) for item in x)
    return isinstance(x, Symbol)


def connect(layer: Layer, x: Symbol | Sequence[Symbol]) -> Symbol:
    """``layer`` called on symbols: checks the shapes, fixes the sizes the layer left open
    (``Dense(128)`` takes its input size from x) and returns the output symbol of a new node."""
    if layer.multi_input:
        if not isinstance(x, (list, tuple)) or len(x) < 2:
            raise TypeError(f"{layer.name}: expected a list of at least two inputs, received {x!r}")
        inbound = list(x)
    else:
        if isinstance(x, (list, tuple)):
            raise TypeError(
                f"{layer.name}: takes one input, received a list of {len(x)}; merge them "
                f"first (ailib.layers.Add, Concatenate, Multiply)"
            )
        inbound = [x]
    for item in inbound:
        if not isinstance(item, Symbol):
            raise TypeError(
                f"{layer.name}: cannot mix symbols and arrays in one call, received "
                f"{type(item).__name__}"
            )
    shapes = [item.shape for item in inbound]
    shape: Any = shapes if layer.multi_input else shapes[0]
    known = all(s is not None for s in shapes)
    if known:
        layer.infer_sizes(shape)
    return Node(layer, inbound, layer.compute_output_shape(shape) if known else None).output


def sample_shape(x: Any) -> Any:
    """One sample's shape of an array (its shape without the batch axis), a list of them for a
    list of arrays; None for anything without a shape."""
    if isinstance(x, (list, tuple)):
        return [sample_shape(item) for item in x]
    shape = getattr(x, "shape", None)
    return None if shape is None or len(shape) < 1 else tuple(shape[1:])


def topological_order(inputs: list[Symbol], outputs: list[Symbol]) -> list[Node]:
    """Every node the outputs depend on, each after the nodes whose outputs it reads.

    Raises ValueError when an output depends on an `Input` that is not among ``inputs``."""
    order: list[Node] = []
    done: set[int] = set()
    given = {id(s) for s in inputs}
    for output in outputs:
        stack: list[tuple[Symbol, bool]] = [(output, False)]
        while stack:  # depth first, without recursion: graphs may be deep
            symbol, expanded = stack.pop()
            node = symbol.node
            if node is None:
                if id(symbol) not in given:
                    raise ValueError(
                        f"Model: the outputs depend on {symbol!r}, which is not one of the "
                        f"model's inputs; pass it in inputs=[...]"
                    )
                continue
            if id(node) in done:
                continue
            if expanded:
                done.add(id(node))
                order.append(node)
                continue
            stack.append((symbol, True))
            stack.extend((s, False) for s in reversed(node.inbound))
    return order
