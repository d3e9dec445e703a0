"""Reading, chunking and tokenizing prompts as AUTOMATIC1111 does. Each case is a fact of A1111's source
(modules/prompt_parser.py `parse_prompt_attention`, modules/sd_hijack_clip.py `tokenize_line`,
modules/processing.py), written here as our own cases."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge import Translator
from bridge.encode import weighted_chunks
from bridge.prompt import encoder_runs, parse, replace_leaves, segments
from bridge.tokens import COMMA_BACKTRACK, a1111_chunks, build_clip_tokenizer, pack_chunks, token_budget

ANY = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, blacklist_categories=()), max_size=60)
SOUP = st.lists(st.sampled_from(list("\\()[]{}<>:|,/ ab1.") + ["\\\\", "<lora:x:1>", "AND", "BREAK"]),
                max_size=40).map("".join)


@settings(max_examples=500, deadline=None)
@given(st.one_of(ANY, SOUP))
def test_an_identity_translation_changes_nothing(s):
    """`fate\\/stay night` came back as `fate\\\\/stay night`: a translator must not change what it did not touch."""
    assert replace_leaves(parse(s), lambda text: text) == s
    assert replace_leaves(parse(s, negative=True), lambda text: text) == s


def test_backslashes_read_as_a1111_reads_them():
    """`\\(` `\\)` `\\[` `\\]` `\\\\` are the escaped character; any other backslash is dropped."""
    assert segments(parse("fate\\/stay night").nodes) == [("fate/stay night", 1.0)]
    assert segments(parse("a \\(b\\) \\\\ c\\").nodes) == [("a (b) \\ c", 1.0)]
    assert segments(parse("\\").nodes) == [("", 1.0)]
    # A changed leaf is escaped so A1111 reads back exactly the new text.
    assert replace_leaves(parse("fate\\/stay"), lambda t: t + " (1)") == "fate/stay \\(1\\)"


def test_negative_prompts_are_not_split():
    """A1111 takes extra networks from the prompt only, and splits only the prompt at AND."""
    negative = parse("worst quality, <lora:flat2:1>, text", negative=True)
    assert segments(negative.nodes) == [("worst quality, <lora:flat2:1>, text", 1.0)]
    assert [w.code for w in negative.warnings] == ["network-in-negative"]
    assert segments(parse("text, asian:1.2", negative=True).nodes) == [("text, asian:1.2", 1.0)]
    assert segments(parse("a AND b", negative=True).nodes) == [("a AND b", 1.0)]
    # The same text as a prompt: the tag is an extra network, AND splits, `:1.2` is the part's weight.
    assert segments(parse("worst quality, <lora:flat2:1>, text").nodes) == [("worst quality, ", 1.0), (", text", 1.0)]
    assert len(parse("a AND b").nodes) == 3


def test_the_translator_keeps_a_tag_in_a_negative_as_text():
    [t] = Translator.from_pretrained(None).translate(["a cat <lora:x:1>"], ["ugly, <lora:flat2:1>, EasyNegative"])
    assert t.translated_prompt == "a cat"
    assert t.translated_negative_prompt == "ugly, <lora:flat2:1>"  # the embedding is still an SD1 embedding
    assert ("network-in-negative", "negative_prompt") in [(w["code"], w["field"]) for w in t.warnings]


def test_equal_weight_neighbours_are_tokenized_as_one_run():
    assert encoder_runs(parse("(cropped)(people)").nodes) == [("croppedpeople", 1.1)]
    assert a1111_chunks(parse("(cropped)(people)").nodes) == [["cro", "pp", "ed", "people</w>"]]
    assert a1111_chunks(parse("realistic,<lora:x:0.7>,armor").nodes) == [["realistic</w>", ",,</w>", "armor</w>"]]
    assert encoder_runs(parse("(a)(b:1.2) c BREAK d").nodes)[:2] == [("a", 1.1), ("b", 1.2)]


def test_a_long_chunk_ends_at_a_comma_within_20_tokens(prompts_dir):
    """Row 1 of a1111.jsonl: A1111 gives chunks of 73 and 26 tokens and starts chunk 2 at "blood splatter";
    cutting at exactly 75 split "splat|ter"."""
    row = json.loads((prompts_dir / "a1111.jsonl").read_text(encoding="utf-8").splitlines()[1])
    chunks = a1111_chunks(parse(row["prompt"]).nodes)
    assert [len(c) for c in chunks] == [73, 26] and chunks[1][:3] == ["blood</w>", "splat", "ter</w>"]
    assert [len(ids) for ids, _ in weighted_chunks(row["prompt"], build_clip_tokenizer())] == [73, 26]


def test_pack_chunks_follows_tokenize_line():
    comma = lambda t: t == ","  # noqa: E731
    words = [f"w{k}" for k in range(80)]
    # A comma 15 tokens before the end: the chunk ends after it, the 15 tokens move on.
    chunks = pack_chunks([(words[:60] + [","] + words[60:80], 1.0)], comma)
    assert [len(t) for t, _ in chunks] == [61, 20] and chunks[1][0][0] == "w60"
    # A comma further back than COMMA_BACKTRACK: a plain cut at 75.
    far = 75 - COMMA_BACKTRACK - 2
    chunks = pack_chunks([(words[:far] + [","] + words[far:80], 1.0)], comma)
    assert [len(t) for t, _ in chunks] == [75, 6]
    # A comma that arrives when the chunk is full starts the next one; BREAK (None) closes a chunk even when
    # empty; weights travel with their tokens.
    chunks = pack_chunks([(words[:75], 1.0), ([","], 1.2), None, None, (["x"], 0.9)], comma)
    assert [(len(t), w[:1]) for t, w in chunks] == [(75, [1.0]), (1, [1.2]), (0, []), (1, [0.9])]


def test_the_token_counter_and_the_encoder_chunk_alike(prompts_dir):
    """`token_budget` (the pure-Python BPE) and `weighted_chunks` (the pipeline's tokenizer) give the same
    chunk sizes on every shared prompt and negative."""
    tok = build_clip_tokenizer()
    rows = [json.loads(x) for x in (prompts_dir / "a1111.jsonl").read_text(encoding="utf-8").splitlines()]
    checked = 0
    for r in rows:
        for text, negative in ((r["prompt"], False), (r.get("negative_prompt") or "", True)):
            counts, _ = token_budget(parse(text, negative=negative).nodes, truncates=False)
            assert counts == [len(ids) for ids, _ in weighted_chunks(text, tok, negative=negative)], text
            checked += 1
    assert checked > 2_000
