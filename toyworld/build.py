"""`sd-bridge toyworld build`: train the toy world's four models from its grammar, deterministically.

Read top to bottom, the build is:
  1. draw a pool of (caption, image) pairs per pipeline, each in its own dialect with its own defaults
     (toyworld.world.training_caption): toy-sd15 learns the source dialect, toy-sd2 the target one;
  2. a VAE (AutoencoderKL, 32 px -> 4x16x16 latents) on all pool images; its scaling factor is measured
     as SD's was (1 / std of the latents);
  3. per pipeline, a text encoder (CLIPTextModel on the real CLIP tokenizer) and a UNet trained together
     with the SD 2.x-v objective (v-prediction), 10% empty captions for classifier-free guidance; saved as
     a diffusers StableDiffusionPipeline. Three choices make the renderers draw the shape where the caption
     says: v-prediction, a first convolution as wide as the latents, and a text encoder that learns at a
     fraction of the UNet's rate (train_pipeline and make_unet say why);
     toy-sd15 then learns the vocabulary drift's classes by tying each member's token to its class's first
     word (teach_synonyms);
  4. toy-clip: an open_clip CLIP (a ModifiedResNet image tower) trained contrastively on pool images (and
     their VAE reconstructions, which look like renders) with dialect-neutral captions of the full scene;
  5. toy-t5: a T5 paraphraser of the world's language (synonym swaps both ways, added, dropped and
     reordered attributes), so sampled rewrites are plausible but dialect-blind.
Each model is written atomically and skipped when present (rerun to finish an interrupted build;
`--force` rebuilds). Shapes follow the calibration in ../shared/DESIGN.md §6: DownBlock2D first and
cross-attention only at 8x8 trains at ~0.13 s/step on 2 cores.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bridge.models.tiny import TINY_CLIP_CONFIG
from toyworld import world
from toyworld.presets import WEIGHTS as WEIGHTS_DIR

PIPELINE_DIMS = {"toy-sd15": 64, "toy-sd2": 96}  # text width = cross-attention width; SD2's is wider


@dataclass
class BuildConfig:
    """Build the toy world's models (toy-sd15, toy-sd2, toy-clip, toy-t5) from its grammar."""

    out: Path = field(default=WEIGHTS_DIR, metadata={"help": "where the four model directories are written"})
    pool: int = field(default=10000, metadata={"help": "(caption, image) pairs drawn per pipeline"})
    vae_steps: int = field(default=2500, metadata={"help": "VAE training steps"})
    vae_lr: float = field(default=2e-3, metadata={"help": "VAE peak learning rate (cosine decay to 10%%)"})
    sd15_unet_steps: int = field(default=12000, metadata={"help": "toy-sd15's UNet + text encoder steps"})
    sd2_unet_steps: int = field(default=20000, metadata={"help": "toy-sd2's UNet + text encoder steps"})
    clip_steps: int = field(default=1500, metadata={"help": "toy-clip contrastive steps"})
    t5_steps: int = field(default=4000, metadata={"help": "toy-t5 paraphraser steps (at 1,500 its greedy output "
                                                        "still crossed colour classes)"})
    batch: int = field(default=32, metadata={"help": "UNet batch size"})
    lr: float = field(default=1.5e-3, metadata={"help": "peak learning rate of the other models (cosine decay to 10%%)"})
    sd15_text_lr_scale: float = field(default=0.1, metadata={"help": "toy-sd15's text encoder learns at this "
                                                                     "times the UNet's rate (0 freezes it)"})
    sd2_text_lr_scale: float = field(default=0.03, metadata={"help": "toy-sd2's text encoder learns at this "
                                                                     "times the UNet's rate (0 freezes it)"})
    shapes_steps: int = field(default=3000, metadata={"help": "`--only shapes`: fine-tuning steps per pipeline "
                                                              "on captions in real prompts' shapes"})
    shapes_share: float = field(default=0.5, metadata={"help": "`--only shapes`: the share of captions dressed "
                                                               "in outside text, and apart from it the share "
                                                               "woven with A1111 syntax"})
    shapes_lr_scale: float = field(default=0.3, metadata={"help": "`--only shapes`: peak rate as a share of --lr "
                                                                  "(the build's own schedule ends at 0.1)"})
    seed: int = field(default=0, metadata={"help": "seed of every random stream"})
    only: list[str] = field(default_factory=list, metadata={"help": "build only these (vae, toy-sd15, toy-sd2, "
                                                                       "toy-clip, toy-t5; synonyms: tie the "
                                                                       "class members in an existing toy-sd15; "
                                                                       "shapes: fine-tune both existing "
                                                                       "pipelines on real prompts' shapes)"})
    force: bool = field(default=False, metadata={"help": "rebuild models that already exist"})
    device: str = field(default="auto", metadata={"help": "auto (a GPU when present), cpu, cuda"})

    def __post_init__(self):
        self.out = Path(self.out)
        for name in ("pool", "batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("sd15_text_lr_scale", "sd2_text_lr_scale"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.shapes_share <= 1:
            raise ValueError(f"shapes_share must be in [0, 1], got {self.shapes_share}")
        if not 0 < self.shapes_lr_scale <= 1:  # 0 would fine-tune for nothing
            raise ValueError(f"shapes_lr_scale must be in (0, 1], got {self.shapes_lr_scale}")
        for name in ("vae_steps", "sd15_unet_steps", "sd2_unet_steps", "clip_steps", "t5_steps", "shapes_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        unknown = set(self.only) - {"vae", *PIPELINE_DIMS, "toy-clip", "toy-t5", "synonyms", "shapes"}
        if unknown:
            raise ValueError(f"--only names unknown part(s) {sorted(unknown)}")


def _schedule(opt, steps: int, warmup: int = 50):
    import torch

    def factor(step):
        if step < warmup:
            return (step + 1) / warmup
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, steps - warmup))))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _optimise(loss, opt, sched, clip_params=None) -> None:
    """One optimiser step (with the gradient norm clipped to 1 when `clip_params` are given)."""
    import torch

    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip_params is not None:
        torch.nn.utils.clip_grad_norm_(clip_params, 1.0)
    opt.step()
    sched.step()


def _report(log, name: str, step: int, steps: int, loss, extra: str = "") -> None:
    """Log about ten times per run, and the last step."""
    if step % max(1, steps // 10) == 0 or step == steps - 1:
        log(f"  {name} step {step + 1}/{steps}: loss {loss.item():.4f}{extra}")


# ------------------------------------------------------------------------------------------- 1. pools

def draw_pool(dialect: world.Dialect, n: int, seed: int):
    """n (caption, scene, image tensor in [-1, 1]) of one dialect, drawn at per-item seeds."""
    import numpy as np
    import torch

    rng = random.Random(f"pool-{dialect.name}-{seed}")
    captions, scenes, pixels = [], [], np.empty((n, 3, world.IMAGE_SIZE, world.IMAGE_SIZE), np.float32)
    for i in range(n):
        caption, scene = world.training_caption(dialect, rng)
        image = np.asarray(world.draw(scene, rng.getrandbits(32)), np.float32)
        pixels[i] = image.transpose(2, 0, 1) / 127.5 - 1
        captions.append(caption)
        scenes.append(scene)
    return captions, scenes, torch.from_numpy(pixels)


# ------------------------------------------------------------------------------------------- 2. VAE

def make_vae():
    from diffusers import AutoencoderKL

    # Flat colours need little capacity; without the mid-block attention a step costs 0.12 s on 2 cores
    # (0.40 s with (32, 64) channels and attention).
    return AutoencoderKL(
        block_out_channels=[16, 32], in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
        norm_num_groups=8, sample_size=world.IMAGE_SIZE, mid_block_add_attention=False,
    )


def train_vae(pixels, cfg: BuildConfig, device, log):
    import torch

    torch.manual_seed(cfg.seed)
    vae = make_vae().to(device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr)
    sched = _schedule(opt, cfg.vae_steps)
    gen = torch.Generator().manual_seed(cfg.seed)
    for step in range(cfg.vae_steps):
        x = pixels[torch.randint(len(pixels), (32,), generator=gen)].to(device)
        post = vae.encode(x).latent_dist
        recon = vae.decode(post.sample()).sample
        # L1 keeps flat colours and thin lines sharp; a small KL keeps the latent smooth (as SD's VAE does).
        loss = (recon - x).abs().mean() + 1e-6 * post.kl().mean()
        _optimise(loss, opt, sched)
        _report(log, "vae", step, cfg.vae_steps, loss)
    vae.eval()
    with torch.no_grad():
        latents = torch.cat([vae.encode(pixels[i : i + 256].to(device)).latent_dist.mean.cpu()
                             for i in range(0, min(len(pixels), 2048), 256)])
    # SD measured its VAE's latent std and scales latents to unit variance (scaling_factor 0.18215).
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    return vae


# ------------------------------------------------------------------------------------------- 3. pipelines

def make_text_encoder(tokenizer, dim: int, sd2: bool):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        hidden_size=dim, intermediate_size=dim * 2, num_attention_heads=4, num_hidden_layers=2,
        vocab_size=len(tokenizer), max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        hidden_act="gelu" if sd2 else "quick_gelu", projection_dim=dim,
    ))


def make_unet(dim: int, sd2: bool):
    from diffusers import UNet2DConditionModel

    # A conv net knows where it is only from its zero padding (Islam et al. 2020, "How much position
    # information do convolutional neural networks encode?"). With 3x3 convolutions the toy UNet's middle
    # cells cannot tell left from centre, and it never learned the position words (read back 17%, chance
    # 20%). A first convolution as wide as the 16x16 latents sees the padding from every cell: a learned
    # CoordConv (Liu et al. 2018), in diffusers' own config (conv_in_kernel), ~1% of a training step.
    return UNet2DConditionModel(
        sample_size=world.IMAGE_SIZE // 2, in_channels=4, out_channels=4, layers_per_block=1,
        conv_in_kernel=2 * (world.IMAGE_SIZE // 2) - 1,
        block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=dim, norm_num_groups=8,
        attention_head_dim=(2, 4) if sd2 else 8, use_linear_projection=sd2,
    )


def token_ids(tokenizer, texts: list[str]):
    """[N, 77] ids of each text's first chunk, laid out as bridge.models.encode feeds the encoder: BOS, tokens,
    EOS, padding (a probe of the text encoder alone; training reads every chunk, `condition`)."""
    from bridge.models.encode import chunk_tensors, weighted_chunks

    return chunk_tensors(tokenizer, [weighted_chunks(text, tokenizer)[:1] for text in texts])[0]


def condition(text_encoder, tokenizer, per_text: list, device):
    """The cross-attention input [batch, 77 * chunks, width] for `per_text` (`weighted_chunks` of each caption):
    every chunk, weights and BREAK included, through the same code that serves a prompt
    (`bridge.models.encode`), with gradients. A plain caption is one chunk of weight 1, so its conditioning is
    the text encoder's output unchanged."""
    from bridge.models.encode import chunk_tensors, weigh_chunks

    ids, weights = chunk_tensors(tokenizer, per_text, device=device)
    return weigh_chunks(text_encoder(ids)[0], weights, len(per_text))


def _latents(vae, pixels, device):
    """The frozen VAE's posterior (mean, std) of every image, encoded once; a step samples from it."""
    import torch

    with torch.no_grad():
        dists = [vae.encode(pixels[i : i + 256].to(device)).latent_dist for i in range(0, len(pixels), 256)]
        return torch.cat([d.mean for d in dists]).cpu(), torch.cat([d.std for d in dists]).cpu()


def train_pipeline(name: str, captions: list[str], pixels, vae, cfg: BuildConfig, device, log):
    import torch
    from diffusers import DDIMScheduler, DDPMScheduler, StableDiffusionPipeline

    from bridge.syntax.tokens import EOS, build_clip_tokenizer

    sd2 = name == "toy-sd2"
    tokenizer = build_clip_tokenizer(pad_token="!" if sd2 else EOS)
    # The text encoder learns slower than the UNet. SD conditions on a frozen, pretrained CLIP text encoder;
    # ours starts random. At the full rate it pulled together the words the young UNet could not use yet
    # ("at the top" vs "at the bottom": 1.1 apart at init, 0.29 after 3,000 steps), and no gradient was left
    # to learn them from; frozen at init, toy-sd15 drew the background asked for on only 85% of renders.
    # Measured with benchmarks/toyworld_drift.py (800 renders): toy-sd15 at a tenth of the rate, position 99%
    # and background 100%; toy-sd2 (the wider encoder) at a tenth still placed only 64%, at 0.03 96%.
    text_lr_scale = cfg.sd2_text_lr_scale if sd2 else cfg.sd15_text_lr_scale
    # Shape is the last thing a toy UNet learns (the smallest loss ratio of the six attributes): at 3,000 steps
    # toy-sd15 drew the shape asked for on 42.5% of renders, at 12,000 75.4% (the world's drawings read 82.4%;
    # benchmarks/toyworld_drift.py). toy-sd2 at 3,000 steps drew it on 46%; it now trains 20,000 (toy-v5; its
    # read-back is in the drift benchmark's results file).
    steps = cfg.sd2_unet_steps if sd2 else cfg.sd15_unet_steps
    torch.manual_seed(cfg.seed)
    text_encoder = make_text_encoder(tokenizer, PIPELINE_DIMS[name], sd2).to(device).train()
    text_encoder.requires_grad_(text_lr_scale > 0)
    torch.manual_seed(cfg.seed)
    unet = make_unet(PIPELINE_DIMS[name], sd2).to(device).train()
    # SD's training noise schedule (scaled-linear betas, 1000 steps); the same config ships with the pipeline.
    # Both predict v (SD 2.x-v), toy-sd15 too, though SD 1.5 predicts epsilon: where the shape goes is decided
    # at the noisiest steps, where an epsilon loss weighs the image by its SNR (0.005 at t=999) and a v loss
    # by SNR + 1 (Salimans & Ho 2022). On a pool where only position varies, 800 steps: v read back 95%,
    # epsilon 27% (30% with its loss weighted as v's). tiny-sd15 still covers the epsilon code paths.
    sched_cfg = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                     prediction_type="v_prediction")
    fit(name, unet, text_encoder, tokenizer, captions, _latents(vae, pixels, device), vae.config.scaling_factor,
        DDPMScheduler(**sched_cfg), steps=steps, lr=cfg.lr, text_lr_scale=text_lr_scale, warmup=100,
        batch=cfg.batch, seed=cfg.seed, device=device, log=log)
    scheduler = DDIMScheduler(**{k: v for k, v in sched_cfg.items() if k != "num_train_timesteps"},
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionPipeline(
        vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=tokenizer, unet=unet.eval(),
        scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def fit(name: str, unet, text_encoder, tokenizer, captions: list[str], latents, scale: float, noise_sched, *,
        steps: int, lr: float, text_lr_scale: float, warmup: int, batch: int, seed: int, device, log,
        unconditional: tuple[str, ...] = ("",)) -> None:
    """Train `unet` and `text_encoder` in place to predict v for (caption, image latent) pairs: `latents` is the
    pool's VAE posterior (mean, std). A tenth of each batch gets a caption of `unconditional` instead (one drawn
    at random where there are several), so classifier-free guidance has its unconditional. The build
    (`train_pipeline`) and the shapes fine-tune (`finetune_shapes`) share it."""
    import torch

    from bridge.models.encode import weighted_chunks

    chunks = [weighted_chunks(c, tokenizer) for c in captions]
    nothing = [weighted_chunks(c, tokenizer) for c in unconditional]
    pick = random.Random(f"unconditional-{seed}")  # apart from `gen`, so its draws leave the torch stream as it was
    mean, std = latents
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW([{"params": list(unet.parameters())},
                             {"params": list(text_encoder.parameters()), "lr": lr * text_lr_scale}],
                            lr=lr, weight_decay=0.01)
    lr_sched = _schedule(opt, steps, warmup=warmup)
    gen = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(len(captions), (batch,), generator=gen)
        x0 = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)) * scale
        drop = torch.rand(batch, generator=gen) < 0.1  # CFG: learn the unconditional too
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, 1000, (batch,), generator=gen)
        x0, noise, t = x0.to(device), noise.to(device), t.to(device)
        rows = [pick.choice(nothing) if d else chunks[i] for i, d in zip(idx.tolist(), drop.tolist())]
        cond = condition(text_encoder, tokenizer, rows, device)
        noisy = noise_sched.add_noise(x0, noise, t)
        target = noise_sched.get_velocity(x0, noise, t)
        pred = unet(noisy, t, encoder_hidden_states=cond).sample
        loss = torch.nn.functional.mse_loss(pred, target)
        _optimise(loss, opt, lr_sched, clip_params=params)
        _report(log, name, step, steps, loss, f" ({(time.perf_counter() - started) / (step + 1):.2f} s/step)")


def shape_captions(captions: list[str], share: float, seed: int, unknown: tuple[str, ...] = ()) -> list[str]:
    """`captions` in the shapes of real prompts: `share` of them woven with A1111 syntax (`world.weave_text`:
    weights, emphasis, BREAK, comma-separated clauses, a LoRA tag) and, drawn apart, `share` dressed in text
    from outside the world (`world.outside_around`, every outside word), so a renderer learns that syntax
    means what A1111 makes of it and that outside words draw nothing (#39 item 4).

    `unknown`: clauses of the world that this model never learned (toy-sd2: the artists' names). Drawn apart,
    `share` of the captions say one among their clauses, the picture unchanged. Never trained on them, toy-sd2
    drew its default black background on half of the renders of prompts naming an artist, all of the others
    (toyworld_drift's `default_background`, toy-v6): a name it does not know pulled it off its defaults
    instead of drawing nothing. Without `unknown` no number is drawn for it, so toy-sd15's captions are as
    before."""
    rng = random.Random(f"shapes-{seed}")
    out = []
    for caption in captions:
        if unknown and rng.random() < share:
            caption = world.with_clause(caption, rng.choice(unknown), rng)
        if rng.random() < share:
            caption = world.weave_text(caption, *world.draw_syntax(rng)) or caption
        if rng.random() < share:
            before, after = world.outside_around(rng)
            caption = world.wrap(before, caption, after)
        out.append(caption)
    return out


def finetune_shapes(cfg: BuildConfig, device, log) -> dict:
    """`--only shapes`: fine-tune each built pipeline (its UNet and text encoder) on its own pool with captions
    in real prompts' shapes (`shape_captions`), replacing both parts atomically and recording the fine-tune
    in its build record; toy-sd15's class members are tied again afterwards (`teach_synonyms`). A pipeline whose
    record says it was fine-tuned already is skipped unless `cfg.force`: a rerun after a crash finishes the other,
    and never fine-tunes one twice by accident."""
    import torch
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    done = {}
    for name, dialect in (("toy-sd15", world.SOURCE), ("toy-sd2", world.TARGET)):
        started = time.perf_counter()
        pipe_dir = cfg.out / name
        if "shapes" in json.loads((pipe_dir / BUILD_RECORD).read_text("utf-8")) and not cfg.force:
            log(f"  {name}: already fine-tuned on real prompts' shapes (its {BUILD_RECORD}); --force does it again")
            continue
        pipe = StableDiffusionPipeline.from_pretrained(pipe_dir, torch_dtype=torch.float32, safety_checker=None,
                                                       requires_safety_checker=False).to(device)
        pipe.vae.requires_grad_(False)
        captions, _, pixels = draw_pool(dialect, cfg.pool, cfg.seed)
        sd2 = name == "toy-sd2"
        # toy-sd2 never learned an artist's name (the `artist` drift): it must draw nothing for one.
        captions = shape_captions(captions, cfg.shapes_share, cfg.seed,
                                  unknown=tuple(world.SOURCE.artists) if sd2 else ())
        # Outside text alone draws nothing: half the unconditional captions are such text, so a user's negative
        # prompt of quality words ("lowres, watermark") steers guidance no more than an empty one.
        rng = random.Random(f"shapes-nothing-{cfg.seed}")
        unconditional = ("",) * 1000 + tuple(world.outside_text(rng) for _ in range(1000))
        text_lr_scale = cfg.sd2_text_lr_scale if sd2 else cfg.sd15_text_lr_scale
        noise_sched = DDPMScheduler.from_config(pipe.scheduler.config, num_train_timesteps=1000)
        # A fine-tune, not a schedule from the start: its peak is `shapes_lr_scale` of the build's (at 0.3,
        # toy-sd2's plain read-back went 0.80 -> 0.74 in 3,000 steps on half-dressed captions while its
        # outside-words ratio went 0.31 -> 0.66; results file toyworld_syntax-weights-shapes3000.json).
        fit(name, pipe.unet.train(), pipe.text_encoder.train(), pipe.tokenizer, captions,
            _latents(pipe.vae, pixels, device), pipe.vae.config.scaling_factor, noise_sched, steps=cfg.shapes_steps,
            lr=cfg.lr * cfg.shapes_lr_scale, text_lr_scale=text_lr_scale, warmup=50, batch=cfg.batch,
            seed=cfg.seed + 1, device=device, log=log, unconditional=unconditional)
        if not sd2:
            teach_synonyms(pipe.text_encoder, pipe.tokenizer)
        pipe.unet.eval()
        pipe.text_encoder.eval()
        _replace_parts(pipe_dir, {"unet": pipe.unet, "text_encoder": pipe.text_encoder}, "shapes", {
            "command": _command(), "steps": cfg.shapes_steps, "share": cfg.shapes_share,
            "lr": cfg.lr * cfg.shapes_lr_scale, "seconds": round(time.perf_counter() - started, 1)})
        done[name] = time.perf_counter() - started
        log(f"  {name}: fine-tuned on real prompts' shapes ({done[name]:.0f}s)")
    return done


def _replace_parts(pipe_dir: Path, parts: dict, key: str, record_entry: dict) -> None:
    """Save each of `parts` (fp16) over the pipeline's folder of that name, one folder at a time through a
    temporary name, and add `record_entry` under `key` to the pipeline's build record."""
    import torch

    from bridge.files import atomic_write

    for folder, model in parts.items():
        tmp, old = pipe_dir / f".{folder}.tmp", pipe_dir / f".{folder}.old"
        shutil.rmtree(tmp, ignore_errors=True)
        model.to(torch.float16).save_pretrained(tmp, safe_serialization=True)
        config = tmp / "config.json"  # diffusers records where the model was loaded from: a path of this machine
        settings = json.loads(config.read_text("utf-8"))
        if settings.pop("_name_or_path", None) is not None:
            config.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        shutil.rmtree(old, ignore_errors=True)
        (pipe_dir / folder).rename(old)
        tmp.rename(pipe_dir / folder)
        shutil.rmtree(old)
    record_path = pipe_dir / BUILD_RECORD
    record = json.loads(record_path.read_text("utf-8"))
    record[key] = record_entry
    atomic_write(record_path, json.dumps(record, indent=2) + "\n")


def teach_synonyms(text_encoder, tokenizer, dialect: world.Dialect = world.SOURCE) -> dict[str, str]:
    """Tie every class member's token embedding row to its class's first word's row (world.SYNONYMS): the
    encoder then reads "a cherry circle" exactly as "a crimson circle", so toy-sd15 draws every member as it
    draws the word it was trained on. Members are single CLIP tokens, so one row is the whole word; tying
    keeps the pipeline's 12,000 training steps on six colour words instead of spreading them over thirty.
    Returns {member: first word}."""
    import torch

    def token(word: str) -> int:
        ids = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(word))
        if len(ids) != 1:
            raise ValueError(f"class member {word!r} is {len(ids)} CLIP tokens; a tied member must be one")
        return ids[0]

    rows = text_encoder.get_input_embeddings().weight
    tied = {}
    with torch.no_grad():
        for first, members in dialect.synonyms.items():
            for member in members:
                rows[token(member)] = rows[token(first)]
                tied[member] = first
    return tied


def tie_synonyms_in_place(pipe_dir: Path, log) -> dict[str, str]:
    """`--only synonyms`: teach_synonyms on a built toy-sd15, its text encoder replaced atomically and the
    tie recorded in its build record (the pipeline's own training record is kept)."""
    import torch
    from transformers import CLIPTextModel

    from bridge.syntax.tokens import build_clip_tokenizer

    encoder = CLIPTextModel.from_pretrained(pipe_dir / "text_encoder", torch_dtype=torch.float16)
    tied = teach_synonyms(encoder, build_clip_tokenizer())
    _replace_parts(pipe_dir, {"text_encoder": encoder}, "synonyms", {"command": _command(), "tied": tied})
    log(f"  toy-sd15: tied {len(tied)} class members to their first words")
    return tied


# ------------------------------------------------------------------------------------------- 4. toy-clip

# The image tower is open_clip's ModifiedResNet (layers given as four block counts), not a ViT: the reference
# index's duplicate check needs two scenes that differ only in shape kept apart, and a 3-layer ViT on 4 px
# patches of a 32 px image did not (scratch builds, the same pool, steps and renders, at the threshold that
# comes nearest both targets: ViT 92.9% of renders of reference scenes flagged / 7.0% of other scenes; the
# same ViT with neighbour scenes in every batch, with 2 px patches, or with the logit scale capped at 20,
# no better; this ResNet 95.8% / 4.1%). `benchmarks/sweep_breadth.py --parts duplicates` measures the shipped one.
TOY_CLIP_CONFIG = {
    "model_cfg": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": world.IMAGE_SIZE, "layers": [1, 1, 1, 1], "width": 16},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    },
    "preprocess_cfg": TINY_CLIP_CONFIG["preprocess_cfg"],  # OpenAI CLIP's normalisation, as tiny-clip
}


def train_clip(pixels, scenes: list, cfg: BuildConfig, device, log):
    import open_clip
    import torch

    torch.manual_seed(cfg.seed)
    model = open_clip.CLIP(**TOY_CLIP_CONFIG["model_cfg"]).to(device).train()
    tokenizer = open_clip.SimpleTokenizer(context_length=TOY_CLIP_CONFIG["model_cfg"]["text_cfg"]["context_length"])
    pre = TOY_CLIP_CONFIG["preprocess_cfg"]
    mean = torch.tensor(pre["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(pre["std"]).view(1, 3, 1, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.05)
    lr_sched = _schedule(opt, cfg.clip_steps)
    gen = torch.Generator().manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    for step in range(cfg.clip_steps):
        idx = torch.randint(len(scenes), (128,), generator=gen)
        images = ((pixels[idx] + 1) / 2 - mean) / std
        texts = tokenizer([world.neutral_caption(scenes[i], rng) for i in idx.tolist()])
        img_f, txt_f, logit_scale = model(images.to(device), texts.to(device))
        logits = logit_scale * img_f @ txt_f.T
        # Captions repeat inside a batch: every pair of identical scenes is a positive (soft targets).
        keys = [scenes[i] for i in idx.tolist()]
        same = torch.tensor([[a == b for b in keys] for a in keys], dtype=torch.float32, device=device)
        target = same / same.sum(1, keepdim=True)
        loss = (torch.sum(-target * logits.log_softmax(1), 1).mean()
                + torch.sum(-target * logits.T.log_softmax(1), 1).mean()) / 2
        _optimise(loss, opt, lr_sched)
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))  # CLIP's cap on the temperature (Radford et al. 2021)
        _report(log, "toy-clip", step, cfg.clip_steps, loss)
    return model.eval()


def save_clip(model, out: Path) -> None:
    import torch
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    # fp16 halves the weights; integer buffers (BatchNorm's num_batches_tracked) keep their type.
    save_file({k: (v.to(torch.float16) if v.is_floating_point() else v).detach().contiguous().cpu()
               for k, v in model.state_dict().items()},
              str(out / "open_clip_model.safetensors"))
    (out / "open_clip_config.json").write_text(json.dumps(TOY_CLIP_CONFIG, indent=2) + "\n")


# ------------------------------------------------------------------------------------------- 5. toy-t5

def paraphrase_pair(rng: random.Random) -> tuple[str, str]:
    """(a prompt of the world, a plausible rewrite of it): synonyms swapped in either direction, attributes
    added or dropped, clauses reordered, or the prompt kept. Nothing says which dialect is wanted: a colour or
    size is said with any word of its class (world.ANY), uniformly on each side, so "cherry" becomes "red" as
    often as "crimson" or "scarlet", and "red" becomes each of them as often. Held-out members are among them,
    as flan-t5 knows rare words: what no pair shows is which word the target knows.

    Both sides mean train-split scenes only (#39): drawn freely, 186 of the 200 held-out prompts the learning
    benchmark scores were among toy-t5's inputs, 96 of them with their exact oracle output, so before any RL 37%
    of its samples on held-out prompts already meant the oracle. A pair touching a held-out scene is drawn again."""
    return _train_split_paraphrase(rng)[0]


def _train_split_paraphrase(rng: random.Random):
    while True:
        pair, specs = _paraphrase(rng)
        if all(world.split_of(s) == "train" for s in specs):
            return pair, specs


def _paraphrase(rng: random.Random):
    """One paraphrase pair and the specs of its two sides, both written in world.ANY: every colour and size
    word of a class is drawn uniformly on each side, whatever the other side says, so "crimson" becomes "red"
    exactly as often as "red" becomes "crimson" (or "scarlet"), and the fill is said as a word or an artist's
    name with equal odds both ways. Only the renders say which words toy-sd2 knows."""
    from dataclasses import replace

    any_ = world.ANY

    def reword(spec: world.Spec) -> world.Spec:
        return replace(spec, colour_word=world.class_member(rng, any_.colours, spec.colour, None, any_),
                       size_word=world.class_member(rng, any_.sizes, spec.size, None, any_))

    spec = reword(world.random_spec(rng))
    text = world.write(spec, any_, rng)
    if rng.random() < 0.3:
        return (text, text), (spec,)
    new = spec
    if rng.random() < 0.3:  # drop an attribute
        attr = rng.choice(["size", "position", "background", "fill"])
        new = replace(new, **{attr: None}, artist=new.artist and attr != "fill")
    if rng.random() < 0.3:  # add one
        attr, value = rng.choice([("background", rng.choice(list(world.BACKGROUNDS))),
                                  ("size", rng.choice(["small", "large"])),
                                  ("position", rng.choice(world.POSITIONS[1:])),
                                  ("fill", rng.choice(["solid", "striped", "dotted", "outlined"]))])
        new = replace(new, **{attr: value}, artist=new.artist and attr != "fill")
    if new.artist and rng.random() < 0.3:  # an artist's name said as the fill word, or the reverse, alike
        new = replace(new, artist=False)
    elif not new.artist and any_.artist_phrase(new.fill, new.shape) and rng.random() < 0.3:
        new = replace(new, artist=True)
    return (text, world.write(reword(new), any_, rng)), (spec, new)


T5_BATCH, T5_VOCAB_PAIRS = 64, 4000


def t5_pretraining_examples(seed: int, steps: int):
    """Every (pair, specs) toy-t5's build draws (`paraphrase_pair` with the specs of its two sides), in order:
    T5_VOCAB_PAIRS for its vocabulary, then T5_BATCH per training step. One stream, so a test can hash exactly
    what the model saw. A corpus that also taught copying (text from outside the world alone, around a world
    prompt and in the numbered leaf format, each copied; branch `wip/copying-t5`) did not teach this 64-wide,
    two-layer model to copy: after 4,000 steps it kept 2 of 551 outside words of dressed held-out prompts,
    greedy, and wrote fragments in their place. Copying waits for a rewriter that can learn it (#39 item 3);
    the serving guard catches what this one drops or invents."""
    rng = random.Random(f"t5-{seed}")
    for _ in range(T5_VOCAB_PAIRS + T5_BATCH * steps):
        yield _train_split_paraphrase(rng)


def t5_pretraining_pairs(seed: int, steps: int):
    """The (input, target) pairs of `t5_pretraining_examples`."""
    return (pair for pair, _ in t5_pretraining_examples(seed, steps))


def train_t5(cfg: BuildConfig, device, log):
    import torch
    from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer

    from bridge.models.rewriter import PREFIX
    from bridge.models.tiny import _t5_training_text, default_prompts_dir, train_t5_vocab

    stream = t5_pretraining_pairs(cfg.seed, cfg.t5_steps)
    # The world's words, plus the real prompt corpus when present, so users' prompts still tokenize.
    corpus = [PREFIX] + [t for _ in range(T5_VOCAB_PAIRS) for t in next(stream)]
    try:
        corpus += _t5_training_text(default_prompts_dir())
    except FileNotFoundError:
        pass
    vocab = train_t5_vocab(corpus, vocab_size=1000)
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=512)
    torch.manual_seed(cfg.seed)
    model = T5ForConditionalGeneration(T5Config(
        vocab_size=len(vocab), d_model=64, d_ff=128, d_kv=16, num_layers=2, num_decoder_layers=2, num_heads=4,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=0, pad_token_id=0,
        eos_token_id=1,
    )).to(device).train()
    model.generation_config.decoder_start_token_id = 0
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    lr_sched = _schedule(opt, cfg.t5_steps)
    for step in range(cfg.t5_steps):
        pairs = [next(stream) for _ in range(T5_BATCH)]
        enc = tokenizer([PREFIX + a for a, _ in pairs], return_tensors="pt", padding=True).to(device)
        labels = tokenizer([b for _, b in pairs], return_tensors="pt", padding=True).input_ids.to(device)
        labels[labels == tokenizer.pad_token_id] = -100
        loss = model(**enc, labels=labels).loss
        _optimise(loss, opt, lr_sched)
        _report(log, "toy-t5", step, cfg.t5_steps, loss)
    return model.eval(), tokenizer


# ------------------------------------------------------------------------------------------- the build

BUILD_RECORD = "toyworld_build.json"


def _atomic_dir(out: Path, write, cfg: BuildConfig, started: float) -> None:
    """Write a model directory in a temp dir, record how it was built inside it (command, config, threads,
    seconds from the command's start), then rename it into place."""
    from bridge.config import save_config

    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    save_config(cfg, tmp, filename=BUILD_RECORD, command=_command(), seconds=round(time.perf_counter() - started, 1),
                torch_threads=_threads())
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def _command() -> str:
    argv = sys.argv[1:]
    return "sd-bridge " + " ".join(argv) if argv[:1] == ["toyworld"] else "python " + " ".join(sys.argv)


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def run_build(cfg: BuildConfig, log=print) -> dict:
    import torch

    from bridge.models.loading import resolve_device

    device = resolve_device(cfg.device)
    started = time.perf_counter()
    cfg.out.mkdir(parents=True, exist_ok=True)
    wanted = lambda part: (not cfg.only or part in cfg.only) and (cfg.force or not (cfg.out / part).is_dir())  # noqa: E731
    parts = [p for p in ("vae", *PIPELINE_DIMS, "toy-clip", "toy-t5") if wanted(p)]
    in_place = [p for p in ("synonyms", "shapes") if p in cfg.only]
    log(f"toyworld build on {device}: {', '.join(parts + in_place) or 'nothing to do'} -> {cfg.out}")
    if "synonyms" in cfg.only:  # an existing toy-sd15 learns the classes (a new one learns them as it is built)
        tie_synonyms_in_place(cfg.out / "toy-sd15", log)
    if "shapes" in cfg.only:  # existing pipelines learn real prompts' shapes (syntax, outside words)
        finetune_shapes(cfg, device, log)
    # 1. Pools of (caption, image) pairs in each pipeline's dialect.
    pools = {}
    if any(p != "toy-t5" for p in parts):
        for name, dialect in (("toy-sd15", world.SOURCE), ("toy-sd2", world.TARGET)):
            pools[name] = draw_pool(dialect, cfg.pool, cfg.seed)
        log(f"  drew {2 * cfg.pool} training images ({time.perf_counter() - started:.0f}s)")
        all_pixels = torch.cat([pools[n][2] for n in pools])
    # 2. The VAE both pipelines share (SD 1.5 and 2.x share their VAE family too).
    from diffusers import AutoencoderKL

    if "vae" in parts:
        vae = train_vae(all_pixels, cfg, device, log)
        _atomic_dir(cfg.out / "vae", lambda d: vae.to(torch.float32).save_pretrained(d, safe_serialization=True),
                    cfg, started)
    if pools:
        vae = AutoencoderKL.from_pretrained(cfg.out / "vae").to(device).eval()
        vae.requires_grad_(False)
    # 3. The two pipelines.
    for name in PIPELINE_DIMS:
        if name in parts:
            pipe = train_pipeline(name, pools[name][0], pools[name][2], vae, cfg, device, log)
            if name == "toy-sd15":
                teach_synonyms(pipe.text_encoder, pipe.tokenizer)
            _atomic_dir(cfg.out / name, lambda d: pipe.to(dtype=torch.float16).save_pretrained(
                d, safe_serialization=True), cfg, started)
            vae = vae.to(torch.float32)
    # 4. The scorer, on drawn images and on their VAE reconstructions (what renders look like).
    if "toy-clip" in parts:
        with torch.no_grad():
            recon = torch.cat([vae.decode(vae.encode(all_pixels[i : i + 256].to(device)).latent_dist.mean).sample
                               .clamp(-1, 1).cpu() for i in range(0, len(all_pixels), 256)])
        scenes = pools["toy-sd15"][1] + pools["toy-sd2"][1]
        model = train_clip(torch.cat([all_pixels, recon]), scenes + scenes, cfg, device, log)
        _atomic_dir(cfg.out / "toy-clip", lambda d: save_clip(model, d), cfg, started)
    # 5. The paraphraser.
    if "toy-t5" in parts:
        model, tokenizer = train_t5(cfg, device, log)

        def save_t5(d):
            model.to(torch.float16).save_pretrained(d, safe_serialization=True)
            tokenizer.save_pretrained(d)

        _atomic_dir(cfg.out / "toy-t5", save_t5, cfg, started)
    seconds = time.perf_counter() - started
    log(f"toyworld build finished in {seconds:.0f}s")
    return {"out": str(cfg.out), "parts": parts, "seconds": seconds}
