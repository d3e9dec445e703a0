"""`sd-bridge export ADAPTER --out DIR`: a trained adapter merged and converted for fast inference (#15).

    1. check    the adapter loads onto its base rewriter (the same checks as serving it)
    2. merge    peft `merge_and_unload`: the LoRA folded into the base weights, W + B·A·scale, so inference
                runs one plain seq2seq model with no adapter layers
    3. convert  ctranslate2 (default): `TransformersConverter` with int8/float16/float32 weights;
                torch: the merged transformers model itself (int8: bridge.models.copydecode when loaded)
    4. record   export.json (source adapter, its sha256, backend, quantization, versions), config.json, the
                adapter's metadata and training-prompt hashes (see bridge.models.engine for the layout and the conversion)
    5. check    with --check FILE: greedy translations of the export against the adapter's on those prompts;
                the agreement goes into export.json and every prompt that differs into agreement.jsonl

Written into DIR.partial and renamed when complete: an interrupted export leaves nothing that loads as one.
Load the result like an adapter: `Translator.from_pretrained(DIR)`, `--adapter DIR`.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from bridge.config import save_config
from bridge.files import atomic_write
from bridge.models import engine
from bridge.models.faithfulness import EDITS, NEGATIVE_EDITS
from bridge.models.rewriter import ADAPTER_META, TRAIN_PROMPTS
from bridge.translator import Translator, check_adapter, load_adapter

AGREEMENT = "agreement.jsonl"


@dataclass
class ExportConfig:
    """Merge a trained adapter into its base rewriter and convert it for a fast inference engine."""

    adapter: Path | None = field(default=None, metadata={"help": "adapter directory from `sd-bridge train`",
                                                          "positional": "?"})
    out: Path | None = field(default=None, metadata={"help": "export directory (load it with --adapter DIR)"})
    backend: Literal["ctranslate2", "torch"] = field(default="ctranslate2", metadata={
        "help": "ctranslate2: converted for the CTranslate2 engine (fast on CPU); torch: the merged "
                "transformers model (with int8, decoded by drafting from the prompt; greedy or sampled only)"})
    quantize: Literal["int8", "fp16", "none"] = field(default="int8", metadata={
        "help": "weights: int8 (CPU speed), fp16 (GPU) or none (fp32, the adapter's own numbers)"})
    check: str | None = field(default=None, metadata={
        "help": "prompt file (txt/jsonl/csv): compare the export's greedy translations with the adapter's on it"})
    check_limit: int = field(default=1000, metadata={"help": "prompts of --check compared (its first N)"})
    overwrite: bool = field(default=False, metadata={"help": "replace an earlier export in --out"})

    def __post_init__(self):
        if self.adapter is None:
            raise ValueError("give the ADAPTER to export: sd-bridge export ADAPTER --out DIR")
        if self.out is None:
            raise ValueError("--out is required (the export directory)")
        self.adapter, self.out = Path(self.adapter), Path(self.out)
        if not (self.adapter / ADAPTER_META).is_file():
            raise ValueError(f"{self.adapter} is not an sd-bridge adapter directory (no {ADAPTER_META})")
        if engine.is_export(self.adapter):
            raise ValueError(f"{self.adapter} is already an export; export the adapter it was made from")
        if self.out.resolve() == self.adapter.resolve():
            raise ValueError("--out is the adapter directory; choose a new directory for the export")
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"--out {self.out} is a file; an export is a directory: choose another --out")
        partial = self.out.with_name(self.out.name + ".partial")
        if partial.exists():
            if not self.overwrite:
                raise ValueError(f"{partial} exists (an interrupted export, or someone else's files); pass "
                                 "--overwrite to replace an interrupted export, or choose another --out")
            if not _made_by_export(partial):
                raise ValueError(f"{partial} holds files an export does not write; --overwrite only replaces what "
                                 "an export made: move it or choose another --out")
        if self.out.exists() and any(self.out.iterdir()):
            if not self.overwrite:
                raise ValueError(f"{self.out} exists and is not empty; choose another --out or pass --overwrite")
            if not engine.is_export(self.out):  # --overwrite deletes it: only ever an export
                raise ValueError(f"{self.out} is not an export (no {engine.EXPORT_META}); --overwrite only "
                                 "replaces an earlier export")
        check_adapter(self.adapter)  # its files, before any work: a hostile adapter is one line here
        if self.check is not None and not Path(self.check).is_file():
            raise ValueError(f"--check file {self.check} does not exist")
        if self.check_limit < 1:
            raise ValueError(f"check_limit must be >= 1, got {self.check_limit}")


# What an export writes into OUT.partial; --overwrite removes a partial export that holds nothing else.
EXPORT_FILES = {"tokenizer", "engine", ADAPTER_META, TRAIN_PROMPTS, EDITS, NEGATIVE_EDITS, engine.EXPORT_META,
                "config.json", AGREEMENT}


def _made_by_export(folder: Path) -> bool:
    return folder.is_dir() and all(p.name in EXPORT_FILES for p in folder.iterdir())


def run_export(cfg: ExportConfig, log=print) -> int:
    started = time.perf_counter()
    # 1. Check: the adapter loads on its base, in fp32 on the CPU (the precision it was trained to).
    model, tokenizer, meta, adapter_key = load_adapter(cfg.adapter, device="cpu", dtype="float32")
    # 2. Merge.
    merged = model.merge_and_unload()
    partial = cfg.out.with_name(cfg.out.name + ".partial")
    if partial.exists():  # an interrupted export's, checked by ExportConfig (--overwrite, nothing else in it)
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    # 3. Convert.
    tokenizer.save_pretrained(partial / "tokenizer")
    versions = engine.convert(merged, tokenizer, cfg.backend, cfg.quantize, partial / "engine")
    # 4. Record.
    for name in (ADAPTER_META, TRAIN_PROMPTS, EDITS, NEGATIVE_EDITS):  # the guard reads the edit records
        if (cfg.adapter / name).is_file():
            shutil.copy2(cfg.adapter / name, partial / name)
    record = {"backend": cfg.backend, "quantize": cfg.quantize, "source_adapter": str(cfg.adapter.resolve()),
              "adapter_sha256": adapter_key, "rewriter": meta.rewriter, "target": meta.target, "versions": versions}
    atomic_write(partial / engine.EXPORT_META, json.dumps(record, indent=2) + "\n")
    save_config(cfg, partial)
    if cfg.out.exists():
        shutil.rmtree(cfg.out)
    partial.rename(cfg.out)
    size = sum(p.stat().st_size for p in (cfg.out / "engine").rglob("*") if p.is_file())
    log(f"exported {cfg.adapter} -> {cfg.out} ({cfg.backend}, {cfg.quantize}, engine {size / 2**20:.1f} MiB) "
        f"in {time.perf_counter() - started:.1f}s")
    # 5. Check.
    if cfg.check is not None:
        from bridge.io.clean import read_prompt_file

        prompts = [r.prompt for r in read_prompt_file(cfg.check, limit=cfg.check_limit)]
        result = agreement(cfg.adapter, cfg.out, prompts)
        record["agreement"] = {k: result[k] for k in ("prompts", "same", "rate", "check")}
        atomic_write(cfg.out / engine.EXPORT_META, json.dumps(record, indent=2) + "\n")
        atomic_write(cfg.out / AGREEMENT, "".join(json.dumps(d, ensure_ascii=False) + "\n"
                                                  for d in result["differing"]))
        log(f"greedy agreement with the adapter: {result['same']}/{result['prompts']} prompts "
            f"({100 * result['rate']:.1f}%); the {len(result['differing'])} that differ are in "
            f"{cfg.out / AGREEMENT}")
    return 0


def agreement(adapter: Path, export: Path, prompts: list[str], batch_size: int = 32) -> dict:
    """Greedy translations of `prompts` by the adapter and by its export, compared: the share that is the same,
    and each one that is not. No translation cache: both sides generate."""
    started = time.perf_counter()
    ours = Translator.from_pretrained(adapter, batch_size=batch_size).translate(prompts)
    theirs = Translator.from_pretrained(export, batch_size=batch_size).translate(prompts)
    differing = [{"prompt": p, "adapter": a.translated_prompt, "export": b.translated_prompt}
                 for p, a, b in zip(prompts, ours, theirs) if a.translated_prompt != b.translated_prompt]
    same = len(prompts) - len(differing)
    return {"prompts": len(prompts), "same": same, "rate": same / len(prompts), "differing": differing,
            "check": "greedy translate, no cache", "seconds": time.perf_counter() - started}
