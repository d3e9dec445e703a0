"""Rendering prompts with a pipeline preset at explicit seeds.

Determinism contract: the image of (preset, revision, prompt, negative, seed, settings) does not depend on
which other prompts share its batch, on the batch size, or on the process. Each image gets its own
`torch.Generator` seeded with its seed (diffusers accepts one generator per image), so a resumed or
sharded run draws the same noise as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Sequence

from bridge.models.presets import PipelinePreset

SCHEDULERS = {
    # name -> (diffusers class, extra config). DPM-Solver++(2M) is the reference sampler for both SD1.5 and
    # SD2 (diffusers "Stable Diffusion 2" docs use DPMSolverMultistepScheduler).
    "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "ddim": ("DDIMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "pndm": ("PNDMScheduler", {}),
}


@dataclass(frozen=True)
class RenderSettings:
    """Everything besides prompt and seed that decides an image; recorded with every render."""

    steps: int
    guidance: float
    height: int
    width: int
    scheduler: str
    # "a1111": weights, BREAK and >75-token prompts encoded as A1111 does (bridge.models.encode);
    # "plain": the text handed to diffusers as is (truncated at 77 tokens).
    weighting: str = "a1111"

    @classmethod
    def for_preset(cls, preset: PipelinePreset, steps: int | None = None, guidance: float | None = None,
                   size: int | None = None, scheduler: str | None = None, weighting: str = "a1111") -> "RenderSettings":
        side = size or preset.size
        return cls(steps=steps or preset.steps, guidance=preset.guidance if guidance is None else guidance,
                   height=side, width=side, scheduler=scheduler or preset.scheduler, weighting=weighting)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class Renderer:
    """Renders with one pipeline preset. The pipeline loads on first use, on the caller's device/dtype."""

    def __init__(self, preset: PipelinePreset, settings: RenderSettings | None = None, device: str = "cpu",
                 dtype: str = "auto"):
        self.preset = preset
        self.settings = settings or RenderSettings.for_preset(preset)
        self.device = device
        self.dtype = dtype
        self._pipe = None

    @property
    def pipe(self):
        if self._pipe is None:
            import diffusers

            from bridge.models.loading import load_pipeline

            pipe = load_pipeline(self.preset, device=self.device, dtype=self.dtype)
            cls_name, extra = SCHEDULERS[self.settings.scheduler]
            # from_config keeps the model's betas and prediction_type (v-prediction for SD2 768).
            pipe.scheduler = getattr(diffusers, cls_name).from_config(pipe.scheduler.config, **extra)
            self._pipe = pipe
        return self._pipe

    def check_inputs(self, prompts: Sequence[str], seeds: Sequence[int], negative_prompts: Sequence[str | None] | None,
                     batch_size: int) -> None:
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError("`prompts` must be a list of strings")
        if len(seeds) != len(prompts):
            raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds; give one seed per prompt")
        if any(not isinstance(s, int) or s < 0 or s >= 2**63 for s in seeds):
            raise ValueError("seeds must be integers in [0, 2**63)")
        if negative_prompts is not None and len(negative_prompts) != len(prompts):
            raise ValueError(f"got {len(prompts)} prompts but {len(negative_prompts)} negative prompts")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        s = self.settings
        if s.height % 8 or s.width % 8:
            raise ValueError(f"height and width must be divisible by 8, got {s.height}x{s.width}")
        if s.scheduler not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {s.scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
        if s.weighting not in ("a1111", "plain"):
            raise ValueError(f"unknown weighting {s.weighting!r}; choose a1111 or plain")

    def __call__(self, prompts: Sequence[str], seeds: Sequence[int], negative_prompts: Sequence[str | None] | None = None,
                 batch_size: int = 4, on_batch: Callable[[int], object] | None = None) -> list:
        """Render `prompts[i]` at `seeds[i]`; returns PIL images in input order. `on_batch(n)` is called after
        each pipeline call with its image count (progress bars)."""
        import torch

        # 1. Check inputs.
        self.check_inputs(prompts, seeds, negative_prompts, batch_size)
        negs = [n or "" for n in negative_prompts] if negative_prompts is not None else [""] * len(prompts)
        # 2. Load the pipeline (once) on the caller's device.
        pipe = self.pipe
        s = self.settings
        images: list = [None] * len(prompts)
        batches, plans = self._batches(prompts, negs, batch_size)
        for batch in batches:
            # 3. One generator per image, seeded with that image's seed: batch-independent noise.
            gens = [torch.Generator(device="cpu").manual_seed(int(seeds[i])) for i in batch]
            texts, neg_texts = [prompts[i] for i in batch], [negs[i] for i in batch]
            # 4. Text conditioning: A1111-weighted embeddings (switched at the steps where prompt editing or
            # alternation changes the text), or the raw text for diffusers to encode.
            if s.weighting == "a1111":
                text_args = self._conditioning(pipe, [plans[i] for i in batch])
            else:
                text_args = {"prompt": texts, "negative_prompt": neg_texts}
            # 5. Denoise and decode.
            with torch.inference_mode():
                out = pipe(**text_args, num_inference_steps=s.steps, guidance_scale=s.guidance,
                           height=s.height, width=s.width, generator=gens, output_type="pil")
            for i, image in zip(batch, out.images):
                images[i] = image
            if on_batch is not None:
                on_batch(len(batch))
        return images

    def _batches(self, prompts: Sequence[str], negs: list[str], batch_size: int) -> tuple[list[list[int]], list]:
        """Index batches, and with A1111 weighting each item's conditioning plan (`_plan`). A batch then only
        holds items of one chunk count: padding a short prompt with empty chunks to match a long neighbour
        would change its image."""
        if self.settings.weighting != "a1111":
            return [list(range(i, min(i + batch_size, len(prompts)))) for i in range(0, len(prompts), batch_size)], []
        plans = [self._plan(p, n) for p, n in zip(prompts, negs)]
        groups: dict[int, list[int]] = {}
        for i, plan in enumerate(plans):
            groups.setdefault(plan.chunks, []).append(i)
        return [idx[k : k + batch_size] for idx in groups.values() for k in range(0, len(idx), batch_size)], plans

    def _plan(self, prompt: str, negative: str) -> "_Plan":
        """The (prompt, negative) `weighted_chunks` from each model call at which either one's text changes
        (prompt editing, alternation: `bridge.syntax.a1111`), and the chunk count every step is padded to."""
        from bridge.models.encode import weighted_chunks
        from bridge.syntax.a1111 import calls_with_distinct_text

        tok, steps = self.pipe.tokenizer, self.settings.steps
        calls = sorted(set(calls_with_distinct_text(prompt, False, steps))
                       | set(calls_with_distinct_text(negative, True, steps)))
        by_call = {call: (weighted_chunks(prompt, tok, call=call, steps=steps),
                          weighted_chunks(negative, tok, negative=True, call=call, steps=steps)) for call in calls}
        return _Plan(by_call, max(max(len(p), len(n)) for p, n in by_call.values()))

    def _conditioning(self, pipe, plans: list["_Plan"]) -> dict:
        """Prompt and negative embeddings for the first step, and a diffusers step callback that swaps in each
        later step's when any item's text changes there (A1111 `reconstruct_cond_batch`). Items whose text does
        not change get the same embeddings back, so an image does not depend on its batch neighbours."""
        import torch

        from bridge.models.encode import encode_chunks

        n = plans[0].chunks
        calls = sorted({call for plan in plans for call in plan.by_call})

        def embeds(call: int) -> tuple:
            active = [plan.at(call) for plan in plans]
            return (encode_chunks(pipe, [p for p, _ in active], min_chunks=n),
                    encode_chunks(pipe, [q for _, q in active], min_chunks=n))

        prompt_embeds, negative_embeds = embeds(0)
        args = {"prompt_embeds": prompt_embeds, "negative_prompt_embeds": negative_embeds}
        if len(calls) > 1:
            switches = {call: embeds(call) for call in calls[1:]}

            def on_step_end(pipeline, i: int, t, kwargs: dict) -> dict:
                # Called after model call i: set what call i + 1 reads. With guidance the pipeline holds
                # cat([negative, prompt]) in `prompt_embeds` (diffusers StableDiffusionPipeline.__call__).
                if i + 1 not in switches:
                    return {}
                pos, neg = switches[i + 1]
                return {"prompt_embeds": torch.cat([neg, pos]) if pipeline.do_classifier_free_guidance else pos}

            args.update(callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=["prompt_embeds"])
        return args


@dataclass(frozen=True)
class _Plan:
    """One item's conditioning: (prompt chunks, negative chunks) from each model call where they change."""

    by_call: dict
    chunks: int

    def at(self, call: int) -> tuple:
        return self.by_call[max(c for c in self.by_call if c <= call)]


def derive_seed(base_seed: int, prompt: str, index: int) -> int:
    """The seed of the `index`-th image of `prompt`: a pure function of its inputs (sha256), so reruns,
    resumes and other processes agree without sharing any state."""
    import hashlib

    digest = hashlib.sha256(f"{base_seed}\x1f{index}\x1f{prompt}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> 1  # 63 bits: a valid torch seed
