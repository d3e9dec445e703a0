"""The ComfyUI dialect: reading prompts as ComfyUI's CLIPTextEncode does (comfy/sd1_clip.py `token_weights`,
`escape_important`, `SDTokenizer.tokenize_with_weights`), and converting A1111 prompts to it and back with every
weight kept. Each reading case is a fact of ComfyUI's source, written here as our own case."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge import Translator
from bridge.cli import main
from bridge.syntax import a1111, comfyui
from bridge.syntax.policy import MigrationPolicy

SOUP = st.lists(st.sampled_from(list("\\()[]{}<>:|,/ ab1.\n") + ["\\\\", "<lora:x:1>", "AND", "BREAK", ":1.2)",
                                                                  "EasyNegative", "embedding:y", "(x:1.3)"]),
                max_size=30).map("".join)


@pytest.mark.parametrize("text, runs", [
    ("((a:1.2))", [("a", 1.2)]),  # an explicit weight sets, it does not multiply (A1111: 1.32)
    ("((a))", [("a", 1.1 * 1.1)]),
    ("[x] (y)", [("[x] ", 1.0), ("y", 1.1)]),  # square brackets are text
    ("{x} [a:b:0.5] [a|b] <lora:x:1> BREAK c AND d", [("{x} [a:b:0.5] [a|b] <lora:x:1> BREAK c AND d", 1.0)]),
    ("(a", [("(a", 1.0)]),  # an unclosed bracket is text ...
    ("(a (b)", [("a (b", 1.1)]),  # ... unless its group happens to end in `)`
    ("a) (b)", [("a) (b)", 1.0)]),  # a stray `)` makes the brackets after it text
    ("\\(a\\) \\[b\\]", [("(a) \\[b\\]", 1.0)]),  # only round brackets are escaped
    ("(a:b)", [("a:b", 1.1)]),  # not a number: the colon is text and the bracket x1.1
    ("(:1.2)", [(":1.2", 1.1)]),  # a weight needs text before its colon
    ("(a:1e1) (b: 0.5 )", [("a", 10.0), (" ", 1.0), ("b", 0.5)]),  # Python's float() reads the weight
    ("", [("", 1.0)]),
])
def test_reads_weights_as_comfyui_does(text, runs):
    got = comfyui.attention(text)
    assert [t for t, _ in got] == [t for t, _ in runs]
    assert [w for _, w in got] == pytest.approx([w for _, w in runs])


def test_a1111_prompts_convert_with_their_weights():
    conv = comfyui.from_a1111("((masterpiece)), [sketch], (cat:1.3), (a [b) c], fate\\/stay night, \\(x\\)")
    assert conv.prompt == ("(masterpiece:1.21), (sketch:0.909091), (cat:1.3), (a :1.1)b( c:0.909091), "
                           "fate/stay night, \\(x\\)")
    assert conv.warnings == []
    # An A1111 embedding is a bare name; ComfyUI's is the word `embedding:name` (trailing commas allowed).
    assert comfyui.from_a1111("blurry,EasyNegative, text").prompt == "blurry, embedding:EasyNegative, text"
    assert comfyui.from_a1111("EasyNegative.").prompt == "embedding:EasyNegative ."
    # (b BREAK c) is A1111's documented bug: the word "break" at -1.1, which ComfyUI can say.
    assert comfyui.from_a1111("(b BREAK c)").prompt == "(b:1.1)(BREAK:-1.1)(c:1.1)"
    # A backslash before a weighted group would escape its bracket, so it gets a group of its own.
    conv = comfyui.from_a1111("a\\\\(b:1.2)")
    assert conv.prompt == "(a\\:1)(b:1.2)" and comfyui.attention(conv.prompt) == [("a\\", 1.0), ("b", 1.2)]


def test_what_comfyui_cannot_say_is_warned_about():
    conv = comfyui.from_a1111("a [dog:cat:0.5] AND sky:0.5 BREAK sea <lora:x:0.7>:2")
    codes = [w.code for w in conv.warnings]
    assert codes == ["comfyui-networks", "comfyui-and", "comfyui-editing", "comfyui-break"]
    # The last step's text; the parts joined and their weights dropped; BREAK and the tag gone.
    assert conv.prompt == "a cat, sky:0.5 sea"
    assert "<lora:x:0.7>" in conv.warnings[0].message
    assert [w.code for w in comfyui.from_a1111("1girl, (masterpiece:1.4").warnings] == ["comfyui-and"]
    # A negative keeps its tags and AND as text, as A1111 reads a negative.
    neg = comfyui.from_a1111("worst quality, <lora:flat2:1> AND text:1.2", negative=True)
    assert neg.prompt == "worst quality, <lora:flat2:1> AND text:1.2" and neg.warnings == []


def test_every_corpus_prompt_converts_with_equal_weights(prompts_dir):
    """Acceptance (#12): A1111 -> ComfyUI keeps the effective weights on every prompt and negative without editing,
    alternation or AND; ComfyUI's reading of the result equals A1111's reading of the original, character by
    character (benchmarks/comfyui_parity.py measures the same with both tools' own code)."""
    checked = 0
    for path in sorted(prompts_dir.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            for text, negative in ((row.get("prompt"), False), (row.get("negative_prompt"), True)):
                parts = a1111.read(text, negative) if text else []
                if len(parts) != 1 or parts[0].weight != 1.0 or len(parts[0].schedule) != 1:
                    continue
                conv = comfyui.from_a1111(text, negative)
                original = a1111.attention(parts[0].schedule[0][1])
                assert comfyui.same_weights(comfyui.attention(conv.prompt), original), text
                assert "comfyui-inexact" not in {w.code for w in conv.warnings}
                checked += 1
    assert checked > 6000


@settings(max_examples=400, deadline=None)
@given(SOUP, st.booleans())
def test_conversion_keeps_weights_on_bracket_soup(text, negative):
    conv = comfyui.from_a1111(text, negative)
    parts = a1111.read(text, negative)
    if len(parts) == 1 and parts[0].weight == 1.0 and len(parts[0].schedule) == 1:
        assert comfyui.same_weights(comfyui.attention(conv.prompt), a1111.attention(parts[0].schedule[0][1]))


@settings(max_examples=400, deadline=None)
@given(SOUP.filter(lambda s: "<" not in s), st.booleans())
def test_comfyui_prompts_convert_to_a1111_with_their_weights(text, negative):
    conv = comfyui.to_a1111(text, negative)
    assert conv.warnings == []
    [part] = a1111.read(conv.prompt, negative)
    assert comfyui.same_weights(a1111.attention(part.schedule[0][1]), comfyui.attention(text))


def test_to_a1111_neutralises_what_a1111_would_read():
    assert comfyui.to_a1111("((a:1.2)), [x] BREAK y AND z").prompt == "(a:1.2), \\[x\\] break y and z"
    assert comfyui.to_a1111("a, b:1.2").prompt == "(a, b:1.2:1)"  # not A1111's AND weight
    assert [w.code for w in comfyui.to_a1111("<lora:x:1> a").warnings] == ["a1111-inexact"]


def test_translate_reads_and_writes_comfyui(capsys):
    out = Translator.from_pretrained(None, policy=MigrationPolicy(syntax="comfyui")).translate(
        ["((masterpiece:1.2)), [sketch], embedding:bad_prompt, a cat"], ["(blurry), \\(x\\)"])[0]
    assert out.translated_prompt == "(masterpiece:1.2), [sketch], a cat"  # ComfyUI in, ComfyUI out
    assert out.translated_negative_prompt == "(blurry:1.1), \\(x\\)"
    assert "embedding-dropped" in {w["code"] for w in out.warnings}
    a1111_out = Translator.from_pretrained(None, policy=MigrationPolicy(syntax="comfyui", to_syntax="a1111")).translate(
        ["((masterpiece:1.2)), [sketch], a cat"])[0]
    assert a1111_out.translated_prompt == "(masterpiece:1.2), \\[sketch\\], a cat"
    assert main(["translate", "((a)), [b] AND c", "--to-syntax", "comfyui"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == "(a:1.21), (b:0.909091), c"
    assert "warning [comfyui-and]" in captured.err


def test_inspect_shows_comfyui_weights(capsys):
    assert main(["inspect", "((a:1.2)), [b], (c", "--syntax", "comfyui", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["weights"] == [{"text": "a", "weight": 1.2}]
    assert report["as_a1111"] == "(a:1.2), \\[b\\], \\(c"
    assert report["syntax"] == "(a:1.2), [b], \\(c"


def test_commands_that_render_refuse_a_comfyui_output(tmp_path):
    from eval.config import EvalConfig

    prompts = tmp_path / "p.txt"  # eval checks that its prompt file exists when its flags are parsed
    prompts.write_text("a cat\n")
    with pytest.raises(ValueError, match="reads as A1111 prompts"):
        EvalConfig(prompts=str(prompts), out="o", to_syntax="comfyui")
    assert EvalConfig(prompts=str(prompts), out="o", syntax="comfyui").to_syntax == "a1111"
    with pytest.raises(ValueError, match="unknown to_syntax 'novelai'"):
        MigrationPolicy(to_syntax="novelai")
