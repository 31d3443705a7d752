"""The files that make an exported checkpoint a serving bundle a team can take without questions.

A bundle directory already holds ``model.onnx`` (graph-optimized fp32), ``model.int8.onnx``, the
tokenizer files and ``config.json``. The functions here add, in this order:

    write_input_spec      input_spec.json   what a server must feed the model and what it gets back
    write_parity_vectors  parity.json       tokenized inputs with their expected fp32 and INT8 logits
    write_triton_repository  triton/<name>/ a Triton model repository (ONNX Runtime backend, CPU)
    write_model_card      README.md         generated only from measured numbers
    copy_verifier         verify_bundle.py  the standalone verification tool (numpy + onnxruntime),
                          verify_runtime.py with the sessions, timing and machine facts it uses
    write_manifest        manifest.json     sha256 and size of every other file; written last

``python <bundle>/verify_bundle.py <bundle>`` then checks the bundle on any machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np

from distilprune.errors import ConfigError, ExportError
from distilprune.export import runtime, verify
from distilprune.export.onnx_export import dynamic_axes, input_names, output_names
from distilprune.export.runtime import write_atomic

# Parity tolerances (absolute, on logits) for the serving team's machine, which may not be ours.
# fp32: the same graph on another CPU changes only GEMM blocking and FMA order, ~1e-6 relative on
# logits of order 1, so 1e-4 leaves two orders of magnitude of margin and still catches a changed model.
PARITY_FP32_ATOL = 1e-4
# INT8 (dynamic): activations are quantized at run time and the integer GEMM path depends on the ISA
# (AVX2 multiplies u8 x s8 pairs into saturating int16, AVX-512 VNNI and AMX accumulate straight into
# int32), so logits legitimately move by a few quantization steps between machines. 5e-2 is loose
# for that and is compared against the INT8 logits stored here, never against fp32.
PARITY_INT8_ATOL = 5e-2
# Sentences for parity.json: short and long, positive, negative and neutral, with and without case.
PARITY_TEXTS = [
    "A gripping, beautifully acted film.",
    "Dull plot, awful dialogue and far too long.",
    "It is a movie.",
    "GREAT fun from start to finish, I would happily watch it again with friends.",
]

TOKENIZER_FILE_NAMES = (
    "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json", "added_tokens.json",
    "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model",
)
TRITON_DIR = "triton"
NOT_MEASURED = "not measured"


# --------------------------------------------------------------------------------------------
# input_spec.json


def _lowercase(tokenizer) -> bool | None:
    """Whether the tokenizer lower-cases text: its own flag, else the fast tokenizer's normalizer."""
    for value in (getattr(tokenizer, "do_lower_case", None), getattr(tokenizer, "init_kwargs", {}).get("do_lower_case")):
        if isinstance(value, bool):
            return value
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or backend.normalizer is None:
        return None
    text = json.dumps(json.loads(backend.normalizer.__getstate__()))
    if '"Lowercase"' in text or '"lowercase": true' in text:
        return True
    return False if '"lowercase": false' in text else None


def _read_config(bundle: Path) -> dict:
    path = bundle / verify.CONFIG
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ExportError(
            f"{path} is missing: the bundle needs the student's config.json before its serving files are "
            f"written. Write it first (student.config.to_json()), then call the bundle functions."
        ) from None


def _positive_ints(values, what: str) -> list[int]:
    out = [int(v) for v in values]
    if not out or any(v < 1 for v in out):
        raise ConfigError(f"{what} must be a non-empty list of positive integers, got {list(values)!r}.")
    return out


def _grid(latency_grid: dict | None) -> dict:
    if latency_grid is None:
        return dict(verify.DEFAULT_GRID)
    unknown = set(latency_grid) - {"batch_sizes", "seq_lens"}
    if unknown:
        raise ConfigError(f"latency_grid has unknown keys {sorted(unknown)}; it takes batch_sizes and seq_lens.")
    return {
        "batch_sizes": _positive_ints(latency_grid.get("batch_sizes", verify.DEFAULT_GRID["batch_sizes"]), "latency_grid.batch_sizes"),
        "seq_lens": _positive_ints(latency_grid.get("seq_lens", verify.DEFAULT_GRID["seq_lens"]), "latency_grid.seq_lens"),
    }


def _budget(latency_budget: dict | None) -> dict | None:
    if latency_budget is None or latency_budget.get("p95_ms") is None:
        return None
    p95 = float(latency_budget["p95_ms"])
    if p95 <= 0:
        raise ConfigError(f"latency_budget.p95_ms must be positive (milliseconds), got {p95:g}.")
    batch, seq = _positive_ints(
        [latency_budget.get("batch_size", verify.DEFAULT_BUDGET_CELL["batch_size"]),
         latency_budget.get("seq_len", verify.DEFAULT_BUDGET_CELL["seq_len"])], "latency_budget batch_size/seq_len")
    return {"p95_ms": p95, "batch_size": batch, "seq_len": seq}


def write_input_spec(
    bundle: Path,
    tokenizer,
    max_seq_len: int,
    id2label: dict[str, str],
    latency_grid: dict | None = None,
    latency_budget: dict | None = None,
    task: dict | None = None,
) -> Path:
    """Write ``input_spec.json``: what a server feeds the model and what it gets back.

    Args:
        tokenizer: the Hugging Face tokenizer saved in the bundle (read for casing, sides, pad id).
        max_seq_len: the longest sequence (tokens, special tokens included) the model was evaluated on.
        id2label: label index (as a string) -> label name.
        latency_grid: ``{"batch_sizes": [...], "seq_lens": [...]}``; None = batch {1, 8, 32} x seq {32, 128}.
        latency_budget: ``{"p95_ms", "batch_size", "seq_len"}`` for the INT8 model, or None.
        task: the task's ``bundle_spec`` (task name, labels, scheme, how outputs are read); None =
            sequence classification of single texts.
    """
    bundle = Path(bundle)
    config = _read_config(bundle)
    model_config = _ModelShape(config)
    max_positions = config.get("max_position_embeddings")
    if max_seq_len < 1 or (max_positions and max_seq_len > max_positions):
        raise ConfigError(
            f"max_seq_len={max_seq_len} does not fit the model, which takes 1 to {max_positions} tokens "
            f"(max_position_embeddings). Use data.max_seq_len within that range."
        )
    if not id2label:
        raise ConfigError("id2label is empty: the bundle must say what each logit means. Pass the label names.")
    labels = {str(k): str(v) for k, v in sorted(id2label.items(), key=lambda kv: int(kv[0]))}
    tokenizer_files = [name for name in TOKENIZER_FILE_NAMES if (bundle / name).is_file()]
    if not tokenizer_files:
        raise ExportError(
            f"{bundle} holds no tokenizer files ({', '.join(TOKENIZER_FILE_NAMES[:3])} ...). Save the "
            f"tokenizer into the bundle first (tokenizer.save_pretrained(bundle))."
        )

    all_axes = dynamic_axes(model_config)
    names = input_names(model_config)

    def shape(name: str, trailing: list) -> list:
        axes = all_axes[name]
        return [axes[i] for i in sorted(axes)] + trailing

    spec = {
        "format": "distilprune input spec",
        "version": 1,
        "task": task or {"task": "sequence_classification", "text_pairs": False},
        "inputs": [{"name": name, "dtype": "int64", "shape": shape(name, [])} for name in names],
        "outputs": [{"name": name, "dtype": "float32", "shape": shape(name, [] if model_config.head == "span" else [len(labels)])}
                    for name in output_names(model_config)],
        # JSON keys are strings: axis index -> symbolic name, exactly as torch.onnx.export was given them
        "dynamic_axes": {name: {str(axis): label for axis, label in axes.items()} for name, axes in all_axes.items()},
        "max_seq_len": int(max_seq_len),
        "max_position_embeddings": max_positions,
        "tokenizer": _tokenizer_spec(tokenizer, tokenizer_files, "token_type_ids" in names),
        "id2label": labels,
        "num_labels": len(labels),
        "latency_grid": _grid(latency_grid),
        "latency_budget": _budget(latency_budget),
    }
    path = bundle / verify.INPUT_SPEC
    write_atomic(path, json.dumps(spec, indent=2))
    return path


def _tokenizer_spec(tokenizer, files: list[str], takes_segments: bool) -> dict:
    """How a server must tokenize: the files, casing, sides, special tokens and token_type_ids."""
    return {
        "files": files,
        "class": type(tokenizer).__name__,
        "lowercase": _lowercase(tokenizer),
        "add_special_tokens": True,
        "truncation": True,
        "truncation_side": getattr(tokenizer, "truncation_side", "right"),
        "padding_side": getattr(tokenizer, "padding_side", "right"),
        "pad_token": getattr(tokenizer, "pad_token", None),
        "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
        "cls_token": getattr(tokenizer, "cls_token", None),
        "sep_token": getattr(tokenizer, "sep_token", None),
        "unk_token": getattr(tokenizer, "unk_token", None),
        "vocab_size": len(tokenizer),
        "token_type_ids": ("an input: 0 for the first text, 1 for the second text of a pair"
                           if takes_segments else
                           "not an input: the student has no segment embeddings; drop them from the tokenizer output"),
    }


class _ModelShape:
    """The two fields of a bundle's config.json that decide the ONNX interface (head, segments)."""

    def __init__(self, config: dict) -> None:
        self.head = config.get("head", "sequence")
        self.type_vocab_size = int(config.get("type_vocab_size") or 0)


# --------------------------------------------------------------------------------------------
# parity.json


def write_parity_vectors(
    bundle: Path,
    tokenizer,
    texts: list[str],
    max_seq_len: int,
    fp32_atol: float,
    int8_atol: float,
    threads: int,
    doc_stride: int | None = None,
) -> Path:
    """Write ``parity.json``: ``texts`` tokenized (padded to the longest) with both models' logits.
    An item of ``texts`` may be a [first, second] pair (a pair task's input), or a ``{"question",
    "context"}`` mapping (question answering: one row per window, windows overlapping by ``doc_stride``).

    The logits are this machine's output of ``model.onnx`` and ``model.int8.onnx``; the verifier
    reruns both and compares within ``fp32_atol`` / ``int8_atol`` (see PARITY_*_ATOL for defaults).
    """
    bundle = Path(bundle)
    pairs = bool(texts) and all(isinstance(t, (list, tuple)) for t in texts)
    questions = bool(texts) and all(isinstance(t, dict) for t in texts)
    if questions:
        texts = [{"question": str(t["question"]), "context": str(t["context"])} for t in texts]
    else:
        texts = [[str(a), str(b)] for a, b in texts] if pairs else [str(t) for t in texts]
    if not texts:
        raise ConfigError("write_parity_vectors needs at least one text to tokenize.")
    if not (fp32_atol > 0 and int8_atol > 0):
        raise ConfigError(f"Parity tolerances must be positive, got fp32 {fp32_atol:g} and int8 {int8_atol:g}.")
    if questions:  # every window of every question, as the training features were made
        encoded = tokenizer([t["question"].lstrip() for t in texts], [t["context"] for t in texts], padding="longest",
                            truncation="only_second", max_length=max_seq_len, stride=int(doc_stride or 0),
                            return_overflowing_tokens=True, return_tensors="np")
    else:
        arguments = ([t[0] for t in texts], [t[1] for t in texts]) if pairs else (texts,)
        encoded = tokenizer(*arguments, padding="longest", truncation=True, max_length=max_seq_len, return_tensors="np")
    input_ids = np.asarray(encoded["input_ids"], dtype=np.int64)  # (texts, longest) int64
    attention_mask = np.asarray(encoded["attention_mask"], dtype=np.int64)
    token_type_ids = np.asarray(encoded["token_type_ids"], dtype=np.int64) if "token_type_ids" in encoded else None
    models = {}
    for fmt, key, atol in (("fp32", "onnx_fp32", fp32_atol), ("int8", "onnx_int8", int8_atol)):
        path = bundle / verify.MODELS[key]
        if not path.is_file():
            raise ExportError(f"{path} is missing; export the model into the bundle before writing parity vectors.")
        session = runtime.make_session(path, threads)
        feed = runtime.session_feed(session, input_ids, attention_mask, token_type_ids)
        logits = runtime.run_logits(session, feed)  # (texts, labels), (texts, tokens, labels) or (windows, tokens, 2)
        # float32 -> Python float is exact and json writes the shortest repr that round-trips
        models[fmt] = {"file": path.name, "logits": logits.tolist(), "argmax": logits.argmax(-1).tolist(), "atol": float(atol)}
    machine = runtime.machine_info(threads)
    parity = {
        "texts": texts,
        "max_seq_len": int(max_seq_len),
        "inputs": {name: value.tolist() for name, value in feed.items()},
        "models": models,
        "produced_on": {k: machine[k] for k in ("cpu", "instruction_sets", "threads", "onnxruntime")},
        "note": "INT8 logits depend on the CPU's instruction set; int8 atol is against these INT8 logits.",
    }
    path = bundle / verify.PARITY
    write_atomic(path, json.dumps(parity, indent=2))
    return path


def write_expected_predictions(bundle: Path, model_file: str, threads: int) -> Path:
    """Add to ``parity.json`` what the serving path (``serving_runtime.py``: tokenizer, ``model_file``,
    the task's post-processing) predicts for its texts; the verifier reruns and prints them."""
    from distilprune.export.serving.runtime import BundleRuntime

    path = Path(bundle) / verify.PARITY
    parity = json.loads(path.read_text())
    outputs = BundleRuntime(bundle, model_file=model_file, threads=threads).predict(list(parity["texts"]))
    parity["predictions"] = {"model": model_file, "texts": parity["texts"], "outputs": outputs}
    write_atomic(path, json.dumps(parity, indent=2))
    return path


# --------------------------------------------------------------------------------------------
# Triton model repository


def triton_model_name(name: str) -> str:
    """A Triton model name from ``name``: letters, digits, ``_ - .`` kept, anything else -> ``_``."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).lstrip(".")  # a leading dot would hide the directory
    if not cleaned.strip("_-"):
        raise ConfigError(f"Cannot make a Triton model name from {name!r}; give a name with letters or digits.")
    return cleaned


def _labels(bundle: Path) -> list[str]:
    config = _read_config(bundle)
    id2label = config.get("id2label") or {}
    num_labels = int(config.get("num_labels") or len(id2label))
    if num_labels < 1:
        raise ExportError(f"{bundle / verify.CONFIG} has neither num_labels nor id2label; cannot size the output.")
    return [str(id2label.get(str(i), f"LABEL_{i}")) for i in range(num_labels)]


def write_triton_repository(
    bundle: Path,
    model_name: str,
    onnx_file: str = "model.int8.onnx",
    max_batch_size: int = 32,
    preferred_batch_sizes=(8, 32),
    max_queue_delay_us: int = 0,
    instances: int = 1,
    threads: int | None = None,
) -> Path:
    """Write ``triton/<name>/config.pbtxt``, ``triton/<name>/1/model.onnx`` and ``labels.txt``.

    ONNX Runtime backend on CPU instances with dynamic batching; ``threads`` sets ORT's intra-op
    threads per instance (None = ORT's default). Returns the model directory ``triton/<name>``.
    """
    bundle = Path(bundle)
    name = triton_model_name(model_name)
    source = bundle / onnx_file
    if not source.is_file():
        raise ExportError(f"{source} is missing; choose an ONNX file that is in the bundle (model.onnx or model.int8.onnx).")
    preferred = [int(b) for b in preferred_batch_sizes]
    if max_batch_size < 1 or any(not 1 <= b <= max_batch_size for b in preferred):
        raise ConfigError(
            f"Triton batching needs max_batch_size >= 1 and preferred batch sizes within it; got "
            f"max_batch_size={max_batch_size}, preferred={preferred}."
        )
    if instances < 1 or max_queue_delay_us < 0 or (threads is not None and threads < 1):
        raise ConfigError(
            f"Triton instances and threads must be at least 1 and the queue delay at least 0 us; got "
            f"instances={instances}, threads={threads}, max_queue_delay_us={max_queue_delay_us}."
        )
    labels = _labels(bundle)
    model_dir = bundle / TRITON_DIR / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    target = model_dir / "1" / "model.onnx"
    with runtime.replacing(target) as tmp:
        shutil.copyfile(source, tmp)
    write_atomic(model_dir / "labels.txt", "\n".join(labels) + "\n")

    shape = _ModelShape(_read_config(bundle))
    inputs = ",\n".join(
        f'  {{\n    name: "{n}"\n    data_type: TYPE_INT64\n    dims: [ -1 ]\n  }}' for n in input_names(shape)
    )
    logits_dims = {"token": f"-1, {len(labels)}", "span": "-1"}.get(shape.head, f"{len(labels)}")
    outputs = ",\n".join(
        f'  {{\n    name: "{n}"\n    data_type: TYPE_FP32\n    dims: [ {logits_dims} ]\n'
        + ('    label_filename: "labels.txt"\n' if shape.head == "sequence" else "") + "  }"
        for n in output_names(shape))
    thread_params = "" if threads is None else (
        "# ONNX Runtime threads per instance: intra-op parallelism inside each op, ops run one by one\n"
        f'parameters {{ key: "intra_op_thread_count" value: {{ string_value: "{threads}" }} }}\n'
        'parameters { key: "inter_op_thread_count" value: { string_value: "1" } }\n'
        'parameters { key: "execution_mode" value: { string_value: "0" } }\n'
    )
    text = (
        f"# Generated by distilprune from {onnx_file}; 1/model.onnx is a copy of it.\n"
        f'name: "{name}"\n'
        'backend: "onnxruntime"\n'
        'platform: "onnxruntime_onnx"\n'
        "# Triton prepends the batch dimension: inputs are (batch, sequence) int64, output (batch, labels)\n"
        "# or, for a token classifier, (batch, sequence, labels); a question-answering model has two\n"
        "# outputs, start_logits and end_logits, (batch, sequence) each\n"
        f"max_batch_size: {int(max_batch_size)}\n"
        f"input [\n{inputs}\n]\n"
        f"output [\n{outputs}\n]\n"
        "dynamic_batching {\n"
        f"  preferred_batch_size: [ {', '.join(str(b) for b in preferred)} ]\n"
        f"  max_queue_delay_microseconds: {int(max_queue_delay_us)}\n"
        "}\n"
        f"instance_group [\n  {{\n    count: {int(instances)}\n    kind: KIND_CPU\n  }}\n]\n"
        f"{thread_params}"
    )
    write_atomic(model_dir / "config.pbtxt", text)
    return model_dir


# --------------------------------------------------------------------------------------------
# README.md (model card)


def _get(data: dict | None, *keys):
    for key in keys:
        if not isinstance(data, dict) or data.get(key) is None:
            return None
        data = data[key]
    return data


def _pct(value) -> str:
    return NOT_MEASURED if value is None else f"{100 * float(value):.2f} %"


def _ms(value) -> str:
    return NOT_MEASURED if value is None else f"{float(value):.2f}"


def _text(value) -> str:
    if value is None or value == [] or value == {}:
        return NOT_MEASURED
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


def _grid_table(cells: list[dict]) -> list[str]:
    lines = ["| batch | sequence | p50 ms | p95 ms | p99 ms |", "|---|---|---|---|---|"]
    for c in cells:
        lines.append(f"| {_text(c.get('batch_size'))} | {_text(c.get('seq_len'))} | {_ms(c.get('p50'))} | "
                     f"{_ms(c.get('p95'))} | {_ms(c.get('p99'))} |")
    return lines


def _budget_lines(card: dict) -> list[str]:
    budget = card.get("latency_budget")
    if not budget or budget.get("p95_ms") is None:
        return ["No latency budget was set for this run."]
    batch, seq, limit = budget.get("batch_size"), budget.get("seq_len"), float(budget["p95_ms"])
    cells = _get(card, "checkpoint", "latency_grid", "onnx_int8") or []
    cell = next((c for c in cells if c.get("batch_size") == batch and c.get("seq_len") == seq), None)
    head = f"Budget: INT8 p95 at or under {limit:g} ms at batch {batch}, sequence {seq}."
    if cell is None or cell.get("p95") is None:
        return [head, "", f"Measured INT8 p95 at that size: {NOT_MEASURED}."]
    verdict = "within" if float(cell["p95"]) <= limit else "over"
    return [head, "", f"Measured INT8 p95 at that size: {_ms(cell['p95'])} ms: {verdict} the budget on the machine below."]


def _serving_lines(bundle: Path) -> list[str]:
    lines = ["## How to serve", ""]
    try:
        spec = json.loads((bundle / verify.INPUT_SPEC).read_text())
    except (OSError, ValueError):
        spec = None
    if spec:
        tok = spec.get("tokenizer", {})
        inputs = ", ".join(f"`{i['name']}` ({i['dtype']}, {' x '.join(str(d) for d in i['shape'])})" for i in spec.get("inputs", []))
        outputs = ", ".join(f"`{o['name']}` ({o['dtype']}, {' x '.join(str(d) for d in o['shape'])})" for o in spec.get("outputs", []))
        labels = ", ".join(f"{k} = {v}" for k, v in spec.get("id2label", {}).items())
        lines += [
            f"- Inputs: {inputs}. Output: {outputs}; labels {labels}.",
            f"- Tokenize with the tokenizer files in this directory ({', '.join(tok.get('files', []))}): "
            f"lower-casing {_text(tok.get('lowercase'))}, truncation to {spec.get('max_seq_len')} tokens on the "
            f"{tok.get('truncation_side')}, padding on the {tok.get('padding_side')} with id {tok.get('pad_token_id')}; "
            f"do not pass token_type_ids. Everything is in `input_spec.json`.",
        ]
    else:
        lines.append("- Input spec: `input_spec.json` (not written when this card was).")
    lines.append("- ONNX Runtime: `model.int8.onnx` (INT8, fastest on CPU, one text per call) or `model.onnx` "
                 "(fp32, graph-optimized).")
    try:
        serving = json.loads((bundle / "serving.json").read_text())
    except (OSError, ValueError):
        serving = None
    if serving:
        lines += [
            f"- Servers that batch requests use `{serving['batched_model']}`: {serving['why']}.",
            "- HTTP: `distilprune serve <this directory>` (text in, labels out; see docs/serving.md), or the same "
            "`serving_runtime.py` in your own server.",
        ]
    triton = sorted(p.name for p in (bundle / TRITON_DIR).glob("*") if (p / "config.pbtxt").is_file()) if (bundle / TRITON_DIR).is_dir() else []
    for name in triton:
        kind = ("python backend, text in" if name.endswith(("-text", "-tokenize"))
                else "python backend, logits in" if name.endswith("-postprocess")
                else "ensemble, text in" if name.endswith("-ensemble") else "ONNX Runtime backend, token ids in")
        lines.append(f"- Triton: `{TRITON_DIR}/{name}` ({kind}; dynamic batching; see its `config.pbtxt`).")
    return lines


def _acc(value, ci: dict | None) -> str:
    """Accuracy in % with its 95% bootstrap interval where the run measured one."""
    if value is None or not ci:
        return _pct(value)
    return f"{_pct(value)} [{_pct(ci.get('low'))}, {_pct(ci.get('high'))}]"


def _acc_of(ckpt: dict, fmt: str) -> str:
    return _acc(_get(ckpt, "accuracy", fmt), _get(ckpt, "accuracy_ci", fmt))


def _difference_lines(ckpt: dict) -> list[str]:
    differences = ckpt.get("accuracy_differences") or {}
    if not differences:
        return []
    return ["", "Differences on the same test examples (paired bootstrap, 95% interval, points): " + "; ".join(
        f"{name} {100 * d['difference']:+.2f} [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}]"
        for name, d in differences.items()) + "."]


def _timing_lines(card: dict) -> list[str]:
    setup = card.get("latency_setup") or {}
    if "rounds" not in setup:
        return []
    return ["", f"Every latency in this card comes from one measurement: {setup['process']}, {setup['rounds']} rounds x "
                f"{setup['runs_per_round']} timed runs per model and cell; p50 = {setup['p50']}, p95 {setup['p95_p99']}."]


def _data_and_machine_lines(card: dict) -> list[str]:
    lines: list[str] = []
    data = card.get("data") or {}
    rows = data.get("rows") or {}
    lines += [
        "", "## Data", "",
        f"Source: {_text(data.get('source'))}. Rows: train {_text(rows.get('train'))}, validation "
        f"{_text(rows.get('validation'))}, test {_text(rows.get('test'))}.",
    ]
    machine = card.get("machine") or {}
    lines += [
        "", "## Machine and libraries", "",
        f"- CPU: {_text(machine.get('cpu'))}; instruction sets: {_text(machine.get('instruction_sets'))}; "
        f"threads: {_text(machine.get('threads'))}.",
        f"- Python {_text(machine.get('python'))}, torch {_text(machine.get('torch'))}, onnxruntime "
        f"{_text(machine.get('onnxruntime'))}; {_text(machine.get('platform'))}.",
    ]
    libraries = card.get("libraries") or {}
    if libraries:
        lines.append("- Libraries: " + ", ".join(f"{k} {v}" for k, v in sorted(libraries.items())) + ".")
    return lines


def _verify_and_limits_lines(card: dict) -> list[str]:
    return [
        "", "## How to verify", "",
        "On the serving machine, with only numpy and onnxruntime installed:", "",
        "```bash",
        card.get("how_to_verify") or "python verify_bundle.py .",
        "```", "",
        "It checks every file against `manifest.json` (sha256), reruns the parity vectors in `parity.json` "
        "on both models, measures the latency grid and fails (exit 1) when the INT8 p95 exceeds the budget.",
        "", "## Limitations", "",
        "- INT8 latency and logits depend on the CPU's instruction set: AVX-512 VNNI and AMX have int8 dot-product "
        "instructions, AVX2 needs a longer instruction sequence with a saturating intermediate, so the INT8 speed-up measured "
        "above may not hold on another CPU and INT8 logits differ slightly between CPUs (parity.json allows for "
        "it). Re-measure with the verification tool before relying on the numbers.",
        "- Latencies were measured on the machine above with the stated threads, random token ids and a full "
        "attention mask; real traffic with padding, other thread counts or a busy machine differs.",
        "- Accuracy is on the test split of the data named above only. The INT8 accuracy was measured "
        f"{_text(_get(card, 'export', 'int8_eval_batch_size'))} sentence(s) per call: dynamic INT8 computes each activation "
        "scale over the whole input tensor, so with batching (Triton's dynamic batcher included) a sentence's INT8 "
        "prediction can depend on the requests batched with it and on their padding.",
        "",
    ]


def _squad_lines(card: dict) -> list[str]:
    """Question answering: exact match and F1 with HasAns / NoAns for teacher, student fp32 and INT8."""
    from distilprune.export.report import squad_table

    ckpt = card.get("checkpoint") or {}
    table = squad_table([("teacher, PyTorch fp32", _get(card, "teacher", "metrics") or {}),
                         ("student, PyTorch fp32", _get(ckpt, "metrics", "pytorch_fp32") or {}),
                         ("student, ONNX fp32", _get(ckpt, "metrics", "onnx_fp32") or {}),
                         ("student, ONNX INT8", _get(ckpt, "metrics", "onnx_int8") or {})])
    if not table:
        return []
    return ["", "Exact match and F1 on the test questions (the \"no answer\" threshold of each model chosen on "
            "validation):", "", *table]


def write_model_card(bundle: Path, card: dict) -> Path:
    """Write ``README.md`` from the numbers in ``card`` only; a missing value prints as "not measured".

    ``card`` is built by the caller from the run's measurements (name, recipe, teacher, data,
    checkpoint, machine, libraries, latency_budget, how_to_verify); see the module docstring.
    """
    bundle = Path(bundle)
    ckpt = card.get("checkpoint") or {}
    teacher = card.get("teacher") or {}
    heads = ckpt.get("heads_per_layer")
    int8_method = _get(ckpt, "int8", "shipped")
    params = f"{ckpt['params']:,}" if isinstance(ckpt.get("params"), int) else None
    metric = _get(card, "task", "metric_label") or "accuracy"
    kind = {"token_classification": "Token classifier (a BIO tag per word; served as entities with character "
                                     "offsets)",
            "question_answering": "Extractive question reader (question + context in; answer text, character span "
                                  "and score, or no answer, out)"}.get(_get(card, "task", "name"), "Text classifier")
    lines = [
        f"# {card.get('name', bundle.name)}",
        "",
        f"{kind} distilled from the teacher `{_text(teacher.get('model'))}` with the recipe "
        f"`{_text(_get(card, 'recipe', 'name'))}` (`{_text(_get(card, 'recipe', 'path'))}`). Every number in this "
        f"card was measured by the run that exported this bundle; values that were not measured say so.",
        "",
        f"## {metric.capitalize()} and size",
        "",
        f"| model | format | test {metric}{' % [95% bootstrap interval]' if ckpt.get('accuracy_ci') else ''} | size MB |",
        "|---|---|---|---|",
        f"| teacher | PyTorch fp32 | {_acc(teacher.get('accuracy'), teacher.get('accuracy_ci'))} | - |",
        f"| student | PyTorch fp32 | {_acc_of(ckpt, 'pytorch_fp32')} | - |",
        f"| student | ONNX fp32 (`model.onnx`) | {_acc_of(ckpt, 'onnx_fp32')} | {_ms(_get(ckpt, 'size_mb', 'onnx_fp32'))} |",
        f"| student | ONNX INT8 (`model.int8.onnx`, {_text(int8_method)}) | {_acc_of(ckpt, 'onnx_int8')} | "
        f"{_ms(_get(ckpt, 'size_mb', 'onnx_int8'))} |",
        *_difference_lines(ckpt),
        *_squad_lines(card),
        "",
        "Teacher latency (PyTorch fp32): " + ", ".join(
            f"{q} {_ms(v)}" + (" ms" if v is not None else "")
            for q in ("p50", "p95", "p99") for v in [_get(teacher, "latency_ms", "pytorch_fp32", q)]) + ".",
        *_timing_lines(card),
        "",
        "## Structure",
        "",
        f"- Layers: {_text(len(heads) if heads else None)}; attention heads per layer: {_text(heads)}; "
        f"FFN width per layer: {_text(ckpt.get('ffn_width_per_layer'))}.",
        f"- Density (kept fraction of prunable weights): {_text(ckpt.get('density'))}; parameters: "
        f"{_text(params)}.",
        "",
        "## Latency grid",
    ]
    grids = ckpt.get("latency_grid") or {}
    if not grids:
        lines += ["", f"Latency grid: {NOT_MEASURED}."]
    for key, title in (("onnx_fp32", "ONNX fp32"), ("onnx_int8", "ONNX INT8")):
        if grids.get(key):
            lines += ["", f"{title}, milliseconds per batch:", "", *_grid_table(grids[key])]
    lines += ["", *_budget_lines(card), "", "## INT8 quantization", "", f"Shipped: {_text(int8_method)}."]
    attempts = _get(ckpt, "int8", "attempts") or []
    if attempts:
        lines += ["", f"| method | {metric} | passed the {metric} gate |", "|---|---|---|"]
        lines += [f"| {_text(a.get('method'))} | {_pct(a.get('accuracy'))} | {_text(a.get('passed'))} |" for a in attempts]
    gpu = _get(ckpt, "gpu")
    lines += ["", "## GPU", ""]
    if isinstance(gpu, dict) and set(gpu) <= {"status"}:
        lines.append(f"GPU: {_text(gpu.get('status'))}.")
    elif isinstance(gpu, dict):
        lines += ["```json", json.dumps(gpu, indent=2), "```"]
    else:
        lines.append(f"GPU: {NOT_MEASURED}.")
    lines += _data_and_machine_lines(card) + ["", *_serving_lines(bundle)] + _verify_and_limits_lines(card)
    path = bundle / "README.md"
    write_atomic(path, "\n".join(lines))
    return path


# --------------------------------------------------------------------------------------------
# verifier copy and manifest


def copy_verifier(bundle: Path) -> Path:
    """Copy the standalone verifier (this package's ``verify.py``) into the bundle as ``verify_bundle.py``,
    with the base layer it imports (``runtime.py``) beside it as ``verify_runtime.py``."""
    write_atomic(Path(bundle) / verify.RUNTIME_COPY, Path(runtime.__file__).read_text())
    target = Path(bundle) / "verify_bundle.py"
    write_atomic(target, Path(verify.__file__).read_text())
    os.chmod(target, 0o755)
    return target


def write_manifest(bundle: Path) -> Path:
    """Write ``manifest.json``: sha256 and size in bytes of every file (recursively), itself excluded.

    Call it last: any file written after it fails verification as unlisted or mismatched.
    """
    bundle = Path(bundle)
    files = {rel: {"sha256": runtime.sha256_file(bundle / rel), "bytes": (bundle / rel).stat().st_size}
             for rel in verify.bundle_files(bundle)}
    path = bundle / verify.MANIFEST
    write_atomic(path, json.dumps({"algorithm": "sha256", "files": files}, indent=2))
    return path
