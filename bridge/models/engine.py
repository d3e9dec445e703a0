"""Exported rewriters (`sd-bridge export`, #15): what an export directory holds and how it is loaded.

An export is a trained adapter merged into its base rewriter and converted for inference:

    DIR/export.json             backend, quantization, the source adapter and its sha256, library versions
    DIR/config.json             the resolved ExportConfig
    DIR/sd_bridge_adapter.json  the adapter's own metadata (target, prefixes, format, token limit), copied
    DIR/train_prompts.json      the adapter's training-prompt hashes (eval refuses leakage), when it had them
    DIR/edits.json              the adapter's edit record (the faithfulness guard's licence), when it had one
    DIR/tokenizer/              the base rewriter's tokenizer
    DIR/engine/                 ctranslate2: the converted model; torch: the merged transformers model

`Translator.from_pretrained(DIR)` loads it like an adapter. Backends:
- ctranslate2: a C++ engine made for Transformer inference (int8 GEMMs on CPU, fp16 on GPU). Driven through
  `Ct2Rewriter.generate_ids`, which `bridge.models.rewriter.generate` calls instead of `model.generate`.
- torch: the merged model in transformers (fp32, fp16). With int8 it is loaded into `bridge.models.copydecode`:
  int8 weights per channel and activations per token, greedy decoding that drafts from the source and keeps
  what the model agrees with (the same output as decoding one token at a time, in fewer decoder passes).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

EXPORT_META = "export.json"
BACKENDS = ("ctranslate2", "torch")
QUANTIZE = ("int8", "fp16", "none")
_CT2_QUANTIZATION = {"int8": "int8", "fp16": "float16", "none": None}


def is_export(path: Path | str) -> bool:
    return (Path(path) / EXPORT_META).is_file()


def read_meta(path: Path | str) -> dict:
    meta = json.loads((Path(path) / EXPORT_META).read_text(encoding="utf-8"))
    if meta.get("backend") not in BACKENDS:
        raise ValueError(f"{path}: unknown export backend {meta.get('backend')!r} (known: {', '.join(BACKENDS)})")
    return meta


# ctranslate2 picks its own CPU kernels (softmax, norms, activation quantization; oneDNN's GEMMs dispatch
# themselves) once per process, when it first needs them. It selects AVX2 at most by itself and AVX-512 only when
# this variable asks ("Note that AVX512 can only be enabled with the environment variable at this time", its
# src/cpu/cpu_isa.cc, which gives no reason). A small gain on the 2-core AMD EPYC machine: a flan-t5-base-shaped
# int8 export, the inference benchmark's 1,000 prompts, three alternating pairs of processes (`--parts isa`),
# 10.88 prompts/s with it against 10.52 (1.000 to 1.063 per pair); 6% on the flan-t5-small shape.
# So sd-bridge asks for it when the CPU has every AVX-512 subset ctranslate2's path needs and the user set
# nothing; CT2_FORCE_CPU_ISA=AVX2 keeps ctranslate2's own choice (measure on CPUs that clock down under AVX-512).
ISA_VARIABLE = "CT2_FORCE_CPU_ISA"
_AVX512_FLAGS = {"avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"}  # ctranslate2's cpu_supports_avx512
_ISA_NEEDS = {"AVX512": _AVX512_FLAGS, "AVX2": {"avx2"}, "AVX": {"avx"}, "NEON": set(), "GENERIC": set()}
_process_isa: str | None = None  # what this process's ctranslate2 was started with, once it was


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux lists them; empty elsewhere (then nothing is forced)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    return next((set(line.split(":", 1)[1].split()) for line in text.splitlines() if line.startswith("flags")),
                set())


def isa_to_force(flags: set[str], environ) -> str | None:
    """The ISA to ask ctranslate2 for: none when the user chose one (their choice stands) or the CPU lacks any
    of the AVX-512 subsets ctranslate2 requires (forcing it then fails in ctranslate2)."""
    if environ.get(ISA_VARIABLE) or not _AVX512_FLAGS <= flags:  # (empty is unset, to ctranslate2 too)
        return None
    return "AVX512"


def planned_isa(environ=os.environ) -> str:
    """The CPU kernels a new process's ctranslate2 will run with: the ISA sd-bridge asks for, else the user's
    CT2_FORCE_CPU_ISA, else "default" (ctranslate2's own choice, AVX2 at most)."""
    return isa_to_force(cpu_flags(), environ) or environ.get(ISA_VARIABLE) or "default"


def check_isa(value: str, flags: set[str]) -> None:
    """Refuse a CT2_FORCE_CPU_ISA that ctranslate2 would refuse only at its first translation, hours into a run."""
    if value not in _ISA_NEEDS:
        raise ValueError(f"{ISA_VARIABLE}={value!r} is not a CPU ISA ctranslate2 knows ({', '.join(_ISA_NEEDS)}); "
                         "unset it to let sd-bridge choose")
    missing = _ISA_NEEDS[value] - flags
    if flags and missing:
        raise ValueError(f"{ISA_VARIABLE}={value!r}: this CPU lacks {', '.join(sorted(missing))}")


def start_isa() -> str:
    """Set the ISA before this process's first ctranslate2 translation (when ctranslate2 reads the variable, once)
    and return what it runs with; later calls return the same."""
    global _process_isa
    if _process_isa is None:
        if os.environ.get(ISA_VARIABLE):
            check_isa(os.environ[ISA_VARIABLE], cpu_flags())
        _process_isa = planned_isa()
        if _process_isa != "default":
            os.environ[ISA_VARIABLE] = _process_isa
    return _process_isa


def cpu_threads() -> int:
    """The CPUs this process may run on (2 on the reference machine)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def ct2_device(device: str) -> tuple[str, int]:
    """("cpu" or "cuda", device index) for a --device value, refused in one line when ctranslate2 cannot run there."""
    import ctranslate2

    if device == "auto":
        device = "cuda" if ctranslate2.get_cuda_device_count() else "cpu"
    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"the ctranslate2 backend runs on cpu or cuda, not {device!r}")
    if kind == "cuda" and ctranslate2.get_cuda_device_count() == 0:
        raise ValueError(f"device {device!r} requested but ctranslate2 sees no CUDA device")
    return kind, int(index or 0)


class Ct2Rewriter:
    """A CTranslate2 seq2seq translator that `bridge.models.rewriter.generate` drives like a transformers model."""

    def __init__(self, path: Path, device: str = "cpu", threads: int = 0):
        self.isa = start_isa()  # before ctranslate2's first translation, which fixes its kernels
        import ctranslate2

        kind, index = ct2_device(device)
        # On the CPU, one batch per core, each on one thread: decoding a batch of 32 is a chain of small
        # GEMMs that two threads split poorly. Measured once on the 2-core machine (ctranslate2 alone, a
        # flan-t5-base-shaped int8 model, 256 plain prompts, 48 tokens, batch 32): 16.0 prompts/s with two
        # batches side by side, 9.5 with one batch on two threads.
        # compute_type "default" keeps the type the model was exported in (int8, float16, float32) when the
        # device supports it, else the nearest one it does (ctranslate2 docs, "Quantization").
        parallel = (threads or cpu_threads()) if kind == "cpu" else 1
        import torch

        # Building the translator sets the process's OpenMP thread count to intra_threads (1): torch in the
        # same process (the app's renders, eval's) would then run on one thread. Its own count is put back.
        torch_threads = torch.get_num_threads()
        self.translator = ctranslate2.Translator(str(path), device=kind, device_index=index,
                                                 compute_type="default", inter_threads=parallel, intra_threads=1)
        torch.set_num_threads(torch_threads)
        self.compute_type = self.translator.compute_type
        self.device = kind

    def generate_batches(self, tokenizer, batches: list[tuple[list[str], int, int]], num_candidates: int = 1,
                         sample: bool = False, temperature: float = 1.0, prefix: str = "") -> list[list[list[int]]]:
        """Per (texts, max_new_tokens, seed) batch, `num_candidates` rows per text, in order: the generated ids,
        with the EOS when the generation ended (as transformers returns them, minus the decoder start token).
        Greedy batches are all submitted at once and run in parallel; sampled ones run one after another, each
        after seeding ctranslate2's generator with its seed."""
        import ctranslate2

        # max_decoding_length counts the EOS like transformers' max_new_tokens does; sampling_topk 0 samples from
        # the whole distribution (transformers top_k=0), 1 is greedy.
        options = dict(beam_size=1 if sample else num_candidates, num_hypotheses=num_candidates,
                       return_end_token=True, sampling_topk=0 if sample else 1, sampling_temperature=temperature,
                       max_input_length=0)
        pending = []
        for texts, limit, seed in batches:
            enc = tokenizer(texts, truncation=True, max_length=512).input_ids
            source = [tokenizer.convert_ids_to_tokens(ids) for ids in enc]
            if sample:
                ctranslate2.set_random_seed(seed)
            pending.append(self.translator.translate_batch(source, max_decoding_length=limit,
                                                           asynchronous=not sample, **options))
        rows = []
        for results in pending:
            results = [r.result() if hasattr(r, "result") else r for r in results]
            rows.append([tokenizer.convert_tokens_to_ids(h) for r in results for h in r.hypotheses])
        return rows


def load(path: Path, device: str = "cpu", threads: int = 0):
    """(model, tokenizer, adapter meta, cache key) for an export directory."""
    from bridge.models.rewriter import AdapterMeta

    key = cache_key(path, device)  # first: it refuses what cannot run here before anything loads
    return (*load_engine(path, device, threads), AdapterMeta.load(path), key)


def load_engine(path: Path, device: str = "cpu", threads: int = 0):
    """(model, tokenizer): the export's engine and its tokenizer, loaded (what `Translator` defers)."""
    from transformers import AutoTokenizer

    meta = read_meta(path)
    tokenizer = AutoTokenizer.from_pretrained(path / "tokenizer", local_files_only=True)
    if meta["backend"] == "ctranslate2":
        return Ct2Rewriter(path / "engine", device, threads), tokenizer
    return _load_torch(path / "engine", meta["quantize"], device, threads), tokenizer


def cache_key(path: Path, device: str = "cpu") -> str:
    """The translation-cache key of an export run on `device`, known before its weights load, so that a run the
    cache fully answers never loads them. What decides a rewrite: the adapter, how it was converted (not
    --check's results, which export.json gains later) and how it runs here. ctranslate2 resolves the compute
    type from the one asked ("default"), the model's weights type, the device and its index
    (`resolve_compute_type` in its include/ctranslate2/types.h); what the device supports stands for the
    device. Its CPU kernels round differently, so an AVX-512 rewrite is cached apart from a default one."""
    meta = read_meta(path)
    if meta["backend"] == "ctranslate2":
        import ctranslate2

        isa = start_isa()  # refuses a CT2_FORCE_CPU_ISA this CPU lacks
        kind, index = ct2_device(device)
        runs_as = ["ctranslate2", ctranslate2.__version__, kind, meta["quantize"],
                   sorted(ctranslate2.get_supported_compute_types(kind, index)), isa if kind == "cpu" else ""]
    else:
        runs_as = f"torch/{_torch_device(device, meta['quantize'])}/{meta['quantize']}"
        if meta["quantize"] == "int8":  # rewritten by copydecode since #44 (torch's dynamic quantization before)
            from bridge.models.copydecode import VERSION

            runs_as += f"/copydecode-{VERSION}"
    made = {k: meta.get(k) for k in ("adapter_sha256", "backend", "quantize", "versions")}
    return hashlib.sha256(json.dumps([made, runs_as], sort_keys=True).encode()).hexdigest()


def _torch_device(device: str, quantize: str) -> str:
    from bridge.models.loading import resolve_device

    device = resolve_device(device)
    if quantize == "int8" and not device.startswith("cpu"):
        raise ValueError("a torch int8 export runs on the CPU only (dynamic quantization); use --device cpu")
    return device


def _load_torch(path: Path, quantize: str, device: str, threads: int):
    import torch
    from transformers import AutoModelForSeq2SeqLM

    device = _torch_device(device, quantize)
    if threads:
        torch.set_num_threads(threads)
    model = AutoModelForSeq2SeqLM.from_pretrained(path, use_safetensors=True, local_files_only=True,
                                                  dtype=torch.float16 if quantize == "fp16" else torch.float32)
    model = model.to(device).eval()
    if quantize == "int8":
        from bridge.models.copydecode import CopyDecoder

        return CopyDecoder(model)  # (the fp32 model is dropped once its weights are quantized)
    return model


def convert(merged, tokenizer, backend: str, quantize: str, dest: Path) -> dict:
    """A merged rewriter written for `backend` (ctranslate2 or torch) with `quantize` weights into `dest`;
    the versions of the libraries that wrote it."""
    import peft
    import torch
    import transformers

    versions = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}
    if backend == "torch":
        merged.to(torch.float16 if quantize == "fp16" else torch.float32).save_pretrained(dest)
        return versions
    import tempfile

    import ctranslate2
    from ctranslate2.converters import TransformersConverter

    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        TransformersConverter(tmp).convert(str(dest), quantization=_CT2_QUANTIZATION[quantize])
    return {**versions, "ctranslate2": ctranslate2.__version__}
