"""The recipe schema: every key a recipe may set, its type, default and one-line documentation,
and the value checks of each section (``<Section>.validate``).

Precedence: schema defaults < recipe YAML < command line (``key=value``); loading lives in
:mod:`distilprune.config.loading`. Every field carries a docstring-style comment: it is the reference
for what a recipe may say.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from distilprune.config.messages import check, short, suggest

# Block-pruned attention parts (the architecture table's names); the pruner takes them from here.
ATTENTION_TARGETS = ("query", "key", "value", "attn_out")
# Lightning (and numpy) accept seeds in [0, 2**32 - 1].
SEED_LIMIT = 2**32 - 1
# Opsets torch's TorchScript ONNX exporter (dynamo=False) supports.
OPSET_RANGE = (7, 20)
INT8_METHODS = ("dynamic", "per_channel", "reduce_range", "static", "exclude_sensitive", "per_token", "ffn_out_per_token")
# INT8 methods whose output for a text does not depend on what it is batched with (servers batch with these)
BATCH_INVARIANT_INT8_METHODS = ("static", "per_token")
# Tasks (distilprune.tasks.TASKS; a test keeps the two in step). Listed here so that loading a recipe
# does not import torch.
TASK_NAMES = ("sequence_classification", "token_classification", "question_answering")
# Closed choice lists, checked by the section that owns the key.
CHOICES: dict[str, tuple[str, ...]] = {
    "distill.hidden_loss": ("none", "cosine", "mse"),
    "train.precision": ("auto", "32-true", "bf16-mixed", "16-mixed"),
    "pruning.method": ("topk", "sigmoid_threshold"),
    "train.strategy": ("auto", "ddp", "fsdp"),
    "train.padding": ("dynamic", "max_length"),
    "export.gpu": ("auto", "off"),
    "export.layer_norm": ("centered_rms", "fused"),  # = export.layer_norm.LAYER_NORM_CHOICES (a test keeps them in step)
}


def check_choices(section, section_name: str) -> None:
    """Every key of ``section`` with a closed choice list (CHOICES) holds one of its choices."""
    for dotted, choices in CHOICES.items():
        owner, key = dotted.split(".")
        if owner != section_name:
            continue
        value = getattr(section, key)
        check(
            value in choices,
            f"Recipe key {dotted!r} is {value!r}; choose one of {', '.join(choices)}."
            + suggest(str(value), list(choices)),
        )


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

    def validate(self) -> None:
        check(self.model.strip() != "",
              "teacher.model is empty; give a built-in asset (teacher.model=minilm-l6), a model directory or a hub id.")
        check(self.finetuned or self.epochs >= 1,
              "teacher.epochs must be at least 1 (or set teacher.finetuned=true for a teacher that is already fine-tuned).")
        check(self.weight_decay >= 0, "teacher.weight_decay must be >= 0 (0.01 is usual).")
        check(self.batch_size >= 1, "teacher.batch_size must be at least 1.")
        check(self.lr > 0, "teacher.lr must be positive.")
        check(0 <= self.warmup_ratio < 1, "teacher.warmup_ratio must be in [0, 1).")


@dataclass
class StudentConfig:
    num_layers: int = 4
    """Depth of the DistilBERT student; at most the teacher's depth."""
    init_layers: list[int] | None = None
    """Teacher block copied into each student block; null = evenly spaced incl. first and last."""
    segment_embeddings: bool = False
    """Keep the teacher's segment (token type) embeddings, so ``token_type_ids`` is a model input (text
    pairs). false: DistilBERT-shaped, segment A's embedding folded into the positions and segment B
    marked only by [SEP] (docs/tasks.md has the measurement behind the default)."""
    init_from: str | None = None
    """A kept student checkpoint directory (runs/<recipe>/<time>/checkpoints/<name>) to start from
    instead of teacher layers, e.g. to fine-prune a student that was already distilled. Its layer
    count must equal num_layers; its vocabulary and label count must match the teacher's."""

    def validate(self) -> None:
        check(self.num_layers >= 1, f"student.num_layers is {self.num_layers}; a student needs at least 1 layer.")
        if self.init_layers is None or self.init_from:  # init_from: the checkpoint's own layers
            return
        layers = self.init_layers
        check(
            len(layers) == self.num_layers,
            f"student.init_layers lists {len(layers)} teacher layers ({short(layers)}) but "
            f"student.num_layers is {self.num_layers}; give one teacher layer per student layer, or "
            f"student.init_layers=null for evenly spaced ones.",
        )
        check(
            min(layers) >= 0,
            f"student.init_layers has {min(layers)}; teacher layers are numbered from 0, "
            f"e.g. student.init_layers=[0, 2, 4, 5] for a 4-layer student of a 6-layer teacher.",
        )


@dataclass
class DataConfig:
    dataset: str = "rotten-tomatoes"
    """Built-in asset name (rotten-tomatoes, trec), one local csv/tsv/json/jsonl/parquet file, or a hub
    dataset id. Ignored when data.train_file is set."""
    subset: str | None = None
    """Hub datasets only: the configuration name (e.g. dataset: glue, subset: mnli)."""
    splits: dict[str, str] = field(default_factory=dict)
    """Where each split comes from in a hub dataset: {train|validation|test: the source's split name},
    e.g. {validation: validation_matched, test: validation_mismatched}. Empty: the source's train,
    validation (or dev) and test splits by name. When given, validation or test left out of it is carved
    from train (data.split_seed), never taken by name."""
    train_file: str | None = None
    """One local file per split: the training file (csv/tsv/json/jsonl/parquet). Replaces data.dataset."""
    validation_file: str | None = None
    """With data.train_file: the validation file; null = carved from the training file."""
    test_file: str | None = None
    """With data.train_file: the test file; null = carved from the training file."""
    text_column: str = "text"
    text_pair_column: str | None = None
    """Second text of a sentence pair (e.g. hypothesis, question2); null = single sentences."""
    label_column: str = "label"
    label_granularity: str = "coarse"
    """trec only: coarse (6 classes) or fine (50 classes, named COARSE:fine)."""
    dedupe: str = "train"
    """Texts (pairs: text and pair) found in more than one split after case and whitespace
    normalization. train: remove them from train (and validation/test overlaps from validation);
    error: stop with the counts; off: keep them. The report records what was found and removed."""
    max_seq_len: int | None = None
    """Tokens per example after truncation (question answering: per window, question included);
    batches are padded only to their longest example. null = 128, or 384 for question_answering."""
    doc_stride: int | None = None
    """question_answering only: context tokens shared by two consecutive windows of one question
    (a context longer than one window is read in overlapping windows). Must be below max_seq_len.
    null = a third of max_seq_len (128 at 384, as SQuAD readers are usually run)."""
    answer_span_check: str = "error"
    """question_answering only: an answer whose text is not at its answer_start in the context.
    error: stop, naming the question id; drop: count and drop such answers (recorded in the report)."""
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

    # Closed choice lists of this section (class attributes, not recipe keys).
    DEDUPE_MODES = ("train", "error", "off")
    LABEL_GRANULARITIES = ("coarse", "fine")
    ANSWER_SPAN_CHECKS = ("error", "drop")
    SPLIT_NAMES = ("train", "validation", "test")

    def validate(self) -> None:
        check(self.dataset.strip() != "",
              "data.dataset is empty; give a built-in dataset (data.dataset=rotten-tomatoes) or a data file.")
        check(self.text_column != "" and self.label_column != "" and self.text_pair_column != "",
              "data.text_column, data.text_pair_column and data.label_column must name columns of the "
              "dataset; one is empty (text_pair_column=null means single sentences).")
        check(self.eval_batch_size >= 1, "data.eval_batch_size must be at least 1.")
        check(self.max_seq_len is None or self.max_seq_len >= 8,
              f"data.max_seq_len is {self.max_seq_len}; use at least 8 tokens.")
        check(self.doc_stride is None or self.doc_stride >= 0,
              f"data.doc_stride is {self.doc_stride}; use 0 or more context tokens, or null (a third of the window).")
        check(
            0 < self.validation_fraction < 1 and 0 < self.test_fraction < 1
            and self.validation_fraction + self.test_fraction < 1,
            "data.validation_fraction and data.test_fraction must each be in (0, 1) and sum to less than 1.",
        )
        for key in ("train_examples", "eval_examples"):
            value = getattr(self, key)
            check(value is None or value >= 1, f"data.{key} must be null (all) or at least 1, got {value}.")
        for key, value, choices in (("dedupe", self.dedupe, self.DEDUPE_MODES),
                                    ("label_granularity", self.label_granularity, self.LABEL_GRANULARITIES),
                                    ("answer_span_check", self.answer_span_check, self.ANSWER_SPAN_CHECKS)):
            check(value in choices, f"Recipe key 'data.{key}' is {value!r}; choose one of {', '.join(choices)}."
                  + suggest(str(value), list(choices)))
        self._validate_sources()

    def _validate_sources(self) -> None:
        for name, source_split in self.splits.items():
            check(name in self.SPLIT_NAMES,
                  f"data.splits has {name!r}; its keys are the project's splits ({', '.join(self.SPLIT_NAMES)}), "
                  f"its values the source's split names, e.g. data.splits={{test: validation}}."
                  + suggest(str(name), list(self.SPLIT_NAMES)))
            check(source_split.strip() != "", f"data.splits.{name} is empty; name a split of the source.")
        check(self.subset is None or self.subset.strip() != "",
              "data.subset is empty; give the hub configuration name (e.g. data.subset=sst2) or null.")
        files = {"validation_file": self.validation_file, "test_file": self.test_file}
        for key, value in files.items():
            check(value is None or self.train_file is not None,
                  f"data.{key} is set but data.train_file is not; per-split files start with the training "
                  f"file (data.train_file=<file>), or give one file in data.dataset to carve all three splits.")
        for key, value in {"train_file": self.train_file, **files}.items():
            check(value is None or value.strip() != "", f"data.{key} is empty; give a file path or null.")
        check(self.train_file is None or (not self.splits and self.subset is None),
              "data.splits and data.subset choose splits and configurations of a hub dataset; with per-split "
              "files (data.train_file, data.validation_file, data.test_file) each file is one split already. "
              "Remove data.splits / data.subset, or use data.dataset=<hub id>.")
        check(self.label_granularity == "coarse" or (self.dataset == "trec" and self.train_file is None),
              f"data.label_granularity=fine applies to the built-in trec dataset only (its 50 fine question "
              f"classes); data.dataset is {self.dataset!r}{' with data.train_file' if self.train_file else ''}. "
              f"Remove data.label_granularity, or set data.dataset=trec.")


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

    def validate(self) -> None:
        check_choices(self, "distill")
        check(self.temperature > 0, "distill.temperature must be positive.")
        check(
            min(self.kd_weight, self.ce_weight, self.hidden_weight) >= 0
            and self.kd_weight + self.ce_weight + self.hidden_weight > 0,
            "distill.kd_weight, ce_weight and hidden_weight must be non-negative and not all zero.",
        )
        check(
            (self.hidden_loss == "none") == (self.hidden_weight == 0),
            "distill.hidden_loss and distill.hidden_weight go together: set hidden_loss to cosine or mse "
            "with hidden_weight > 0, or hidden_loss=none with hidden_weight=0.",
        )
        check(self.augment_copies >= 0,
              f"distill.augment_copies is {self.augment_copies}; use 0 (off) or a positive number of copies.")
        probabilities = (self.augment_mask_prob, self.augment_swap_prob, self.augment_ngram_prob)
        check(
            all(0 <= v <= 1 for v in probabilities) and self.augment_mask_prob + self.augment_swap_prob <= 1,
            "distill.augment_mask_prob, augment_swap_prob and augment_ngram_prob are probabilities in [0, 1], "
            "and mask + swap must not exceed 1 (both are drawn per word), e.g. 0.1, 0.1 and 0.25.",
        )


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

    def validate(self) -> None:
        check_choices(self, "train")
        check(self.epochs >= 1 or self.max_steps > 0, "train.epochs must be at least 1 (or set train.max_steps).")
        check(self.max_steps == -1 or self.max_steps >= 1,
              f"train.max_steps is {self.max_steps}; use -1 (run all epochs) or a positive number of steps.")
        check(self.val_every_epochs >= 1 and self.log_every_steps >= 1,
              "train.val_every_epochs and train.log_every_steps must be at least 1.")
        check(self.threads is None or self.threads >= 1, "train.threads must be null (torch's default) or at least 1.")
        check(self.batch_size >= 1, "train.batch_size must be at least 1.")
        check(self.lr > 0, "train.lr must be positive.")
        check(self.weight_decay >= 0, "train.weight_decay must be >= 0 (0.01 is usual).")
        check(0 <= self.warmup_ratio < 1, "train.warmup_ratio must be in [0, 1).")
        check(self.devices >= 1 and self.num_nodes >= 1, "train.devices and train.num_nodes must be at least 1.")
        processes = self.devices * self.num_nodes
        check(
            self.batch_size % processes == 0,
            f"train.batch_size={self.batch_size} is the global batch and must divide evenly over "
            f"devices x num_nodes = {processes} processes; choose a multiple of {processes}.",
        )
        check(self.num_workers >= 0 and self.checkpoint_every_steps >= 0,
              "train.num_workers and train.checkpoint_every_steps must be >= 0.")


@dataclass
class TrackingConfig:
    wandb: bool = True
    """Log to Weights & Biases; offline unless WANDB_MODE or WANDB_API_KEY says otherwise."""
    wandb_project: str = "distilprune"
    csv: bool = True
    """Also write metrics to <run>/metrics/ as CSV."""

    def validate(self) -> None:
        """Every value of the right type is valid."""


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
    threads: int = 1
    """Intra-op threads for every latency measurement (PyTorch and ONNX Runtime alike). 1 by default
    because a one-thread p50 is reproducible: on shared hosts (cloud VMs, CI runners) the host may stop
    running one process's threads in parallel for minutes, which moved 2-thread p50s by 1.5x between
    fresh processes while 1-thread p50s held within a few percent (docs/results.md, "This machine runs
    at two speeds"); one thread per request is also how a CPU server with one session per core runs.
    On a dedicated machine set the serving thread count; with more than one thread a probe checks
    each timing round (parallel_wait_seconds)."""
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
    or dynamic (one scale per weight tensor), reduce_range, static, exclude_sensitive, per_token
    (batch-invariant: one activation scale per token row), ffn_out_per_token (per_channel, with one
    activation scale per token row in the FFN output projections only). per_channel is the default because it ran
    at the same latency as per-tensor dynamic and lost less validation accuracy (docs/results.md).
    When the shipped method is not batch-invariant, the bundle also gets model.int8.batched.onnx
    (per_token, through the same accuracy gate) for servers that batch (docs/serving.md)."""
    int8_max_drop: float = 0.01
    """Largest allowed INT8 accuracy loss against ONNX fp32 (0.01 = 1 point). Beyond it the fallbacks
    below are tried in order and the best passing model is shipped."""
    int8_fallbacks: list[str] = field(
        default_factory=lambda: ["dynamic", "reduce_range", "static", "exclude_sensitive"]
    )
    latency_rounds: int = 5
    """Alternating timing rounds over every model of the run (teacher, each checkpoint in PyTorch, ONNX
    fp32 and INT8) in one child process after training; latency_runs is split over the rounds. More
    rounds: steadier p50s and ratios on a busy machine (`distilprune export <run> --rounds N`)."""
    parallel_wait_seconds: float = 30.0
    """With threads > 1 a probe checks before and after each timing round that the host ran the threads in
    parallel (docs/results.md, "This machine runs at two speeds"). When no round of the headline cell did,
    more headline rounds are timed for up to this many seconds until some do; 0 never waits."""
    int8_eval_batch_size: int = 1
    """Sentences per ONNX Runtime call when measuring INT8 accuracy (gate and report). Dynamic INT8
    quantizes activations with one scale over the whole input tensor, so a sentence's prediction
    depends on what is batched with it (padding included); 1 measures what a request-at-a-time server
    returns, independent of neighbours."""
    calibration_examples: int = 256
    """Training examples used to calibrate static INT8 quantization."""
    qa_n_best: int = 20
    """question_answering: start and end positions tried per window when reading an answer."""
    qa_max_answer_tokens: int = 30
    """question_answering: the longest answer, in tokens."""
    require_attention_fusion: bool = True
    """Fail the export when ONNX Runtime did not fuse every layer's attention into one node."""
    layer_norm: str = "centered_rms"
    """centered_rms: each fused residual + LayerNorm (SkipLayerNormalization) becomes Add, ReduceMean, Sub,
    ONNX Runtime's SimplifiedLayerNormalization (RMS norm) and Add: the same function up to fp32 rounding,
    1.1-1.4x faster INT8 students on CPU (docs/export.md). fused: keep SkipLayerNormalization, one kernel
    per LayerNorm (for the CUDA execution provider or runtimes other than ONNX Runtime)."""
    gpu: str = "auto"
    """auto: also verify with the CUDA execution provider (fp16, IOBinding) when CUDA is available,
    and say in the report that it was skipped when not; off: never."""

    def validate(self) -> None:
        check_choices(self, "export")
        check(self.latency_runs >= 1 and self.latency_warmup >= 0,
              "export.latency_runs must be >= 1 and latency_warmup >= 0.")
        check(self.latency_rounds >= 1, "export.latency_rounds must be >= 1 (alternating timing rounds).")
        check(self.parallel_wait_seconds >= 0, "export.parallel_wait_seconds must be >= 0 (seconds; 0 never waits).")
        check(self.qa_n_best >= 1 and self.qa_max_answer_tokens >= 1,
              "export.qa_n_best and export.qa_max_answer_tokens must be at least 1.")
        check(self.threads >= 1, "export.threads must be at least 1.")
        low, high = OPSET_RANGE
        check(low <= self.opset <= high,
              f"export.opset is {self.opset}; torch exports opsets {low}..{high} (17 is the default).")
        check(self.latency_batch_size >= 1 and self.latency_seq_len >= 1,
              "export.latency_batch_size and export.latency_seq_len must be at least 1.")
        check(self.parity_atol > 0, "export.parity_atol must be positive.")
        check(
            bool(self.grid_batch_sizes) and bool(self.grid_seq_lens)
            and min(self.grid_batch_sizes + self.grid_seq_lens) >= 1,
            "export.grid_batch_sizes and export.grid_seq_lens must be non-empty lists of positive integers.",
        )
        check(self.latency_budget_ms is None or self.latency_budget_ms > 0,
              "export.latency_budget_ms must be positive (milliseconds) or null.")
        check(self.budget_batch_size >= 1 and self.budget_seq_len >= 1,
              "export.budget_batch_size and budget_seq_len must be >= 1.")
        check(0 <= self.int8_max_drop < 1,
              "export.int8_max_drop is an accuracy fraction in [0, 1), e.g. 0.01 for 1 point.")
        for key, names in (("int8_method", [self.int8_method]), ("int8_fallbacks", self.int8_fallbacks)):
            for name in names:
                check(name in INT8_METHODS,
                      f"export.{key} has {name!r}; choose from {', '.join(INT8_METHODS)}."
                      + suggest(str(name), list(INT8_METHODS)))
        check(self.int8_eval_batch_size >= 1,
              "export.int8_eval_batch_size must be at least 1 (1 = one sentence per call).")
        check(self.calibration_examples >= 1, "export.calibration_examples must be at least 1.")


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

    def validate(self) -> None:
        check_choices(self, "pruning")
        for key in ("attention_density", "ffn_density"):
            value = getattr(self, key)
            check(
                0 < value <= 1,
                f"pruning.{key} is {value}; a target density is the kept fraction of weights and must be in "
                f"(0, 1], e.g. pruning.{key}=0.5.",
            )
        for value in self.keep_at_densities:
            check(0 < value < 1, f"pruning.keep_at_densities has {value}; each must be in (0, 1).")
        check(0 < self.final_threshold < 1, "pruning.final_threshold must be in (0, 1).")
        check(
            0 <= self.warmup and 0 <= self.cooldown and self.warmup + self.cooldown < 1,
            "pruning.warmup and pruning.cooldown are fractions of training; each >= 0 and their sum below 1.",
        )
        check(
            not self.fill or self.cooldown > 0,
            "pruning.fill=true refills the kept heads when the cooldown starts, but pruning.cooldown is 0, "
            "so there would be no training left after the fill; set pruning.cooldown (e.g. 0.25) or pruning.fill=false.",
        )
        check(
            len(self.l1_ramp) == 2 and 0 <= self.l1_ramp[0] <= self.l1_ramp[1] <= 1,
            "pruning.l1_ramp is [start, end] with 0 <= start <= end <= 1.",
        )
        check(self.scores_lr > 0 and self.l1_weight >= 0,
              "pruning.scores_lr must be positive and l1_weight non-negative.")
        self._validate_block_shapes()

    def _validate_block_shapes(self) -> None:
        for part, shape in self.block_shapes.items():
            check(
                part in ATTENTION_TARGETS,
                f"pruning.block_shapes has {part!r}, which is not a block-pruned target; use "
                f"{', '.join(ATTENTION_TARGETS)} (FFN rows are pruned with pruning.prune_ffn)."
                + suggest(part, list(ATTENTION_TARGETS)),
            )
            check(
                len(shape) == 2 and all(side == -1 or side >= 1 for side in shape),
                f"pruning.block_shapes.{part} is {shape}; give [rows, cols] with positive sides or -1 (whole dimension).",
            )


@dataclass
class Recipe:
    name: str = "unnamed"
    """Run directories go to <output_dir>/<name>/<timestamp>/."""
    task: str = "sequence_classification"
    """sequence_classification (one label per text or text pair) | token_classification (a tag per
    word, e.g. NER) | question_answering (an answer span of a context, SQuAD v1.1 / v2.0). Selects data reading, the student's head, the loss rows, the metric and the
    bundle's post-processing (docs/tasks.md)."""
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

    def validate(self) -> None:
        """Value checks that types alone cannot express: each section checks itself."""
        name = Path(self.name)
        check(
            self.name.strip() != "" and not name.is_absolute() and ".." not in name.parts,
            f"name is {self.name!r}; runs go to <output_dir>/<name>/<time>, so give a non-empty relative "
            f"name without '..', e.g. name=my-experiment.",
        )
        check(self.output_dir.strip() != "", "output_dir is empty; set output_dir=runs or another directory.")
        check(0 <= self.seed <= SEED_LIMIT, f"seed is {self.seed}; use a seed in 0..{SEED_LIMIT}, e.g. seed=42.")
        check(self.task in TASK_NAMES, f"task is {self.task!r}; choose one of {', '.join(TASK_NAMES)}."
              + suggest(str(self.task), list(TASK_NAMES)))
        if self.data.max_seq_len is None:  # the task's default window
            self.data.max_seq_len = 384 if self.task == "question_answering" else 128
        if self.data.doc_stride is None:
            self.data.doc_stride = self.data.max_seq_len // 3
        for section in (self.teacher, self.student, self.data, self.distill, self.train, self.tracking,
                        self.export, self.pruning):
            section.validate()
        if self.task == "question_answering":
            check(self.data.doc_stride < self.data.max_seq_len,
                  f"data.doc_stride={self.data.doc_stride} must be below data.max_seq_len={self.data.max_seq_len}: "
                  f"it is the number of context tokens two consecutive windows share. Use e.g. "
                  f"data.max_seq_len=384 data.doc_stride=128.")
