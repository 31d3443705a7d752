"""Compaction: physically remove pruned heads and FFN rows from a (mask-folded) student.

Works on a plain :class:`DistilBertStudent` whose pruned weights are exact zeros (see
``BlockPruner.fold``). Removal is exact, i.e. the compacted model computes the same logits:

- a head whose value rows are all zero outputs the constant ``b_v[head]`` (attention weights sum
  to 1), so its contribution ``W_o[:, head] @ b_v[head]`` is folded into the output bias;
- a head whose output-projection columns are all zero contributes nothing;
- an FFN row whose ``ffn_in`` row is all zero outputs ``act(b_in[i])``, a constant folded into the
  ``ffn_out`` bias through column i; a row whose ``ffn_out`` column is zero contributes nothing.

Heads that are only partly pruned stay, with their zero blocks: they cost the same as before.
"""

from __future__ import annotations

import copy

import torch

from distilprune.students.distilbert import DistilBertStudent, StudentConfig, _ACTIVATIONS


@torch.no_grad()
def kept_heads_and_rows(student: DistilBertStudent) -> tuple[list[list[int]], list[list[int]]]:
    """Indices of the heads and FFN rows that must stay, per layer."""
    heads, rows = [], []
    head_dim = student.config.head_dim
    for block in student.distilbert.transformer.layer:
        attention, ffn = block.attention, block.ffn
        keep = []
        for h in range(attention.num_heads):
            cols = slice(h * head_dim, (h + 1) * head_dim)
            value_zero = not attention.v_lin.weight[cols].any()
            out_zero = not attention.out_lin.weight[:, cols].any()
            if not (value_zero or out_zero):
                keep.append(h)
        heads.append(keep)
        rows.append([
            i for i in range(ffn.width)
            if ffn.lin1.weight[i].any() and ffn.lin2.weight[:, i].any()
        ])
    return heads, rows


@torch.no_grad()
def compact(student: DistilBertStudent) -> DistilBertStudent:
    """A smaller dense student with the removable heads and FFN rows taken out."""
    heads, rows = kept_heads_and_rows(student)
    config = copy.deepcopy(student.config)
    config.heads_per_layer = [len(h) for h in heads]
    config.ffn_width_per_layer = [len(r) for r in rows]
    small = DistilBertStudent(StudentConfig(**vars(config))).eval()
    # Everything outside the transformer blocks is copied as it is.
    for name, tensor in student.state_dict().items():
        if ".transformer.layer." not in name:
            small.state_dict()[name].copy_(tensor)
    head_dim = config.head_dim
    act = _ACTIVATIONS[config.activation]
    for old, new, keep_heads, keep_rows in zip(
        student.distilbert.transformer.layer, small.distilbert.transformer.layer, heads, rows, strict=True
    ):
        for norm in ("sa_layer_norm", "output_layer_norm"):
            getattr(new, norm).load_state_dict(getattr(old, norm).state_dict())
        a_old, a_new = old.attention, new.attention
        index = torch.tensor([h * head_dim + d for h in keep_heads for d in range(head_dim)], dtype=torch.long)
        for name in ("q_lin", "k_lin", "v_lin"):
            getattr(a_new, name).weight.copy_(getattr(a_old, name).weight[index])
            getattr(a_new, name).bias.copy_(getattr(a_old, name).bias[index])
        a_new.out_lin.weight.copy_(a_old.out_lin.weight[:, index])
        bias = a_old.out_lin.bias.clone()
        for h in set(range(a_old.num_heads)) - set(keep_heads):
            cols = slice(h * head_dim, (h + 1) * head_dim)
            if not a_old.v_lin.weight[cols].any():  # constant head output b_v -> fold into bias
                bias += a_old.out_lin.weight[:, cols] @ a_old.v_lin.bias[cols]
        a_new.out_lin.bias.copy_(bias)

        f_old, f_new = old.ffn, new.ffn
        rows_index = torch.tensor(keep_rows, dtype=torch.long)
        f_new.lin1.weight.copy_(f_old.lin1.weight[rows_index])
        f_new.lin1.bias.copy_(f_old.lin1.bias[rows_index])
        f_new.lin2.weight.copy_(f_old.lin2.weight[:, rows_index])
        bias = f_old.lin2.bias.clone()
        for i in set(range(f_old.width)) - set(keep_rows):
            if not f_old.lin1.weight[i].any():  # constant activation act(b_in[i]) -> fold into bias
                bias += f_old.lin2.weight[:, i] * act(f_old.lin1.bias[i])
        f_new.lin2.bias.copy_(bias)
    return small
