"""The sd-bridge Gradio app, served by `sd-bridge serve` (bridge/commands/serve.py).

Tabs: Translate (prompt + negative -> translation, diffs, warnings, live token counts, policy and adapter
controls, PNG Info), Compare (a grid: a row per model and prompt, a column per seed, with each target image's
CLIP agreement with the source image of its seed), Batch (upload a library: a preview, the migrated file and
the error report).

It calls the same code as the CLI (bridge.Translator, bridge.models.render, bridge.models.score,
bridge.io.migrate). Safety: models load on first use, not at import; binds 127.0.0.1 unless --host; never
shares; uploads are size limited; no `allowed_paths`, and it reads no path a user types (only files Gradio
itself received).
"""

from __future__ import annotations

import atexit
import dataclasses
import difflib
import json
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bridge.models import presets
from bridge.syntax.policy import MigrationPolicy

TOY_NOTE = ("Rendering with the **toy world** (no GPU or no local weights for SD1.5/SD2): toy-sd15 → toy-sd2, "
            "scored by toy-clip. These small trained models read toy-world prompts only, such as the examples "
            "below; the oracle row shows the known correct translation.")
TINY_NOTE = ("Rendering with the tiny offline models: their images are random noise, so this tab shows how the "
             "comparison works, not real results.")
SYNTAX = "syntax (no adapter)"
# Uploads and Batch results are deleted this long after they were made (Gradio's delete_cache checks every
# minute), and each client's upload budget (bridge/web_guard.py, UploadBudget) is counted over the same window.
UPLOAD_WINDOW = 900
RNG_NOTE = ("Each seed seeds a CPU `torch.Generator` per image for the initial latent noise, as diffusers does. "
            "A1111 draws its noise on the GPU by default (Settings → Sampler parameters → Random number generator "
            "source), so the seed of an A1111 image gives another picture here unless that setting is CPU.")
# The last one says two class members no training prompt of the shipped toy adapter says (#39).
TOY_EXAMPLES = [["a crimson circle", ""], ["a big azure square by bridget riley", ""],
                ["a small yellow triangle on the left", ""], ["a green striped circle on a beige background", ""],
                ["a petite cherry triangle on the left", ""]]


@dataclass
class ServeConfig:
    """Serve the Gradio app: Translate, Compare and Batch tabs."""

    host: str = field(default="127.0.0.1", metadata={"help": "interface to bind (0.0.0.0 exposes it on the network)"})
    port: int = field(default=7860, metadata={"help": "port"})
    adapter: list[Path] = field(default_factory=list, metadata={
        "help": "adapter directories (or shipped adapters' names: toy) the Translate tab offers (the first is the "
                "default for every tab; none given: the shipped toy adapter when Compare runs the toy world, else "
                "the syntax strategy; `none`: the syntax strategy only); users pick among these, never type a path"})
    source: str = field(default="auto", metadata={"help": "source pipeline for Compare (auto: sd15 when its weights "
                                                           "are local and a GPU is present, else the toy world's "
                                                           "toy-sd15)"})
    target: str = field(default="auto", metadata={"help": "target pipeline for Compare (auto: sd2-base, else the toy "
                                                           "world's toy-sd2)"})
    scorer: str = field(default="auto", metadata={"help": "scorer for Compare (auto: vit-h-14, else the toy world's "
                                                           "toy-clip)"})
    max_seeds: int = field(default=16, metadata={"help": "most seeds a Compare request may ask for"})
    reference: Path | None = field(default=None, metadata={
        "help": "a reference index (`sd-bridge index`): Compare adds each row's nearest reference image"})
    concurrency: int = field(default=1, metadata={"help": "requests run at once per event (renders are heavy)"})
    max_file_size: str = field(default="10mb", metadata={"help": "upload size limit for Batch and PNG Info "
                                                                 "(a number and b, kb, mb or gb)"})
    upload_budget: str = field(default="100mb", metadata={
        "help": f"most bytes one client address may upload per {UPLOAD_WINDOW // 60} minutes, the time the app keeps "
                "an upload (429 beyond it)"})
    device: str = field(default="auto", metadata={"help": "device for models"})

    def __post_init__(self):
        from bridge.sweep.reference import check_index_dir

        self.upload_bytes()  # a bad size is a usage error now, not a traceback at launch
        if self.upload_bytes(self.upload_budget) < self.upload_bytes():
            raise ValueError(f"upload_budget {self.upload_budget} is smaller than one upload (max_file_size "
                             f"{self.max_file_size})")
        if self.max_seeds < 1:
            raise ValueError(f"max_seeds must be >= 1, got {self.max_seeds}")
        check_index_dir(self.reference)
        for adapter in filter(None, map(presets.adapter_path, self.adapter)):  # at start, not at a first request
            if not Path(adapter).is_dir():
                raise ValueError(f"adapter directory not found: {adapter}")

    def upload_bytes(self, size: str | None = None) -> int:
        """A size flag in bytes: --max-file-size by default."""
        size = self.max_file_size if size is None else size
        match = re.fullmatch(r"\s*(\d+)\s*(b|kb|mb|gb)\s*", str(size).lower())
        if match is None:
            name = "max_file_size" if size is self.max_file_size else "upload_budget"
            raise ValueError(f"{name} {size!r} is not a size such as 10mb or 512kb")
        return int(match[1]) * 1024 ** ["b", "kb", "mb", "gb"].index(match[2])  # 1024-based, as Gradio reads it


class Models:
    """Lazily loaded translator, renderers and scorer, shared by all requests."""

    def __init__(self, cfg: ServeConfig):
        self.cfg = cfg
        self._lock = threading.Lock()
        self._translators: dict = {}
        self._compare = None
        self._reference = None
        # Adapters by the name the UI shows: only the directories the server was started with, or, with none,
        # the shipped toy adapter when Compare runs the toy world (a learned translation without training, #39).
        adapters = [a for a in map(presets.adapter_path, cfg.adapter) if a is not None]  # `none`: syntax only
        if not cfg.adapter:
            adapters = list(filter(None, [presets.default_adapter(self.compare_presets()[1].name)]))
        self.adapters = {SYNTAX: None, **{Path(a).name: Path(a) for a in adapters}}
        self.batch_root = Path(tempfile.mkdtemp(prefix="sd-bridge-batch-"))
        atexit.register(shutil.rmtree, self.batch_root, ignore_errors=True)

    def default_adapter(self) -> str:
        return list(self.adapters)[1] if len(self.adapters) > 1 else SYNTAX

    def translator(self, adapter: str | None = None, policy: MigrationPolicy | None = None):
        from bridge.translator import Translator

        adapter = adapter or self.default_adapter()
        if adapter not in self.adapters:
            raise ValueError(f"unknown adapter {adapter!r}; this server offers {', '.join(self.adapters)}")
        policy = policy or MigrationPolicy()
        key = (adapter, json.dumps(dataclasses.asdict(policy), sort_keys=True, default=str))
        with self._lock:
            if key not in self._translators:
                self._translators[key] = Translator.from_pretrained(self.adapters[adapter], policy=policy)
            return self._translators[key]

    def batch_dir(self) -> Path:
        """A fresh directory for one Batch request; those older than UPLOAD_WINDOW go (Gradio has copied their
        files into its own cache, which `delete_cache` empties as often), and all of them at exit."""
        for old in self.batch_root.iterdir():
            if time.time() - old.stat().st_mtime > UPLOAD_WINDOW:
                shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(dir=self.batch_root))

    def compare_presets(self) -> tuple:
        """(source, target, scorer, note) for Compare, resolved without loading anything: the real presets
        when their weights are local and a GPU is present, else the toy world, and a note that says which."""
        from bridge.models.loading import is_available_locally, resolve_device

        device = resolve_device(self.cfg.device)
        real = device.startswith("cuda") and all(is_available_locally(p) for p in (
            presets.pipeline(presets.DEFAULT_SOURCE), presets.pipeline(presets.DEFAULT_TARGET),
            presets.scorer(presets.DEFAULT_SCORER)))
        pick = lambda value, real_name, toy_name: value if value != "auto" else (  # noqa: E731
            real_name if real else toy_name)
        src = presets.pipeline(pick(self.cfg.source, presets.DEFAULT_SOURCE, presets.TOY_SOURCE))
        tgt = presets.pipeline(pick(self.cfg.target, presets.DEFAULT_TARGET, presets.TOY_TARGET))
        sc = presets.scorer(pick(self.cfg.scorer, presets.DEFAULT_SCORER, presets.TOY_SCORER))
        note = TOY_NOTE if src.toy and tgt.toy else TINY_NOTE if src.tiny or tgt.tiny else ""
        return src, tgt, sc, note

    def compare_models(self):
        from bridge.models.loading import resolve_device
        from bridge.models.render import Renderer
        from bridge.models.score import Scorer

        with self._lock:
            if self._compare is None:
                device = resolve_device(self.cfg.device)
                src, tgt, sc, note = self.compare_presets()
                self._compare = (Renderer(src, device=device), Renderer(tgt, device=device), Scorer(sc, device=device),
                                 note)
            return self._compare

    def reference(self):
        """The reference index given at server start (opened once, checked against the scorer), or None."""
        from bridge.sweep.reference import ReferenceIndex

        if self.cfg.reference is None:
            return None
        with self._lock:
            if self._reference is None:
                index = ReferenceIndex.open(self.cfg.reference)
                index.check_scorer(self.compare_presets()[2].name)
                self._reference = index
            return self._reference


DIFF_WORDS = 400  # the changed middle diffed word by word at most; beyond, it shows as one removed + one added span


def word_diff(before: str, after: str) -> list[tuple[str, str | None]]:
    """Word-level diff for gr.HighlightedText: ("word", "removed"|"added"|None).

    SequenceMatcher is quadratic or worse in the words it compares (a 48 KB prompt took 12 s, 5 MB did not
    finish in 10 minutes), so the common prefix and suffix are split off in linear time and only a changed
    middle of at most DIFF_WORDS words on each side is diffed finely.
    """
    a, b = before.split(), after.split()
    head = 0
    while head < min(len(a), len(b)) and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < min(len(a), len(b)) - head and a[len(a) - 1 - tail] == b[len(b) - 1 - tail]:
        tail += 1
    mid_a, mid_b = a[head : len(a) - tail], b[head : len(b) - tail]
    out: list[tuple[str, str | None]] = [(" ".join(a[:head]) + " ", None)] if head else []
    if len(mid_a) > DIFF_WORDS or len(mid_b) > DIFF_WORDS:
        out += [(" ".join(mid_a) + " ", "removed")] if mid_a else []
        out += [(" ".join(mid_b) + " ", "added")] if mid_b else []
    else:
        for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=mid_a, b=mid_b, autojunk=False).get_opcodes():
            if op == "equal":
                out.append((" ".join(mid_a[i1:i2]) + " ", None))
                continue
            if i2 > i1:
                out.append((" ".join(mid_a[i1:i2]) + " ", "removed"))
            if j2 > j1:
                out.append((" ".join(mid_b[j1:j2]) + " ", "added"))
    if tail:
        out.append((" ".join(a[len(a) - tail :]) + " ", None))
    return out


MAX_PROMPT_CHARS = 20_000  # as `migrate --max-chars`: bounds the work one request can ask for


def _check_prompt(prompt: str | None, negative: str | None) -> None:
    """A prompt to work on, and neither it nor the negative over MAX_PROMPT_CHARS."""
    if not prompt or not prompt.strip():
        raise ValueError("enter a prompt")
    for what, text in (("prompt", prompt), ("negative prompt", negative or "")):
        if len(text) > MAX_PROMPT_CHARS:
            raise ValueError(f"the {what} has {len(text):,} characters; the limit is {MAX_PROMPT_CHARS:,}")


def live_tokens(prompt: str, negative: bool = False) -> str:
    """CLIP tokens per 75-token chunk while typing (A1111's counter), from the pure-Python tokenizer."""
    from bridge.syntax.tokens import CHUNK_TOKENS, token_budget

    if not prompt or not prompt.strip():
        return f"tokens per chunk: 0 / {CHUNK_TOKENS}"
    if len(prompt) > MAX_PROMPT_CHARS:
        return f"{len(prompt):,} characters: over the {MAX_PROMPT_CHARS:,} limit"
    counts, _ = token_budget(prompt, truncates=False, negative=negative)
    return "tokens per chunk: " + " · ".join(f"{c} / {CHUNK_TOKENS}" for c in counts)


def translate_fn(models: Models, prompt: str, negative: str, adapter: str | None = None,
                 policy: MigrationPolicy | None = None):
    _check_prompt(prompt, negative)
    t = models.translator(adapter, policy).translate([prompt], [negative or None])[0]
    warnings = "\n".join(f"[{w['code']}] ({w['field']}) {w['message']}" for w in t.warnings) or "none"
    translator = models.translator(adapter, policy)
    fell_back = " (this rewrite fell back to it: see the warnings)" if t.fallback or t.unfaithful else ""
    tokens = (f"**Strategy:** {translator.describe}{fell_back}  \n"
              f"tokens per chunk: {t.tokens_before} -> {t.tokens_after}")
    neg_out = t.translated_negative_prompt or ""
    return (t.translated_prompt, neg_out, word_diff(prompt, t.translated_prompt), word_diff(negative or "", neg_out),
            warnings, tokens)


def parse_seeds(text: str, count: int, base_seed: int, prompt: str, most: int) -> list[int]:
    """Explicit seeds ("1234, 5678"), so a user can enter the seed of their own image; else `count` seeds
    derived from the base seed and the prompt (the seeds `sd-bridge gather` uses)."""
    from bridge.models.render import derive_seed

    if text and text.strip():
        try:
            seeds = [int(x) for x in text.replace(",", " ").split()]
        except ValueError:
            raise ValueError(f"seeds must be whole numbers separated by commas, got {text.strip()[:80]!r}") from None
        bad = [x for x in seeds if not 0 <= x < 2**63]
        if bad:
            raise ValueError(f"seed {bad[0]} is out of range (0 to 2^63-1)")
    else:
        seeds = [derive_seed(int(base_seed or 0), prompt, k) for k in range(int(count))]
    if not 1 <= len(seeds) <= most:
        raise ValueError(f"give between 1 and {most} seeds, got {len(seeds)}")
    return seeds


OUTSIDE_TOY = ("**This prompt is outside the toy world.** toy-sd15 and toy-sd2 read only toy prompts (one shape with "
               "its colour, size, fill and position on a background, as in the examples below), so what they draw for "
               "it, and its agreement figures, say nothing about what SD1.5 or SD2 would draw.")


def compare_fn(models: Models, prompt: str, negative: str, seeds_text: str, count: float, base_seed: float,
               progress=None):
    """A grid: a row per model and prompt (source | target with the source prompt | target with the
    translation | toy world: target with the oracle), a column per seed, with the agreement of each target
    image with the source image of its seed. Returns (grid image, translation, summary, note, details): the
    details hold the full seeds and every agreement, which the grid shows short."""
    import torch

    from bridge.models.score import cosine

    # 1. Check inputs; the seeds and the translation.
    _check_prompt(prompt, negative)
    seeds = parse_seeds(seeds_text, int(count or 1), int(base_seed or 0), prompt, models.cfg.max_seeds)
    n = len(seeds)
    t = models.translator().translate([prompt], [negative or None])[0]
    src_r, tgt_r, scorer, note = models.compare_models()
    rows = [(src_r, "source prompt", prompt, negative or None), (tgt_r, "source prompt", prompt, negative or None),
            (tgt_r, "translation", t.translated_prompt, t.translated_negative_prompt)]
    toy = src_r.preset.toy and tgt_r.preset.toy
    right = _toy_oracle(prompt, negative) if toy else None
    if right is not None:
        rows.append((tgt_r, "oracle", right.prompt, right.negative_prompt))
    outside = toy and right is None  # toy renderers on a prompt they cannot read: said beside the images
    # 2. Render every row at the same seeds, counting renders on the progress bar (a render takes seconds).
    index = models.reference()
    done = [0]

    def step(k: int, kind: str, model: str):
        def advance(images: int):
            done[0] += images
            if progress is not None:
                progress((done[0], n * len(rows)), desc=f"rendering {kind} with {model}", unit="renders")
        return advance

    with torch.inference_mode():
        images = [r([p] * n, seeds, [neg] * n, on_batch=step(k, kind, r.preset.name))
                  for k, (r, kind, p, neg) in enumerate(rows)]
        embs = [scorer.embed_images(im) for im in images]
        agree = [cosine(embs[0], e) for e in embs]
    # 3. The grid, the summary and the details.
    labels = [(kind, r.preset.name) for r, kind, _, _ in rows]
    refs = [_nearest_reference(index, e) for e in embs] if index is not None else None
    grid = compare_grid(labels, images, [None] + [list(map(float, a)) for a in agree[1:]], seeds, refs,
                        banner="outside the toy world: these pictures say nothing about this prompt" if outside else "")
    means = {kind: sum(agree[row]) / n for row, (_, kind, _, _) in enumerate(rows) if row}
    summary = (f"mean agreement with the {src_r.preset.name} source over {n} seed(s), scorer {scorer.preset.name}: "
               + ", ".join(f"{tgt_r.preset.name} with the {kind} {m:.3f}" for kind, m in means.items()))
    summary += "\n\n" + _breadth_line(rows, embs)
    if right is not None:
        neg = f" (negative: {right.negative_prompt!r})" if right.negative_prompt else ""
        summary += f"; the oracle translation is {right.prompt!r}{neg} (drifts: {', '.join(right.drifts) or 'none'})"
    if outside:
        note, summary = OUTSIDE_TOY, OUTSIDE_TOY + "\n\n" + summary
    details = {"seeds": seeds, "rows": [
        {"model": r.preset.name, "prompt": kind, "text": p, "negative_prompt": neg,
         "agreement": None if row == 0 else [round(float(a), 4) for a in agree[row]],
         **({} if refs is None else {"nearest_reference": refs[row][2]})}
        for row, (r, kind, p, neg) in enumerate(rows)]}
    return grid, t.translated_prompt, summary, note, details


def short_seed(seed: int) -> str:
    """A seed as a grid label: whole up to 7 digits, else its first 5 and an ellipsis (derived seeds have 18-19
    digits, which overprinted their neighbours); the full seeds are in Compare's details."""
    text = str(seed)
    return text if len(text) <= 7 else text[:5] + "…"


def render_cell(size: int) -> int:
    """Grid cell size for renders of `size` pixels: small renders scale up by a whole factor to at least 96 px
    (pixels stay square and sharp), large ones down to 256 px, so 2 seeds of a 32 px render are 2 x 128 px,
    not two 600 px blurs."""
    return size * -(-96 // size) if size < 96 else min(size, 256)


def compare_grid(labels: list[tuple[str, str]], images: list[list], agreement: list, seeds: list[int],
                 refs: list | None = None, banner: str = ""):
    """Compare's grid as one image, readable at a glance: a label column (which prompt, which model, the
    row's mean agreement), a header per seed (#k and a short seed), each target image's agreement with the
    source image of its seed under it; with a reference index, each row's nearest reference last."""
    from PIL import Image, ImageDraw, ImageFont

    from bridge.io.images import fit_cell

    font, small = ImageFont.load_default(size=14), ImageFont.load_default(size=12)
    cell = render_cell(images[0][0].width)
    label_w, foot_h, gap = 170, 18, 4
    ncols = len(seeds) + (refs is not None)
    width = label_w + ncols * (cell + gap)
    lines: list[str] = []  # the banner, wrapped to the grid's width
    for word in banner.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width - 8:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    head_h = 22 + 20 * len(lines)
    sheet = Image.new("RGB", (width, head_h + len(images) * (cell + foot_h + gap)), "white")
    pen = ImageDraw.Draw(sheet)
    for i, line in enumerate(lines):
        pen.text((4, 3 + 20 * i), line, fill=(170, 0, 0), font=font)
    for c, seed in enumerate(seeds):
        pen.text((label_w + c * (cell + gap) + 2, head_h - 18), f"#{c + 1} · {short_seed(seed)}", fill="black",
                 font=small)
    if refs is not None:
        pen.text((label_w + len(seeds) * (cell + gap) + 2, head_h - 18), "nearest reference", fill="black", font=small)
    for r, ((kind, model), row) in enumerate(zip(labels, images)):
        top = head_h + r * (cell + foot_h + gap)
        lines = [kind, model] + ([] if agreement[r] is None else
                                 [f"mean {sum(agreement[r]) / len(agreement[r]):.3f}"])
        for i, line in enumerate(lines):
            pen.text((4, top + 4 + i * 18), line, fill="black" if i != 1 else (90, 90, 90), font=font)
        for c, img in enumerate(row):
            left = label_w + c * (cell + gap)
            sheet.paste(fit_cell(img, cell), (left, top))
            under = "source" if agreement[r] is None else f"{agreement[r][c]:.3f}"
            pen.text((left + 2, top + cell + 2), under, fill="black", font=small)
        if refs is not None:
            image, caption, _ = refs[r]
            left = label_w + len(seeds) * (cell + gap)
            sheet.paste(fit_cell(image, cell), (left, top))
            pen.text((left + 2, top + cell + 2), caption, fill="black", font=small)
    return sheet


def _breadth_line(rows: list, embs: list) -> str:
    """Each row's breadth across its seeds (bridge.sweep.breadth), and the target rows' ratio to the source's."""
    from bridge.sweep import breadth

    if len(embs[0]) < 2:
        return "breadth (how much the pictures differ across seeds) needs at least 2 seeds"
    found = [breadth.breadth(e.numpy()) for e in embs]
    parts = []
    for row, ((r, kind, _, _), b) in enumerate(zip(rows, found)):
        ratio = breadth.ratio(b["mean_distance"], found[0]["mean_distance"]) if row else None
        lo, hi = b["ci95"]
        parts.append(f"{r.preset.name} with the {kind} {b['mean_distance']:.3f} [{lo:.3f}, {hi:.3f}], "
                     f"{b['clusters']} cluster{'s' if b['clusters'] != 1 else ''}"
                     + ("" if ratio is None else f", ratio {ratio:.2f}"))
    return "breadth (mean pairwise scorer distance across seeds, 95% CI; ratio to the source): " + "; ".join(parts)


def _nearest_reference(index, emb) -> tuple:
    """The reference image closest to any of a row's renders, captioned with its similarity and how many of
    the row's renders are duplicates (at the calibrated threshold)."""
    from bridge.sweep.reference import DUPLICATE_THRESHOLD, duplicate_report

    near = index.neighbours(emb, 1)
    best = max((ns[0] for ns in near), key=lambda x: x.similarity)
    dup = duplicate_report(near, DUPLICATE_THRESHOLD)
    return (index.image(best.row), f"{best.similarity:.3f} · dup {dup['duplicates']}/{dup['renders']}",
            {"path": best.path, "similarity": round(float(best.similarity), 4), "duplicates": dup["duplicates"],
             "renders": dup["renders"]})


def _toy_oracle(prompt: str, negative: str):
    """The toy world's correct translation, or None for a prompt outside its grammar."""
    from toyworld.world import NotAToyPrompt, oracle

    try:
        return oracle(prompt, negative or "")
    except NotAToyPrompt:
        return None


def batch_fn(models: Models, upload, prompt_column: str, negative_column: str):
    """Migrate an uploaded library with the server's default adapter: the file, the error report, a preview of
    the first rows and a summary. Errors name the problem, with the file's own name, never a server path."""
    from bridge.io.migrate import MigrateConfig, UsageError, migrate

    if upload is None:
        raise ValueError("upload a library file (.txt, .csv, .tsv or .jsonl)")
    src = Path(upload if isinstance(upload, str) else upload.name)  # a file Gradio received, never a typed path
    out = models.batch_dir() / f"{src.stem}.migrated{src.suffix}"
    hide = lambda text: text.replace(str(out.parent) + "/", "").replace(str(src), src.name)  # noqa: E731
    lines: list[str] = []
    cfg = MigrateConfig(input=src, out=out, prompt_column=prompt_column or "prompt",
                        negative_column=negative_column or None, adapter=models.adapters[models.default_adapter()],
                        progress=False)
    try:
        migrate(cfg, log=lines.append)
    except UsageError as err:
        raise ValueError(hide(str(err))) from None
    errors = out.with_name(out.name + ".errors.jsonl")
    return (str(out), str(errors) if errors.exists() else None, preview(src, out, cfg.prompt_column),
            hide("\n".join(lines)))


PREVIEW_ROWS = 5


def preview(src: Path, out: Path, prompt_column: str) -> list[list[str]]:
    """The first rows of a migrated library: [prompt, translated prompt]."""
    import csv
    import itertools

    suffix = src.suffix.lower()
    with out.open(encoding="utf-8", newline="") as fh:
        if suffix == ".txt":
            with src.open(encoding="utf-8", errors="replace") as before:
                return [[a.rstrip("\r\n"), b.rstrip("\n")] for a, b in itertools.islice(zip(before, fh), PREVIEW_ROWS)]
        if suffix == ".jsonl":
            rows = (json.loads(line) for line in fh)
        else:
            rows = csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ",")
        return [[str(r.get(prompt_column, "")), str(r.get("translated_prompt", ""))]
                for r in itertools.islice(rows, PREVIEW_ROWS)]


PNG_INFO_CHARS = 65_536


def png_info_fn(image) -> tuple[str, str, str, str]:
    """A1111's PNG Info: the "parameters" text of a dropped PNG, split into prompt, negative, settings and its
    seed (for Compare; empty when it has none)."""
    from PIL import Image, UnidentifiedImageError

    from bridge.syntax.infotext import parse_infotext

    if image is None:
        return "", "", "", ""
    try:
        with Image.open(image) as im:
            text = im.info.get("parameters")
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ValueError(f"this file cannot be read as a PNG ({type(err).__name__})") from None
    if not isinstance(text, str) or not text.strip():
        raise ValueError("this PNG has no A1111 parameters (no 'parameters' text chunk)")
    if len(text) > PNG_INFO_CHARS:
        raise ValueError(f"its parameters have {len(text):,} characters; the limit is {PNG_INFO_CHARS:,}")
    info = parse_infotext(text)
    settings = ", ".join(f"{k}: {v}" for k, v in info.params.items())
    seed = info.params.get("Seed", "").strip()
    return info.prompt, info.negative_prompt or "", settings, seed if seed.isdigit() else ""


def _examples() -> list[list[str]]:
    from bridge.models.tiny import default_prompts_dir

    rows: list[list[str]] = []
    try:
        with (default_prompts_dir() / "a1111.jsonl").open(encoding="utf-8") as fh:
            for line, _ in zip(fh, range(3)):
                r = json.loads(line)
                rows.append([r["prompt"], r["negative_prompt"] or ""])
        with (default_prompts_dir() / "plain.jsonl").open(encoding="utf-8") as fh:
            rows += [[json.loads(line)["prompt"].strip(), ""] for line, _ in zip(fh, range(3))]
    except OSError:
        rows = [["(masterpiece:1.2), a lighthouse at dusk, <lora:add_detail:0.7>, by greg rutkowski",
                 "EasyNegative, (worst quality:1.4)"]]
    return rows


# Compare's grid is shown at its own size, never stretched to the page: its cells are already scaled by a whole
# factor (render_cell), and stretching blew two 32 px seeds up to 600 px each. Wider than the page, it shrinks.
CSS = ("#c-grid img { width: auto !important; height: auto !important; max-width: 100%; max-height: none !important; "
       "object-fit: none; image-rendering: pixelated; }")


def _user_errors(fn):
    """A ValueError is the user's to fix: shown in the UI as its message (gr.Error), not as a server error."""
    import functools

    import gradio as gr

    @functools.wraps(fn)  # keeps the signature: the API's parameter names come from it
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ValueError as err:
            raise gr.Error(str(err)) from None

    return wrapped


def build_app(cfg: ServeConfig | None = None):
    """The three tabs over one set of loaded models; each button is also a named API endpoint."""
    import gradio as gr

    cfg = cfg or ServeConfig()
    models = Models(cfg)
    models.reference()  # an index made with another scorer is refused at start, not at the first Compare
    examples = _examples()

    # The API endpoints: named parameters, as gradio_client shows them (`client.view_api()`).
    @_user_errors
    def translate(prompt: str, negative_prompt: str = "", adapter: str = models.default_adapter(),
                  networks: str = "drop", embeddings: str = "drop", syntax: str = "a1111", to_syntax: str = "a1111",
                  faithfulness: str = "strict"):
        policy = MigrationPolicy(networks=networks, embeddings=embeddings, syntax=syntax, to_syntax=to_syntax,
                                 faithfulness=faithfulness)
        return translate_fn(models, prompt, negative_prompt, adapter, policy)

    @_user_errors
    def compare(prompt: str, negative_prompt: str = "", seeds: str = "", count: float = 4, base_seed: float = 0,
                progress=gr.Progress()):
        return compare_fn(models, prompt, negative_prompt, seeds, count, base_seed, progress)

    @_user_errors
    def batch(library, prompt_column: str = "prompt", negative_column: str = ""):
        return batch_fn(models, library, prompt_column, negative_column)

    with gr.Blocks(title="sd-bridge: SD1.5 -> SD2 prompt translation", delete_cache=(60, UPLOAD_WINDOW)) as demo:
        gr.Markdown(header(models), elem_id="header")
        translate_parts = _translate_tab(gr, cfg, models, examples, translate, _user_errors(png_info_fn))
        compare_parts = _compare_tab(gr, cfg, models, examples, compare)
        _carry_to_compare(translate_parts, compare_parts)
        _batch_tab(gr, cfg, batch)
    demo.queue(default_concurrency_limit=cfg.concurrency, max_size=64)
    return demo


def header(models: Models) -> str:
    """The app's header: what it is for, and plainly which strategy this server runs (issue #43: without an
    adapter the header promised rewriting that never happened)."""
    from bridge.translator import SYNTAX_NOTE

    head = "# sd-bridge\nPrompts written for **Stable Diffusion 1.5**, translated for **SD 2.x**.\n\n"
    default = models.default_adapter()
    if default == SYNTAX:
        return head + (f"**What runs here: {SYNTAX_NOTE}.** This server was started without a trained bridge "
                       "(`sd-bridge serve --adapter DIR`), so no word of a prompt is changed: weights, BREAK/AND, "
                       "prompt editing and wildcards are kept, and what SD2 cannot load (SD1 LoRAs, embeddings, "
                       "Clip skip) is dropped or converted by the migration policy, each with a warning.")
    return head + (f"**What runs here: learned rewriting by adapter `{default}`**, trained so that SD2 draws what "
                   "SD1.5 drew, after the syntax migration. A rewrite that would break a prompt's structure falls "
                   f"back to the {SYNTAX_NOTE}, with a warning. Pick \"{SYNTAX}\" in Translate for no rewording.")


def _carry_to_compare(translate_parts: dict, compare_parts: tuple) -> None:
    """What a user works on in Translate is what Compare renders: the prompts follow as they change (in the
    browser, no server call), and a PNG's seed from PNG Info becomes Compare's seed."""
    c_prompt, c_negative, c_seeds = compare_parts
    same = "(text) => text"
    translate_parts["prompt"].change(None, translate_parts["prompt"], c_prompt, js=same, queue=False,
                                     show_progress="hidden", api_name=False)
    translate_parts["negative"].change(None, translate_parts["negative"], c_negative, js=same, queue=False,
                                       show_progress="hidden", api_name=False)
    translate_parts["seed"].change(None, translate_parts["seed"], c_seeds, js=same, queue=False,
                                   show_progress="hidden", api_name=False)


def _translate_tab(gr, cfg: ServeConfig, models: Models, examples: list, translate, png_info) -> dict:
    with gr.Tab("Translate"):
        with gr.Row():
            with gr.Column(scale=3):
                prompt = gr.Textbox(label="Prompt (SD1.5)", lines=3, elem_id="prompt")
                counter = gr.Markdown(live_tokens(""), elem_id="token-count")
                negative = gr.Textbox("", label="Negative prompt", lines=2, elem_id="negative")
                neg_counter = gr.Markdown(live_tokens(""), elem_id="negative-token-count")
            with gr.Column(scale=1):
                png = gr.File(label="PNG Info: drop an A1111 PNG to fill the prompts", file_types=[".png"],
                              type="filepath", elem_id="png-info")
                settings = gr.Textbox(label="Its generation settings", lines=3, elem_id="png-settings")
                seed = gr.Textbox("", label="Its seed (Compare renders with it)", elem_id="png-seed",
                                  interactive=False)
        with gr.Row():
            adapter = gr.Dropdown(list(models.adapters), value=models.default_adapter(), label="Adapter",
                                  elem_id="adapter")
            networks = gr.Radio(["drop", "keep"], value="drop", label="LoRA / hypernet tags")
            embeddings = gr.Radio(["drop", "keep"], value="drop", label="SD1 embeddings")
            syntax = gr.Radio(["a1111", "novelai", "comfyui"], value="a1111",
                              label="Written for (novelai: {x} weighs x1.05; comfyui: (x:w) sets the weight)")
            to_syntax = gr.Radio(["a1111", "comfyui"], value="a1111", label="Write for")
            faithfulness = gr.Radio(["strict", "lenient", "off"], value="strict", elem_id="faithfulness",
                                    label="Faithfulness guard (strict: a rewrite changes only the words its adapter "
                                          "learned to change)")
        go = gr.Button("Translate", variant="primary", elem_id="translate-btn")
        out_prompt = gr.Textbox(label="Translated prompt (SD2)", lines=3, elem_id="translated", buttons=["copy"])
        out_negative = gr.Textbox(label="Translated negative prompt", lines=2, elem_id="translated-negative",
                                  buttons=["copy"])
        diff = gr.HighlightedText(label="Changes to the prompt", combine_adjacent=True,
                                  color_map={"removed": "red", "added": "green"})
        neg_diff = gr.HighlightedText(label="Changes to the negative prompt", combine_adjacent=True,
                                      color_map={"removed": "red", "added": "green"})
        warnings = gr.Textbox(label="Warnings", lines=3)
        tokens = gr.Markdown(elem_id="strategy")
        gr.Examples(examples, [prompt, negative])
        # Live, while typing, with no queue; a negative is read as A1111 reads negatives (parse(negative=True)).
        prompt.change(live_tokens, prompt, counter, queue=False, show_progress="hidden", api_name=False)
        negative.change(lambda text: live_tokens(text, negative=True), negative, neg_counter, queue=False,
                        show_progress="hidden", api_name=False)
        png.upload(png_info, png, [prompt, negative, settings, seed], api_name="png_info")
        go.click(translate, [prompt, negative, adapter, networks, embeddings, syntax, to_syntax, faithfulness],
                 [out_prompt, out_negative, diff, neg_diff, warnings, tokens], api_name="translate",
                 concurrency_limit=max(cfg.concurrency, 4))
    return {"prompt": prompt, "negative": negative, "seed": seed}


def _compare_tab(gr, cfg: ServeConfig, models: Models, examples: list, compare) -> None:
    with gr.Tab("Compare"):
        *_, compare_note = models.compare_presets()
        note = gr.Markdown(compare_note, elem_id="compare-note")  # which models render, before any render
        gr.Markdown(RNG_NOTE)
        c_prompt = gr.Textbox(label="Prompt (SD1.5)", lines=3, elem_id="c-prompt")
        c_negative = gr.Textbox("", label="Negative prompt", lines=2)
        with gr.Row():
            c_seeds = gr.Textbox("", label="Seeds (e.g. 1234, 5678; empty: derived from the base seed)",
                                 elem_id="c-seeds")
            c_count = gr.Slider(1, cfg.max_seeds, value=min(4, cfg.max_seeds), step=1, label="Derived seeds",
                                elem_id="c-count")
            c_seed = gr.Number(value=0, precision=0, label="Base seed")
        c_go = gr.Button("Render and compare", variant="primary", elem_id="compare-btn")
        gr.Markdown("Rows: the source model with the source prompt, the target model with the source prompt, the "
                    "target model with the translation (and in the toy world with the oracle's); a column per seed"
                    + (", and each row's nearest reference" if cfg.reference else "")
                    + ". Under each target image: its agreement with the source image of the same seed.",
                    elem_id="c-legend")
        c_grid = gr.Image(label="Compare grid", show_label=False, type="pil", format="png", interactive=False,
                          elem_id="c-grid", buttons=["download"])
        c_translation = gr.Textbox(label="Translation used", buttons=["copy"])
        c_summary = gr.Markdown(elem_id="c-summary")
        with gr.Accordion("Details: the full seeds, each row's text and every agreement", open=False):
            c_details = gr.JSON(show_label=False, elem_id="c-details")
        gr.Examples(TOY_EXAMPLES + examples if compare_note == TOY_NOTE else examples, [c_prompt, c_negative])
        c_go.click(compare, [c_prompt, c_negative, c_seeds, c_count, c_seed],
                   [c_grid, c_translation, c_summary, note, c_details], api_name="compare",
                   concurrency_limit=cfg.concurrency)
    return c_prompt, c_negative, c_seeds


def _batch_tab(gr, cfg: ServeConfig, batch) -> None:
    with gr.Tab("Batch"):
        upload = gr.File(label="Prompt library (.txt, .csv, .tsv, .jsonl)",
                         file_types=[".txt", ".csv", ".tsv", ".jsonl"], elem_id="b-upload")
        with gr.Row():
            # Filled from the uploaded file's header (a user had to type names the error message already listed).
            b_prompt_col = gr.Dropdown(["prompt"], value="prompt", label="Prompt column/key", allow_custom_value=True,
                                       elem_id="b-prompt-col")
            b_neg_col = gr.Dropdown([""], value="", label="Negative prompt column/key (optional)",
                                    allow_custom_value=True, elem_id="b-neg-col")
        b_go = gr.Button("Migrate", variant="primary", elem_id="batch-btn")
        b_error = gr.Markdown(visible=False, elem_id="b-error")
        # Two equal, wrapping columns: each translation beside its source, with no horizontal scrolling.
        b_preview = gr.Dataframe(headers=["prompt", "translated prompt"], label="First rows", elem_id="b-preview",
                                 wrap=True, column_widths=["50%", "50%"], interactive=False)
        with gr.Row():
            b_out = gr.File(label="Migrated library")
            b_errors = gr.File(label="Error report (rows that failed)")
        b_log = gr.Textbox(label="Summary", lines=3, elem_id="b-summary")
        upload.upload(columns_fn, upload, [b_prompt_col, b_neg_col], api_name=False)
        outputs = [b_out, b_errors, b_preview, b_log]

        def migrate_in_page(library, prompt_column, negative_column):
            """The button's event: an error is shown once, in the page above the results (as gr.Error it was a
            toast and a red badge on each of the four outputs)."""
            try:
                return (*batch(library, prompt_column, negative_column), gr.Markdown(visible=False))
            except gr.Error as err:
                return None, None, None, "", gr.Markdown(f"**Error:** {err.message}", visible=True)

        b_go.click(migrate_in_page, [upload, b_prompt_col, b_neg_col], [*outputs, b_error], api_name=False,
                   concurrency_limit=cfg.concurrency)
        # The API endpoint, unchanged: a client gets the error as an error.
        gr.Button(visible=False).click(batch, [upload, b_prompt_col, b_neg_col], outputs, api_name="batch",
                                       concurrency_limit=cfg.concurrency)


HEADER_BYTES = 65_536


def library_columns(path: Path) -> list[str]:
    """The columns a Batch user can pick: a CSV/TSV header, the keys of a JSONL file's first object (read from
    its first 64 KiB); none for a text file or what cannot be read as such."""
    import csv
    import io

    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv", ".jsonl"):
        return []
    with path.open("rb") as fh:
        head = fh.read(HEADER_BYTES).decode("utf-8-sig", errors="replace")
    if suffix == ".jsonl":
        for line in head.splitlines():
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    return []
                return [str(k) for k in row] if isinstance(row, dict) else []
        return []
    try:
        header = next(csv.reader(io.StringIO(head), delimiter="\t" if suffix == ".tsv" else ","), [])
    except csv.Error:
        return []
    return [c for c in header if c]


def columns_fn(upload):
    """Dropdown updates for the prompt and negative columns of an uploaded library: the first column named like
    a negative prompt ("neg"), else none; `prompt`, else a column named like one (…prompt…, text, caption),
    else the first other column."""
    import gradio as gr

    columns = library_columns(Path(upload)) if upload else []
    if not columns:
        return gr.Dropdown(["prompt"], value="prompt"), gr.Dropdown([""], value="")
    negative = next((c for c in columns if "neg" in c.lower()), "")
    named = lambda test: [c for c in columns if c != negative and test(c.lower())]  # noqa: E731
    prompt = next(iter(named(lambda c: c == "prompt") + named(lambda c: "prompt" in c)
                       + named(lambda c: c in ("text", "caption", "positive")) + named(lambda c: True)), columns[0])
    return gr.Dropdown(columns, value=prompt), gr.Dropdown(["", *columns], value=negative)
