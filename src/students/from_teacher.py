"""Build a DistilBERT student from a BERT-family teacher by copying chosen layers.

The copy goes through the architecture table: for every logical part (query, key, ..., ffn_norm)
the teacher's module and the student's module are looked up by name and their tensors copied, so
the same code serves a BERT and a DistilBERT teacher.

DistilBERT has no segment (token type) embeddings. A BERT teacher adds ``token_type_embeddings[0]``
to every position of single-segment input, so that row is folded into the student's position
embeddings: on single-segment input a student that keeps all teacher layers gives the teacher's
logits exactly (up to float rounding).
"""

from __future__ import annotations

import torch
from torch import nn

from distilprune.architectures import LAYER_PARTS, architecture_of, get_module, layer_part
from distilprune.errors import ModelError
from distilprune.students.distilbert import DistilBertStudent, StudentConfig


def default_init_layers(teacher_layers: int, student_layers: int) -> list[int]:
    """Evenly spaced teacher layers, always including the first and the last."""
    if student_layers == 1:
        return [teacher_layers - 1]
    step = (teacher_layers - 1) / (student_layers - 1)
    return [round(i * step) for i in range(student_layers)]


def check_init_layers(teacher_layers: int, student_layers: int, init_layers: list[int] | None) -> list[int]:
    """Validate the layer choice and return it (or the default)."""
    if student_layers < 1:
        raise ModelError(f"student.num_layers is {student_layers}; a student needs at least 1 layer.")
    if student_layers > teacher_layers:
        raise ModelError(
            f"The student asks for {student_layers} layers but the teacher has only {teacher_layers}: "
            f"a student is initialised by copying teacher layers, so it cannot be deeper. Set "
            f"student.num_layers to {teacher_layers} or fewer."
        )
    if init_layers is None:
        return default_init_layers(teacher_layers, student_layers)
    if len(init_layers) != student_layers:
        raise ModelError(
            f"student.init_layers lists {len(init_layers)} teacher layers ({init_layers}) but "
            f"student.num_layers is {student_layers}; give exactly one teacher layer per student layer."
        )
    bad = [i for i in init_layers if not 0 <= i < teacher_layers]
    if bad:
        raise ModelError(
            f"student.init_layers has {bad}, outside the teacher's layers 0..{teacher_layers - 1}. "
            f"Choose indices in that range, e.g. {default_init_layers(teacher_layers, student_layers)}."
        )
    return list(init_layers)


def _hf_value(config, *names, default=None):
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return default


@torch.no_grad()
def student_from_teacher(
    teacher: nn.Module, num_layers: int, init_layers: list[int] | None = None, head: str = "sequence",
    segment_embeddings: bool = False,
) -> DistilBertStudent:
    """A :class:`DistilBertStudent` whose blocks are copies of ``init_layers`` of ``teacher``.

    Args:
        teacher: a Hugging Face BERT or DistilBERT classifier (sequence or token) or a DistilBertStudent.
        num_layers: student depth.
        init_layers: teacher block index for each student block; default evenly spaced.
        head: "sequence" (pooled first token; the teacher's pooler is copied), "token" (every
            token; a token classifier has no pooler) or "span" (start and end logits of every token,
            from a question-answering teacher's ``qa_outputs``).
        segment_embeddings: copy the teacher's segment embedding table as it is (``token_type_ids``
            becomes an input) instead of folding its row 0 into the positions.
    """
    arch = architecture_of(teacher)
    teacher_blocks = get_module(teacher, arch.layers)
    layers = check_init_layers(len(teacher_blocks), num_layers, init_layers)

    word = get_module(teacher, arch.word_embeddings)
    position = get_module(teacher, arch.position_embeddings)
    hf = getattr(teacher, "config", None)
    if isinstance(hf, StudentConfig):  # a (possibly compacted) student used as the teacher
        head_dim = hf.head_dim
        per_layer_heads = [hf.heads_per_layer[i] for i in layers]
    else:
        num_heads = getattr(hf, arch.config_num_heads)
        head_dim = word.embedding_dim // num_heads
        per_layer_heads = [num_heads] * num_layers
    segment_table = _segment_table(teacher, arch, hf, segment_embeddings)
    config = StudentConfig(
        vocab_size=word.num_embeddings,
        hidden_size=word.embedding_dim,
        head_dim=head_dim,
        heads_per_layer=per_layer_heads,
        ffn_width_per_layer=[layer_part(teacher, i, "ffn_in").out_features for i in layers],
        num_labels=get_module(teacher, arch.head_path(head)).out_features,
        max_position_embeddings=position.num_embeddings,
        layer_norm_eps=get_module(teacher, arch.embeddings_norm).eps,
        activation=_activation_name(hf),
        pooler_activation=getattr(hf, "pooler_activation", None) or arch.pooler_activation,
        dropout=float(_hf_value(hf, "hidden_dropout_prob", "dropout", default=0.1)),
        attention_dropout=float(_hf_value(hf, "attention_probs_dropout_prob", "attention_dropout", default=0.1)),
        pad_token_id=int(_hf_value(hf, "pad_token_id", default=0)),
        head=head,
        type_vocab_size=segment_table.num_embeddings if segment_embeddings else 0,
        id2label={str(k): str(v) for k, v in (_hf_value(hf, "id2label", default={}) or {}).items()},
        source_layers=layers,
    )
    student = DistilBertStudent(config)
    target = architecture_of(student)

    get_module(student, target.word_embeddings).weight.copy_(word.weight)
    folded = position.weight.clone()
    if segment_embeddings:
        student.distilbert.embeddings.token_type_embeddings.weight.copy_(segment_table.weight)
    elif segment_table is not None:
        folded += segment_table.weight[0]
    get_module(student, target.position_embeddings).weight.copy_(folded)
    get_module(student, target.embeddings_norm).load_state_dict(
        get_module(teacher, arch.embeddings_norm).state_dict()
    )
    for student_index, teacher_index in enumerate(layers):
        for part in LAYER_PARTS:
            layer_part(student, student_index, part).load_state_dict(
                layer_part(teacher, teacher_index, part).state_dict()
            )
    if head == "sequence":
        get_module(student, target.pooler).load_state_dict(get_module(teacher, arch.pooler).state_dict())
    get_module(student, target.head_path(head)).load_state_dict(get_module(teacher, arch.head_path(head)).state_dict())
    return student


def _segment_table(teacher: nn.Module, arch, hf, segment_embeddings: bool) -> nn.Embedding | None:
    """The teacher's segment (token type) embedding table, or None when it has none."""
    if arch.token_type_embeddings is not None:
        table = get_module(teacher, arch.token_type_embeddings)
    elif isinstance(hf, StudentConfig) and hf.type_vocab_size:  # a student with segments as the teacher
        table = teacher.distilbert.embeddings.token_type_embeddings
    else:
        table = None
    if segment_embeddings and table is None:
        raise ModelError(
            "student.segment_embeddings=true, but the teacher has no segment embeddings to copy "
            "(a DistilBERT teacher). Set student.segment_embeddings=false."
        )
    return table


def _activation_name(hf_config) -> str:
    name = _hf_value(hf_config, "hidden_act", "activation", default="gelu")
    if not isinstance(name, str) or name not in ("gelu", "relu"):
        raise ModelError(
            f"The teacher's FFN activation {name!r} is not supported by the DistilBERT student "
            f"(supported: gelu, relu), so its layers cannot be copied. Use a teacher with gelu or relu "
            f"FFNs (BERT, DistilBERT, MiniLM), e.g. the built-in teacher.model=minilm-l6."
        )
    return name
