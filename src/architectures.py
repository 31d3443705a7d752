"""The one place that knows where things live inside a BERT-family classifier.

Every other module (student initialisation, pruning targets, compaction) asks this table which
submodule is the query projection or the first FFN linear, and never spells a module path itself.
Recipes name pruning targets by the logical names in :data:`LAYER_PARTS` (``query``, ``ffn_in``...).

The ``distilbert`` entry describes both Hugging Face's ``DistilBertForSequenceClassification`` and
this project's own student (:mod:`distilprune.students.distilbert`), which uses the same names.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from distilprune.errors import ModelError

# Logical names of the parts of one transformer block.
LAYER_PARTS = (
    "query",  # Linear(hidden -> heads * head_dim)
    "key",  # Linear(hidden -> heads * head_dim)
    "value",  # Linear(hidden -> heads * head_dim)
    "attn_out",  # Linear(heads * head_dim -> hidden)
    "attn_norm",  # LayerNorm(hidden) after the attention residual
    "ffn_in",  # Linear(hidden -> ffn_width)
    "ffn_out",  # Linear(ffn_width -> hidden)
    "ffn_norm",  # LayerNorm(hidden) after the FFN residual
)

@dataclass(frozen=True)
class Architecture:
    """Module paths of one model family, relative to the classification model's root."""

    family: str
    layers: str  # the nn.ModuleList of transformer blocks
    word_embeddings: str
    position_embeddings: str
    token_type_embeddings: str | None  # None: the family has no segment embeddings
    embeddings_norm: str
    layer: dict[str, str]  # logical part name (LAYER_PARTS) -> path inside one block
    pooler: str  # Linear(hidden -> hidden) applied to the first token
    pooler_activation: str  # "tanh" (BERT pooler) or "relu" (DistilBERT pre_classifier)
    classifier: str  # Linear(hidden -> num_labels): sequence and token classifiers
    span_head: str  # Linear(hidden -> 2): start and end logits of extractive question answering
    config_num_heads: str  # attribute of the HF config holding the head count
    config_num_layers: str

    def head_path(self, head: str) -> str:
        """The output layer of a model with ``head`` ("sequence", "token" or "span")."""
        return self.span_head if head == "span" else self.classifier


ARCHITECTURES: dict[str, Architecture] = {
    "bert": Architecture(
        family="bert",
        layers="bert.encoder.layer",
        word_embeddings="bert.embeddings.word_embeddings",
        position_embeddings="bert.embeddings.position_embeddings",
        token_type_embeddings="bert.embeddings.token_type_embeddings",
        embeddings_norm="bert.embeddings.LayerNorm",
        layer={
            "query": "attention.self.query",
            "key": "attention.self.key",
            "value": "attention.self.value",
            "attn_out": "attention.output.dense",
            "attn_norm": "attention.output.LayerNorm",
            "ffn_in": "intermediate.dense",
            "ffn_out": "output.dense",
            "ffn_norm": "output.LayerNorm",
        },
        pooler="bert.pooler.dense",
        pooler_activation="tanh",
        classifier="classifier",
        span_head="qa_outputs",
        config_num_heads="num_attention_heads",
        config_num_layers="num_hidden_layers",
    ),
    "distilbert": Architecture(
        family="distilbert",
        layers="distilbert.transformer.layer",
        word_embeddings="distilbert.embeddings.word_embeddings",
        position_embeddings="distilbert.embeddings.position_embeddings",
        token_type_embeddings=None,
        embeddings_norm="distilbert.embeddings.LayerNorm",
        layer={
            "query": "attention.q_lin",
            "key": "attention.k_lin",
            "value": "attention.v_lin",
            "attn_out": "attention.out_lin",
            "attn_norm": "sa_layer_norm",
            "ffn_in": "ffn.lin1",
            "ffn_out": "ffn.lin2",
            "ffn_norm": "output_layer_norm",
        },
        pooler="pre_classifier",
        pooler_activation="relu",
        classifier="classifier",
        span_head="qa_outputs",
        config_num_heads="n_heads",
        config_num_layers="n_layers",
    ),
}


def architecture_of(model: nn.Module) -> Architecture:
    """The table entry for ``model``, found from its HF config ``model_type`` or its own marker.

    Raises:
        ModelError: the family is not in the table.
    """
    family = getattr(model, "architecture_family", None)
    if family is None:
        config = getattr(model, "config", None)
        family = getattr(config, "model_type", None)
    if family not in ARCHITECTURES:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ModelError(
            f"The model family {family!r} ({type(model).__name__}) is not in distilprune's "
            f"architecture table, so its query/key/value/FFN modules are unknown. Supported families: "
            f"{known}. Use a BERT or DistilBERT checkpoint, or add an entry to "
            f"distilprune.architectures.ARCHITECTURES."
        )
    return ARCHITECTURES[family]


def get_module(root: nn.Module, path: str) -> nn.Module:
    """``root.get_submodule(path)`` with a message that names the architecture table."""
    try:
        return root.get_submodule(path)
    except AttributeError as error:
        raise ModelError(
            f"{type(root).__name__} has no submodule {path!r}: the architecture table in "
            f"distilprune.architectures does not match this model ({error})."
        ) from None


def layers_of(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of ``model``, in order."""
    return get_module(model, architecture_of(model).layers)


def layer_part(model: nn.Module, layer_index: int, part: str) -> nn.Module:
    """The module playing logical ``part`` (see :data:`LAYER_PARTS`) in block ``layer_index``."""
    arch = architecture_of(model)
    if part not in arch.layer:
        raise ModelError(
            f"Unknown layer part {part!r}. Known parts: {', '.join(LAYER_PARTS)}."
        )
    return get_module(layers_of(model)[layer_index], arch.layer[part])


def head_dim_of(model: nn.Module) -> int:
    """Width of one attention head: the model's own ``head_dim`` when its config has one (this
    project's student, whose head counts may differ per layer), else hidden size / head count."""
    config = model.config
    if getattr(config, "head_dim", None):
        return int(config.head_dim)
    return int(config.hidden_size) // int(getattr(config, architecture_of(model).config_num_heads))
