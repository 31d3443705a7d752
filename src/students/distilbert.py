"""A DistilBERT-architecture sequence classifier with per-layer head counts and FFN widths.

Why not Hugging Face's ``DistilBertForSequenceClassification``: transformers 5 removed
``prune_heads``, and its attention derives the head size from ``dim // n_heads``, so a layer cannot
keep 5 of 12 heads of size 32. Its classification head also hard-codes ReLU, so a student built
from a BERT teacher could not reproduce the teacher's tanh pooler. This module keeps DistilBERT's
parameter names (``distilbert.transformer.layer.N.attention.q_lin`` ...), records the widths of
every layer in :class:`StudentConfig`, and writes attention the way ONNX Runtime's transformer
optimizer recognises it (explicit matmul / scale / additive mask / softmax), so the exported graph
fuses into ``Attention`` nodes even when layers have different head counts.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from distilprune.errors import ModelError

CONFIG_NAME = "student_config.json"
WEIGHTS_NAME = "model.safetensors"
# Written beside a kept checkpoint by training (step, density, accuracy...), read by the export.
CHECKPOINT_INFO = "checkpoint_info.json"


@dataclass
class StudentConfig:
    """Shape of a student. Per-layer lists make compacted (pruned) students describable."""

    vocab_size: int
    hidden_size: int
    head_dim: int
    heads_per_layer: list[int]  # attention heads kept in each layer (0 allowed)
    ffn_width_per_layer: list[int]  # FFN intermediate width of each layer (0 allowed)
    num_labels: int = 2
    max_position_embeddings: int = 512
    layer_norm_eps: float = 1e-12
    activation: str = "gelu"
    pooler_activation: str = "tanh"  # "tanh" (from a BERT teacher) or "relu" (DistilBERT)
    dropout: float = 0.1
    attention_dropout: float = 0.1
    pad_token_id: int = 0
    # "sequence": logits of the first token; "token": logits of every token; "span": start and end
    # logits of every token (extractive question answering, num_labels = 2)
    head: str = "sequence"
    type_vocab_size: int = 0  # segment embeddings (token_type_ids is an input); 0 = none (DistilBERT)
    id2label: dict[str, str] = field(default_factory=dict)
    source_layers: list[int] = field(default_factory=list)  # teacher layers copied, for the record

    def __post_init__(self) -> None:
        if len(self.heads_per_layer) != len(self.ffn_width_per_layer):
            raise ModelError(
                f"Student config lists {len(self.heads_per_layer)} head counts but "
                f"{len(self.ffn_width_per_layer)} FFN widths; give one of each per layer."
            )
        if self.head not in HEADS:
            raise ModelError(f"Unknown student head {self.head!r}; choose from {', '.join(HEADS)}.")
        if self.head == "span" and self.num_labels != 2:
            raise ModelError(f"A span (question answering) head has 2 outputs per token (start, end), not "
                             f"num_labels={self.num_labels}.")
        if self.activation not in _ACTIVATIONS or self.pooler_activation not in _ACTIVATIONS:
            raise ModelError(
                f"Unknown activation {self.activation!r}/{self.pooler_activation!r}; "
                f"choose from {sorted(_ACTIVATIONS)}."
            )

    @property
    def num_layers(self) -> int:
        return len(self.heads_per_layer)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> StudentConfig:
        return cls(**json.loads(text))


_ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu, "tanh": torch.tanh}
HEADS = ("sequence", "token", "span")


class Embeddings(nn.Module):
    """Word + position (+ segment, when ``type_vocab_size`` > 0) embeddings, LayerNorm, dropout.
    DistilBERT has no segment embeddings; a pair-task student may keep the teacher's."""

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        if config.type_vocab_size:
            self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)
        self.register_buffer(
            "position_ids", torch.arange(config.max_position_embeddings)[None, :], persistent=False
        )

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids, token_type_ids (batch, seq) int64 -> (batch, seq, hidden). token_type_ids is
        read only when the model has segment embeddings (None there means segment 0)."""
        seq_len = input_ids.size(1)
        positions = self.position_ids[:, :seq_len]
        hidden = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        if hasattr(self, "token_type_embeddings"):
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            hidden = hidden + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(hidden))


class MultiHeadSelfAttention(nn.Module):
    """Self-attention with ``num_heads`` heads of ``head_dim``; ``num_heads`` may be 0."""

    def __init__(self, config: StudentConfig, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = config.head_dim
        inner = num_heads * config.head_dim
        self.q_lin = _linear(config.hidden_size, inner)
        self.k_lin = _linear(config.hidden_size, inner)
        self.v_lin = _linear(config.hidden_size, inner)
        self.out_lin = _linear(inner, config.hidden_size)
        self.dropout = nn.Dropout(config.attention_dropout)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, seq, heads * head_dim) -> (batch, heads, seq, head_dim)."""
        batch, seq, _ = x.size()
        return x.view(batch, seq, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self, hidden: torch.Tensor, mask_bias: torch.Tensor, queries: torch.Tensor | None = None
    ) -> torch.Tensor:
        """hidden (batch, seq, hidden): the rows that give keys and values; mask_bias (batch, 1, 1,
        seq), 0 or a large negative; queries (batch, q_seq, hidden): the rows that attend, every row
        of ``hidden`` when None. Returns (batch, q_seq, hidden)."""
        queries = hidden if queries is None else queries
        if self.num_heads == 0:
            # Every head pruned: the block contributes only the output bias (no NaN from an
            # empty softmax, and no zero-sized tensors in the exported graph).
            return self.out_lin.bias.expand_as(queries)
        query = self._split_heads(self.q_lin(queries))
        key = self._split_heads(self.k_lin(hidden))
        value = self._split_heads(self.v_lin(hidden))
        # Written as matmul / sqrt(d) + mask -> softmax -> matmul: the pattern ONNX Runtime fuses.
        scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(self.head_dim)
        probs = self.dropout(torch.softmax(scores + mask_bias, dim=-1))
        context = torch.matmul(probs, value).transpose(1, 2)  # (batch, q_seq, heads, head_dim)
        batch, q_seq = context.size(0), context.size(1)
        return self.out_lin(context.reshape(batch, q_seq, self.num_heads * self.head_dim))


def _linear(in_features: int, out_features: int) -> nn.Linear:
    """nn.Linear that may have a zero-sized side (a fully pruned layer) without init warnings."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        return nn.Linear(in_features, out_features)


class FeedForward(nn.Module):
    """hidden -> width -> hidden; ``width`` may be 0 (every row pruned)."""

    def __init__(self, config: StudentConfig, width: int) -> None:
        super().__init__()
        self.width = width
        self.lin1 = _linear(config.hidden_size, width)
        self.lin2 = _linear(width, config.hidden_size)
        self.activation = _ACTIVATIONS[config.activation]
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.width == 0:
            return self.lin2.bias.expand_as(hidden)
        return self.dropout(self.lin2(self.activation(self.lin1(hidden))))


class TransformerBlock(nn.Module):
    """Post-norm block: x = LN(x + attn(x)); x = LN(x + ffn(x)), as in BERT and DistilBERT."""

    def __init__(self, config: StudentConfig, num_heads: int, ffn_width: int) -> None:
        super().__init__()
        self.attention = MultiHeadSelfAttention(config, num_heads)
        self.sa_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn = FeedForward(config, ffn_width)
        self.output_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, hidden: torch.Tensor, mask_bias: torch.Tensor, cls_only: bool = False) -> torch.Tensor:
        """hidden (batch, seq, hidden) -> (batch, seq, hidden), or (batch, 1, hidden) with
        ``cls_only``: every token still gives keys and values, but only the [CLS] row (position 0)
        is queried, projected, normalised and sent through the FFN."""
        rows = hidden[:, :1] if cls_only else hidden
        attended = self.attention(hidden, mask_bias, rows)
        rows = self.sa_layer_norm(rows + self.dropout(attended))
        return self.output_layer_norm(rows + self.ffn(rows))


class Transformer(nn.Module):
    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(
            TransformerBlock(config, heads, width)
            for heads, width in zip(config.heads_per_layer, config.ffn_width_per_layer, strict=True)
        )


class DistilBertBody(nn.Module):
    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.embeddings = Embeddings(config)
        self.transformer = Transformer(config)


class DistilBertStudent(nn.Module):
    """DistilBERT classifier; ``forward`` returns logits (batch, num_labels) with the sequence head
    (``config.head == "sequence"``: pooled first token), (batch, seq, num_labels) with the token head
    (every token; no pooler, as Hugging Face's token classifiers), (batch, seq, 2) start and end logits
    with the span head (extractive question answering; the ONNX export names them start_logits and
    end_logits, each (batch, seq)).

    With ``output_hidden_states=True`` it returns ``(logits, hidden_states)`` where hidden_states is
    a list of num_layers + 1 tensors (batch, seq, hidden): the embeddings, then each block's output.

    With the sequence head and only logits asked for, the last block runs for the [CLS] row alone (keys and values
    still come from every token). The classifier reads nothing else, so the logits and their
    gradients are the same as with every row (tested), and the last block's query, output
    projection, LayerNorms and FFN shrink from ``seq`` rows to 1: about a fifth of a 4-layer
    student's multiply-adds at sequence 128. The exported ONNX graph inherits it; there the last
    block's attention runs as separate MatMul/Softmax nodes instead of a fused ``Attention`` (ONNX
    Runtime's fusion matches self-attention with as many queries as keys).
    """

    architecture_family = "distilbert"  # key into distilprune.architectures.ARCHITECTURES

    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        self.config = config
        self.distilbert = DistilBertBody(config)
        if config.head == "sequence":
            self.pre_classifier = nn.Linear(config.hidden_size, config.hidden_size)
            self.pooler_activation = _ACTIVATIONS[config.pooler_activation]
        self.dropout = nn.Dropout(config.dropout)
        if config.head == "span":  # named as Hugging Face's question-answering models name it
            self.qa_outputs = nn.Linear(config.hidden_size, 2)
        else:
            self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """input_ids, attention_mask, token_type_ids: (batch, seq) int64; attention_mask 1 = real
        token; token_type_ids is ignored by a student without segment embeddings."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.distilbert.embeddings(input_ids, token_type_ids)
        # (batch, 1, 1, seq): 0 where attended, the dtype's minimum where padded.
        mask = attention_mask[:, None, None, :].to(hidden.dtype)
        mask_bias = (1.0 - mask) * torch.finfo(hidden.dtype).min
        hidden_states = [hidden]
        blocks = self.distilbert.transformer.layer
        first_token_only = self.config.head == "sequence" and not output_hidden_states
        for index, block in enumerate(blocks):
            hidden = block(hidden, mask_bias, cls_only=first_token_only and index == len(blocks) - 1)
            hidden_states.append(hidden)
        if self.config.head == "token":
            logits = self.classifier(self.dropout(hidden))  # (batch, seq, labels)
        elif self.config.head == "span":
            logits = self.qa_outputs(self.dropout(hidden))  # (batch, seq, 2): [..., 0] start, [..., 1] end
        else:
            pooled = self.pooler_activation(self.pre_classifier(hidden[:, 0]))
            logits = self.classifier(self.dropout(pooled))
        if output_hidden_states:
            return logits, hidden_states
        return logits

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- persistence: safetensors weights + a JSON config that records every layer's width --------
    def save(self, directory: str | Path) -> Path:
        """Write ``student_config.json`` and ``model.safetensors`` into ``directory``.

        Files are written under temporary names and renamed, so an interrupted save never leaves a
        truncated file where a good one was.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {name: t.detach().contiguous().cpu() for name, t in self.state_dict().items()}
        tmp_weights = directory / (WEIGHTS_NAME + ".tmp")
        save_file(tensors, str(tmp_weights), metadata={"format": "pt"})
        tmp_config = directory / (CONFIG_NAME + ".tmp")
        tmp_config.write_text(self.config.to_json())
        tmp_weights.replace(directory / WEIGHTS_NAME)
        tmp_config.replace(directory / CONFIG_NAME)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> DistilBertStudent:
        """Build a student from a directory written by :meth:`save`."""
        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        if not config_path.is_file() or not weights_path.is_file():
            raise ModelError(
                f"{directory} is not a saved distilprune student: it needs {CONFIG_NAME} and "
                f"{WEIGHTS_NAME}. Point to a checkpoint directory under runs/<recipe>/<time>/checkpoints/."
            )
        try:
            config = StudentConfig.from_json(config_path.read_text())
            state = load_file(str(weights_path))
        except Exception as error:  # truncated or foreign file: say which one
            raise ModelError(
                f"Could not read the student checkpoint in {directory} ({type(error).__name__}: "
                f"{error}). The files are truncated or were not written by distilprune; re-export "
                f"the checkpoint or pick another one."
            ) from None
        model = cls(config)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ModelError(
                f"The weights in {weights_path} do not match {config_path}: missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}. The two files come from different checkpoints."
            )
        return model.eval()
