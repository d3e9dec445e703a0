"""bridge.Translator and `sd-bridge translate`: syntax strategy, adapters, structure preservation."""

from __future__ import annotations

import io
import json

import pytest

from bridge import Translator
from bridge.models import presets
from bridge.cli import main
from bridge.syntax.prompt import parse
from bridge.models.rewriter import AdapterMeta, repair_leaf
from bridge.models.rewriter import skeleton
from bridge.syntax.policy import MigrationPolicy
from conftest import read_jsonl

UNGUARDED = MigrationPolicy(faithfulness="off")  # tests of the rewriting path itself (the guard: test_faithfulness)


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    """An untrained LoRA on tiny-t5, saved the way training saves one: it rewrites into noise, which is
    exactly what the structure checks must survive."""
    import torch
    from peft import LoraConfig, get_peft_model

    from bridge.models.loading import load_rewriter

    out = tmp_path_factory.mktemp("adapter")
    model, _ = load_rewriter(presets.rewriter("tiny-t5"))
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q", "v"],
                                                  task_type="SEQ_2_SEQ_LM", init_lora_weights=False))
    peft_model.save_pretrained(out)
    AdapterMeta("tiny-t5", "tiny-v1", "tiny-sd15", "tiny-sd2", max_new_tokens=12).save(out)
    return out


def test_an_adapter_on_another_base_model_is_refused(adapter_dir, tmp_path):
    import shutil

    other = tmp_path / "other"
    shutil.copytree(adapter_dir, other)
    config = json.loads((other / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "google/flan-t5-base"
    (other / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"trained on base model 'google/flan-t5-base', not on rewriter 'tiny-t5'"):
        Translator.from_pretrained(other)


def test_syntax_strategy_without_adapter(caplog, monkeypatch):
    import threading

    import bridge.translator

    monkeypatch.setattr(bridge.translator, "_said_syntax", threading.Event())  # as in a fresh process
    tr = Translator.from_pretrained(None)
    with caplog.at_level("WARNING", logger="sd_bridge"):
        out = tr.translate(["(masterpiece:1.2), a cat <lora:x:1>", "dog"], ["EasyNegative, ugly", None])
        tr.translate(["again"])
        Translator.from_pretrained(None).translate(["a second translator"])
    assert [r.message for r in caplog.records] == [f"no adapter: {bridge.translator.SYNTAX_NOTE}"]  # said once
    assert tr.describe == bridge.translator.SYNTAX_NOTE
    first = out[0]
    assert first.translated_prompt == "(masterpiece:1.2), a cat"
    assert first.translated_negative_prompt == "ugly"
    assert first.strategy == "syntax" and not first.fallback
    assert [w["code"] for w in first.warnings] == ["network-dropped", "embedding-dropped"]
    assert first.tokens_before == first.tokens_after == [4]
    assert out[1].translated_negative_prompt is None


def test_adapter_keeps_structure_or_falls_back(adapter_dir, prompts_dir):
    tr = Translator.from_pretrained(adapter_dir, policy=UNGUARDED)  # the structure check alone: the guard aside
    assert tr.strategy == f"adapter:{adapter_dir.name}" and tr.target.name == "tiny-sd2"
    rows = read_jsonl(prompts_dir / "a1111.jsonl")[:40]
    out = tr.translate([r["prompt"] for r in rows], [r["negative_prompt"] for r in rows])
    names = tr.policy.embedding_names()
    from bridge.syntax.policy import apply_policy

    for row, t in zip(rows, out):
        syntax = apply_policy(row["prompt"]).prompt
        assert skeleton(t.translated_prompt, names) == skeleton(syntax, names)
        assert parse(t.translated_prompt).serialize() == t.translated_prompt
        if t.fallback:
            codes = [w["code"] for w in t.warnings]
            assert t.translated_prompt == syntax and ("rewrite-fallback" in codes or "rewrite-unfinished" in codes)
    # Deterministic by default.
    again = tr.translate([rows[0]["prompt"]], [rows[0]["negative_prompt"]])
    assert again[0].translated_prompt == out[0].translated_prompt


def test_candidates_by_sampling(adapter_dir):
    tr = Translator.from_pretrained(adapter_dir, policy=UNGUARDED)
    out = tr.translate(["a castle on a hill, (sunset:1.2)"], num_candidates=3, sample=True, seed=1)[0]
    assert len(out.candidates) == 3 and out.candidates[0] == out.translated_prompt
    same = tr.translate(["a castle on a hill, (sunset:1.2)"], num_candidates=3, sample=True, seed=1)[0]
    assert same.candidates == out.candidates  # a seed makes sampling reproducible
    with pytest.raises(ValueError, match="need an adapter"):
        Translator.from_pretrained(None).translate(["x"], num_candidates=2)


def test_repair_leaf():
    assert repair_leaf("a cat AND a dog BREAK <lora:x:1> now\nthen") == "a cat and a dog break  now then"


def test_adapter_errors(adapter_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="not an sd-bridge adapter"):
        Translator.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="adapter directory not found"):
        Translator.from_pretrained(tmp_path / "missing")
    with pytest.raises(ValueError, match="trained for target 'tiny-sd2'"):
        Translator.from_pretrained(adapter_dir, target="sd2-base")
    # An adapter whose metadata names another base model: its tensors do not fit.
    import shutil

    other = tmp_path / "other"
    shutil.copytree(adapter_dir, other)
    meta = json.loads((other / "sd_bridge_adapter.json").read_text())
    (other / "sd_bridge_adapter.json").write_text(json.dumps({**meta, "rewriter": "flan-t5-small"}))
    with pytest.raises(Exception, match="flan-t5-small"):
        Translator.from_pretrained(other)


def test_translate_cli(capsys, adapter_dir, monkeypatch):
    assert main(["translate", "a (cat:1.2) <lora:x:1>", "--negative", "EasyNegative, blurry"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "a (cat:1.2)\tblurry\n"  # results on stdout, as TSV; the details on stderr
    assert "[network-dropped]" in captured.err and "[embedding-dropped]" in captured.err
    assert main(["translate", "a cat"]) == 0
    assert capsys.readouterr().out == "a cat\n"  # no negative given, no second column
    monkeypatch.setattr("sys.stdin", io.StringIO("a cat\n<lora:y:1> dog\n"))
    assert main(["translate", "--json"]) == 0
    captured = capsys.readouterr()
    lines = [json.loads(x) for x in captured.out.splitlines()]
    assert [x["translated_prompt"] for x in lines] == ["a cat", "dog"]
    assert "line 2: warning [network-dropped]" in captured.err  # piped input keeps its per-line warnings
    assert main(["translate", "--adapter", str(adapter_dir), "--json", "a red fox"]) == 0
    assert json.loads(capsys.readouterr().out)["strategy"].startswith("adapter:")
    # One undecodable byte in piped input neither stops the read nor makes the JSON output invalid UTF-8.
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"a cat\n\xff dog\n"), encoding="utf-8"))
    assert main(["translate", "--json"]) == 0
    captured = capsys.readouterr()
    captured.out.encode("utf-8")  # strict: no lone surrogate reaches stdout
    assert [json.loads(x)["translated_prompt"] for x in captured.out.splitlines()] == ["a cat", "\ufffd dog"]
    assert "line 2: bytes that are not UTF-8 are shown as U+FFFD" in captured.err
    # A line break inside a translation would split the one-line-per-prompt output: a space, and a warning.
    monkeypatch.setattr("bridge.commands.translate._read_lines", lambda stream: ["a\ncat\tdog"])
    assert main(["translate", "--no-normalize"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "a cat dog\n" and "line 1: a tab or line break" in captured.err


def test_a_rewrite_cut_at_the_token_limit_falls_back_and_says_so():
    """A leaf whose generation hits the limit before EOS is not used (no silent truncation); the limit
    grows with the input, so a long leaf is not cut at a fixed cap."""

    from bridge.models.loading import load_rewriter
    from bridge.models.rewriter import ended, generate, rewrite_prompts

    model, tok = load_rewriter(presets.rewriter("tiny-t5"))
    def never_eos(module, args, logits):  # token 5 always wins: every generation runs to the limit
        logits[..., 5] += 1e4
        return logits

    model.lm_head.register_forward_hook(never_eos)
    long_leaf = "a lighthouse on a cliff at dusk with waves and gulls and storm clouds over the sea"
    [[(_, ids)]] = generate(model, tok, [long_leaf], max_new_tokens=4, return_ids=True)
    assert len(ids) > 2 * len(tok(long_leaf, add_special_tokens=False).input_ids)  # sized from the input
    assert not ended(ids, tok)
    [[cand]] = rewrite_prompts(model, tok, [f"(masterpiece:1.2), {long_leaf}"], frozenset(), max_new_tokens=4)
    assert cand.unfinished and cand.fallback and cand.text == f"(masterpiece:1.2), {long_leaf}"
    tr = Translator(presets.pipeline("tiny-sd2"), UNGUARDED, model=model, tokenizer=tok,
                    meta=AdapterMeta("tiny-t5", "x", "a", "b"))
    [t] = tr.translate([long_leaf])
    assert t.fallback and t.translated_prompt == long_leaf
    assert [w["code"] for w in t.warnings] == ["rewrite-unfinished"]


# ------------------------------------------------------------------ the whole-prompt (marked) format
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from bridge.models.rewriter import mark, rewrite_prompts, unmark  # noqa: E402

_leaf = st.text(st.sampled_from("abc xyz,.:!"), min_size=1, max_size=12).map(str.strip).filter(bool)


@settings(max_examples=200, deadline=None)
@given(st.lists(_leaf, min_size=1, max_size=6))
def test_marked_leaves_read_back(leaves):
    assert unmark(mark(leaves), len(leaves)) == leaves


def test_unmark_refuses_answers_whose_markers_do_not_read_back():
    assert unmark("[1] a [2] b", 2) == ["a", "b"]
    for bad in ("[2] a [1] b", "x [1] a [2] b", "[1] a", "[1] a [2] b [3] c", "a b"):
        assert unmark(bad, 2) is None, bad
    assert unmark("a red fox", 1) == ["a red fox"]  # one leaf is plain text


class _Scripted:
    """Stands in for `bridge.models.rewriter.generate`: answers from a table, records what the model was asked."""

    EOS = 1

    def __init__(self, answers: dict[str, str]):
        self.answers, self.asked = answers, []

    def __call__(self, model, tokenizer, texts, prefix="", num_candidates=1, **_):
        self.asked += [prefix + t for t in texts]
        return [[(self.answers.get(t, t), [7, self.EOS])] * num_candidates for t in texts]


class _Tok:
    eos_token_id = _Scripted.EOS


def test_the_model_sees_the_whole_prompt_and_answers_per_leaf(monkeypatch):
    prompt = "(masterpiece:1.2), a crimson fox <lora:x:1> BREAK snow"
    script = _Scripted({"[1] masterpiece [2] a crimson fox [3] snow":
                        "[1] best quality [2] a red fox, highly detailed [3] deep snow"})
    monkeypatch.setattr("bridge.models.rewriter.generate", script)
    [[cand]] = rewrite_prompts(None, _Tok(), [prompt], frozenset())
    assert script.asked == ["Rewrite this Stable Diffusion 1.5 prompt for Stable Diffusion 2: "
                            "[1] masterpiece [2] a crimson fox [3] snow"]
    # Every leaf rewritten in context, one leaf grew (added text), the structure is untouched.
    assert cand.text == "(best quality:1.2), a red fox, highly detailed <lora:x:1> BREAK deep snow"
    assert not cand.fallback and cand.inputs == ["[1] masterpiece [2] a crimson fox [3] snow"]
    # Markers out of order: a structure failure, so the input comes back.
    monkeypatch.setattr("bridge.models.rewriter.generate", _Scripted({"[1] masterpiece [2] a crimson fox [3] snow":
                                                               "[1] best quality [3] snow [2] a fox"}))
    [[bad]] = rewrite_prompts(None, _Tok(), [prompt], frozenset())
    assert bad.fallback and bad.text == prompt
    # Older adapters rewrite each leaf alone.
    script = _Scripted({"a crimson fox": "a red fox"})
    monkeypatch.setattr("bridge.models.rewriter.generate", script)
    [[leafwise]] = rewrite_prompts(None, _Tok(), [prompt], frozenset(), fmt="leaf")
    assert leafwise.text == "(masterpiece:1.2), a red fox <lora:x:1> BREAK snow" and len(script.asked) == 3


# ------------------------------------------------------------------ the flat format (#40 item 3)
from bridge.models.rewriter import flatten, unflatten  # noqa: E402

_word = st.sampled_from(["a", "an", "red", "fox", "snow", "masterpiece", "by", "greg", "8k"])
_value = st.tuples(st.sampled_from(["", " ", ", "]), st.lists(_word, min_size=1, max_size=4),
                   st.sampled_from(["", " ", ", "])).map(lambda t: t[0] + " ".join(t[1]) + t[2])


@settings(max_examples=300, deadline=None)
@given(st.lists(_value, min_size=1, max_size=5))
def test_a_flat_answer_that_changes_nothing_puts_every_word_back_in_its_leaf(values):
    assert unflatten(flatten(values), values) == [" ".join(v.strip(" ,").split()) for v in values]


def _leaves(prompt: str) -> list[str]:
    from bridge.models.rewriter import model_leaves
    from bridge.syntax.prompt import parse

    return [leaf.value for leaf in model_leaves(parse(prompt, frozenset()).nodes)]


def test_a_flat_answer_goes_back_into_the_prompts_leaves():
    weighted = _leaves("a big (crimson:1.2) circle on the left")
    assert flatten(weighted) == "a big crimson circle on the left"
    # A word rewritten in place keeps its weight; "an"/"a" align; added text joins the leaf before it.
    assert unflatten("a large red circle on the left on a white background", weighted) == [
        "a large", "red", "circle on the left on a white background"]
    # A comma between two leaves is shown to the model and given back to the leaves' own separators.
    tagged = _leaves("(masterpiece:1.2), a crimson fox, <lora:x:1>")
    assert flatten(tagged) == "masterpiece, a crimson fox"
    assert unflatten("masterpiece, a red fox", tagged) == ["masterpiece", "a red fox"]
    # A clause the model moved goes back to its own leaf, so its weight stays on it.
    clause = _leaves("an azure square on a white background (at the bottom:1.1)")
    assert unflatten("a blue square at the bottom on a white background", clause) == [
        "a blue square on a white background", "at the bottom"]
    # A leaf left empty (an artist's name the rewrite turned into a fill word elsewhere) cannot be placed.
    artist = _leaves("a crimson circle (by yayoi kusama:1.2)")
    assert unflatten("a red dotted circle", artist) is None


def test_the_flat_format_shows_the_prompts_words_and_keeps_its_syntax(monkeypatch):
    prompt = "(masterpiece:1.2), a (crimson:1.1) fox <lora:x:1> BREAK snow"
    script = _Scripted({"masterpiece, a crimson fox snow": "masterpiece, a red fox in deep snow"})
    monkeypatch.setattr("bridge.models.rewriter.generate", script)
    [[cand]] = rewrite_prompts(None, _Tok(), [prompt], frozenset(), fmt="flat")
    assert script.asked == ["Rewrite this Stable Diffusion 1.5 prompt for Stable Diffusion 2: "
                            "masterpiece, a crimson fox snow"]
    assert cand.text == "(masterpiece:1.2), a (red:1.1) fox in deep <lora:x:1> BREAK snow" and not cand.fallback
    # The marked format asks for numbered leaves; a model that answers in plain text breaks the structure.
    monkeypatch.setattr("bridge.models.rewriter.generate", _Scripted(
        {"[1] masterpiece [2] a [3] crimson [4] fox [5] snow": "masterpiece, a red fox in deep snow"}))
    [[marked]] = rewrite_prompts(None, _Tok(), [prompt], frozenset(), fmt="marked")
    assert marked.fallback and marked.text == prompt


def test_negative_prompts_are_rewritten_only_when_the_adapter_learned_to(monkeypatch):
    script = _Scripted({"blurry": "blurry, low quality", "a crimson fox": "a red fox"})
    monkeypatch.setattr("bridge.models.rewriter.generate", script)
    tiny2 = presets.pipeline("tiny-sd2")
    plain = Translator(tiny2, UNGUARDED, model=object(), tokenizer=_Tok(), meta=AdapterMeta("tiny-t5", "x", "a", "b"))
    [t] = plain.translate(["a crimson fox"], ["blurry"])
    assert (t.translated_prompt, t.translated_negative_prompt) == ("a red fox", "blurry")
    meta = AdapterMeta("tiny-t5", "x", "a", "b", rewrite_negative=True)
    both = Translator(tiny2, UNGUARDED, model=object(), tokenizer=_Tok(), meta=meta)
    t, empty = both.translate(["a crimson fox", "a crimson fox"], ["blurry", None])
    assert (t.translated_prompt, t.translated_negative_prompt) == ("a red fox", "blurry, low quality")
    assert empty.translated_negative_prompt is None
    assert meta.negative_prefix + "blurry" in script.asked  # the negative has its own task prefix


def test_a_lazy_translator_loads_its_weights_once_when_threads_first_need_them(monkeypatch):
    """The app translates from several threads: two first requests must share one load, not make two copies."""
    import threading
    import time

    monkeypatch.setattr("bridge.models.rewriter.generate", _Scripted({"a crimson fox": "a red fox"}))
    loads = []

    def slow_load():
        loads.append(threading.get_ident())
        time.sleep(0.2)  # long enough for the other thread to arrive while this one loads
        return object(), _Tok()

    tr = Translator(presets.pipeline("tiny-sd2"), UNGUARDED, meta=AdapterMeta("tiny-t5", "x", "a", "b"), name="lazy",
                    loader=slow_load)
    assert tr.strategy == "adapter:lazy" and not tr.loaded
    out = []
    threads = [threading.Thread(target=lambda: out.append(tr.translate(["a crimson fox"])[0])) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1 and tr.loaded
    assert [t.translated_prompt for t in out] == ["a red fox", "a red fox"]


def test_adapters_from_before_the_marked_format_load_as_leaf(tmp_path):
    meta = AdapterMeta("tiny-t5", "x", "a", "b")
    meta.save(tmp_path)
    data = json.loads((tmp_path / "sd_bridge_adapter.json").read_text())
    assert AdapterMeta.load(tmp_path).format == "marked"
    del data["format"]
    (tmp_path / "sd_bridge_adapter.json").write_text(json.dumps(data))
    assert AdapterMeta.load(tmp_path).format == "leaf"
    data["format"] = "xml"
    (tmp_path / "sd_bridge_adapter.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="unknown rewrite format 'xml'"):
        AdapterMeta.load(tmp_path)


@settings(max_examples=200, deadline=None)
@given(st.text(st.sampled_from("ab ,;\n.:")))
def test_split_edges_keeps_every_character(value):
    from bridge.models.rewriter import split_edges

    lead, core, trail = split_edges(value)
    assert lead + core + trail == value and core == value.strip(" \t\n,;")


@settings(max_examples=60, deadline=None)
@given(words=st.lists(st.integers(1, 60), min_size=1, max_size=40), batch=st.integers(1, 8),
       budget=st.integers(1, 400))
def test_token_groups_cover_every_input_once_within_the_budget(tiny_t5_tokenizer, words, batch, budget):
    from bridge.models.rewriter import _token_groups

    inputs = [" ".join(["fox"] * n) for n in words]
    lengths = [len(ids) for ids in tiny_t5_tokenizer(inputs).input_ids]
    groups = _token_groups(tiny_t5_tokenizer, inputs, batch, budget)
    assert sorted(i for g in groups for i in g) == list(range(len(inputs)))
    for g in groups:
        assert 1 <= len(g) <= batch
        assert len(g) == 1 or len(g) * max(lengths[i] for i in g) <= budget  # only a lone long input goes over


@pytest.fixture(scope="module")
def tiny_t5_tokenizer():
    from bridge.models.loading import load_rewriter

    return load_rewriter(presets.rewriter("tiny-t5"))[1]


def test_greedy_batches_split_by_tokens_give_the_same_rewrites(monkeypatch):
    """The token budget only regroups greedy inputs: the rewrites are the ones batches of 32 give, long
    inputs go in smaller batches, and sampled batches (whose seed decides their samples) are not regrouped."""
    import bridge.models.rewriter as rw
    from bridge.models.loading import load_rewriter

    model, tok = load_rewriter(presets.rewriter("tiny-t5"))
    texts = [f"a fox number {i} in snow" for i in range(12)] + ["a castle " * 60, "a storm over a lighthouse " * 20]
    shapes, real = [], rw._torch_generate

    def spy(model, tokenizer, batch, *args):
        shapes.append(len(batch))
        return real(model, tokenizer, batch, *args)

    monkeypatch.setattr(rw, "_torch_generate", spy)
    plain = rw.generate(model, tok, texts, max_new_tokens=6, size_from_input=False, batch_tokens=None)
    assert shapes == [14]
    shapes.clear()
    # With the prefix the short inputs are 42-43 tokens, the long ones 154: 14 x 154 is over 600, 12 x 43 is not.
    split = rw.generate(model, tok, texts, max_new_tokens=6, size_from_input=False, batch_tokens=600)
    assert split == plain
    assert shapes == [12, 2]  # the long inputs no longer pad the short ones to their length
    shapes.clear()
    sampled = [rw.generate(model, tok, texts, max_new_tokens=6, sample=True, seed=3, size_from_input=False,
                           batch_tokens=b) for b in (None, 600)]
    assert sampled[0] == sampled[1] and shapes == [14, 14]
