"""ONNX Runtime, the other engine issue #15 names, against fp32 transformers and ctranslate2 int8 in one run.

    uv run python -m benchmarks.onnx_runtime [--prompts 256] [--shape flan-t5-base]

ONNX Runtime reaches T5 through optimum-onnx, which needs transformers < 4.58; this project is on 5.x. So the
measurement runs in a second, throwaway environment that uv builds from the registry:

1. Here (the project's environment): the same random rewriter as `benchmarks.inference_backends` (flan-t5-base
   shape, vocabulary padded to 32,128) is saved with tiny-t5's tokenizer (with which the README's numbers for
   this benchmark were measured), with `--prompts` real prompts (the same
   seeded sample, with the rewrite prefix), length-sorted into batches of 32.
2. There (`uv run --no-project --with optimum-onnx[onnxruntime] --with transformers==4.57.6 --with
   ctranslate2==4.8.5`), this file run as a script with --measure: each backend generates greedily, 48 new
   tokens, for the same batches, timed after a warm-up batch:
   - fp32 transformers (the baseline);
   - ONNX Runtime fp32: optimum's export (encoder, decoder with past) and ORTModelForSeq2SeqLM.generate;
   - ONNX Runtime int8: the same, dynamically quantized by optimum's ORTQuantizer (AVX-512 VNNI config,
     per-channel weights), as optimum documents for CPUs;
   - ctranslate2 int8, driven as bridge.models.engine drives it (one batch per core).

The last line reads `onnxruntime int8 vs fp32: X.Xx; ctranslate2 int8 vs fp32: Y.Yx (...)`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.results import recorded

NEW_TOKENS, BATCH = 48, 32
OTHER_ENV = ["--with", "optimum-onnx[onnxruntime]", "--with", "transformers==4.57.6", "--with", "ctranslate2==4.8.5"]


def prepare(root: Path, n: int, shape: str) -> Path:
    """The rewriter's directory (model and tokenizer) and batches.json beside it."""
    from benchmarks.inference_backends import real_prompts, shaped_adapter
    from bridge.models.rewriter import PREFIX

    shaped_adapter(root, shape, tokenizer="tiny-t5")  # as the README's numbers for it were measured
    base = root / f"{shape}-base"
    # transformers 5 writes extra_special_tokens as a list; 4.x reads a dict there. The pieces stay in the
    # vocabulary either way, so the other environment tokenizes the same.
    config_path = base / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if isinstance(config.get("extra_special_tokens"), list):
        config["additional_special_tokens"] = config.pop("extra_special_tokens")
    config_path.write_text(json.dumps(config), encoding="utf-8")
    # length-sorted as bridge.models.rewriter.generate does
    texts = sorted((PREFIX + p for p in real_prompts(n)), key=len)
    batches = [texts[i : i + BATCH] for i in range(0, len(texts), BATCH)]
    (root / "batches.json").write_text(json.dumps(batches), encoding="utf-8")
    return base


def _timed(run, batches) -> float:
    run(batches[0][:4])  # warm-up
    started = time.perf_counter()
    for batch in batches:
        run(batch)
    return time.perf_counter() - started


def measure(base: Path, work: Path) -> dict:
    """In the other environment: prompts/s per backend over the same batches."""
    import ctranslate2
    import torch
    from optimum.onnxruntime import ORTModelForSeq2SeqLM, ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    batches = json.loads((work / "batches.json").read_text(encoding="utf-8"))
    n = sum(map(len, batches))
    tok = AutoTokenizer.from_pretrained(base)
    greedy = dict(max_new_tokens=NEW_TOKENS, do_sample=False, num_beams=1)

    def hf(model):
        def run(batch):
            with torch.inference_mode():
                model.generate(**tok(batch, return_tensors="pt", padding=True), **greedy)
        return run

    out = {}
    model = T5ForConditionalGeneration.from_pretrained(base).eval()
    out["fp32 transformers"] = _timed(hf(model), batches)
    del model
    ort_dir = work / "onnx"
    ORTModelForSeq2SeqLM.from_pretrained(base, export=True).save_pretrained(ort_dir)
    out["onnxruntime fp32"] = _timed(hf(ORTModelForSeq2SeqLM.from_pretrained(ort_dir)), batches)
    q_dir = work / "onnx-int8"
    config = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=True)
    for part in ("encoder_model", "decoder_model", "decoder_with_past_model"):
        if (ort_dir / f"{part}.onnx").is_file():
            ORTQuantizer.from_pretrained(ort_dir, file_name=f"{part}.onnx").quantize(config, q_dir)
    for name in os.listdir(ort_dir):  # configs and tokenizer beside the quantized graphs
        if not name.endswith((".onnx", ".onnx_data")) and not (q_dir / name).exists():
            (q_dir / name).write_bytes((ort_dir / name).read_bytes())
    out["onnxruntime int8"] = _timed(hf(ORTModelForSeq2SeqLM.from_pretrained(
        q_dir, encoder_file_name="encoder_model_quantized.onnx", decoder_file_name="decoder_model_quantized.onnx",
        decoder_with_past_file_name="decoder_with_past_model_quantized.onnx")), batches)
    ct2_dir = work / "ct2-int8"
    ctranslate2.converters.TransformersConverter(str(base)).convert(str(ct2_dir), quantization="int8")
    translator = ctranslate2.Translator(str(ct2_dir), device="cpu", inter_threads=os.cpu_count(), intra_threads=1)

    def ct2_all(batches_):
        jobs = [translator.translate_batch([tok.convert_ids_to_tokens(ids) for ids in tok(b).input_ids],
                                           beam_size=1, max_decoding_length=NEW_TOKENS, max_input_length=0,
                                           asynchronous=True) for b in batches_]
        for job in jobs:
            [r.result() for r in job]

    ct2_all([batches[0][:4]])  # warm-up
    started = time.perf_counter()
    ct2_all(batches)  # all batches at once, one per core, as bridge.models.engine submits them
    out["ctranslate2 int8"] = time.perf_counter() - started
    return {name: {"seconds": s, "prompts_per_s": n / s} for name, s in out.items()} | {"prompts": n}


@recorded("onnx_runtime")
def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--shape", default="flan-t5-base", choices=["flan-t5-base", "flan-t5-small"])
    ap.add_argument("--measure", nargs=2, metavar=("BASE", "WORK"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.measure:  # the other environment: print the result as JSON on the last line
        print(json.dumps(measure(Path(args.measure[0]), Path(args.measure[1]))))
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        base = prepare(Path(tmp), args.prompts, args.shape)
        run = subprocess.run(["uv", "run", "--no-project", *OTHER_ENV, "python", __file__, "--measure", str(base), tmp],
                             capture_output=True, text=True, cwd=tmp)
        if run.returncode:
            raise RuntimeError(f"the onnxruntime environment failed:\n{run.stderr[-3000:]}")
        result = json.loads(run.stdout.strip().splitlines()[-1])
    n, base_rate = result.pop("prompts"), result["fp32 transformers"]["prompts_per_s"]
    print(f"{args.shape} shape (random weights), {n} real prompts, greedy, {NEW_TOKENS} new tokens, batch {BATCH}, "
          f"{os.cpu_count()} CPUs:")
    for name, r in result.items():
        r["ratio"] = r["prompts_per_s"] / base_rate
        print(f"  {name:20s} {r['prompts_per_s']:6.2f} prompts/s  {r['ratio']:4.1f}x fp32")
    print(f"onnxruntime int8 vs fp32: {result['onnxruntime int8']['ratio']:.1f}x; ctranslate2 int8 vs fp32: "
          f"{result['ctranslate2 int8']['ratio']:.1f}x ({args.shape} shape, {n} prompts)")
    return result


if __name__ == "__main__":
    main()
