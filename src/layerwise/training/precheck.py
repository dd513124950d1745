"""Checking a run's selections against the model's structure before any weight is loaded.

The model is built on the meta device from its config alone (no memory, no weights): enough to
resolve `--layers`, `--lora-layers` and `--lr-scale` on its real block list, so that
`--lr-scale 9=2` on a 4-block model is refused in one line, not after the base model has been
scored. `--mask-from` checkpoints must exist. A model we cannot build this way (an unknown
architecture behind remote code) is checked later, when it loads.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from layerwise.errors import LayerwiseError
from layerwise.models.arch import LayerMap, discover_layers
from layerwise.selection.resolve import resolve_selection

log = logging.getLogger(__name__)


def model_config_of(spec: str | None, trust_remote_code: bool = False, tokenizer: str | None = None):
    """The transformers config of the model `spec` names, without loading its weights (a tiny
    model with `tokenizer` "bpe:N" gets the vocabulary of N it asks for)."""
    from transformers import AutoConfig

    from layerwise.models import loading, tiny

    text = spec or "embedded"
    if text.startswith("tiny:"):
        family, sizes = tiny.parse_tiny_spec(text)  # a bad size is one line here
        config = tiny.tiny_config(family, sizes)
        kind, vocab = tiny.parse_tokenizer_spec(tokenizer)
        if kind == "bpe":
            config.vocab_size = vocab
        return config
    if text == "embedded":
        return AutoConfig.from_pretrained(loading.convert_gguf(loading.embedded_gguf_path()))
    if text.endswith(".gguf"):
        path = Path(text).expanduser()
        if not path.is_file():
            raise LayerwiseError(f"GGUF file {path} does not exist")
        return AutoConfig.from_pretrained(loading.convert_gguf(path))
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise LayerwiseError(f"model path {path} is a file; expected an HF checkpoint "
                                 "directory or a .gguf file")
        loading._check_local_dir(path)
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    if text.count("/") > 1 or text.startswith((".", "/", "~")):
        raise LayerwiseError(f"model path {text} does not exist; expected a local directory, a "
                             ".gguf file, 'tiny:<family>' or a Hugging Face id")
    from layerwise.hub import hub_reachable

    return loading._load_config(text, trust_remote_code, False, not hub_reachable())


def meta_model(spec: str | None, trust_remote_code: bool = False, tokenizer: str | None = None):
    """The model built on the meta device from its config (no memory, no weights), or None."""
    config = model_config_of(spec, trust_remote_code, tokenizer)
    if config is None:
        return None
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    except Exception as exc:  # noqa: BLE001 - checked again for real once the model loads
        log.debug("no meta-device model for %s: %s", spec, exc)
        return None


def meta_layers(spec: str | None, trust_remote_code: bool = False) -> LayerMap | None:
    model = meta_model(spec, trust_remote_code)
    try:
        return discover_layers(model) if model is not None else None
    except LayerwiseError:
        return None


def dry_run(config, model_config):
    """What would train, resolved on the meta device: a `Trainable` (counts, blocks), or None."""
    from layerwise.training.trainable import prepare_trainable

    model = meta_model(model_config.model, model_config.trust_remote_code, model_config.tokenizer)
    return prepare_trainable(model, config) if model is not None else None


def schedule_plan(config, model_config):
    """The --schedule plan resolved on the meta-device model (None: fixed, or no meta build)."""
    if config.schedule == "fixed":
        return None
    layers = meta_layers(model_config.model, model_config.trust_remote_code)
    return plan_on(config, layers) if layers is not None else None


def plan_on(config, layers: LayerMap):
    """The --schedule plan over the blocks of --layers on this structure."""
    from layerwise.training.schedules import make_plan

    from layerwise.models.identity import structure_fingerprint

    pool = resolve_selection(layers, config.layers).blocks
    return make_plan(config.schedule, pool, config.steps, config.seed,
                     lambda text: resolve_selection(layers, text).blocks, num_blocks=len(layers.blocks),
                     structure=structure_fingerprint(layers))


def check_selections(config, layers: LayerMap) -> None:
    """The run's selections resolve on this structure (one-line errors otherwise)."""
    from layerwise.training.trainable import parse_lr_scale

    if config.layers is not None:
        resolve_selection(layers, config.layers)
    if config.lora:
        try:
            resolve_selection(layers, config.lora_layers)
        except LayerwiseError as exc:
            raise LayerwiseError(f"--lora-layers: {exc}") from None
    if config.schedule != "fixed":
        plan_on(config, layers)
    if config.tying != "none":
        from layerwise.training.tying import check_tying, parse_tying

        from layerwise.models.identity import structure_fingerprint

        check_tying(parse_tying(config.tying), layers.num_blocks, config.tie_every,
                    structure_fingerprint(layers))
    scales = parse_lr_scale(config.lr_scale, layers)
    if scales and config.layers is not None:
        trained = set(resolve_selection(layers, config.layers).blocks)
        if not any(blocks & trained for blocks, _, _ in scales):
            raise LayerwiseError("--lr-scale names no block that trains: "
                                 + ", ".join(s for _, _, s in scales))


def check_tokenizer(config, model_config, task) -> str | None:
    """The text a `--tokenizer bpe:N` is trained on (None: no tokenizer to train)."""
    from layerwise.models.tiny import parse_tokenizer_spec

    kind, _size = parse_tokenizer_spec(model_config.tokenizer)
    if kind == "byte":
        return None
    if not (model_config.model or "").startswith("tiny:"):
        raise LayerwiseError(f"--tokenizer {model_config.tokenizer}: only tiny models train a "
                             "tokenizer; a pretrained model brings its own")
    data = config.data or (task.train if getattr(task, "kind", None) == "lm" else None)
    if not data:
        raise LayerwiseError(f"--tokenizer {model_config.tokenizer} needs text to train on: "
                             "--data FILE (or --task lm, which trains on its own text)")
    return data


def check_against_structure(config, model_config, layers: LayerMap | None = None) -> None:
    """All the run's structural checks, on `layers` or on a meta-device build of the model."""
    if config.mask_from:
        _check_mask_checkpoints(config.mask_from, model_config)
    if layers is None:
        layers = meta_layers(model_config.model, model_config.trust_remote_code)
    if layers is not None:
        check_selections(config, layers)


def _check_mask_checkpoints(spec: str, model_config) -> None:
    """--mask-from BASE,TUNED: both readable, and both of this model (names and shapes), checked
    on the safetensors headers against a meta-device build: no weights are read."""
    from layerwise.analysis.checkpoints import Checkpoint

    checkpoints = [(part.strip(), Checkpoint(part.strip())) for part in spec.split(",")]
    model = meta_model(model_config.model, model_config.trust_remote_code, model_config.tokenizer)
    if model is None:
        return  # no meta build: build_masks checks names and shapes once the model loads
    params = {n: tuple(p.shape) for n, p in model.named_parameters()}
    known = set(dict(model.named_parameters(remove_duplicate=False))) | {
        n for n, _ in model.named_buffers()}
    for part, checkpoint in checkpoints:
        names = set(checkpoint.names)
        missing = [n for n in params if n not in names]
        extra = sorted(n for n in names if n not in known)
        if missing or extra:
            what = "; ".join(x for x in (
                f"{len(missing)} of the model's tensors missing (e.g. {missing[0]})" if missing
                else "", f"{len(extra)} the model does not have (e.g. {extra[0]})" if extra else "")
                if x)
            raise LayerwiseError(f"--mask-from {part} is a checkpoint of another model: {what}")
        for name, shape in params.items():
            if tuple(checkpoint.shape(name)) != shape:
                raise LayerwiseError(f"--mask-from {part} is a checkpoint of another model: "
                                     f"{name} is {tuple(checkpoint.shape(name))} there, {shape} "
                                     "in this model")
    from layerwise.inputs import model_dir
    from layerwise.training.subnetwork import check_base_is_model

    own = model_dir(model_config.model)
    base_path = checkpoints[0][1].path.resolve()
    if own is not None and own.resolve() != base_path:  # BASE's values against the model's files
        check_base_is_model(Checkpoint(own), checkpoints[0][1], checkpoints[0][0])


def check_dataset_task(task, method: str, model: str | None, *, trust_remote_code: bool = False,
                       tokenizer: str | None = None, tokenizer_data: str | None = None,
                       n_train: int = 1000, seed: int = 0, max_length: int = 256,
                       eval_n: int = 100) -> dict:
    """A --dataset task against a method and a model, before any weight loads: the method takes
    the data's TRL type (and has its reward), the model's tokenizer (loaded alone) can render the
    data (a chat template for conversations), and for SFT at least one training row keeps a
    loss-carrying token at --max-length. Returns what metrics.json records under `data`."""
    from layerwise.models.loading import load_tokenizer
    from layerwise.training.methods import get_method

    m = get_method(method)
    m.check_dataset(task.detected, bool(task.rewards), task.path)
    task.rows("train", n_train, seed)  # every row the run will read: its messages checked
    task.rows("eval", eval_n, 0)
    tok = load_tokenizer(model, trust_remote_code=trust_remote_code, tokenizer=tokenizer,
                         tokenizer_data=tokenizer_data)
    task.bind(tok)
    record: dict = {}
    if m.name == "sft":
        _, record = task.sft_dataset(tok, n_train, seed, max_length)
    return {**record, "type": task.detected.describe(), "train_rows": task.split_size("train"),
            "eval_rows": task.split_size("eval"), "score": task.primary}


SELECTION_SETTINGS = ("layers", "lora_layers", "lr_scale", "schedule", "tying")


def selection_overlap(config, files: list[str] | None = None) -> list[str]:
    """One line per selection or importance file (in --layers, --schedule, --tying, ...: or
    `files`) whose scores were measured on the held-out items this run is scored on: a sweep of
    the same task and options, scored on its `eval` split (the eval seed is fixed), read by a run
    scored on `eval` too. The selection has then seen the answers it is judged by."""
    import json
    from pathlib import Path

    from layerwise.inputs import named_paths

    if config.score_on != "eval":
        return []
    if files is None:
        files = [p for key in SELECTION_SETTINGS for p in named_paths(getattr(config, key, None))]
    out = []
    for path in files:
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        sweep = doc.get("sweep") if isinstance(doc, dict) else None
        if not isinstance(sweep, dict) or sweep.get("task") != config.task:
            continue
        if (sweep.get("task_options") or {}) != (config.task_options or {}):
            continue
        if ((sweep.get("train") or {}).get("score_on") or "eval") != "eval":
            continue
        out.append(f"{path} was scored on the held-out items of task {config.task!r} that score "
                   "this run too: the selection has seen the answers it is judged by (measure it "
                   "with `layerwise sweep --score-on validation`)")
    return out
