"""`sd-bridge export` (#15): an adapter merged into its base and converted loads like an adapter and rewrites
like it; the export records where it came from; bad exports are refused in one line, before any work."""

from __future__ import annotations

import json
import os

import pytest

from benchmarks.reliability import tiny_adapter
from bridge import Translator
from bridge.cli import main
from bridge.models import presets
from bridge.commands.export import ExportConfig, run_export
from bridge.models.rewriter import PREFIX, AdapterMeta, generate

LEAVES = ["a red fox in the snow", "masterpiece", "a castle at dusk, dramatic light", "portrait of an old man",
          "studio photo of a cat", "oil painting of a harbour", "a lighthouse in a storm", "neon city at night"]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    return tiny_adapter(tmp_path_factory.mktemp("adapter"), 0)


@pytest.fixture(scope="module")
def exported(adapter, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports")
    for backend, quantize in (("ctranslate2", "none"), ("ctranslate2", "int8"), ("torch", "int8")):
        run_export(ExportConfig(adapter=adapter, out=out / f"{backend}-{quantize}", backend=backend,
                                quantize=quantize), log=lambda *_: None)
    return out


def _rewrites(directory) -> list[list[int]]:
    tr = Translator.from_pretrained(directory, cache=None)
    return [o[0][1] for o in generate(tr.model, tr.tokenizer, LEAVES, PREFIX, max_new_tokens=12, return_ids=True)]


def test_an_export_generates_what_its_adapter_generates(adapter, exported, tmp_path):
    ours = _rewrites(adapter)
    assert _rewrites(exported / "ctranslate2-none") == ours  # fp32: the same token ids, leaf for leaf
    # The merge happened: the base model alone (the LoRA unloaded, not merged) generates something else, and so
    # does the export of another adapter. int8 stays nearer its adapter than that other export: tiny-t5 is random,
    # its greedy choices near-ties, so how many whole rewrites int8 keeps depends on the CPU's int8 kernels
    # (ctranslate2 with AVX-512: most of the 8; on a 2-core AMD EPYC with AVX2 alone: 2, first tokens 3, against
    # 0 for the other export). On a trained adapter int8 agrees on >= 90% (tests/pipeline/test_learning.py).
    from bridge.translator import load_adapter

    model, tok, _, _ = load_adapter(adapter)
    base = [o[0][1] for o in generate(model.unload(), tok, LEAVES, PREFIX, max_new_tokens=12, return_ids=True)]
    assert sum(a == b for a, b in zip(base, ours)) <= len(LEAVES) // 2
    other = tiny_adapter(tmp_path / "other", 1)
    run_export(ExportConfig(adapter=other, out=tmp_path / "other-export", quantize="none"), log=lambda *_: None)
    others = _rewrites(tmp_path / "other-export")
    assert sum(a == b for a, b in zip(others, ours)) <= len(LEAVES) // 2
    for name in ("ctranslate2-int8", "torch-int8"):
        assert _shared_prefix(_rewrites(exported / name), ours) > _shared_prefix(others, ours), name


def _shared_prefix(rewrites: list[list[int]], ours: list[list[int]]) -> int:
    """Token ids two sets of rewrites share from the start, summed over leaves (commonprefix works on any lists)."""
    return sum(len(os.path.commonprefix([a, b])) for a, b in zip(rewrites, ours))


def test_an_export_records_its_source_and_loads_like_an_adapter(adapter, exported, tmp_path, capsys):
    from bridge.models.translation_cache import model_key

    export = exported / "ctranslate2-int8"
    meta = json.loads((export / "export.json").read_text())
    assert meta["source_adapter"] == str(adapter.resolve()) and meta["backend"] == "ctranslate2"
    assert meta["adapter_sha256"] == model_key(adapter, presets.rewriter("tiny-t5"), "torch.float32")
    assert meta["quantize"] == "int8" and "ctranslate2" in meta["versions"]
    assert json.loads((export / "config.json").read_text())["config"]["quantize"] == "int8"
    assert AdapterMeta.load(export) == AdapterMeta.load(adapter)
    # --adapter EXPORT on the commands, the translation cache keyed apart from the adapter's.
    cache = tmp_path / "cache.sqlite"
    for directory in (adapter, export, export):
        assert main(["translate", "--adapter", str(directory), "--json", "--translation-cache", str(cache),
                     "a red fox"]) == 0
        assert json.loads(capsys.readouterr().out)["strategy"] == f"adapter:{directory.name}"
    from bridge.models.translation_cache import TranslationCache

    assert len(TranslationCache(cache)) == 2  # one rewrite per model; the second export run read it back
    library = tmp_path / "lib.jsonl"
    library.write_text('{"prompt": "a red fox"}\n{"prompt": "(a castle:1.2), dusk"}\n', encoding="utf-8")
    assert main(["migrate", str(library), "--out", str(tmp_path / "out.jsonl"), "--adapter", str(export),
                 "--translation-cache", "off", "--no-progress"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["strategy"] for r in rows] == ["adapter:ctranslate2-int8"] * 2


def test_loading_an_export_leaves_torch_its_threads(exported):
    """ctranslate2 sets the process's OpenMP threads to its intra_threads (1) when it loads a model; torch in
    the same process (the app's renders) would then run on one core."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        Translator.from_pretrained(exported / "ctranslate2-int8", cache=None).load()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)  # a pytest-xdist worker runs the rest of its tests on one thread


def test_an_export_answered_by_its_cache_never_loads_the_engine(exported, tmp_path):
    """A library migrated again is read back from the translation cache; loading the engine first would cost
    more than the whole rerun. The key, known before loading, is the one the loaded engine gives."""
    from bridge.models import engine

    cache, prompts = tmp_path / "t.sqlite", LEAVES[:3]
    first = Translator.from_pretrained(exported / "ctranslate2-int8", cache=cache)
    made = first.translate(prompts)
    assert first.loaded and engine.load(exported / "ctranslate2-int8")[3] == first.model_key
    again = Translator.from_pretrained(exported / "ctranslate2-int8", cache=cache)
    assert [t.to_dict() for t in again.translate(prompts)] == [t.to_dict() for t in made]
    assert not again.loaded and again.cache.hits == 3
    torch_int8 = Translator.from_pretrained(exported / "torch-int8", cache=cache)
    assert torch_int8.model_key != first.model_key and not torch_int8.loaded


def test_avx512_is_asked_for_only_when_the_cpu_has_it_and_the_user_chose_nothing():
    from bridge.models.engine import ISA_VARIABLE, check_isa, isa_to_force

    full = {"avx2", "avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw", "avx512_vnni"}
    assert isa_to_force(full, {}) == "AVX512"
    assert isa_to_force(full - {"avx512bw"}, {}) is None  # ctranslate2 would refuse: it needs all five subsets
    assert isa_to_force({"avx2", "avx512f"}, {}) is None
    assert isa_to_force(set(), {}) is None  # no /proc/cpuinfo: nothing forced
    assert isa_to_force(full, {ISA_VARIABLE: "AVX2"}) is None  # the user's choice stands
    assert isa_to_force(full, {ISA_VARIABLE: ""}) == "AVX512"  # empty is unset, to ctranslate2 too
    check_isa("AVX2", full)
    with pytest.raises(ValueError, match="CT2_FORCE_CPU_ISA='AVX512': this CPU lacks avx512bw, avx512vl"):
        check_isa("AVX512", {"avx2", "avx512f", "avx512cd", "avx512dq"})
    with pytest.raises(ValueError, match="'avx512' is not a CPU ISA ctranslate2 knows"):
        check_isa("avx512", full)  # ctranslate2 compares names exactly


_ISA_PROBE = """
import logging, sys
import ctranslate2
from pathlib import Path
from bridge.models import engine
ctranslate2.set_log_level(logging.INFO)
model, tok, meta, key = engine.load(Path(sys.argv[1]))
print("KEY", model.isa, key)
"""


def test_an_export_runs_with_the_isa_it_reports_and_caches_apart_by_it(exported):
    """In a fresh process (ctranslate2 fixes its kernels once per process): what ctranslate2 logs it
    selected is what the engine reports and keys its cache on, and a user's CT2_FORCE_CPU_ISA stands."""
    import os
    import subprocess
    import sys

    from bridge.models.engine import ISA_VARIABLE, cpu_flags, planned_isa

    def run(**env):
        base = {k: v for k, v in os.environ.items() if k != ISA_VARIABLE}
        done = subprocess.run([sys.executable, "-c", _ISA_PROBE, str(exported / "ctranslate2-int8")],
                              env=base | env, capture_output=True, text=True, check=True)
        _, isa, key = next(line for line in done.stdout.splitlines() if line.startswith("KEY")).split()
        return isa, key, done.stderr

    chosen, key, log = run()
    expected = planned_isa({})  # what `sd-bridge doctor` says it will be
    assert chosen == expected
    if expected == "AVX512":
        assert "Selected ISA: AVX512" in log
    if "avx" not in cpu_flags():
        return  # no x86 ISA to choose on this CPU
    isa, user_key, log = run(**{ISA_VARIABLE: "AVX"})
    assert isa == "AVX" and "Selected ISA: AVX\n" in log.replace("\r", "")
    assert user_key != key  # rewrites made with other kernels are cached apart
    bad = subprocess.run([sys.executable, "-m", "bridge.cli", "translate", "--adapter",
                          str(exported / "ctranslate2-int8"), "a cat"], env=os.environ | {ISA_VARIABLE: "AVX3"},
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "CT2_FORCE_CPU_ISA='AVX3' is not a CPU ISA ctranslate2 knows" in bad.stderr.strip().splitlines()[-1]


def test_export_check_reports_agreement(adapter, tmp_path):
    prompts = tmp_path / "held.txt"
    prompts.write_text("\n".join(LEAVES) + "\n", encoding="utf-8")
    run_export(ExportConfig(adapter=adapter, out=tmp_path / "e", quantize="none", check=str(prompts)),
               log=lambda *_: None)
    meta = json.loads((tmp_path / "e" / "export.json").read_text())
    assert meta["agreement"]["prompts"] == len(LEAVES) and meta["agreement"]["rate"] == 1.0
    assert (tmp_path / "e" / "agreement.jsonl").read_text() == ""


def test_bad_exports_are_refused_before_any_work(adapter, exported, tmp_path, capsys):
    cases = [
        (["export", str(tmp_path / "missing"), "--out", str(tmp_path / "x")], "not an sd-bridge adapter"),
        (["export", str(exported / "torch-int8"), "--out", str(tmp_path / "x")], "already an export"),
        (["export", str(adapter), "--out", str(exported)], "not empty; choose another --out or pass --overwrite"),
        (["export", str(adapter), "--out", str(exported), "--overwrite"], "--overwrite only replaces an earlier export"),
        (["export", str(adapter), "--out", str(adapter)], "is the adapter directory"),
        (["export", str(adapter), "--out", str(tmp_path / "x"), "--quantize", "int4"], "invalid choice"),
        (["export", str(adapter)], "--out is required"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as stop:  # usage errors, from the flags alone
            main(argv)
        assert stop.value.code == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "x").exists()
    before = sorted(p.name for p in exported.iterdir())
    assert main(["export", str(adapter), "--out", str(exported / "torch-int8"), "--backend", "torch",
                 "--overwrite"]) == 0
    assert sorted(p.name for p in exported.iterdir()) == before  # replaced in place, no .partial left


def test_export_removes_or_overwrites_only_what_it_made(adapter, tmp_path, capsys):
    """Issue #41: `export --out X` deleted an existing X.partial/ with the user's files in it, and `--out FILE`
    ended in a NotADirectoryError traceback."""
    (tmp_path / "file").write_text("mine")
    theirs = tmp_path / "x.partial"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    for argv, message in [(["--out", str(tmp_path / "file")], "is a file"),
                          (["--out", str(tmp_path / "x")], "x.partial exists"),
                          (["--out", str(tmp_path / "x"), "--overwrite"], "holds files an export does not write")]:
        with pytest.raises(SystemExit) as stop:
            main(["export", str(adapter), *argv])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and message in err and len(err.strip().splitlines()) == 2, (argv, err)
    assert (theirs / "notes.txt").read_text() == "mine" and (tmp_path / "file").read_text() == "mine"
    # An interrupted export's own partial is replaced with --overwrite.
    (theirs / "notes.txt").unlink()
    (theirs / "engine").mkdir()
    assert main(["export", str(adapter), "--out", str(tmp_path / "x"), "--backend", "torch", "--overwrite"]) == 0
    assert not theirs.exists() and (tmp_path / "x" / "export.json").is_file()


def test_a_rewriter_with_flan_t5s_own_tokenizer_exports_and_rewrites_as_its_adapter(tmp_path):
    """flan-t5's tokenizer has 32,100 pieces on a 32,128-row vocabulary; ctranslate2's converter names the 28
    extra rows itself. The benchmark's tokenizer file is the one its README's hash names, and a small rewriter
    with it exports (fp32) to the same rewrites as its adapter, token for token."""
    import hashlib
    import lzma
    import re

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import T5Config, T5ForConditionalGeneration

    from benchmarks.inference_backends import T5_TOKENIZER, VOCAB, rewriter_tokenizer

    readme = (T5_TOKENIZER.parent / "README.md").read_text(encoding="utf-8")
    digest = hashlib.sha256(lzma.decompress(T5_TOKENIZER.read_bytes())).hexdigest()
    assert digest in re.findall(r"`([0-9a-f]{64})`", readme)
    tok = rewriter_tokenizer("t5")
    assert len(tok) == 32_100 and tok.convert_ids_to_tokens(tok("a cat, (x:1.2)").input_ids) == [
        "▁", "a", "▁cat", ",", "▁(", "x", ":", "1.2", ")", "</s>"]
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(vocab_size=VOCAB, d_model=32, d_ff=64, d_kv=8, num_layers=2,
                                                num_heads=4, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1))
    model.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    get_peft_model(model, LoraConfig(r=4, lora_alpha=32, target_modules=["q", "v"], task_type="SEQ_2_SEQ_LM",
                                     init_lora_weights=False)).save_pretrained(tmp_path / "adapter")
    AdapterMeta(str(tmp_path / "base"), "local", "sd15", "sd2-base", max_new_tokens=12).save(tmp_path / "adapter")
    run_export(ExportConfig(adapter=tmp_path / "adapter", out=tmp_path / "export", quantize="none"),
               log=lambda *_: None)
    assert _rewrites(tmp_path / "export") == _rewrites(tmp_path / "adapter")


def test_hostile_adapters_are_refused_with_one_line(adapter, tmp_path, capsys):
    """Issue #41: 7 of 26 hostile adapters ended in a traceback after 20-40 s, and three (a target outside,
    NaN weights, an extra tensor) exported with exit 0. Each is refused in one line, the file checks before any
    model is loaded, and nothing is left at --out."""
    import time

    from benchmarks.reliability import hostile_adapters

    for name, bad, message in hostile_adapters(adapter, tmp_path / "bad"):
        started = time.perf_counter()
        try:
            code = main(["export", str(bad), "--out", str(tmp_path / "out"), "--backend", "torch"])
        except SystemExit as stop:
            code = stop.code
        err = capsys.readouterr().err
        assert code == 2 and message in err, (name, code, err)
        assert "Traceback" not in err and len([x for x in err.splitlines() if x.strip()]) <= 2, (name, err)
        assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists(), name
        assert time.perf_counter() - started < 10, name
        # The same adapter is refused by translate too, not only by export.
        with pytest.raises(ValueError, match="."):
            Translator.from_pretrained(bad, cache=None).load()
