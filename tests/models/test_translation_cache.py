"""The translation cache (issue #15): a prompt rewritten once by an adapter is read back, in this run or a later
one, and never read back for another adapter, another setting or a sampled candidate."""

from __future__ import annotations

import json
import os

import pytest

from benchmarks.reliability import damage
from bridge import Translator
from bridge.models import presets
from bridge.models.rewriter import AdapterMeta

PROMPTS = ["a crimson fox in the snow", "(masterpiece:1.2), a castle BREAK at dusk", "a crimson fox in the snow"]


def _adapter(root, seed: int):
    import torch
    from peft import LoraConfig, get_peft_model

    from bridge.models.loading import load_rewriter

    model, _ = load_rewriter(presets.rewriter("tiny-t5"))
    torch.manual_seed(seed)
    get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q", "v"], task_type="SEQ_2_SEQ_LM",
                                     init_lora_weights=False)).save_pretrained(root)
    AdapterMeta("tiny-t5", "tiny-v1", "tiny-sd15", "tiny-sd2", max_new_tokens=12, rewrite_negative=True).save(root)
    return root


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    return _adapter(tmp_path_factory.mktemp("a"), 0), _adapter(tmp_path_factory.mktemp("b"), 1)


@pytest.fixture
def generated(monkeypatch):
    """Every text the rewriter is asked to generate, through the real generate."""
    import bridge.models.rewriter as rw

    asked, real = [], rw.generate

    def counting(model, tokenizer, texts, **kw):
        asked.extend(texts)
        return real(model, tokenizer, texts, **kw)

    monkeypatch.setattr(rw, "generate", counting)
    return asked


def test_a_second_translator_reads_every_rewrite_back(adapters, generated, tmp_path):
    cache = tmp_path / "t.sqlite"
    first = Translator.from_pretrained(adapters[0], cache=cache).translate(PROMPTS, ["blurry", None, "blurry"])
    assert len(generated) == 3  # two distinct prompts and one distinct negative, each generated once
    again = Translator.from_pretrained(adapters[0], cache=cache)
    second = again.translate(PROMPTS, ["blurry", None, "blurry"])
    assert len(generated) == 3 and again.cache.hits == 3 and again.cache.misses == 0
    assert [t.to_dict() for t in second] == [t.to_dict() for t in first]
    assert not again.loaded  # nothing to generate: the weights never loaded
    again.translate(["a lighthouse in a storm"])
    assert again.loaded and len(generated) == 4
    # Without a cache, the same translator generates again (and agrees: greedy is a function of its input).
    fresh = Translator.from_pretrained(adapters[0]).translate(PROMPTS, ["blurry", None, "blurry"])
    assert len(generated) == 7 and [t.to_dict() for t in fresh] == [t.to_dict() for t in first]


def test_the_cache_never_answers_for_another_adapter_or_sampled_candidates(adapters, generated, tmp_path):
    cache = tmp_path / "t.sqlite"
    Translator.from_pretrained(adapters[0], cache=cache).translate(PROMPTS[:1])
    other = Translator.from_pretrained(adapters[1], cache=cache)
    other.translate(PROMPTS[:1])
    assert len(generated) == 2 and other.cache.hits == 0  # other weights: another model key
    sampled = Translator.from_pretrained(adapters[0], cache=cache)
    sampled.translate(PROMPTS[:1], num_candidates=2, sample=True, seed=3)
    assert len(generated) == 3 and sampled.cache.hits == 0  # candidates depend on their batch: never cached


def _refuse(*args, **kwargs):
    raise AssertionError("the weights were loaded")


def test_migrate_reads_a_library_it_has_migrated_before_from_the_cache(adapters, tmp_path, capsys, monkeypatch):
    from bridge.cli import main

    lib = tmp_path / "lib.txt"
    lib.write_text("\n".join(f"a crimson fox number {i}" for i in range(12)) + "\n")
    cache = tmp_path / "t.sqlite"
    args = ["migrate", str(lib), "--adapter", str(adapters[0]), "--translation-cache", str(cache), "--json",
            "--no-progress"]
    assert main(args + ["--out", str(tmp_path / "one.txt")]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["translation_cache"]["generated"] == 12 and first["translation_cache"]["hits"] == 0
    with monkeypatch.context() as patch:  # the rerun is answered by the cache: loading the weights would fail it
        patch.setattr("bridge.translator.load_weights", _refuse)
        assert main(args + ["--out", str(tmp_path / "two.txt")]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["translation_cache"] == {"path": str(cache), "hits": 12, "generated": 0}
    assert (tmp_path / "one.txt").read_text() == (tmp_path / "two.txt").read_text()
    assert main(args[:-4] + ["--translation-cache", "off", "--json", "--no-progress", "--out",
                             str(tmp_path / "three.txt")]) == 0
    assert json.loads(capsys.readouterr().out)["translation_cache"] is None


@pytest.mark.parametrize("kind", ["garbage", "truncated", "bit flips", "foreign schema", "read-only", "directory",
                                  "fifo"])
def test_a_damaged_cache_degrades_to_no_cache_with_the_same_output(adapters, tmp_path, kind, caplog):
    """One bad cache file used to break every adapter migrate with a sqlite3 traceback. Now: one
    `cache-unusable` warning, and the same translations as a run without a cache."""
    folder = tmp_path / "cache"
    folder.mkdir()
    cache = folder / "t.sqlite"
    want = [t.to_dict() for t in Translator.from_pretrained(adapters[0], cache=cache).translate(PROMPTS)]
    for extra in folder.glob("t.sqlite-*"):  # WAL side files: the damage is to the database itself
        extra.unlink()
    damage(kind, cache)
    try:
        with caplog.at_level("WARNING", logger="sd_bridge"):
            got = [t.to_dict() for t in Translator.from_pretrained(adapters[0], cache=cache).translate(PROMPTS)]
    finally:
        folder.chmod(0o755)
    assert got == want
    if kind != "read-only" or os.geteuid() != 0:  # root writes through permission bits: nothing to warn about
        assert "cache-unusable" in caplog.text, kind


def test_a_cached_rewrite_passes_the_structure_check_a_fresh_one_passes(adapters, generated, tmp_path):
    """A value edited into the cache (a LoRA tag the policy dropped, a changed weight) is never served: it fails
    the structure check and is generated again."""
    import sqlite3

    cache = tmp_path / "t.sqlite"
    want = [t.translated_prompt for t in Translator.from_pretrained(adapters[0], cache=cache).translate(PROMPTS)]
    asked = len(generated)
    with sqlite3.connect(cache) as db:
        db.execute("UPDATE rewrites SET value = ?", (json.dumps(["(evil:1.5) <lora:evil:1> a fox", False, False]),))
    got = [t.translated_prompt for t in Translator.from_pretrained(adapters[0], cache=cache).translate(PROMPTS)]
    assert got == want and not any("evil" in g for g in got)
    assert len(generated) > asked  # regenerated, not read back
