"""Block movement pruning of a student's linear layers.

:class:`BlockPruner` owns one learned score per weight block of every targeted linear layer and
attaches a parametrization to each targeted ``weight`` (``torch.nn.utils.parametrize``), so the
student's forward is unchanged and computes with ``weight * mask``. Targets are named by the
logical parts of :mod:`distilprune.architectures` (``query``, ``key``, ``value``, ``attn_out``) with a
block shape each; ``ffn`` prunes whole FFN rows: row i of ``ffn_in`` and the matching column i of
``ffn_out`` share one score (the "hybrid" preset of Lagunas et al. 2021).

:meth:`BlockPruner.fill` is the paper's "hybrid filled" step: once the structure is chosen, the
heads that survive compaction are made whole again (their pruned blocks come back, starting at zero)
and every mask is frozen, so the rest of training adapts a structurally pruned but dense-inside model.
A partly pruned head costs as much as a full one after compaction, so filling it is free at inference.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import parametrize

from distilprune.architectures import architecture_of, head_dim_of, layer_part, layers_of
from distilprune.config.schema import ATTENTION_TARGETS
from distilprune.errors import ConfigError
from distilprune.pruning.masks import block_mask, expand_blocks

FFN_TARGET = "ffn"


class _MaskedWeight(nn.Module):
    """Parametrization: weight -> weight * mask, the mask read from the pruner at every forward."""

    def __init__(self, pruner: BlockPruner, key: str, layout: str) -> None:
        super().__init__()
        object.__setattr__(self, "pruner", pruner)  # not a submodule: scores stay out of the student
        self.key, self.layout = key, layout

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.pruner.weight_mask(self.key, self.layout).to(device=weight.device, dtype=weight.dtype)


def _group(key: str) -> str:
    return "ffn" if key.endswith("_" + FFN_TARGET) else "attention"


class BlockPruner(nn.Module):
    """Scores, masks and densities for one student.

    Args:
        student: a DistilBertStudent (or any model in the architecture table).
        method: "topk" (keep the top fraction of blocks of each matrix) or "sigmoid_threshold".
        block_shapes: attention target -> [block_rows, block_cols]; -1 means the whole dimension.
        prune_ffn: also prune whole FFN rows (ffn_in rows tied to ffn_out columns).
        layers: student layer indices to prune; None or empty = every layer. Layers left out stay
            dense and count as fully kept in :meth:`densities`.
    """

    def __init__(
        self, student: nn.Module, method: str, block_shapes: dict[str, list[int]], prune_ffn: bool,
        layers: list[int] | None = None,
    ) -> None:
        super().__init__()
        architecture_of(student)  # clear error for families outside the table
        if method not in ("topk", "sigmoid_threshold"):
            raise ConfigError(f"pruning.method is {method!r}; choose topk or sigmoid_threshold.")
        self.method = method
        self.scores = nn.ParameterDict()
        self.blocks: dict[str, tuple[int, int]] = {}
        # Current keep fraction (topk) or sigmoid threshold, per group; set by the schedule.
        self.values = {"attention": 1.0 if method == "topk" else 0.0, "ffn": 1.0 if method == "topk" else 0.0}
        self._modules_by_key: dict[str, list[tuple[nn.Linear, str]]] = {}
        # After fill(): key -> frozen mask (attention: weight-level (out, in); ffn: (ffn_width,)).
        self.frozen: dict[str, torch.Tensor] | None = None
        self.check(student, block_shapes, layers)
        self.head_dim = head_dim_of(student)
        num_layers = len(layers_of(student))
        self.layers = sorted(set(layers)) if layers else list(range(num_layers))
        # Weights of the targets in layers left dense: counted as kept in every density.
        self._dense_weights = {"attention": 0, "ffn": 0}
        for index in sorted(set(range(num_layers)) - set(self.layers)):
            for part in block_shapes:
                self._dense_weights["attention"] += layer_part(student, index, part).weight.numel()
            if prune_ffn:
                for part in ("ffn_in", "ffn_out"):
                    self._dense_weights["ffn"] += layer_part(student, index, part).weight.numel()
        for index in self.layers:
            for part, shape in block_shapes.items():
                linear = layer_part(student, index, part)
                rows, cols = _block_shape(shape, linear, part)
                key = f"layer{index}_{part}"
                self.scores[key] = nn.Parameter(torch.zeros(linear.out_features // rows, linear.in_features // cols))
                self.blocks[key] = (rows, cols)
                self._attach(linear, key, "blocks")
            if prune_ffn:
                ffn_in, ffn_out = layer_part(student, index, "ffn_in"), layer_part(student, index, "ffn_out")
                key = f"layer{index}_{FFN_TARGET}"
                self.scores[key] = nn.Parameter(torch.zeros(ffn_in.out_features))
                self._attach(ffn_in, key, "rows")
                self._attach(ffn_out, key, "cols")

    @staticmethod
    def check(model: nn.Module, block_shapes: dict[str, list[int]], layers: list[int] | None = None,
              source_layers: list[int] | None = None) -> None:
        """Raise ConfigError for an unknown target, a block shape that does not tile a weight or a
        layer index the student does not have, without touching ``model`` (the pipeline checks
        before it creates a run directory).

        ``model`` is the student itself, or (with ``source_layers``) the teacher whose layers
        ``source_layers`` the student will copy: a student layer has the shapes of its source layer.
        """
        architecture_of(model)
        student_layers = list(range(len(layers_of(model)))) if source_layers is None else list(source_layers)
        num_layers = len(student_layers)
        outside = sorted({index for index in layers or [] if not 0 <= index < num_layers})
        if outside:
            raise ConfigError(
                f"pruning.layers has {outside}, outside the student's layers 0..{num_layers - 1}. "
                f"List layers in that range, e.g. pruning.layers=[0,1,2], or leave it empty to prune every layer."
            )
        for name in block_shapes:
            if name not in ATTENTION_TARGETS:
                raise ConfigError(
                    f"Unknown pruning target {name!r}. Block-pruned targets are "
                    f"{', '.join(ATTENTION_TARGETS)}; FFN rows are pruned with pruning.ffn_density."
                )
        for index in student_layers:
            for part, shape in block_shapes.items():
                _block_shape(shape, layer_part(model, index, part), part)

    def _attach(self, linear: nn.Linear, key: str, layout: str) -> None:
        parametrize.register_parametrization(linear, "weight", _MaskedWeight(self, key, layout), unsafe=True)
        self._modules_by_key.setdefault(key, []).append((linear, layout))

    # -- masks ---------------------------------------------------------------------------------
    def score_mask(self, key: str) -> torch.Tensor:
        """Binary mask over blocks (or FFN rows), straight-through to the scores."""
        return block_mask(self.scores[key], self.method, self.values[_group(key)])

    def weight_mask(self, key: str, layout: str) -> torch.Tensor:
        if self.frozen is not None:
            mask = self.frozen[key]  # no graph to the scores: they stop learning once filled
            if layout == "blocks":
                return mask
        else:
            mask = self.score_mask(key)
        if layout == "rows":
            return mask[:, None]  # (ffn_width, 1) broadcasts over ffn_in's input columns
        if layout == "cols":
            return mask[None, :]  # (1, ffn_width) broadcasts over ffn_out's output rows
        return expand_blocks(mask, *self.blocks[key])

    def _kept_fraction(self, key: str) -> float:
        mask = self.frozen[key] if self.frozen is not None else self.score_mask(key)
        return float(mask.float().mean())  # blocks are equal-sized: block mean = weight mean

    @property
    def filled(self) -> bool:
        return self.frozen is not None

    @torch.no_grad()
    def fill(self) -> dict[str, torch.Tensor]:
        """Freeze the structure and refill the surviving heads ("hybrid filled", Lagunas et al. 2021).

        A head survives compaction unless its value rows or its output-projection columns are all
        masked (the rule of :func:`distilprune.pruning.compaction.kept_heads_and_rows`). For every
        surviving head, all of its query/key/value rows and attn_out columns are unmasked; removed
        heads and FFN rows keep their current masks. From then on the masks are fixed: the scores get
        no gradient and the schedule no longer applies. The released blocks are set to zero in the
        stored weights (their values are stale: they stopped training when they were masked), so the
        model computes exactly what it computed before the fill and they grow from there. A resumed
        run puts the frozen masks back with :meth:`restore_fill` instead.

        Returns the frozen masks (key -> tensor), which is the state to checkpoint.
        """
        frozen: dict[str, torch.Tensor] = {}
        for index in self.layers:
            prefix = f"layer{index}_"
            masks = {
                key[len(prefix):]: self.weight_mask(key, "blocks").detach().clone()
                for key in self.blocks if key.startswith(prefix)
            }
            if masks:
                # (heads * head_dim) is the row count of query/key/value and the column count of attn_out
                heads = next(m.shape[1] if part == "attn_out" else m.shape[0] for part, m in masks.items()) // self.head_dim
                for head in range(heads):
                    span = slice(head * self.head_dim, (head + 1) * self.head_dim)
                    removed = ("value" in masks and not masks["value"][span].any()) or (
                        "attn_out" in masks and not masks["attn_out"][:, span].any())
                    if removed:
                        continue
                    for part, mask in masks.items():
                        if part == "attn_out":
                            mask[:, span] = 1.0
                        else:
                            mask[span] = 1.0
                for part, mask in masks.items():
                    frozen[prefix + part] = mask
            if prefix + FFN_TARGET in self.scores:
                frozen[prefix + FFN_TARGET] = self.score_mask(prefix + FFN_TARGET).detach().clone()
        # Fold the current masks into the stored weights before swapping them: released blocks
        # start at zero, so the function is unchanged at the moment of the fill.
        for key, modules in self._modules_by_key.items():
            for linear, layout in modules:
                original = linear.parametrizations.weight.original
                original.mul_(self.weight_mask(key, layout).to(original.dtype))
        self.frozen = frozen
        return frozen

    def restore_fill(self, frozen: dict[str, torch.Tensor]) -> None:
        """Put back the frozen masks of a filled run (from a resume checkpoint), weights untouched."""
        missing = sorted(set(self.scores) - set(frozen))
        if missing:
            raise ValueError(f"filled pruning state lacks masks for {missing}")
        device = next(iter(self.scores.values())).device
        self.frozen = {key: mask.to(device) for key, mask in frozen.items()}

    @torch.no_grad()
    def densities(self) -> dict[str, float]:
        """Kept fraction of weights per target key (pruned layers), and per group and overall over
        the targets of every layer (those in dense layers count as kept)."""
        out = {}
        kept = {group: float(n) for group, n in self._dense_weights.items()}
        total = dict(kept)
        for key in self.scores:
            weights = sum(linear.parametrizations.weight.original.numel() for linear, _ in self._modules_by_key[key])
            fraction = self._kept_fraction(key)
            out[key] = fraction
            kept[_group(key)] += fraction * weights
            total[_group(key)] += weights
        for group in kept:
            if total[group]:
                out[group] = kept[group] / total[group]
        out["overall"] = sum(kept.values()) / max(1.0, sum(total.values()))
        return out

    @torch.no_grad()
    def fold(self, student: nn.Module) -> nn.Module:
        """A new plain student whose weights are ``weight * mask``: no parametrizations, no scores.

        Built from the student's config and its effective tensors (reading ``module.weight`` on a
        parametrized module returns the masked weight), rather than by deep-copying parametrized
        modules.
        """
        plain = type(student)(copy.deepcopy(student.config))
        state = {}
        for key in plain.state_dict():
            owner, _, attribute = key.rpartition(".")
            state[key] = getattr(student.get_submodule(owner), attribute).detach().clone()
        plain.load_state_dict(state)
        return plain.eval()


def _block_shape(shape: list[int], linear: nn.Linear, part: str) -> tuple[int, int]:
    if len(shape) != 2:
        raise ConfigError(f"Block shape for {part} must be [rows, cols], got {shape}.")
    rows = linear.out_features if shape[0] == -1 else shape[0]
    cols = linear.in_features if shape[1] == -1 else shape[1]
    if rows <= 0 or cols <= 0 or linear.out_features % rows or linear.in_features % cols:
        raise ConfigError(
            f"Block shape {shape} does not divide the {part} weight of shape "
            f"[{linear.out_features}, {linear.in_features}] (out, in). Choose block sides that divide "
            f"both, e.g. [32, 32] for hidden 384 with heads of 32, or -1 for a whole dimension."
        )
    return rows, cols
