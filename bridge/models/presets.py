"""Named model presets: architectures as data (open_clip style), one table per kind.

A preset says where a model lives (hub id + revision, or a tiny model built offline by `bridge.models.tiny`) and
how the project renders with it. Nothing here loads anything; `bridge.models.loading` does that, through one
code path for hub and tiny presets alike.

Facts (../shared/DESIGN.md §3):
- SD1.5 moved to `stable-diffusion-v1-5/stable-diffusion-v1-5` (the `runwayml/...` repo was deleted);
  512 px, epsilon prediction, OpenAI CLIP ViT-L/14 text encoder (768-d).
- SD2-base and SD2.1-base: 512 px, epsilon; SD2.1 (non-base): 768 px, **v-prediction**. All SD2 use
  OpenCLIP ViT-H/14 (1024-d), which is why SD1 LoRAs/embeddings cannot load there.
- The default scorer is SD2's own text-encoder family, open_clip ViT-H-14 / laion2b_s32b_b79k.

Revisions: `revision` is what `snapshot_download` fetches. The shipped value is the branch name "main"
because this project is built without hub access and we will not invent commit hashes; pin a commit by
passing `--revision` (or editing the preset) and it is recorded in every artifact's config.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from bridge.config import did_you_mean

PredictionType = Literal["epsilon", "v_prediction"]


@dataclass(frozen=True)
class PipelinePreset:
    """A text-to-image pipeline and the settings this project renders it with."""

    name: str
    hub_id: str | None
    revision: str
    family: Literal["sd1", "sd2"]
    size: int  # native square resolution in pixels
    prediction_type: PredictionType
    text_dim: int  # width of the text encoder's hidden states = cross-attention width
    steps: int = 25
    guidance: float = 7.5
    # DPM-Solver++(2M): good images in ~25 steps for both epsilon and v-prediction (diffusers docs).
    scheduler: str = "dpmsolver++"
    tiny: bool = False
    local_path: str | None = None  # a directory given by the user instead of a hub id
    toy: bool = False  # a trained toy-world model shipped with the package (toyworld/weights)
    # Plain diffusers truncates each prompt at 77 tokens (75 + BOS/EOS); A1111 chunks instead.
    truncates: bool = True

    @property
    def kind(self) -> str:
        return "pipeline"


@dataclass(frozen=True)
class ScorerPreset:
    """An open_clip model that embeds images (and texts) into one space for agreement scores."""

    name: str
    model: str  # open_clip architecture name
    pretrained: str | None  # open_clip pretrained tag (documentation; loading goes through hub_id)
    hub_id: str | None
    revision: str
    tiny: bool = False
    local_path: str | None = None
    toy: bool = False

    @property
    def kind(self) -> str:
        return "scorer"


@dataclass(frozen=True)
class RewriterPreset:
    """A seq2seq model that rewrites prompt text (flan-t5 family)."""

    name: str
    hub_id: str | None
    revision: str
    max_new_tokens: int = 96
    tiny: bool = False
    local_path: str | None = None
    toy: bool = False

    @property
    def kind(self) -> str:
        return "rewriter"


@dataclass(frozen=True)
class AdapterPreset:
    """A trained adapter a package ships (the toy world's `toy`): a name for its directory, and the target it
    translates for. `--adapter NAME` takes it wherever an adapter directory goes."""

    name: str
    local_path: str
    target: str  # the pipeline preset the adapter was trained against
    toy: bool = False
    hub_id: None = None  # never on the hub: shipped in a package
    revision: str = "local"
    tiny: bool = False

    @property
    def kind(self) -> str:
        return "adapter"


Preset = PipelinePreset | ScorerPreset | RewriterPreset | AdapterPreset

PIPELINES: dict[str, PipelinePreset] = {
    p.name: p
    for p in [
        PipelinePreset("sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5", "main", "sd1", 512, "epsilon", 768),
        PipelinePreset("sd2-base", "stabilityai/stable-diffusion-2-base", "main", "sd2", 512, "epsilon", 1024),
        PipelinePreset("sd21-base", "stabilityai/stable-diffusion-2-1-base", "main", "sd2", 512, "epsilon", 1024),
        PipelinePreset("sd21", "stabilityai/stable-diffusion-2-1", "main", "sd2", 768, "v_prediction", 1024),
        # Tiny twins, built offline by bridge.models.tiny. tiny-sd2 differs from tiny-sd15 where SD2 differs
        # from SD1.5 (v-prediction, linear projection, a wider text encoder), so shape bugs show in tests.
        PipelinePreset("tiny-sd15", None, "tiny-v1", "sd1", 64, "epsilon", 32, steps=3, tiny=True),
        PipelinePreset("tiny-sd2", None, "tiny-v1", "sd2", 64, "v_prediction", 48, steps=3, tiny=True),
    ]
}

SCORERS: dict[str, ScorerPreset] = {
    s.name: s
    for s in [
        ScorerPreset("vit-h-14", "ViT-H-14", "laion2b_s32b_b79k", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K", "main"),
        ScorerPreset("vit-l-14", "ViT-L-14", "openai", "timm/vit_large_patch14_clip_224.openai", "main"),
        ScorerPreset("tiny-clip", "tiny-clip", None, None, "tiny-v1", tiny=True),
    ]
}

REWRITERS: dict[str, RewriterPreset] = {
    r.name: r
    for r in [
        RewriterPreset("flan-t5-small", "google/flan-t5-small", "main"),
        RewriterPreset("flan-t5-base", "google/flan-t5-base", "main"),
        RewriterPreset("flan-t5-large", "google/flan-t5-large", "main"),
        RewriterPreset("tiny-t5", None, "tiny-v1", max_new_tokens=64, tiny=True),
    ]
}

ADAPTERS: dict[str, AdapterPreset] = {}  # none built in: the library ships no trained weights
_BUILT_IN: dict[str, dict[str, Preset]] = {"pipeline": PIPELINES, "scorer": SCORERS, "rewriter": REWRITERS,
                                           "adapter": ADAPTERS}
TABLES: dict[str, dict[str, Preset]] = {kind: dict(table) for kind, table in _BUILT_IN.items()}

# Presets from other packages (the toy world's, a user's own) are registered, not written here: a package
# names a function in the `sd_bridge.presets` entry-point group (pyproject.toml), which returns its presets.
# The library never imports them; they are read once, at the first lookup (as open_clip's pretrained registry
# and pytest's plugins are found).
ENTRY_POINTS = "sd_bridge.presets"
_plugins_read = False


def register(*found: Preset) -> None:
    """Add presets to the tables; a name taken by a built-in preset is refused."""
    for preset in found:
        table = TABLES[preset.kind]
        if preset.name in _BUILT_IN[preset.kind]:
            raise ValueError(f"preset {preset.name!r} is built in; a registered preset needs another name")
        table[preset.name] = preset


def tables() -> dict[str, dict[str, Preset]]:
    """Every preset by kind, registered ones included."""
    global _plugins_read
    if not _plugins_read:
        _plugins_read = True
        from importlib.metadata import entry_points

        for point in entry_points(group=ENTRY_POINTS):
            register(*point.load()())
    return TABLES

# The reference run: SD1.5 -> SD2-base, scored by SD2's own CLIP family, rewritten by flan-t5-base.
DEFAULT_SOURCE, DEFAULT_TARGET, DEFAULT_SCORER, DEFAULT_REWRITER = "sd15", "sd2-base", "vit-h-14", "flan-t5-base"
TINY_SOURCE, TINY_TARGET, TINY_SCORER, TINY_REWRITER = "tiny-sd15", "tiny-sd2", "tiny-clip", "tiny-t5"
TOY_SOURCE, TOY_TARGET, TOY_SCORER, TOY_REWRITER = "toy-sd15", "toy-sd2", "toy-clip", "toy-t5"
TOY_NOTE = ("note: the real SD weights are not available locally, so this uses the toy world "
            "(toy-sd15 -> toy-sd2, scored by toy-clip): small trained models that read toy-world prompts only")


class UnknownPresetError(ValueError):
    """A preset name that is neither in the tables nor a local model directory."""


def _looks_like_path(name: str) -> bool:
    # Preset names never contain a path separator; hub ids are not accepted here (add a preset instead).
    return "/" in name or name.startswith((".", "~")) or Path(name).is_dir()


def get_preset(kind: str, name: str, revision: str | None = None) -> Preset:
    """Look a preset up by name, or wrap a local model directory as a preset of that kind.

    `revision` overrides the preset's pinned revision (it is recorded in every artifact's config).
    """
    table = tables()[kind]
    if name in table:
        preset = table[name]
    elif _looks_like_path(name):
        path = Path(name).expanduser().resolve()
        if not path.is_dir():
            raise UnknownPresetError(f"{kind} directory not found: {path}")
        preset = _preset_from_dir(kind, path)
    else:
        raise UnknownPresetError(
            f"unknown {kind} preset {name!r}{did_you_mean(name, table)}; choose one of {', '.join(table)} "
            "or give a local model directory"
        )
    if revision is not None:
        if preset.tiny or preset.toy or preset.local_path:
            raise ValueError(f"--revision applies to hub presets only; {name!r} is not on the hub")
        preset = replace(preset, revision=revision)
    return preset


def _preset_from_dir(kind: str, path: Path) -> Preset:
    """Describe a local directory (a `save_pretrained` output) as a preset, reading its own configs."""
    import json

    if kind == "pipeline":
        unet = json.loads((path / "unet" / "config.json").read_text())
        sched = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
        vae = json.loads((path / "vae" / "config.json").read_text())
        factor = 2 ** (len(vae.get("block_out_channels", [0, 0, 0, 0])) - 1)
        dim = unet["cross_attention_dim"]
        dim = dim[0] if isinstance(dim, list) else dim
        return PipelinePreset(
            name=str(path), hub_id=None, revision="local", family="sd2" if dim >= 1024 else "sd1",
            size=unet["sample_size"] * factor, prediction_type=sched.get("prediction_type", "epsilon"),
            text_dim=dim, local_path=str(path),
        )
    if kind == "scorer":
        return ScorerPreset(name=str(path), model="local", pretrained=None, hub_id=None, revision="local",
                            local_path=str(path))
    return RewriterPreset(name=str(path), hub_id=None, revision="local", local_path=str(path))


def pipeline(name: str, revision: str | None = None) -> PipelinePreset:
    return get_preset("pipeline", name, revision)  # type: ignore[return-value]


def scorer(name: str, revision: str | None = None) -> ScorerPreset:
    return get_preset("scorer", name, revision)  # type: ignore[return-value]


def rewriter(name: str, revision: str | None = None) -> RewriterPreset:
    return get_preset("rewriter", name, revision)  # type: ignore[return-value]


NO_ADAPTER = "none"  # `--adapter none`: the syntax strategy, where a target would default to a shipped adapter


def adapter_path(adapter: str | Path | None) -> Path | None:
    """An adapter argument as a directory: a shipped adapter's name (`toy`) is its directory, `none` is None,
    anything else is taken as a path (a directory of that name wins over a shipped name)."""
    if adapter is None or str(adapter) == NO_ADAPTER:
        return None
    table = tables()["adapter"]
    if str(adapter) in table and not Path(adapter).is_dir():
        return Path(table[str(adapter)].local_path)
    return Path(adapter)


def default_adapter(target: str | None) -> Path | None:
    """The shipped adapter a toy target translates with when none is named: the toy world's prompts are the
    ones a person tries first, and a learned translation is what the tool is for. None for real targets, and
    where the package's adapter directory is missing (a checkout without its weights)."""
    if target is None:
        return None
    found = [Path(a.local_path) for a in tables()["adapter"].values() if a.toy and a.target == target]
    return found[0] if found and found[0].is_dir() else None


def describe(preset: Preset) -> dict:
    """The facts about a preset that go into every artifact's config."""
    out = {"kind": preset.kind, "name": preset.name, "hub_id": preset.hub_id, "revision": preset.revision}
    if isinstance(preset, PipelinePreset):
        out.update(size=preset.size, prediction_type=preset.prediction_type, steps=preset.steps,
                   guidance=preset.guidance, scheduler=preset.scheduler, family=preset.family)
    return out


__all__ = [
    "PipelinePreset", "ScorerPreset", "RewriterPreset", "AdapterPreset", "PIPELINES", "ADAPTERS", "adapter_path",
    "default_adapter", "NO_ADAPTER", "SCORERS", "REWRITERS", "TABLES",
    "get_preset", "pipeline", "scorer", "rewriter", "describe", "UnknownPresetError", "register", "tables",
]
