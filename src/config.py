"""Typed, strict recipes.

Precedence: schema defaults < recipe YAML < command line (``key=value``). An unknown key or a value
of the wrong type fails at load time with a :class:`~distilprune.errors.ConfigError` that names the
key and suggests the closest valid one. The fully resolved recipe is saved into each run directory,
and ``recipe=runs/<name>/<time>/recipe.yaml`` replays it.

Every field carries a docstring-style comment: it is the reference for what a recipe may say.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distilprune.errors import ConfigError

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"

# Block-pruned attention parts (the architecture table's names); the same tuple as
# distilprune.pruning.pruner.ATTENTION_TARGETS, repeated here so loading a recipe needs no torch.
ATTENTION_TARGETS = ("query", "key", "value", "attn_out")
# Recipe integers are counts, sizes and seeds: anything beyond 64 bits is a typo, and Python's
# int <-> str conversion refuses numbers above 4300 digits, which would break save_recipe.
INT_LIMIT = 2**63 - 1
# Lightning (and numpy) accept seeds in [0, 2**32 - 1].
SEED_LIMIT = 2**32 - 1
# Opsets torch's TorchScript ONNX exporter (dynamo=False) supports.
OPSET_RANGE = (7, 20)


@dataclass
class TeacherConfig:
    model: str = "minilm-l6"
    """Built-in asset name (see ``distilprune.assets.ASSETS``), a local model directory, or a hub id."""
    finetuned: bool = False
    """True: the teacher is already fine-tuned for the task and is used as it is."""
    epochs: int = 3
    """Fine-tuning epochs when ``finetuned`` is false (the result is cached)."""
    lr: float = 5e-5
    """Peak AdamW learning rate for teacher fine-tuning (linear warmup, linear decay)."""
    batch_size: int = 32
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01


@dataclass
class StudentConfig:
    num_layers: int = 4
    """Depth of the DistilBERT student; at most the teacher's depth."""
    init_layers: list[int] | None = None
    """Teacher block copied into each student block; null = evenly spaced incl. first and last."""
    init_from: str | None = None
    """A kept student checkpoint directory (runs/<recipe>/<time>/checkpoints/<name>) to start from
    instead of teacher layers, e.g. to fine-prune a student that was already distilled. Its layer
    count must equal num_layers; its vocabulary and label count must match the teacher's."""


@dataclass
class DataConfig:
    dataset: str = "rotten-tomatoes"
    """Built-in asset name, a local csv/tsv/json/jsonl/parquet file, or a hub dataset id."""
    text_column: str = "text"
    label_column: str = "label"
    max_seq_len: int = 128
    """Tokens per example after truncation; batches are padded only to their longest example."""
    train_examples: int | None = None
    """Use only the first N (shuffled, seeded) training examples; null = all."""
    eval_examples: int | None = None
    """Use only the first N validation and test examples; null = all."""
    validation_fraction: float = 0.1
    """Used only for sources without their own validation split."""
    test_fraction: float = 0.1
    """Used only for sources without their own test split."""
    split_seed: int = 42
    """Seed of the fixed train/validation/test split (independent of the training seed)."""
    eval_batch_size: int = 64


@dataclass
class DistillConfig:
    temperature: float = 2.0
    """Softmax temperature T of the KL term; the term is scaled by T^2."""
    kd_weight: float = 0.9
    """Weight of KL(teacher_T || student_T) * T^2."""
    ce_weight: float = 0.1
    """Weight of cross-entropy with the gold labels."""
    hidden_loss: str = "none"
    """none | cosine | mse: match student block outputs to their source teacher blocks."""
    hidden_weight: float = 0.0
    teacher_cache: bool = True
    """Compute the frozen teacher's outputs on the training split (augmented copies included) once,
    store them on disk (keyed by teacher, data, augmentation and tokenization) and read them during
    training. The copies are fixed by the seed, so the cached outputs are exactly what the live
    teacher would give (up to the numerics of padding). False: run the teacher on every step."""
    augment_copies: int = 0
    """Perturbed copies of every training sentence, learned from the teacher's logits only (no gold
    label; Tang et al. 2019; see src/augment.py). 0 = off. An epoch is (1 + copies) times longer.
    The teacher is fine-tuned on the original sentences only."""
    augment_mask_prob: float = 0.1
    """Per word: probability of the tokenizer's mask token in an augmented copy."""
    augment_swap_prob: float = 0.1
    """Per word: probability of a random training word instead (after the mask draw)."""
    augment_ngram_prob: float = 0.25
    """Per copy: probability of keeping only a random window of 1-5 words."""


@dataclass
class TrainConfig:
    epochs: int = 3
    max_steps: int = -1
    """Stop after this many optimizer steps (-1: run all epochs)."""
    batch_size: int = 32
    lr: float = 1e-4
    """Peak AdamW learning rate of the student weights."""
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    precision: str = "auto"
    """auto | 32-true | bf16-mixed | 16-mixed (CUDA only). auto = bf16-mixed where the CPU (AVX-512
    BF16 / AMX) or GPU runs bf16 natively, 16-mixed on older GPUs, else 32-true."""
    accelerator: str = "auto"
    devices: int = 1
    """Devices per node (GPUs, or CPU processes with accelerator=cpu). train.batch_size is the global
    batch: each of devices x num_nodes processes takes an equal share of every batch."""
    num_nodes: int = 1
    strategy: str = "auto"
    """auto | ddp | fsdp: Lightning's strategy for devices x num_nodes > 1."""
    padding: str = "dynamic"
    """dynamic: pad each batch to its longest example; max_length: pad every batch to data.max_seq_len."""
    length_bucketing: bool = False
    """Group training examples of similar length into batches (less padding); batches stay shuffled."""
    num_workers: int = 0
    """DataLoader worker processes; 0 = the main process (batches are cheap: data is tokenized once)."""
    pin_memory: bool | None = None
    """Pin batch memory for faster host-to-GPU copies; null = on when training on CUDA."""
    checkpoint_every_steps: int = 50
    """Write the resume checkpoint (<run>/resume/last.ckpt) every N optimizer steps; 0 = only at
    epoch ends. `python train/distill.py resume=<run dir>` continues from it."""
    threads: int | None = None
    """torch intra-op threads for training; null = torch's default."""
    val_every_epochs: int = 1
    log_every_steps: int = 10
    progress_bar: bool = True


@dataclass
class TrackingConfig:
    wandb: bool = True
    """Log to Weights & Biases; offline unless WANDB_MODE or WANDB_API_KEY says otherwise."""
    wandb_project: str = "distilprune"
    csv: bool = True
    """Also write metrics to <run>/metrics/ as CSV."""


@dataclass
class ExportConfig:
    enabled: bool = True
    """Export, quantize and verify every kept checkpoint when training ends."""
    opset: int = 17
    parity_atol: float = 1e-4
    """Largest allowed |ONNX fp32 - PyTorch| logit difference."""
    latency_batch_size: int = 1
    latency_seq_len: int = 128
    latency_warmup: int = 10
    latency_runs: int = 50
    threads: int = 2
    """Threads for every latency measurement (PyTorch and ONNX Runtime alike)."""
    grid_batch_sizes: list[int] = field(default_factory=lambda: [1, 8, 32])
    """Latency grid: batch sizes, crossed with grid_seq_lens, for ONNX fp32 and INT8."""
    grid_seq_lens: list[int] = field(default_factory=lambda: [32, 128])
    latency_budget_ms: float | None = None
    """Optional p95 budget in ms at budget_batch_size x budget_seq_len. The selected bundle is the most
    accurate one within it; when no checkpoint meets it the run fails loudly (after writing its report),
    and a bundle's verification fails when it exceeds it on the machine where it is verified."""
    budget_batch_size: int = 1
    budget_seq_len: int = 128
    int8_method: str = "per_channel"
    """INT8 quantization tried first: per_channel (dynamic INT8, one weight scale per output channel)
    or dynamic (one scale per weight tensor), reduce_range, static, exclude_sensitive. per_channel is
    the default because it ran at the same latency as per-tensor dynamic and lost less validation
    accuracy on the students measured in the README."""
    int8_max_drop: float = 0.01
    """Largest allowed INT8 accuracy loss against ONNX fp32 (0.01 = 1 point). Beyond it the fallbacks
    below are tried in order and the best passing model is shipped."""
    int8_fallbacks: list[str] = field(
        default_factory=lambda: ["dynamic", "reduce_range", "static", "exclude_sensitive"]
    )
    int8_eval_batch_size: int = 1
    """Sentences per ONNX Runtime call when measuring INT8 accuracy (gate and report). Dynamic INT8
    quantizes activations with one scale over the whole input tensor, so a sentence's prediction
    depends on what is batched with it (padding included); 1 measures what a request-at-a-time server
    returns, independent of neighbours."""
    calibration_examples: int = 256
    """Training examples used to calibrate static INT8 quantization."""
    require_attention_fusion: bool = True
    """Fail the export when ONNX Runtime did not fuse every layer's attention into one node."""
    gpu: str = "auto"
    """auto: also verify with the CUDA execution provider (fp16, IOBinding) when CUDA is available,
    and say in the report that it was skipped when not; off: never."""


def _hybrid_blocks() -> dict[str, list[int]]:
    # 32x32 blocks in Q/K/V/O: with heads of 32 (MiniLM, BERT-base has 64) a block row is one head's slice.
    return {"query": [32, 32], "key": [32, 32], "value": [32, 32], "attn_out": [32, 32]}


@dataclass
class PruningConfig:
    enabled: bool = False
    """Block movement fine-pruning during distillation (Lagunas et al. 2021)."""
    method: str = "topk"
    """topk: keep the top-scoring fraction of blocks of each matrix (scheduled to *_density);
    sigmoid_threshold: keep blocks with sigmoid(score) > threshold (scheduled to final_threshold)."""
    block_shapes: dict[str, list[int]] = field(default_factory=_hybrid_blocks)
    """Attention targets (query, key, value, attn_out) -> [block_rows, block_cols]; -1 = whole dim."""
    prune_ffn: bool = True
    """Prune whole FFN rows (ffn_in row i together with ffn_out column i)."""
    layers: list[int] = field(default_factory=list)
    """Student layers to prune (0-based); empty = every layer. The others stay dense and count as
    fully kept in every reported density."""
    attention_density: float = 0.5
    """topk: final kept fraction of the attention blocks, in (0, 1]."""
    ffn_density: float = 0.33
    """topk: final kept fraction of FFN rows, in (0, 1]."""
    final_threshold: float = 0.1
    """sigmoid_threshold: final threshold on sigmoid(score), in (0, 1)."""
    warmup: float = 0.1
    """Fraction of training before pruning starts (density 1)."""
    cooldown: float = 0.2
    """Fraction of training at the final density (masks keep adapting, density fixed; with fill,
    the structure is frozen instead)."""
    fill: bool = False
    """Hybrid filled (Lagunas et al. 2021): when the cooldown starts, freeze which heads and FFN rows
    survive, unmask every block of the surviving heads (they restart from zero) and train the rest of
    the run with fixed masks. Same heads and FFN widths, so the same latency after compaction, with
    more trainable weights inside the kept heads. Needs cooldown > 0."""
    scores_lr: float = 0.01
    """Learning rate of the scores (their own AdamW group, no weight decay)."""
    l1_weight: float = 0.0
    """Weight of the L1 penalty on sigmoid(scores) (mostly for sigmoid_threshold)."""
    l1_ramp: list[float] = field(default_factory=lambda: [0.1, 0.5])
    """[start, end] fractions of training over which the L1 weight ramps from 0 to l1_weight."""
    keep_at_densities: list[float] = field(default_factory=list)
    """Also keep a checkpoint when the overall density first falls to each of these values."""


@dataclass
class Recipe:
    name: str = "unnamed"
    """Run directories go to <output_dir>/<name>/<timestamp>/."""
    seed: int = 42
    output_dir: str = "runs"
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    data: DataConfig = field(default_factory=DataConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)


CHOICES: dict[str, tuple[str, ...]] = {
    "distill.hidden_loss": ("none", "cosine", "mse"),
    "train.precision": ("auto", "32-true", "bf16-mixed", "16-mixed"),
    "pruning.method": ("topk", "sigmoid_threshold"),
    "train.strategy": ("auto", "ddp", "fsdp"),
    "train.padding": ("dynamic", "max_length"),
    "export.gpu": ("auto", "off"),
}
INT8_METHODS = ("dynamic", "per_channel", "reduce_range", "static", "exclude_sensitive")


# ---------------------------------------------------------------------------------------------
# YAML dialect
# ---------------------------------------------------------------------------------------------
class _RecipeLoader(yaml.SafeLoader):
    """Safe YAML with YAML 1.2 core scalars, for recipe files and ``key=value`` values.

    PyYAML follows YAML 1.1, where ``yes``/``no``/``on``/``off`` are booleans, ``2024-01-01`` is a
    date, ``0123`` is octal and ``1e-4`` is a string. Recipes get the 1.2 meaning: only
    true/false are booleans, there are no dates, integers are decimal and ``1e-4`` is a float.
    """


class _RecipeDumper(yaml.SafeDumper):
    """Quotes exactly the strings that :class:`_RecipeLoader` would read as something else, so a
    saved recipe loads back to an equal one."""


_YAML_TAG = "tag:yaml.org,2002:"
_RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers
            if tag.removeprefix(_YAML_TAG) not in ("bool", "int", "float", "timestamp", "value")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_RecipeLoader.add_implicit_resolver(
    _YAML_TAG + "bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_RecipeLoader.add_implicit_resolver(
    _YAML_TAG + "int", re.compile(r"^[-+]?[0-9][0-9_]*$"), list("-+0123456789"))
_RecipeLoader.add_implicit_resolver(
    _YAML_TAG + "float",
    re.compile(r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)
_RecipeLoader.add_constructor(
    # Decimal always: PyYAML would read a leading zero as octal (0123 -> 83).
    _YAML_TAG + "int", lambda loader, node: int(loader.construct_scalar(node).replace("_", "")))
_RecipeDumper.yaml_implicit_resolvers = _RecipeLoader.yaml_implicit_resolvers


def _parse_yaml(text: str, what: str, fix: str) -> Any:
    """``text`` parsed with :class:`_RecipeLoader`; any failure is a :class:`ConfigError`."""
    try:
        return yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 - a SafeLoader subclass
    except (yaml.YAMLError, ValueError, OverflowError, RecursionError) as error:
        # ValueError: an integer beyond Python's 4300-digit conversion limit, or an explicit tag
        # (!!int, !!float) on text that is not a number. The YAML error spans several lines.
        detail = " ".join(str(error).split())[:300] or type(error).__name__
        raise ConfigError(f"{what} is not valid recipe YAML ({detail}). {fix}") from None


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------
def available_recipes() -> list[str]:
    """Names accepted by ``recipe=NAME``: paths under recipes/ without the .yaml suffix."""
    return sorted(str(p.relative_to(RECIPES_DIR).with_suffix("")) for p in RECIPES_DIR.rglob("*.yaml"))


def find_recipe(name: str) -> Path:
    """``quickstart`` -> recipes/quickstart.yaml; a path to a .yaml file is taken as it is."""
    try:
        as_path = Path(name).expanduser()
    except RuntimeError:  # "~someone/..." for a user this machine does not know: take it literally
        as_path = Path(name)
    if as_path.suffix in (".yaml", ".yml"):
        if as_path.is_file():
            return as_path
        raise ConfigError(
            f"Recipe file {name} does not exist. Give a path to an existing .yaml file (for example a "
            f"run's saved runs/<name>/<time>/recipe.yaml) or a built-in recipe name: "
            f"{', '.join(available_recipes())}."
        )
    candidate = RECIPES_DIR / f"{name}.yaml"
    if candidate.is_file():
        return candidate
    names = available_recipes()
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    hint = f" Did you mean recipe={close[0]}?" if close else ""
    raise ConfigError(
        f"There is no recipe named {name!r}.{hint} Available recipes: {', '.join(names)}. "
        f"Run: python train/distill.py recipe=<name> [key=value ...]"
    )


def parse_cli(argv: list[str]) -> tuple[str | None, dict[str, str]]:
    """Split ``recipe=NAME a.b=1 ...`` into the recipe name and a {dotted key: raw value} dict."""
    recipe_name, overrides = None, {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        key = key.lstrip("-")
        if not sep or not key:
            raise ConfigError(
                f"Cannot read the argument {arg!r}: arguments are key=value pairs, e.g. "
                f"recipe=quickstart train.epochs=2."
            )
        if key == "recipe":
            recipe_name = value
        else:
            overrides[key.removeprefix("recipe.")] = value
    return recipe_name, overrides


def load_recipe(argv: list[str], default: str = "quickstart") -> Recipe:
    """Resolve a recipe from command-line arguments: schema < YAML < ``key=value`` overrides."""
    recipe_name, overrides = parse_cli(argv)
    path = find_recipe(recipe_name or default)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(
            f"Cannot read the recipe {path} ({error}). Give a readable UTF-8 .yaml file."
        ) from None
    data = _parse_yaml(text, f"The recipe {path}", "Fix the file's syntax (recipes are plain YAML mappings).")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"The recipe {path} must be a mapping of keys to values, not a {type(data).__name__}. "
            f"Write it as 'section:' lines with indented 'key: value' pairs, like recipes/quickstart.yaml."
        )
    data.setdefault("name", str(path.resolve().relative_to(RECIPES_DIR.resolve()).with_suffix(""))
                    if _is_under(path, RECIPES_DIR) else path.stem)
    for dotted, raw in overrides.items():
        _set_dotted(data, dotted, _cli_value(dotted, raw))
    return recipe_from_dict(data, source=str(path))


def recipe_from_dict(data: dict[str, Any], source: str = "<dict>") -> Recipe:
    """Build and validate a :class:`Recipe` from nested plain data."""
    recipe = _build(Recipe, data, prefix="", source=source)
    validate(recipe)
    return recipe


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    return dataclasses.asdict(recipe)


def save_recipe(recipe: Recipe, path: Path) -> None:
    """Write the fully resolved recipe; loading it back gives an equal Recipe."""
    header = (
        f"# Resolved recipe of run {path.parent}. Replay it with:\n"
        f"#   python train/distill.py recipe={path}\n"
    )
    body = yaml.dump(recipe_to_dict(recipe), Dumper=_RecipeDumper, sort_keys=False)  # ASCII: escapes survive
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(header + body, encoding="utf-8")
    tmp.replace(path)


def _is_under(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def _annotation_at(dotted: str) -> Any:
    """The schema type of ``dotted`` (e.g. ``data.text_column`` -> str), or None if it is no field."""
    node: Any = Recipe
    for part in dotted.split("."):
        if not dataclasses.is_dataclass(node) or part not in _field_names(node):
            return None
        node = typing.get_type_hints(node)[part]
    return node


def _cli_value(dotted: str, raw: str) -> Any:
    """The value of one ``key=value`` argument.

    A string field takes the text as typed (``data.text_column=yes`` is the column "yes",
    ``name=2024-01-01`` the name "2024-01-01"); everything else is read as YAML
    (``train.lr=1e-4``, ``student.init_layers=[0,2]``, ``train.threads=null``).
    """
    if raw == "":
        return ""
    quoted = len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\""
    if _annotation_at(dotted) is str and not quoted:
        return raw
    return _parse_yaml(
        raw, f"The value of {dotted}={_short(raw)}",
        f"Write it as a YAML value (a number, true/false, null, [a, b] or {{key: value}}), or quote a "
        f"string: {dotted}='\"...\"'.",
    )


def _short(value: Any, limit: int = 80) -> str:
    """repr() cut to ``limit`` characters: error messages stay one readable paragraph."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _suggest(key: str, options: list[str]) -> str:
    close = difflib.get_close_matches(key, options, n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""


def _build(cls, data: Any, prefix: str, source: str):
    where = prefix.rstrip(".") or "the recipe"
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where} in {source} must be a section of key: value pairs, got {_short(data)}. "
            f"Write it as {'section.key=value arguments or ' if prefix else ''}indented 'key: value' lines."
        )
    hints = typing.get_type_hints(cls)
    names = _field_names(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            shown = key if isinstance(key, str) and len(key) <= 80 else _short(key)
            raise ConfigError(
                f"Unknown recipe key '{prefix}{shown}' (from {source}).{_suggest(str(key)[:200], names)} "
                f"Valid keys under {where}: {', '.join(names)}."
            )
        kwargs[key] = _coerce(hints[key], value, f"{prefix}{key}", source)
    return cls(**kwargs)


def _type_name(tp) -> str:
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if typing.get_origin(tp) is dict:
        return f"mapping of {_type_name(typing.get_args(tp)[0])} to {_type_name(typing.get_args(tp)[1])}"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


class _BadValue(ConfigError):
    """A value of the right type that no setting accepts (nan, inf, an integer beyond 64 bits)."""


def _coerce(tp, value: Any, key: str, source: str):
    """Check ``value`` against the annotation ``tp``; ints are accepted where floats are."""
    if dataclasses.is_dataclass(tp):
        return _build(tp, value if value is not None else {}, f"{key}.", source)
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key, source)
            except _BadValue:
                raise  # the type fits but the value does not (nan, 10**30): say that, not "expects"
            except ConfigError:
                continue
    elif origin is dict:
        key_type, value_type = typing.get_args(tp)
        if isinstance(value, dict):
            return {_coerce(key_type, k, f"{key}", source): _coerce(value_type, v, f"{key}.{k}", source) for k, v in value.items()}
    elif origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, list):
            return [_coerce(item, v, f"{key}[{i}]", source) for i, v in enumerate(value)]
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > INT_LIMIT:
                raise _BadValue(
                    f"Recipe key {key!r} (from {source}) is {_short(value)}, beyond what any setting "
                    f"needs (at most {INT_LIMIT} in size). Set {key} to a realistic integer."
                )
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value) if abs(value) <= 1e308 else math.inf  # float(10**400) overflows
            if not math.isfinite(number):
                raise _BadValue(
                    f"Recipe key {key!r} (from {source}) is {_short(value)}; recipe numbers must be "
                    f"finite (no nan, no inf). Set {key} to a finite number."
                )
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) <= INT_LIMIT:
            return str(value)
        if isinstance(value, float) and math.isfinite(value):
            return str(value)
    raise ConfigError(
        f"Recipe key {key!r} (from {source}) expects {_type_name(tp)}, got {_short(value)} "
        f"({type(value).__name__}). Set it to a value of that type, e.g. {key}=<{_type_name(tp)}>."
    )


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def validate(recipe: Recipe) -> None:
    """Value checks that types alone cannot express."""
    for dotted, choices in CHOICES.items():
        section, key = dotted.split(".")
        value = getattr(getattr(recipe, section), key)
        _check(
            value in choices,
            f"Recipe key {dotted!r} is {value!r}; choose one of {', '.join(choices)}."
            + _suggest(str(value), list(choices)),
        )
    t, d, e = recipe.train, recipe.data, recipe.export
    name = Path(recipe.name)
    _check(
        recipe.name.strip() != "" and not name.is_absolute() and ".." not in name.parts,
        f"name is {recipe.name!r}; runs go to <output_dir>/<name>/<time>, so give a non-empty relative "
        f"name without '..', e.g. name=my-experiment.",
    )
    _check(recipe.output_dir.strip() != "", "output_dir is empty; set output_dir=runs or another directory.")
    _check(0 <= recipe.seed <= SEED_LIMIT, f"seed is {recipe.seed}; use a seed in 0..{SEED_LIMIT}, e.g. seed=42.")
    _check(recipe.teacher.model.strip() != "",
           "teacher.model is empty; give a built-in asset (teacher.model=minilm-l6), a model directory or a hub id.")
    _check(recipe.teacher.finetuned or recipe.teacher.epochs >= 1,
           "teacher.epochs must be at least 1 (or set teacher.finetuned=true for a teacher that is already fine-tuned).")
    _check(
        recipe.teacher.weight_decay >= 0 and t.weight_decay >= 0,
        "teacher.weight_decay and train.weight_decay must be >= 0 (0.01 is usual).",
    )
    augment = recipe.distill
    _check(augment.augment_copies >= 0,
           f"distill.augment_copies is {augment.augment_copies}; use 0 (off) or a positive number of copies.")
    _check(
        all(0 <= v <= 1 for v in (augment.augment_mask_prob, augment.augment_swap_prob, augment.augment_ngram_prob))
        and augment.augment_mask_prob + augment.augment_swap_prob <= 1,
        "distill.augment_mask_prob, augment_swap_prob and augment_ngram_prob are probabilities in [0, 1], "
        "and mask + swap must not exceed 1 (both are drawn per word), e.g. 0.1, 0.1 and 0.25.",
    )
    student = recipe.student
    _check(student.num_layers >= 1, f"student.num_layers is {student.num_layers}; a student needs at least 1 layer.")
    if student.init_layers is not None and not student.init_from:  # init_from: the checkpoint's layers
        layers = student.init_layers
        _check(
            len(layers) == student.num_layers,
            f"student.init_layers lists {len(layers)} teacher layers ({_short(layers)}) but "
            f"student.num_layers is {student.num_layers}; give one teacher layer per student layer, or "
            f"student.init_layers=null for evenly spaced ones.",
        )
        _check(
            min(layers) >= 0,
            f"student.init_layers has {min(layers)}; teacher layers are numbered from 0, "
            f"e.g. student.init_layers=[0, 2, 4, 5] for a 4-layer student of a 6-layer teacher.",
        )
    _check(d.dataset.strip() != "",
           "data.dataset is empty; give a built-in dataset (data.dataset=rotten-tomatoes) or a data file.")
    _check(d.text_column != "" and d.label_column != "",
           "data.text_column and data.label_column must name columns of the dataset; one is empty.")
    _check(d.eval_batch_size >= 1, "data.eval_batch_size must be at least 1.")
    _check(t.epochs >= 1 or t.max_steps > 0, "train.epochs must be at least 1 (or set train.max_steps).")
    _check(t.max_steps == -1 or t.max_steps >= 1,
           f"train.max_steps is {t.max_steps}; use -1 (run all epochs) or a positive number of steps.")
    _check(t.val_every_epochs >= 1 and t.log_every_steps >= 1,
           "train.val_every_epochs and train.log_every_steps must be at least 1.")
    _check(t.threads is None or t.threads >= 1, "train.threads must be null (torch's default) or at least 1.")
    _check(t.batch_size >= 1 and recipe.teacher.batch_size >= 1, "Batch sizes must be at least 1.")
    _check(t.lr > 0 and recipe.teacher.lr > 0, "Learning rates must be positive.")
    _check(0 <= t.warmup_ratio < 1 and 0 <= recipe.teacher.warmup_ratio < 1, "warmup_ratio must be in [0, 1).")
    _check(d.max_seq_len >= 8, f"data.max_seq_len is {d.max_seq_len}; use at least 8 tokens.")
    _check(
        0 < d.validation_fraction < 1 and 0 < d.test_fraction < 1 and d.validation_fraction + d.test_fraction < 1,
        "data.validation_fraction and data.test_fraction must each be in (0, 1) and sum to less than 1.",
    )
    for key in ("train_examples", "eval_examples"):
        value = getattr(d, key)
        _check(value is None or value >= 1, f"data.{key} must be null (all) or at least 1, got {value}.")
    dist = recipe.distill
    _check(dist.temperature > 0, "distill.temperature must be positive.")
    _check(
        min(dist.kd_weight, dist.ce_weight, dist.hidden_weight) >= 0
        and dist.kd_weight + dist.ce_weight + dist.hidden_weight > 0,
        "distill.kd_weight, ce_weight and hidden_weight must be non-negative and not all zero.",
    )
    _check(
        (dist.hidden_loss == "none") == (dist.hidden_weight == 0),
        "distill.hidden_loss and distill.hidden_weight go together: set hidden_loss to cosine or mse "
        "with hidden_weight > 0, or hidden_loss=none with hidden_weight=0.",
    )
    _check(e.latency_runs >= 1 and e.latency_warmup >= 0, "export.latency_runs must be >= 1 and latency_warmup >= 0.")
    _check(e.threads >= 1, "export.threads must be at least 1.")
    _check(
        OPSET_RANGE[0] <= e.opset <= OPSET_RANGE[1],
        f"export.opset is {e.opset}; torch exports opsets {OPSET_RANGE[0]}..{OPSET_RANGE[1]} (17 is the default).",
    )
    _check(e.latency_batch_size >= 1 and e.latency_seq_len >= 1,
           "export.latency_batch_size and export.latency_seq_len must be at least 1.")
    _check(e.parity_atol > 0, "export.parity_atol must be positive.")
    _check(
        bool(e.grid_batch_sizes) and bool(e.grid_seq_lens) and min(e.grid_batch_sizes + e.grid_seq_lens) >= 1,
        "export.grid_batch_sizes and export.grid_seq_lens must be non-empty lists of positive integers.",
    )
    _check(e.latency_budget_ms is None or e.latency_budget_ms > 0,
           "export.latency_budget_ms must be positive (milliseconds) or null.")
    _check(e.budget_batch_size >= 1 and e.budget_seq_len >= 1, "export.budget_batch_size and budget_seq_len must be >= 1.")
    _check(0 <= e.int8_max_drop < 1, "export.int8_max_drop is an accuracy fraction in [0, 1), e.g. 0.01 for 1 point.")
    for key, names in (("int8_method", [e.int8_method]), ("int8_fallbacks", e.int8_fallbacks)):
        for name in names:
            _check(name in INT8_METHODS,
                   f"export.{key} has {name!r}; choose from {', '.join(INT8_METHODS)}."
                   + _suggest(str(name), list(INT8_METHODS)))
    _check(e.int8_eval_batch_size >= 1, "export.int8_eval_batch_size must be at least 1 (1 = one sentence per call).")
    _check(e.calibration_examples >= 1, "export.calibration_examples must be at least 1.")
    _check(t.devices >= 1 and t.num_nodes >= 1, "train.devices and train.num_nodes must be at least 1.")
    _check(
        t.batch_size % (t.devices * t.num_nodes) == 0,
        f"train.batch_size={t.batch_size} is the global batch and must divide evenly over "
        f"devices x num_nodes = {t.devices * t.num_nodes} processes; choose a multiple of {t.devices * t.num_nodes}.",
    )
    _check(t.num_workers >= 0 and t.checkpoint_every_steps >= 0,
           "train.num_workers and train.checkpoint_every_steps must be >= 0.")
    p = recipe.pruning
    for key in ("attention_density", "ffn_density"):
        value = getattr(p, key)
        _check(
            0 < value <= 1,
            f"pruning.{key} is {value}; a target density is the kept fraction of weights and must be in "
            f"(0, 1], e.g. pruning.{key}=0.5.",
        )
    for value in p.keep_at_densities:
        _check(0 < value < 1, f"pruning.keep_at_densities has {value}; each must be in (0, 1).")
    _check(0 < p.final_threshold < 1, "pruning.final_threshold must be in (0, 1).")
    _check(
        0 <= p.warmup and 0 <= p.cooldown and p.warmup + p.cooldown < 1,
        "pruning.warmup and pruning.cooldown are fractions of training; each >= 0 and their sum below 1.",
    )
    _check(
        not p.fill or p.cooldown > 0,
        "pruning.fill=true refills the kept heads when the cooldown starts, but pruning.cooldown is 0, "
        "so there would be no training left after the fill; set pruning.cooldown (e.g. 0.25) or pruning.fill=false.",
    )
    _check(
        len(p.l1_ramp) == 2 and 0 <= p.l1_ramp[0] <= p.l1_ramp[1] <= 1,
        "pruning.l1_ramp is [start, end] with 0 <= start <= end <= 1.",
    )
    _check(p.scores_lr > 0 and p.l1_weight >= 0, "pruning.scores_lr must be positive and l1_weight non-negative.")
    for part, shape in p.block_shapes.items():
        _check(
            part in ATTENTION_TARGETS,
            f"pruning.block_shapes has {part!r}, which is not a block-pruned target; use "
            f"{', '.join(ATTENTION_TARGETS)} (FFN rows are pruned with pruning.prune_ffn)."
            + _suggest(part, list(ATTENTION_TARGETS)),
        )
        _check(
            len(shape) == 2 and all(side == -1 or side >= 1 for side in shape),
            f"pruning.block_shapes.{part} is {shape}; give [rows, cols] with positive sides or -1 (whole dimension).",
        )
