"""The real presets at real size, without their weights (#42).

    uv run python -m benchmarks.real_size [--device cpu|cuda] [--work DIR] [--counts-only]

No SD1.5, SD2, CLIP or flan-t5 weights can be downloaded here, so the real presets were exercised only by name:
a wrong config would first show on a user's GPU. This builds every real preset from the configs committed in
`bridge/models/configs/` (bridge.models.architectures) and

1. prints `PRESET COMPONENT params N` per component, counted on the meta device, beside the published count
   where one is known (the UNets and text encoders from the model cards; the SD VAE, OpenAI CLIP ViT-L/14,
   OpenCLIP ViT-H/14 and flan-t5 as their libraries count them), and fails on any difference;
2. writes each with random weights (fp16 files) in its hub repo's layout and runs the real code path once
   through the same loaders a downloaded snapshot goes through: each pipeline renders one image with A1111
   weighting (weights, BREAK, prompt editing) in one denoising step at 64 px and decodes it with its VAE, and
   the preset read from its files must equal the built-in preset (family, native size, prediction type,
   cross-attention width); each scorer embeds that image and a text; each rewriter rewrites a prompt through a
   LoRA adapter; then the reference run, sd15 -> sd2-base scored by vit-h-14 with flan-t5-base, gathers two
   prompts, trains one GRPO step (its reward renders the candidates with the real-size sd2-base at 64 px and one
   step, and scores them with the real-size vit-h-14), checks that the LoRA weights moved and the base did not,
   and translates with the adapter it wrote.

Random weights draw noise and rewrite nonsense: this proves shapes, configs and the code path, not quality. The
last line reads `real presets: N of N ok (counts and one-step path)`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.results import recorded

PIPELINES = ["sd15", "sd2-base", "sd21-base", "sd21"]
SCORERS = ["vit-h-14", "vit-l-14"]
REWRITERS = ["flan-t5-small", "flan-t5-base", "flan-t5-large"]
# Published parameter counts. The four the issue names come from the model cards (SD1.5 and SD2 UNets, their
# text encoders; SD2.1 has SD2's architecture); the VAE, the two CLIPs and flan-t5 are the counts their own
# libraries report (diffusers, open_clip `ViT-L-14`/`ViT-H-14` with logit scale, transformers with flan-t5's
# untied output head).
SD1_UNET, SD2_UNET, SD1_TEXT, SD2_TEXT, SD_VAE = 859_520_964, 865_910_724, 123_060_480, 340_387_840, 83_653_863
PUBLISHED = {
    **{(p, "unet"): SD2_UNET for p in PIPELINES[1:]}, ("sd15", "unet"): SD1_UNET,
    **{(p, "text_encoder"): SD2_TEXT for p in PIPELINES[1:]}, ("sd15", "text_encoder"): SD1_TEXT,
    **{(p, "vae"): SD_VAE for p in PIPELINES},
    ("vit-h-14", "clip"): 986_109_441, ("vit-l-14", "clip"): 427_616_513,
    ("flan-t5-small", "t5"): 76_961_152, ("flan-t5-base", "t5"): 247_577_856, ("flan-t5-large", "t5"): 783_150_080,
}
PROMPT = "a (red:1.3) fox in the [snow:forest:0.5], highly detailed BREAK soft light"
NEGATIVE = "(blurry:1.2), lowres"
# Rates are timed on a prompt as most are, in one chunk with no prompt editing (an edit switches the conditioning
# mid-render, a cost most prompts do not pay): a toy-world prompt for the toy and tiny pipelines.
RATE_PROMPTS = {"real": ("a photo of a red fox in the snow, highly detailed", "blurry, lowres"),
                "world": ("a big azure square by bridget riley", "")}


def counts(log=print) -> list[dict]:
    from bridge.models.architectures import parameter_counts

    rows = []
    for name in PIPELINES + SCORERS + REWRITERS:
        for part, n in parameter_counts(name).items():
            published = PUBLISHED.get((name, part))
            ok = published is None or n == published
            rows.append({"preset": name, "component": part, "params": n, "published": published, "ok": ok})
            log(f"{name} {part} params {n:,}" + ("" if published is None else
                                                  f" (published {published:,}: {'ok' if ok else 'MISMATCH'})"))
    return rows


# ------------------------------------------------------------------------------------------- random builds
def build_random(name: str, out: Path) -> Path:
    """Real preset `name` with random weights, written as its hub repo lays it out (fp16 safetensors), so that
    bridge.models.loading reads it exactly as a downloaded snapshot."""
    import torch

    from bridge.models.architectures import architecture, components

    arch, parts = architecture(name), components(name, device="cpu")
    if arch["kind"] == "pipeline":
        import diffusers
        from diffusers import StableDiffusionPipeline

        from bridge.syntax.tokens import build_clip_tokenizer

        scheduler_cfg = dict(arch["scheduler"])
        scheduler = getattr(diffusers, scheduler_cfg.pop("_class_name")).from_config(scheduler_cfg)
        pipe = StableDiffusionPipeline(
            vae=parts["vae"], text_encoder=parts["text_encoder"], unet=parts["unet"], scheduler=scheduler,
            tokenizer=build_clip_tokenizer(pad_token=arch["tokenizer"]["pad_token"]), safety_checker=None,
            feature_extractor=None, requires_safety_checker=False)
        pipe.to(torch.float16).save_pretrained(out, safe_serialization=True)
    elif arch["kind"] == "scorer":
        from safetensors.torch import save_file

        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.to(torch.float16).contiguous() for k, v in parts["clip"].state_dict().items()}
        save_file(state, str(out / "open_clip_model.safetensors"))
        (out / "open_clip_config.json").write_text(json.dumps(arch["open_clip_config"], indent=2))
    else:
        from benchmarks.inference_backends import rewriter_tokenizer

        parts["t5"].to(torch.float16).save_pretrained(out)
        rewriter_tokenizer("t5").save_pretrained(out)  # flan-t5's own SentencePiece vocabulary
    return out


def _preset(kind: str, name: str, directory: Path):
    """The preset a user gets for the built directory: read from its files, named after the real preset."""
    from bridge.models import presets

    return dataclasses.replace(presets.get_preset(kind, str(directory)), name=name)


# ------------------------------------------------------------------------------------------- one-step path
def render_once(name: str, directory: Path, device: str) -> tuple[dict, object]:
    import numpy as np

    from bridge.models import presets
    from bridge.models.render import Renderer, RenderSettings

    real, built = presets.pipeline(name), _preset("pipeline", name, directory)
    same = {f: (getattr(built, f), getattr(real, f)) for f in ("family", "size", "prediction_type", "text_dim")}
    renderer = Renderer(built, RenderSettings.for_preset(built, steps=1, size=64), device=device)
    started = time.perf_counter()
    image = renderer([PROMPT], [1234], [NEGATIVE])[0]
    pixels = np.asarray(image, dtype=np.float32)
    row = {"preset": name, "seconds": round(time.perf_counter() - started, 2), "image": list(image.size),
           "finite": bool(np.isfinite(pixels).all()), "matches_preset": {f: a == b for f, (a, b) in same.items()}}
    row["ok"] = row["image"] == [64, 64] and row["finite"] and all(row["matches_preset"].values())
    del renderer
    return row, image


RENDER_BATCH = 4  # images per pipeline call in gather, train and eval (their --render-batch default)


def native_rate(preset, device: str, batch: int = RENDER_BATCH, prompts: str = "real") -> float:
    """Seconds per image at the preset's native size and steps on `device`, `batch` images per call: one call of
    1 step and one of 3 (A1111 weighting, guidance on, VAE decode), so that the per-step cost and the fixed cost
    (text encoding, decoding) are both measured; a UNet step costs the same at every step of a render. The real
    presets on a CPU are measured one image at a time: there a UNet step is compute-bound (a batch gains
    nothing), and four 768 px images take a quarter of an hour."""
    from bridge.models.render import Renderer, RenderSettings

    real, (prompt, negative) = RenderSettings.for_preset(preset), RATE_PROMPTS[prompts]
    if preset.toy or preset.tiny:  # a whole render takes a fraction of a second: time it, best of three
        renderer = Renderer(preset, real, device=device)
        renderer(["a warm-up render"] * batch, list(range(batch)), batch_size=batch)
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            renderer([prompt] * batch, list(range(1, batch + 1)), [negative] * batch, batch_size=batch)
            best = min(best, (time.perf_counter() - started) / batch)
        return round(best, 4)
    times = {}
    for steps in (1, 3):
        renderer = Renderer(preset, dataclasses.replace(real, steps=steps), device=device)
        renderer(["a warm-up render"] * batch, list(range(batch)), batch_size=batch)  # loads, warms the kernels
        started = time.perf_counter()
        renderer([prompt] * batch, list(range(1, batch + 1)), [negative] * batch, batch_size=batch)
        times[steps] = (time.perf_counter() - started) / batch
    per_step = max(0.0, (times[3] - times[1]) / 2)
    return round(times[1] - per_step + per_step * real.steps, 3)


def update_rates(device: str, rates: dict, command: str) -> None:
    """Write measured seconds per image into the table `sd-bridge learn` plans with (committed)."""
    from benchmarks.results import machine
    from bridge.commands.learn import RATES

    table = json.loads(RATES.read_text(encoding="utf-8")) if RATES.is_file() else {"seconds_per_image": {}}
    kind = "cuda" if device.startswith("cuda") else "cpu"
    table["seconds_per_image"].setdefault(kind, {}).update(rates)
    table.setdefault("measured", {})[kind] = {"command": command, "machine": machine(),
                                              "date": time.strftime("%Y-%m-%d")}
    RATES.write_text(json.dumps(table, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def world_rates(device: str) -> dict:
    """The toy and tiny pipelines' seconds per image at their own settings (their weights are always here)."""
    from bridge.models import presets

    return {name: native_rate(presets.pipeline(name), device, prompts="world")
            for name in (presets.TOY_SOURCE, presets.TOY_TARGET, presets.TINY_SOURCE, presets.TINY_TARGET)}


def score_once(name: str, directory: Path, image, device: str) -> dict:
    import torch

    from bridge.models.architectures import architecture
    from bridge.models.score import Scorer

    scorer = Scorer(_preset("scorer", name, directory), device=device)
    started = time.perf_counter()
    emb, text = scorer.embed_images([image]), scorer.embed_texts([PROMPT])
    dim = architecture(name)["open_clip_config"]["model_cfg"]["embed_dim"]
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    scorer.embed_images([image] * 8)  # throughput at a batch of 8: what scoring a GRPO group costs
    row = {"preset": name, "seconds": round(seconds, 2), "images_per_second": round(8 / (time.perf_counter() - started), 2),
           "embedding": list(emb.shape), "finite": bool(torch.isfinite(emb).all() and torch.isfinite(text).all())}
    row["ok"] = row["embedding"] == [1, dim] and list(text.shape) == [1, dim] and row["finite"]
    return row


def lora_adapter(base: Path, out: Path) -> Path:
    """A LoRA on the built rewriter, saved the way training saves one (peft files + sd_bridge_adapter.json)."""
    from peft import LoraConfig, get_peft_model

    from bridge.models.loading import load_rewriter
    from bridge.models.rewriter import AdapterMeta

    model, _ = load_rewriter(_preset("rewriter", base.name, base))
    get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q", "v"],
                                     task_type="SEQ_2_SEQ_LM")).save_pretrained(out)
    AdapterMeta(str(base), "local", "sd15", "sd2-base", max_new_tokens=8).save(out)
    return out


def rewrite_once(name: str, directory: Path, work: Path, device: str) -> dict:
    from bridge.translator import Translator

    adapter = lora_adapter(directory, work / f"{name}-lora")
    started = time.perf_counter()
    t = Translator.from_pretrained(adapter, device=device, cache=None).translate([PROMPT], [NEGATIVE])[0]
    # Random weights rewrite nonsense, which the structure check turns into the syntax output: the path ran.
    row = {"preset": name, "seconds": round(time.perf_counter() - started, 2), "strategy": t.strategy,
           "fallback": t.fallback, "translated": t.translated_prompt}
    row["ok"] = t.strategy.startswith("adapter:") and bool(t.translated_prompt)
    return row


def grpo_step(dirs: dict, work: Path, device: str) -> dict:
    """The reference run at real size: gather 2 prompts with sd15, one GRPO step of flan-t5-base against sd2-base
    scored by vit-h-14, then a translation with the adapter it wrote."""
    from safetensors.torch import load_file

    from bridge.models.render import Renderer, RenderSettings
    from bridge.models.render_cache import RenderCache
    from bridge.models.score import Scorer
    from bridge.translator import Translator
    from data.gather import GatherConfig, run_gather
    from training.config import TrainConfig
    from training.reward import ClipAgreementReward
    from training.trainer import run_train

    prompts = work / "prompts.txt"
    prompts.write_text("a red fox in the snow\na lighthouse at dusk, (oil painting:1.2)\n", encoding="utf-8")
    started = time.perf_counter()
    run_gather(GatherConfig(prompts=str(prompts), out=work / "gathered", preset=str(dirs["sd15"]),
                            scorer=str(dirs["vit-h-14"]), seeds=1, steps=1, size=64, device=device, progress=False),
               log=lambda *_: None)
    gathered = time.perf_counter() - started
    target = _preset("pipeline", "sd2-base", dirs["sd2-base"])
    scorer = Scorer(_preset("scorer", "vit-h-14", dirs["vit-h-14"]), device=device)
    cache = RenderCache(work / "render-cache", Renderer(target, RenderSettings.for_preset(target, steps=1, size=64),
                                                        device=device), scorer)
    cfg = TrainConfig(data=work / "gathered", out=work / "adapter", target=str(dirs["sd2-base"]),
                      rewriter=str(dirs["flan-t5-base"]), scorer=str(dirs["vit-h-14"]), steps=1, prompts_per_step=2,
                      k=2, warm_start_steps=1, max_new_tokens=8, lr=1e-3, reward_seeds=1, device=device,
                      progress=False)
    started = time.perf_counter()
    summary = run_train(cfg, log=lambda *_: None, reward_fn=ClipAgreementReward(cache, scorer, token_penalty=0.0))
    trained = time.perf_counter() - started
    lora = load_file(str(work / "adapter" / "adapter_model.safetensors"))
    # B starts at zero: it moves in the warm-start step (SFT towards copying). In the GRPO step, random weights
    # rewrite nonsense, every candidate falls back to the same text and the group has no signal, so the step
    # runs its whole path (sample, render, score, loss) with zero advantages; its log row says so.
    moved = any(bool((v != 0).any()) for k, v in lora.items() if "lora_B" in k)
    rows = [json.loads(line) for line in (work / "adapter" / "train_log.jsonl").read_text().splitlines()]
    grpo = [r for r in rows if r.get("phase") == "grpo"]
    base = load_file(str(dirs["flan-t5-base"] / "model.safetensors"))
    t = Translator.from_pretrained(work / "adapter", device=device, cache=None).translate([PROMPT])[0]
    row = {"gather_seconds": round(gathered, 1), "train_seconds": round(trained, 1), "steps": summary.get("steps"),
           "lora_moved": moved, "lora_tensors": len(lora), "base_tensors": len(base), "target_renders": cache.misses,
           "grpo_log": grpo[-1] if grpo else None,
           "translated": t.translated_prompt, "strategy": t.strategy}
    row["ok"] = moved and bool(grpo) and t.strategy.startswith("adapter:") and cache.misses > 0
    return row


def run(device: str, work: Path, log=print, command: str = "") -> dict:
    import torch

    from bridge.models import presets

    figures: dict = {"device": device, "counts": counts(log)}
    started = time.perf_counter()
    dirs, renders, scores, rewrites = {}, [], [], []
    image = None
    rates = world_rates(device)
    for name in PIPELINES:
        dirs[name] = build_random(name, work / name)
        row, image = render_once(name, dirs[name], device)
        real = presets.pipeline(name)
        rates[name] = row["seconds_per_image"] = native_rate(_preset("pipeline", name, dirs[name]), device,
                                                             batch=1 if device == "cpu" else RENDER_BATCH)
        renders.append(row)
        log(f"{name} render: 1 step at 64 px with A1111 weighting, {row['seconds']} s, "
            f"{'ok' if row['ok'] else 'FAILED ' + json.dumps(row)}; at {real.size} px and {real.steps} steps "
            f"{row['seconds_per_image']} s per image")
        if name == "sd21-base":  # sd2-base stays for the GRPO step; the others' files go once they have run
            shutil.rmtree(dirs.pop(name))
    for name in SCORERS:
        dirs[name] = build_random(name, work / name)
        row = score_once(name, dirs[name], image, device)
        scores.append(row)
        log(f"{name} score: embedding {row['embedding']}, {row['images_per_second']} images/s, "
            f"{'ok' if row['ok'] else 'FAILED'}")
    for name in REWRITERS:
        dirs[name] = build_random(name, work / name)
        row = rewrite_once(name, dirs[name], work, device)
        rewrites.append(row)
        log(f"{name} LoRA rewrite: {row['seconds']} s, fallback {row['fallback']}, {'ok' if row['ok'] else 'FAILED'}")
    step = grpo_step(dirs, work, device)
    log(f"GRPO step (sd15 -> sd2-base, vit-h-14, flan-t5-base): gather {step['gather_seconds']} s, train "
        f"{step['train_seconds']} s, {step['target_renders']} target renders, LoRA moved {step['lora_moved']}, "
        f"{'ok' if step['ok'] else 'FAILED'}")
    figures.update(renders=renders, scores=scores, rewrites=rewrites, grpo_step=step, seconds_per_image=rates,
                   path_seconds=round(time.perf_counter() - started, 1))
    if device.startswith("cuda"):
        figures["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        # An H100 renders SD at 512 px about 12 images/s at 50 steps (fp16): the ratio says how far this is.
        per_image_50 = {n: rates[n] * 50 / presets.pipeline(n).steps for n in PIPELINES}
        figures["vs_h100_12_images_per_s_at_50_steps"] = {n: round((1 / s) / 12, 3) for n, s in per_image_50.items()}
    presets_ok = {name: all(r["ok"] for r in figures["counts"] if r["preset"] == name) for name in
                  PIPELINES + SCORERS + REWRITERS}
    for row in renders + scores + rewrites:
        presets_ok[row["preset"]] &= row["ok"]
    for name in ("sd15", "sd2-base", "vit-h-14", "flan-t5-base"):
        presets_ok[name] &= step["ok"]
    figures["presets_ok"] = presets_ok
    figures["ok"] = sum(presets_ok.values())
    update_rates(device, rates, command)
    return figures


def _variant(argv: list[str]) -> str:
    if "--counts-only" in argv:
        return "counts"
    return "cuda" if any(a.startswith("cuda") for a in argv) else "cpu"


@recorded("real_size", _variant)
def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--work", type=Path, default=None, help="where the random builds go (default: a temp "
                                                                "directory, removed after; about 12 GB)")
    parser.add_argument("--counts-only", action="store_true", help="only the parameter counts (seconds, no memory)")
    args = parser.parse_args(argv)
    if args.counts_only:
        rows = counts()
        print(f"real preset components: {sum(r['ok'] for r in rows)} of {len(rows)} match their published counts")
        return {"counts": rows, "ok": sum(r["ok"] for r in rows)}
    work = args.work or Path(tempfile.mkdtemp(prefix="sd-bridge-real-size-"))
    try:
        figures = run(args.device, work, command="uv run python -m benchmarks.real_size " + " ".join(argv))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"real presets: {figures['ok']} of {len(figures['presets_ok'])} ok (counts and one-step path)")
    return figures


if __name__ == "__main__":
    main()
