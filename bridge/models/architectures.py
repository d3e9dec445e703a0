"""The real presets' architectures from their published configs, built without their weights.

`bridge/models/configs/NAME.json` holds, for each real preset, the configs of its components as the hub repo
publishes them (its `source` names the repo and files): SD1.5, SD2-base, SD2.1-base and SD2.1-768 (UNet,
text encoder, VAE, scheduler, tokenizer padding), the OpenAI CLIP ViT-L/14 and OpenCLIP ViT-H/14 scorers
(open_clip_config.json), and flan-t5-small, -base and -large. Built on the meta device they cost no memory
and give exact parameter counts (the plan's memory estimate); built on a real device they carry random
weights, so the real code path can run at real size with no download (benchmarks/real_size.py). A wrong
config (cross-attention width, head dims, v-prediction at 768, the penultimate text layer) shows here, not on
a user's GPU.
"""

from __future__ import annotations

import json
from pathlib import Path

CONFIGS = Path(__file__).parent / "configs"


def architecture(name: str) -> dict:
    """The committed configs of real preset `name`."""
    path = CONFIGS / f"{name}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIGS.glob("*.json")))
        raise ValueError(f"no committed architecture for preset {name!r} (known: {known})")
    return json.loads(path.read_text(encoding="utf-8"))


def components(name: str, device: str = "meta") -> dict:
    """The preset's models by component name, with random weights on `device` (on "meta": shapes only).
    Deterministic: each component is built after `torch.manual_seed(0)`."""
    import torch

    arch = architecture(name)
    built = {}
    for part, make in _makers(arch).items():
        torch.manual_seed(0)
        with torch.device(device):
            built[part] = make()
    return built


def _makers(arch: dict) -> dict:
    if arch["kind"] == "pipeline":
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel

        return {"unet": lambda: UNet2DConditionModel.from_config(arch["unet"]),
                "text_encoder": lambda: CLIPTextModel(CLIPTextConfig(**arch["text_encoder"])),
                "vae": lambda: AutoencoderKL.from_config(arch["vae"])}
    if arch["kind"] == "scorer":
        import open_clip

        return {"clip": lambda: open_clip.CLIP(**arch["open_clip_config"]["model_cfg"])}
    return {"t5": lambda: _t5(arch["config"])}


def _t5(config: dict):
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    model = T5ForConditionalGeneration(T5Config(**config))
    if config.get("tie_word_embeddings") is False and model.lm_head.weight is model.shared.weight:
        # flan-t5 (T5 v1.1) has an output head of its own (24.7M parameters in -base). transformers 5 builds T5
        # with the head tied to the input embeddings whatever the config says, and unties it only when a
        # checkpoint holds both (configuration_t5.py); a random build must untie it itself.
        model.lm_head.weight = torch.nn.Parameter(model.shared.weight.detach().clone())
    return model


def parameter_counts(name: str) -> dict[str, int]:
    """Parameters per component of real preset `name`, counted on the meta device (no memory, no weights)."""
    return {part: sum(p.numel() for p in module.parameters()) for part, module in components(name).items()}
