"""The sd-bridge Gradio app (`sd-bridge serve`, or `python app.py`).

Tabs: Translate (prompt + negative -> translation, highlighted diff, warnings, token counts), Compare
(source prompt on the source model vs translation on the target model at the same seeds, with the CLIP
agreement per seed), Batch (upload a library, download the migrated file and the error report).

It calls the same code as the CLI (bridge.Translator, bridge.render, bridge.score, bridge.migrate). Safety:
models load on first use, not at import; binds 127.0.0.1 unless --host; never shares; uploads are size
limited; no `allowed_paths`, and it reads no path a user types (only files Gradio itself received).
"""

from __future__ import annotations

import difflib
import json
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from bridge import presets
from bridge.policy import MigrationPolicy

TOY_NOTE = ("Rendering with the **toy world** (no GPU or no local weights for SD1.5/SD2): toy-sd15 → toy-sd2, "
            "scored by toy-clip. These small trained models read toy-world prompts only, such as the examples "
            "below; the oracle row shows the known correct translation.")
TINY_NOTE = ("Rendering with the tiny offline models: their images are random noise, so this tab shows how the "
             "comparison works, not real results.")
TOY_EXAMPLES = [["a crimson circle", ""], ["a big azure square by bridget riley", ""],
                ["a small yellow triangle on the left", ""], ["a green striped circle on a beige background", ""]]


@dataclass
class ServeConfig:
    """Serve the Gradio app: Translate, Compare and Batch tabs."""

    host: str = field(default="127.0.0.1", metadata={"help": "interface to bind (0.0.0.0 exposes it on the network)"})
    port: int = field(default=7860, metadata={"help": "port"})
    adapter: Path | None = field(default=None, metadata={"help": "adapter directory (default: syntax strategy)"})
    source: str = field(default="auto", metadata={"help": "source pipeline for Compare (auto: sd15 when its weights "
                                                           "are local and a GPU is present, else tiny-sd15)"})
    target: str = field(default="auto", metadata={"help": "target pipeline for Compare (auto: sd2-base or tiny-sd2)"})
    scorer: str = field(default="auto", metadata={"help": "scorer for Compare (auto: vit-h-14 or tiny-clip)"})
    max_seeds: int = field(default=4, metadata={"help": "most seeds a Compare request may ask for"})
    concurrency: int = field(default=1, metadata={"help": "requests run at once per event (renders are heavy)"})
    max_file_size: str = field(default="10mb", metadata={"help": "upload size limit for Batch"})
    device: str = field(default="auto", metadata={"help": "device for models"})


class Models:
    """Lazily loaded translator, renderers and scorer, shared by all requests."""

    def __init__(self, cfg: ServeConfig):
        self.cfg = cfg
        self._lock = threading.Lock()
        self._translator = None
        self._compare = None

    def translator(self):
        from bridge.translator import Translator

        with self._lock:
            if self._translator is None:
                self._translator = Translator.from_pretrained(self.cfg.adapter, policy=MigrationPolicy())
            return self._translator

    def compare_presets(self) -> tuple:
        """(source, target, scorer, note) for Compare, resolved without loading anything: the real presets
        when their weights are local and a GPU is present, else the toy world, and a note that says which."""
        from bridge.loading import is_available_locally, resolve_device

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
        from bridge.loading import resolve_device
        from bridge.render import Renderer
        from bridge.score import Scorer

        with self._lock:
            if self._compare is None:
                device = resolve_device(self.cfg.device)
                src, tgt, sc, note = self.compare_presets()
                self._compare = (Renderer(src, device=device), Renderer(tgt, device=device), Scorer(sc, device=device),
                                 note)
            return self._compare


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


def translate_fn(models: Models, prompt: str, negative: str):
    if not prompt or not prompt.strip():
        raise ValueError("enter a prompt to translate")
    t = models.translator().translate([prompt], [negative or None])[0]
    warnings = "\n".join(f"[{w['code']}] ({w['field']}) {w['message']}" for w in t.warnings) or "none"
    tokens = f"tokens per chunk: {t.tokens_before} -> {t.tokens_after} (strategy: {t.strategy})"
    return t.translated_prompt, t.translated_negative_prompt or "", word_diff(prompt, t.translated_prompt), warnings, tokens


def compare_fn(models: Models, prompt: str, negative: str, seeds: float, seed: float):
    import torch

    from bridge.render import derive_seed
    from bridge.score import cosine

    if not prompt or not prompt.strip():
        raise ValueError("enter a prompt to compare")
    n = int(seeds)
    if not 1 <= n <= models.cfg.max_seeds:
        raise ValueError(f"seeds must be between 1 and {models.cfg.max_seeds}")
    t = models.translator().translate([prompt], [negative or None])[0]
    src_r, tgt_r, scorer, note = models.compare_models()
    seed_list = [derive_seed(int(seed), prompt, k) for k in range(n)]
    src = src_r([prompt] * n, seed_list, [negative or None] * n)
    tgt = tgt_r([t.translated_prompt] * n, seed_list, [t.translated_negative_prompt] * n)
    right = _toy_oracle(prompt, negative) if src_r.preset.toy and tgt_r.preset.toy else None
    with torch.inference_mode():
        src_emb = scorer.embed_images(src)
        agree = cosine(src_emb, scorer.embed_images(tgt))
        if right is not None:
            best = tgt_r([right.prompt] * n, seed_list, [right.negative_prompt] * n)
            best_agree = cosine(src_emb, scorer.embed_images(best))
    gallery = []
    for k in range(n):
        gallery.append((src[k], f"seed {seed_list[k]} · {src_r.preset.name} · source prompt"))
        gallery.append((tgt[k], f"seed {seed_list[k]} · {tgt_r.preset.name} · translation · agreement {agree[k]:.3f}"))
        if right is not None:
            gallery.append((best[k], f"seed {seed_list[k]} · {tgt_r.preset.name} · oracle · agreement "
                                     f"{best_agree[k]:.3f}"))
    summary = (f"mean agreement {sum(agree) / n:.3f} over {n} seed(s) "
               f"({tgt_r.preset.name} translation vs {src_r.preset.name} source, scorer {scorer.preset.name})")
    if right is not None:
        neg = f" (negative: {right.negative_prompt!r})" if right.negative_prompt else ""
        summary += (f"; the oracle translation {right.prompt!r}{neg} agrees {sum(best_agree) / n:.3f}"
                    f" (drifts: {', '.join(right.drifts) or 'none'})")
    return gallery, t.translated_prompt, summary, note


def _toy_oracle(prompt: str, negative: str):
    """The toy world's correct translation, or None for a prompt outside its grammar."""
    from bridge.toy.world import NotAToyPrompt, oracle

    try:
        return oracle(prompt, negative or "")
    except NotAToyPrompt:
        return None


def batch_fn(models: Models, upload, prompt_column: str, negative_column: str):
    from bridge.migrate import MigrateConfig, run_migrate

    if upload is None:
        raise ValueError("upload a library file (.txt, .csv, .tsv or .jsonl)")
    src = Path(upload if isinstance(upload, str) else upload.name)  # a file Gradio received, never a typed path
    workdir = Path(tempfile.mkdtemp(prefix="sd-bridge-batch-"))
    out = workdir / f"{src.stem}.migrated{src.suffix}"
    lines: list[str] = []
    cfg = MigrateConfig(input=src, out=out, prompt_column=prompt_column or "prompt",
                        negative_column=negative_column or None, adapter=models.cfg.adapter, progress=False)
    code = run_migrate(cfg, log=lines.append)
    if code == 2:
        raise ValueError("; ".join(lines) or "the file could not be migrated (see the server log)")
    errors = out.with_name(out.name + ".errors.jsonl")
    return str(out), str(errors) if errors.exists() else None, "\n".join(lines)


def _examples() -> list[list[str]]:
    from bridge.tiny import default_prompts_dir

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


def build_app(cfg: ServeConfig | None = None):
    import gradio as gr

    cfg = cfg or ServeConfig()
    models = Models(cfg)
    examples = _examples()
    with gr.Blocks(title="sd-bridge: SD1.5 -> SD2 prompt translation") as demo:
        gr.Markdown("# sd-bridge\nRewrite prompts written for **Stable Diffusion 1.5** so that **SD 2.x** draws "
                    "what SD1.5 drew. Weights, BREAK/AND, prompt editing and wildcards are kept; SD1-only LoRAs "
                    "and embeddings are handled by the migration policy.")
        with gr.Tab("Translate"):
            prompt = gr.Textbox(label="Prompt (SD1.5)", lines=3, elem_id="prompt")
            negative = gr.Textbox(label="Negative prompt", lines=2, elem_id="negative")
            go = gr.Button("Translate", variant="primary", elem_id="translate-btn")
            out_prompt = gr.Textbox(label="Translated prompt (SD2)", lines=3, elem_id="translated")
            out_negative = gr.Textbox(label="Translated negative prompt", lines=2)
            diff = gr.HighlightedText(label="Changes", combine_adjacent=True,
                                      color_map={"removed": "red", "added": "green"})
            warnings = gr.Textbox(label="Warnings", lines=3)
            tokens = gr.Markdown()
            gr.Examples(examples, [prompt, negative])
            go.click(lambda p, n: translate_fn(models, p, n), [prompt, negative],
                     [out_prompt, out_negative, diff, warnings, tokens], api_name="translate",
                     concurrency_limit=max(cfg.concurrency, 4))
        with gr.Tab("Compare"):
            *_, compare_note = models.compare_presets()
            note = gr.Markdown(compare_note)  # says which models render before anything is rendered
            c_prompt = gr.Textbox(label="Prompt (SD1.5)", lines=3)
            c_negative = gr.Textbox(label="Negative prompt", lines=2)
            with gr.Row():
                c_seeds = gr.Slider(1, cfg.max_seeds, value=2, step=1, label="Seeds")
                c_seed = gr.Number(value=0, precision=0, label="Base seed")
            c_go = gr.Button("Render and compare", variant="primary")
            c_gallery = gr.Gallery(label="source model: source prompt | target model: translation (| oracle), per seed",
                                   columns=3 if compare_note == TOY_NOTE else 2, height="auto")
            c_translation = gr.Textbox(label="Translation used")
            c_summary = gr.Markdown()
            gr.Examples(TOY_EXAMPLES + examples if compare_note == TOY_NOTE else examples, [c_prompt, c_negative])
            c_go.click(lambda p, n, s, b: compare_fn(models, p, n, s, b), [c_prompt, c_negative, c_seeds, c_seed],
                       [c_gallery, c_translation, c_summary, note], api_name="compare",
                       concurrency_limit=cfg.concurrency)
        with gr.Tab("Batch"):
            upload = gr.File(label="Prompt library (.txt, .csv, .tsv, .jsonl)",
                             file_types=[".txt", ".csv", ".tsv", ".jsonl"])
            with gr.Row():
                b_prompt_col = gr.Textbox(value="prompt", label="Prompt column/key")
                b_neg_col = gr.Textbox(value="", label="Negative prompt column/key (optional)")
            b_go = gr.Button("Migrate", variant="primary")
            b_out = gr.File(label="Migrated library")
            b_errors = gr.File(label="Error report (rows that failed)")
            b_log = gr.Textbox(label="Summary", lines=3)
            b_go.click(lambda f, pc, nc: batch_fn(models, f, pc, nc), [upload, b_prompt_col, b_neg_col],
                       [b_out, b_errors, b_log], api_name="batch", concurrency_limit=cfg.concurrency)
    demo.queue(default_concurrency_limit=cfg.concurrency, max_size=64)
    return demo


def run_serve(cfg: ServeConfig, log=print, block: bool = True):
    check_port(cfg.host, cfg.port)  # before anything is built or printed: no URL for a server that never ran
    demo = build_app(cfg)
    try:
        demo.launch(server_name=cfg.host, server_port=cfg.port, share=False, max_file_size=cfg.max_file_size,
                    prevent_thread_lock=True, show_error=True, quiet=True)
    except OSError as err:  # taken in the moment since the check; Gradio's own message points at an env var
        raise ValueError(f"cannot serve on {cfg.host}:{cfg.port} ({err}); choose another with --port") from None
    log(f"sd-bridge app on http://{cfg.host}:{cfg.port} (share off)")
    if not block:
        return demo
    demo.block_thread()
    return 0


def check_port(host: str, port: int) -> None:
    """A clear one-line error when the port is taken, instead of Gradio's traceback."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a TIME_WAIT port is free
        try:
            sock.bind((host, port))
        except OSError as err:
            raise ValueError(f"port {port} on {host} is in use or not available ({err.strerror}); choose another "
                             "with --port") from None


if __name__ == "__main__":  # pragma: no cover
    import sys

    from bridge.config import parse_config

    sys.exit(run_serve(parse_config(ServeConfig, sys.argv[1:], prog="app.py")))
