"""Model loading: one code path for hub presets, tiny presets and local directories.

Every model is a local directory by the time it is loaded: a hub preset is a `snapshot_download` at its
pinned revision (safetensors only), a tiny preset is built once into the cache by `bridge.models.tiny`, a local
path is used as is. The loaders below never see the difference.

Device and dtype are the caller's choice (`auto` = CUDA with fp16 for pipelines where available, else
CPU/fp32), resolved when a model is loaded, never at import. Only safetensors are read and
`trust_remote_code` is never set.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bridge.models import presets
from bridge.models.presets import PipelinePreset, Preset, RewriterPreset, ScorerPreset

# Files fetched from the hub per kind: configs, tokenizers and safetensors weights, nothing pickled.
_ALLOW = {
    "pipeline": ["model_index.json", "*/config.json", "*/*.json", "*/*.txt", "*/diffusion_pytorch_model.safetensors",
                 "text_encoder/model.safetensors"],
    "scorer": ["open_clip_config.json", "open_clip_model.safetensors", "*.json", "*.txt"],
    "rewriter": ["config.json", "generation_config.json", "model.safetensors", "tokenizer*", "spiece.model",
                 "special_tokens_map.json"],
}
_WEIGHTS = {"pipeline": "unet/diffusion_pytorch_model.safetensors", "scorer": "open_clip_model.safetensors",
            "rewriter": "model.safetensors"}


class ModelNotAvailableError(RuntimeError):
    """A model could not be found locally nor fetched; the message says how to get it."""


def cache_dir() -> Path:
    """Where tiny models (and other sd-bridge caches) live: $SD_BRIDGE_CACHE or ~/.cache/sd-bridge."""
    return Path(os.environ.get("SD_BRIDGE_CACHE", Path.home() / ".cache" / "sd-bridge")).expanduser()


def tiny_dir(preset: Preset) -> Path:
    return cache_dir() / "tiny" / f"{preset.name}-{preset.revision}"


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available (torch {torch.__version__})")
    return device


def resolve_dtype(dtype: str, device: str, kind: str = "pipeline"):
    """`auto`: fp16 for diffusion pipelines on CUDA (their usual precision), fp32 everywhere else."""
    import torch

    if dtype == "auto":
        return torch.float16 if device.startswith("cuda") and kind == "pipeline" else torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in table:
        raise ValueError(f"unknown dtype {dtype!r}; choose auto, {', '.join(table)}")
    return table[dtype]


def is_available_locally(preset: Preset) -> bool:
    """True when loading `preset` needs no network (doctor uses this)."""
    if preset.local_path:
        return Path(preset.local_path).is_dir()
    if preset.tiny:
        return True  # built on demand, offline
    try:
        model_dir(preset, local_files_only=True)
        return True
    except ModelNotAvailableError:
        return False


def real_or_toy(kind: str, value: str, real: str, toy: str) -> tuple[Preset, bool]:
    """Resolve `value` ("auto" or a preset name): auto is the real preset when its weights are local, else
    the toy one. Returns (preset, fell_back_to_toy)."""
    if value != "auto":
        return presets.get_preset(kind, value), False
    preset = presets.get_preset(kind, real)
    if is_available_locally(preset):
        return preset, False
    return presets.get_preset(kind, toy), True


def resolve_auto(cfg) -> bool:
    """Set `cfg.source`, `cfg.target` and `cfg.scorer` from "auto" to the real preset when its weights are
    local, else to the toy world's. Returns True when any fell back (the caller says so before rendering)."""
    fell_back = False
    for attr, kind, real, toy in (("source", "pipeline", presets.DEFAULT_SOURCE, presets.TOY_SOURCE),
                                  ("target", "pipeline", presets.DEFAULT_TARGET, presets.TOY_TARGET),
                                  ("scorer", "scorer", presets.DEFAULT_SCORER, presets.TOY_SCORER)):
        preset, toy_used = real_or_toy(kind, getattr(cfg, attr), real, toy)
        setattr(cfg, attr, preset.name)
        fell_back |= toy_used
    return fell_back


def _not_available(preset: Preset, err: Exception) -> ModelNotAvailableError:
    hf_home = os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface"))
    return ModelNotAvailableError(
        f"{preset.kind} preset {preset.name!r} ({preset.hub_id}@{preset.revision}) is not available offline "
        f"and could not be downloaded ({type(err).__name__}).\n"
        f"  To get it: run once with network access (it is cached under HF_HOME={hf_home}), or copy a cache "
        f"that has it into HF_HOME, or pass a local directory that holds a `save_pretrained` copy instead of "
        f"the preset name. Offline presets: tiny-sd15, tiny-sd2, tiny-clip, tiny-t5 (random, plumbing) and "
        f"toy-sd15, toy-sd2, toy-clip, toy-t5 (the trained toy world)."
    )


def model_dir(preset: Preset, local_files_only: bool | None = None) -> Path:
    """The local directory holding `preset`'s files, building or downloading it if needed."""
    if preset.local_path:
        path = Path(preset.local_path)
        if not path.is_dir():
            if preset.toy:
                raise ModelNotAvailableError(f"toy-world model {preset.name!r} is missing from {path}; "
                                             "rebuild it with `sd-bridge toyworld build`")
            raise ModelNotAvailableError(f"{preset.kind} directory not found: {path}")
        return path
    if preset.tiny:
        path = tiny_dir(preset)
        if not (path / "tiny_preset.json").is_file():
            from bridge.models.tiny import build

            build(preset, path)
        return path
    from huggingface_hub import snapshot_download

    if local_files_only is None:
        local_files_only = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    try:
        path = Path(snapshot_download(preset.hub_id, revision=preset.revision, allow_patterns=_ALLOW[preset.kind],
                                      local_files_only=local_files_only))
    except Exception as err:  # offline, missing repo, gated, no cache: all mean "not available"
        raise _not_available(preset, err) from err
    if not (path / _WEIGHTS[preset.kind]).is_file():
        raise _not_available(preset, FileNotFoundError(_WEIGHTS[preset.kind]))
    return path


def load_pipeline(preset: PipelinePreset, device: str = "cpu", dtype: str = "auto"):
    """A diffusers StableDiffusionPipeline on `device`, safety checker off (we only score images)."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    device = resolve_device(device)
    path = model_dir(preset)
    if os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS") == "1":  # set by the CLI; diffusers' own bar ignores it
        diffusers_logging.disable_progress_bar()
    pipe = StableDiffusionPipeline.from_pretrained(
        path, dtype=resolve_dtype(dtype, device), use_safetensors=True, safety_checker=None,
        feature_extractor=None, requires_safety_checker=False, local_files_only=True,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def load_scorer_model(preset: ScorerPreset, device: str = "cpu", dtype: str = "auto") -> tuple[Any, Any, Any]:
    """(model, image preprocess, tokenizer) from open_clip, loaded from the preset's directory."""
    import open_clip

    device = resolve_device(device)
    path = model_dir(preset)
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{path}", device=device,
                                                                 precision="fp32")
    model = model.to(dtype=resolve_dtype(dtype, device, kind="scorer")).eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{path}")
    return model, preprocess, tokenizer


def load_rewriter(preset: RewriterPreset, device: str = "cpu", dtype: str = "auto") -> tuple[Any, Any]:
    """(seq2seq model, tokenizer) for a flan-t5-family preset."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    device = resolve_device(device)
    path = model_dir(preset)
    model = AutoModelForSeq2SeqLM.from_pretrained(path, dtype=resolve_dtype(dtype, device, kind="rewriter"),
                                                  use_safetensors=True, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    return model.to(device).eval(), tokenizer
