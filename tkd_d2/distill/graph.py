"""GloRe graph reasoning (Chen et al., "Graph-Based Global Reasoning Networks"), functional.

One unit maps ``x`` (N, C, L positions) to ``x + norm(extend(reason(project(x))))``:

* state ``W_s x + b_s`` (S states) and projection ``W_p x + b_p`` (K nodes), both 1×1 convs;
* node features: states × projectionᵀ summed over positions (divided by L: "normalize");
* graph conv: ``h = nodes + conv_across_nodes(nodes)`` (K×K + bias), then ReLU, then a
  bias-free S×S conv across states;
* back to positions with the same projection, a bias-free C×S 1×1 conv ("extend"),
  a batch-statistics normalisation, and the residual.

The reference builds a fresh ``GloRe_Unit_2D`` (PyTorch default init, BatchNorm with weight 1,
bias 0, eps 1e-4, in training mode) inside every loss call and never trains it. So its "BN"
is a per-channel standardisation with the statistics of the very tensor being normalised,
computed separately for teacher and student. :func:`graph_reasoning` does exactly that (no
running statistics, no affine); :class:`GraphUnitBank` supplies the weights, drawn with the
PyTorch default conv init ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for weights and biases.

The two bias-free maps after the ReLU are one (C, S) matrix ``W_e W_2``. Each product chain is
evaluated in the cheaper order for the map at hand: with many positions (P3, P4) "nodes first",
``W_s (x pᵀ)`` and ``((W_e W_2) h) p``, whose position-sized products are C·K·L; with few
(P5–P7: L < K) "states first", ``(W_s x) pᵀ`` and ``(W_e W_2) (h p)``, which never pay the
position-independent S·C·K products. Same function either way (tested).
"""
import hashlib
from typing import NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["GraphUnitParams", "graph_unit_sizes", "draw_graph_unit", "graph_reasoning", "output_weight",
           "GraphUnitBank", "mixed_seed"]

GRAPH_MODES = ("per_step", "fixed")
BLOCKER_EPS = 1e-4  # the reference's BatchNorm eps


class GraphUnitParams(NamedTuple):
    """Weights of one GloRe unit (C in-channels, S states, K nodes)."""

    state_weight: Tensor  # (S, C)
    state_bias: Tensor  # (S,)
    proj_weight: Tensor  # (K, C)
    proj_bias: Tensor  # (K,)
    node_weight: Tensor  # (K, K): 1-D conv across nodes
    node_bias: Tensor  # (K,)
    channel_weight: Tensor  # (S, S): 1-D conv across states, no bias
    extend_weight: Tensor  # (C, S): back to C channels, no bias


def graph_unit_sizes(in_channels: int, num_state: Optional[int] = None,
                     num_node: Optional[int] = None) -> Tuple[int, int]:
    """(S, K), defaulting to the reference's ``GloRe_Unit_2D(C, int(C / 2))``: S = 2·int(C/2), K = int(C/2)."""
    half = int(in_channels * 0.5)
    num_state = 2 * half if num_state is None else int(num_state)
    num_node = half if num_node is None else int(num_node)
    if num_state < 1 or num_node < 1:
        raise ValueError(f"GloRe unit needs >= 1 state and node (in_channels={in_channels}, "
                         f"num_state={num_state}, num_node={num_node})")
    return num_state, num_node


def _layout(in_channels: int, num_state: int, num_node: int):
    # (field, shape, fan_in) in GraphUnitParams order
    c, s, k = in_channels, num_state, num_node
    return (
        ("state_weight", (s, c), c),
        ("state_bias", (s,), c),
        ("proj_weight", (k, c), c),
        ("proj_bias", (k,), c),
        ("node_weight", (k, k), k),
        ("node_bias", (k,), k),
        ("channel_weight", (s, s), s),
        ("extend_weight", (c, s), s),
    )


def _uniform_bounds(layout) -> Tensor:
    return torch.cat([torch.full((int(torch.Size(shape).numel()),), fan_in ** -0.5) for _, shape, fan_in in layout])


def draw_graph_unit(in_channels: int, num_state: int, num_node: int, generator: torch.Generator,
                    bounds: Optional[Tensor] = None, device=None, dtype=None) -> GraphUnitParams:
    """One unit with PyTorch's default conv init, from one pass of a CPU ``generator``.

    The draw is made in float32 on the CPU (so it is the same on every device), then moved
    to ``device`` / ``dtype`` in one copy.
    """
    layout = _layout(in_channels, num_state, num_node)
    if bounds is None:
        bounds = _uniform_bounds(layout)
    flat = torch.rand(bounds.shape[0], generator=generator, dtype=torch.float32)
    flat = (flat * 2.0 - 1.0) * bounds
    flat = flat.to(device=device if device is not None else flat.device, dtype=dtype or torch.float32)
    pieces, offset = [], 0
    for _, shape, _ in layout:
        size = int(torch.Size(shape).numel())
        pieces.append(flat[offset:offset + size].view(shape))
        offset += size
    return GraphUnitParams(*pieces)


def _standardise(x: Tensor, dims: Sequence[int], eps: float) -> Tensor:
    # x: (N, C, L). The fused native norms where they apply (they refuse a single value)
    dims = tuple(sorted(d % 3 for d in dims))
    if dims == (0, 2) and x.shape[0] * x.shape[2] > 1:
        return F.batch_norm(x, None, None, training=True, eps=eps)
    if dims == (2,) and x.shape[2] > 1:
        return F.instance_norm(x, eps=eps)
    mean = x.mean(dim=dims, keepdim=True)
    var = (x - mean).square().mean(dim=dims, keepdim=True)
    return (x - mean) * torch.rsqrt(var + eps)


def _nodes_first(channels: int, num_state: int, num_node: int, length: int) -> bool:
    # multiply-adds per sample of the two product orders (module docstring)
    nodes_first = 2 * channels * num_node * length + 2 * num_state * channels * num_node
    states_first = 2 * num_state * channels * length + 2 * num_state * num_node * length
    return nodes_first <= states_first


def output_weight(params: GraphUnitParams) -> Tensor:
    """``extend_weight @ channel_weight`` (C, S): the two bias-free linear maps after the ReLU."""
    return torch.matmul(params.extend_weight, params.channel_weight)


def graph_reasoning(x: Tensor, params: GraphUnitParams, normalize: bool = True,
                    norm_dims: Sequence[int] = (0, 2), eps: float = BLOCKER_EPS,
                    fused_output_weight: Optional[Tensor] = None) -> Tensor:
    """Apply one GloRe unit to ``x`` (N, C, *positions); returns the same shape.

    ``norm_dims`` are the dims of the (N, C, L) view over which the output of the extend
    conv is standardised: (0, 2) = BatchNorm in training mode (the reference); (2,) treats
    every sample on its own (used when the batch dim stacks independent graphs).
    ``fused_output_weight``: :func:`output_weight` of ``params``, to reuse across calls.
    """
    shape = x.shape
    n, c = shape[0], shape[1]
    x = x.reshape(n, c, -1)
    length = x.shape[2]
    num_state, num_node = params.state_weight.shape[0], params.proj_weight.shape[0]
    nodes_first = _nodes_first(c, num_state, num_node, length)
    proj = torch.matmul(params.proj_weight, x) + params.proj_bias[:, None]  # (N, K, L)
    # nodes = (W_s x + b_s 1ᵀ) projᵀ
    if nodes_first:
        x_on_nodes = torch.matmul(x, proj.transpose(1, 2))  # (N, C, K)
        nodes = torch.matmul(params.state_weight, x_on_nodes) + params.state_bias[:, None] * proj.sum(dim=2)[:, None, :]
    else:
        states = torch.matmul(params.state_weight, x) + params.state_bias[:, None]  # (N, S, L)
        nodes = torch.matmul(states, proj.transpose(1, 2))
    if normalize:
        nodes = nodes * (1.0 / length)
    # graph conv: across nodes (with residual), ReLU, then across states
    reasoned = torch.relu(torch.matmul(nodes, params.node_weight.t()) + params.node_bias + nodes)
    if fused_output_weight is None:
        fused_output_weight = output_weight(params)
    # back to positions: W_e W_2 h proj
    if nodes_first:
        extended = torch.matmul(torch.matmul(fused_output_weight, reasoned), proj)  # (N, C, L)
    else:
        extended = torch.matmul(fused_output_weight, torch.matmul(reasoned, proj))
    out = x + _standardise(extended, tuple(norm_dims), eps)
    return out.reshape(shape)


def mixed_seed(*parts) -> int:
    """A 63-bit seed from ``parts``, stable across processes and Python versions (unlike hash())."""
    digest = hashlib.blake2b("/".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class GraphUnitBank(nn.Module):
    """Source of GloRe unit weights that are never trained.

    Args:
        in_channels: C of the tensors the unit is applied to.
        num_state, num_node: S and K (default: the reference's C and C/2).
        mode: "per_step": a fresh unit each training step (the reference's semantics), drawn
            from (seed, stream, step) with a CPU generator, so a resumed run draws the same
            units; "fixed": one unit drawn from (seed, stream), kept as (non-persistent)
            buffers, the same every step.
        seed: base seed. stream: a name that separates banks sharing a seed.
    """

    def __init__(self, in_channels: int, num_state: Optional[int] = None, num_node: Optional[int] = None,
                 mode: str = "per_step", seed: int = 0, stream: str = "glore"):
        super().__init__()
        if mode not in GRAPH_MODES:
            raise ValueError(f"graph unit mode must be one of {GRAPH_MODES}, got {mode!r}")
        self.in_channels = int(in_channels)
        self.num_state, self.num_node = graph_unit_sizes(in_channels, num_state, num_node)
        self.mode = mode
        self.seed = int(seed)
        self.stream = str(stream)
        self._bounds = _uniform_bounds(_layout(self.in_channels, self.num_state, self.num_node))
        self._step_cache_key = None
        self._step_cache = {}
        if mode == "fixed":
            generator = torch.Generator().manual_seed(mixed_seed(self.seed, self.stream, "fixed"))
            unit = draw_graph_unit(self.in_channels, self.num_state, self.num_node, generator, self._bounds)
            for name, value in zip(GraphUnitParams._fields, unit):
                self.register_buffer(name, value.clone(), persistent=False)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, num_state={self.num_state}, num_node={self.num_node}, "
                f"mode={self.mode!r}, seed={self.seed}, stream={self.stream!r}")

    def draw(self, step: int, device=None, dtype=None) -> GraphUnitParams:
        """The per-step unit of ``step`` (uncached)."""
        generator = torch.Generator().manual_seed(mixed_seed(self.seed, self.stream, int(step)))
        return draw_graph_unit(self.in_channels, self.num_state, self.num_node, generator, self._bounds,
                               device=device, dtype=dtype)

    def units_for_step(self, step: Optional[int], device=None, dtype=torch.float32) -> GraphUnitParams:
        """The unit to use at training iteration ``step`` on ``device`` / ``dtype``.

        per_step: drawn once per (step, device, dtype) and reused by every call of that step.
        fixed: the stored unit (``step`` is ignored).
        """
        if self.mode == "fixed":
            return GraphUnitParams(*(getattr(self, name).to(device=device, dtype=dtype)
                                     for name in GraphUnitParams._fields))
        if step is None:
            raise ValueError("GraphUnitBank(mode='per_step') needs the training step")
        step = int(step)
        if self._step_cache_key != step:
            self._step_cache_key, self._step_cache = step, {}
        key = (torch.device(device) if device is not None else torch.device("cpu"), dtype)
        if key not in self._step_cache:
            self._step_cache[key] = self.draw(step, device=key[0], dtype=dtype)
        return self._step_cache[key]
