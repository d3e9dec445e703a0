"""Tiny random models, built offline and deterministically, the way diffusers/peft/trl test.

Each tiny preset is built once into the cache with `save_pretrained` (safetensors) and from then on loaded
by `bridge.models.loading` exactly like a hub snapshot: same loader, same files, same code path.

- tiny-sd15 / tiny-sd2: StableDiffusionPipeline with a real CLIP BPE tokenizer (bridge.syntax.tokens) and random
  UNet/VAE/text encoder (shapes after diffusers' `get_dummy_components()`). tiny-sd2 differs where SD2
  differs: v-prediction, `use_linear_projection`, per-block head dims and a wider text encoder / cross-
  attention (48 vs 32), and "!" padding. Code that assumes SD1.5 shapes breaks on it.
- tiny-clip: an open_clip CLIP (`open_clip_config.json` + `open_clip_model.safetensors`, the layout of
  open_clip's hub repos) loaded through `local-dir:`.
- tiny-t5: T5ForConditionalGeneration with a real unigram sentencepiece vocabulary trained offline on the
  plain prompt corpus (../shared/prompts/plain.jsonl), not random ids.

Building is deterministic: `torch.manual_seed(0)` before each module and single-threaded tokenizer
training, so every machine builds the same weights.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from pathlib import Path

from bridge.models.presets import PipelinePreset, Preset, RewriterPreset, ScorerPreset

TINY_CLIP_CONFIG = {
    "model_cfg": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    },
    "preprocess_cfg": {
        # OpenAI CLIP normalisation constants (open_clip.constants).
        "mean": [0.48145466, 0.4578275, 0.40821073],
        "std": [0.26862954, 0.26130258, 0.27577711],
        "interpolation": "bicubic",
        "resize_mode": "shortest",
    },
}

T5_VOCAB_SIZE = 2000


def default_prompts_dir() -> Path:
    """../shared/prompts beside the checkout, or $SD_BRIDGE_PROMPTS."""
    env = os.environ.get("SD_BRIDGE_PROMPTS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "prompts"


def _seed():
    import torch

    torch.manual_seed(0)


def _build_pipeline(preset: PipelinePreset, out: Path) -> None:
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from bridge.syntax.tokens import EOS, build_clip_tokenizer

    sd2 = preset.family == "sd2"
    dim = preset.text_dim
    _seed()
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=preset.size // 2,  # the tiny VAE downsamples by 2
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=dim,
        norm_num_groups=8,
        # SD2's UNet: linear projections in the transformer blocks and per-block head dims.
        attention_head_dim=(2, 4) if sd2 else 8,
        use_linear_projection=sd2,
    )
    _seed()
    vae = AutoencoderKL(
        block_out_channels=[8, 16],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        norm_num_groups=4,
        sample_size=preset.size,
    )
    tokenizer = build_clip_tokenizer(pad_token="!" if sd2 else EOS)
    _seed()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=dim,
            intermediate_size=dim * 2,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=len(tokenizer),
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            hidden_act="gelu" if sd2 else "quick_gelu",  # OpenCLIP ViT-H uses GELU, OpenAI CLIP quick-GELU
            projection_dim=dim,
        )
    )
    # SD's own scheduler config (scaled-linear betas); rendering swaps in the preset's scheduler.
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1, prediction_type=preset.prediction_type,
    )
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)


def _build_clip(out: Path) -> None:
    import open_clip
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    _seed()
    model = open_clip.CLIP(**TINY_CLIP_CONFIG["model_cfg"])
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "open_clip_model.safetensors"))
    (out / "open_clip_config.json").write_text(json.dumps(TINY_CLIP_CONFIG, indent=2))


def _t5_training_text(prompts_dir: Path) -> list[str]:
    path = prompts_dir / "plain.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"tiny-t5 trains its sentencepiece vocabulary on {path}, which is missing; "
            "set SD_BRIDGE_PROMPTS to the folder holding plain.jsonl"
        )
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line)["prompt"].strip() for line in fh if line.strip()]


def train_t5_vocab(lines: list[str], vocab_size: int = T5_VOCAB_SIZE) -> list[tuple[str, float]]:
    """Train a unigram sentencepiece model (T5's tokenizer type) and return its (piece, score) list."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buf, vocab_size=vocab_size, model_type="unigram",
        # T5's id layout: <pad>=0, </s>=1, <unk>=2, no BOS.
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        character_coverage=1.0, num_threads=1, minloglevel=2,
    )
    proc = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    return [(proc.id_to_piece(i), proc.get_score(i)) for i in range(proc.get_piece_size())]


def _build_t5(out: Path, prompts_dir: Path) -> None:
    from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer

    vocab = train_t5_vocab(_t5_training_text(prompts_dir))
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=512)
    _seed()
    model = T5ForConditionalGeneration(
        T5Config(
            vocab_size=len(vocab), d_model=32, d_ff=64, d_kv=8, num_layers=2, num_decoder_layers=2, num_heads=4,
            feed_forward_proj="gated-gelu", tie_word_embeddings=False,  # flan-t5's T5 v1.1 layout
            decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
        )
    )
    model.generation_config.decoder_start_token_id = 0
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def build(preset: Preset, out: Path, prompts_dir: Path | None = None) -> Path:
    """Build a tiny preset into `out` atomically (a temp dir renamed into place) and return `out`."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if isinstance(preset, PipelinePreset):
            _build_pipeline(preset, tmp)
        elif isinstance(preset, ScorerPreset):
            _build_clip(tmp)
        elif isinstance(preset, RewriterPreset):
            _build_t5(tmp, prompts_dir or default_prompts_dir())
        else:  # pragma: no cover - presets are one of the three kinds
            raise TypeError(preset)
        (tmp / "tiny_preset.json").write_text(json.dumps({"name": preset.name, "revision": preset.revision}))
        try:
            tmp.rename(out)
        except OSError:
            # Another process built it first: keep theirs (identical by construction).
            if not out.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
