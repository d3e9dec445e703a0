"""Prompt syntax: lossless parse/serialize, effective weights, every construct, malformed input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.syntax.prompt import (
    Alternation, And, AndWeight, Break, Edit, Embedding, Emphasis, Network, Stray, Text, Variants, Wildcard,
    chunk_texts, embeddings, leaves, networks, parse, plain_text, replace_leaves, walk, weighted_spans,
)
from conftest import read_jsonl


def weights_of(s: str) -> dict[str, float]:
    return {w["text"]: round(w["weight"], 4) for w in weighted_spans(parse(s).nodes)}


@pytest.mark.parametrize("prompt, expected", [
    ("(cat)", {"cat": 1.1}),
    ("((cat))", {"cat": 1.21}),
    ("[cat]", {"cat": 0.9091}),
    ("[[cat]]", {"cat": 0.8264}),
    ("(cat:1.3)", {"cat": 1.3}),
    ("(cat: 0.5 )", {"cat": 0.5}),
    ("((cat:1.5))", {"cat": 1.65}),
    ("(a (b:2) c)", {"a ": 1.1, "b": 2.2, " c": 1.1}),
    ("(cat:.5)", {"cat": 0.5}),
    ("{cat}", {}),  # A1111 reads braces as text
    ("({cat})", {"{cat}": 1.1}),
    ("(a:b)", {"a:b": 1.1}),  # ':' without a number is text
    ("(EasyNegative:1.2)", {"EasyNegative": 1.2}),
    ("cat", {}),
    (r"\(cat\)", {}),
])
def test_effective_weights(prompt, expected):
    assert weights_of(prompt) == expected
    assert parse(prompt).serialize() == prompt


def test_novelai_syntax_weighs_braces():
    """NovelAI emphasis is the source dialect's choice: `syntax="novelai"` weighs `{x}` x1.05 per level."""
    spans = lambda text: {w["text"]: w["weight"] for w in weighted_spans(parse(text, syntax="novelai").nodes)}  # noqa: E731
    assert spans("{cat}") == {"cat": 1.05} and spans("{{cat}}") == {"cat": 1.1025}
    assert parse("{cat}", syntax="novelai").serialize() == "{cat}"
    with pytest.raises(ValueError, match="unknown prompt syntax 'nai'"):
        parse("x", syntax="nai")


@pytest.mark.parametrize("prompt, types", [
    ("a BREAK b", [Text, Break, Text]),
    ("a AND b", [Text, And, Text]),
    ("a :1.2 AND b:0.5", [Text, AndWeight, And, Text, AndWeight]),
    ("[a:b:0.5]", [Edit]),
    ("[b:10]", [Edit]),
    ("[a::0.25]", [Edit]),
    ("[a|b|c]", [Alternation]),
    ("[a:b]", [Emphasis]),  # no number: plain emphasis with text 'a:b'
    ("<lora:x:0.5>", [Network]),
    ("<hypernet:y:1>", [Network]),
    ("<foo:bar>", [Network]),
    ("a < b", [Text]),
    ("__colors__ cat", [Wildcard, Text]),
    ("{red|blue} cat", [Variants, Text]),
    ("embedding:bad_hands", [Embedding]),
    ("easynegative, cat", [Embedding, Text]),
    ("a) b", [Text, Stray, Text]),
    ("BREAKFAST", [Text]),
    ("SAND", [Text]),
])
def test_node_types(prompt, types):
    parsed = parse(prompt)
    assert [type(n) for n in parsed.nodes] == types
    assert parsed.serialize() == prompt


def test_edit_and_alternation_details():
    edit = parse("[from:to:0.3]").nodes[0]
    assert edit.when == 0.3 and [leaf.value for leaf in leaves(edit.parts[0])] == ["from"]
    assert parse("[a::12]").nodes[0].parts[1] == []
    alt = parse("[red|blue|]").nodes[0]
    assert len(alt.options) == 3 and alt.options[2] == []
    # The last of 20 steps (A1111: option (20 - 1) mod 2 of an alternation).
    assert plain_text(parse("a [cat:dog:0.5] [x|y]").nodes) == "a dog y"


def test_networks_and_embeddings():
    p = parse("<lora:add_detail:0.7>, <lyco:ly:1:0.5>, <lora:dora:te=0.5>, <hypernet:h:1.2>, <lora:名字:1>, "
              "EasyNegative, embedding:my_emb, ng_deepnegative_v1_75t", ["EasyNegative", "ng_deepnegative_v1_75t"])
    assert networks(p.nodes) == [
        {"type": "lora", "name": "add_detail", "weight": 0.7}, {"type": "lyco", "name": "ly", "weight": 1.0},
        {"type": "lora", "name": "dora", "weight": 0.5}, {"type": "hypernet", "name": "h", "weight": 1.2},
        {"type": "lora", "name": "名字", "weight": 1.0},
    ]
    assert embeddings(p.nodes) == ["EasyNegative", "my_emb", "ng_deepnegative_v1_75t"]
    # Unknown names are text; user-extended names are embeddings; no partial-word matches.
    assert embeddings(parse("mycustomemb, cat").nodes) == []
    assert embeddings(parse("mycustomemb, cat", ["mycustomemb"]).nodes) == ["mycustomemb"]
    assert embeddings(parse("EasyNegativeXL").nodes) == []


@pytest.mark.parametrize("prompt, code", [
    ("(a, b", "unclosed-bracket"),
    ("[a", "unclosed-bracket"),
    ("{a|b", "unclosed-bracket"),
    ("a)", "stray-bracket"),
    ("a]", "stray-bracket"),
    ("(a AND b)", "and-in-brackets"),
])
def test_malformed_input_warns_with_position(prompt, code):
    parsed = parse(prompt)
    assert parsed.serialize() == prompt
    warning = next(w for w in parsed.warnings if w.code == code)
    start, end = warning.span
    assert 0 <= start < end <= len(prompt)


def test_mismatched_nesting_closes_inner_bracket_implicitly():
    parsed = parse("[a (b] c")
    assert parsed.serialize() == "[a (b] c"
    outer = parsed.nodes[0]
    assert type(outer) is Emphasis and outer.open == "[" and outer.close == "]"
    assert outer.children[-1].close == ""  # the '(' closed implicitly where ']' closed its parent
    assert weights_of("[a (b] c").get("b", 1.0) == pytest.approx(1.0, abs=1e-4)  # x1.1 inside ÷1.1


def test_chunks_split_on_break_and_and():
    assert chunk_texts(parse("a, b BREAK c AND d").nodes) == [["a, b ", " c "], [" d"]]


def test_escapes_are_text_and_survive_replacement():
    p = parse(r"a \(b\) (c:1.2) \\ d")
    assert [leaf.value for leaf in leaves(p.nodes)] == ["a (b) ", "c", r" \ d"]
    out = replace_leaves(p, lambda t: t.upper())
    assert out == r"A \(B\) (C:1.2) \\ D"
    assert p.serialize() == r"a \(b\) (c:1.2) \\ d"  # the original is untouched


def test_replace_leaves_keeps_structure():
    src = "(masterpiece:1.2), <lora:x:0.5>, [cat:dog:0.5] BREAK [red|blue], EasyNegative, __w__, {a|b}"
    out = replace_leaves(parse(src), lambda t: t.replace("cat", "kitten").replace("red", "crimson"))
    assert out == "(masterpiece:1.2), <lora:x:0.5>, [kitten:dog:0.5] BREAK [crimson|blue], EasyNegative, __w__, {a|b}"
    with pytest.raises(ValueError, match="leaves"):
        replace_leaves(parse(src), ["only one"])


def test_every_shared_prompt_parses_and_round_trips(prompts_dir):
    texts = []
    for name in ("plain.jsonl", "a1111.jsonl"):
        for row in read_jsonl(prompts_dir / name):
            texts.append(row["prompt"])
            if row.get("negative_prompt"):
                texts.append(row["negative_prompt"])
    assert len(texts) > 6000
    for text in texts:
        assert parse(text).serialize() == text


SYNTAX_CHARS = "()[]{}<>:|\\,_ .0123456789abcAND BREAK\n"


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(list(SYNTAX_CHARS) + ["é", "日", "<lora:", "embedding:", "__", "EasyNegative"]),
                max_size=60).map("".join))
def test_arbitrary_syntax_soup_never_raises_and_round_trips(s):
    assert parse(s).serialize() == s


@pytest.mark.parametrize("s, deep", [("[" * 400 + "x" + "]" * 400, True), ("(" * 100_000, True),
                                     ("x" + ")(" * 50_000, False), ("{" * 3000 + "a|b" + "}" * 3000, True),
                                     ("[a:" * 2000 + "b" + ":0.5]" * 2000, True)])
def test_hostile_nesting_never_raises_and_round_trips(s, deep):
    p = parse(s)
    assert p.serialize() == s
    assert ("nesting-too-deep" in [w.code for w in p.warnings]) == deep
    leaves(p.nodes), list(walk(p.nodes))  # every walk over the tree stays within the recursion limit


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_unicode_round_trips(s):
    assert parse(s).serialize() == s


# A grammar of well-formed prompts: generated together with the weights they must parse to.
words = st.sampled_from(["cat", "red hat", "oil painting", "by artist", "1girl", "highly detailed"])


@st.composite
def weighted(draw, depth=0):
    """(prompt text, {word: effective weight}) for a well-formed emphasis tree."""
    word = draw(words)
    if depth >= 3 or draw(st.booleans()):
        return word, {word: 1.0}
    inner, w = draw(weighted(depth + 1))
    kind = draw(st.sampled_from(["round", "square", "explicit"]))
    if kind == "round":
        return f"({inner})", {k: v * 1.1 for k, v in w.items()}
    if kind == "square":
        return f"[{inner}]", {k: v / 1.1 for k, v in w.items()}
    x = draw(st.sampled_from([0.5, 0.8, 1.2, 1.5]))
    return f"({inner}:{x})", {k: v * x for k, v in w.items()}


@settings(max_examples=200, deadline=None)
@given(weighted())
def test_grammar_generated_prompts_round_trip_with_their_weights(case):
    text, expected = case
    parsed = parse(text)
    assert parsed.serialize() == text and not parsed.warnings
    got = {w["text"]: w["weight"] for w in weighted_spans(parsed.nodes)}
    for word, weight in expected.items():
        assert got.get(word, 1.0) == pytest.approx(weight, abs=1e-6)  # reported to 6 decimals


@st.composite
def structured(draw):
    parts = draw(st.lists(st.one_of(
        words,
        words.map(lambda w: f"({w}:1.2)"),
        st.tuples(words, words).map(lambda t: f"[{t[0]}:{t[1]}:0.5]"),
        st.tuples(words, words).map(lambda t: f"[{t[0]}|{t[1]}]"),
        st.just("<lora:detail_v2:0.6>"),
        st.just("EasyNegative"),
        st.just("BREAK"),
        st.just("__season__"),
    ), min_size=1, max_size=8))
    return ", ".join(parts)


@settings(max_examples=200, deadline=None)
@given(structured())
def test_structured_prompts_round_trip_without_warnings(text):
    parsed = parse(text)
    assert parsed.serialize() == text
    assert not parsed.warnings


@pytest.mark.parametrize("name", ["prompt: run of spaces after 'x:' (AND weight)", "prompt: '<a:' repeated (network tag)",
                                  "prompt: '(' repeated (nesting)", "infotext: a last line of words",
                                  "infotext: one long word"])
def test_hostile_megabyte_inputs_parse_in_linear_time(name):
    """1 MB of each input that was quadratic (hours at this size) parses under a generous bound; the ratio
    against 100 kB is printed by benchmarks/parse_linear.py."""
    import time

    from benchmarks.parse_linear import HOSTILE

    fn, unit = HOSTILE[name]
    text = (unit * (1_000_000 // len(unit) + 1))[:1_000_000]
    t = time.perf_counter()
    fn(text)
    assert time.perf_counter() - t < 30
