"""Reading, chunking and tokenizing prompts as AUTOMATIC1111 does. Each case is a fact of A1111's source
(modules/prompt_parser.py `parse_prompt_attention`, modules/sd_hijack_clip.py `tokenize_line`,
modules/processing.py), written here as our own cases."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge import Translator
from bridge.syntax.a1111 import attention, calls_with_distinct_text
from bridge.models.encode import weighted_chunks
from bridge.syntax.prompt import parse, replace_leaves, segments
from bridge.syntax.tokens import COMMA_BACKTRACK, a1111_chunks, build_clip_tokenizer, pack_chunks, token_budget

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
    assert attention("(cropped)(people)") == [("croppedpeople", 1.1)]
    assert a1111_chunks("(cropped)(people)") == [["cro", "pp", "ed", "people</w>"]]
    assert a1111_chunks("realistic,<lora:x:0.7>,armor") == [["realistic</w>", ",,</w>", "armor</w>"]]
    assert attention("(a)(b:1.2) c BREAK d")[:2] == [("a", 1.1), ("b", 1.2)]


def test_a_long_chunk_ends_at_a_comma_within_20_tokens(prompts_dir):
    """Row 1 of a1111.jsonl: A1111 gives chunks of 73 and 26 tokens and starts chunk 2 at "blood splatter";
    cutting at exactly 75 split "splat|ter"."""
    row = json.loads((prompts_dir / "a1111.jsonl").read_text(encoding="utf-8").splitlines()[1])
    chunks = a1111_chunks(row["prompt"])
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
    chunk sizes on every shared prompt and negative (at the step of the schedule that costs the most tokens,
    the one A1111's counter shows)."""
    tok = build_clip_tokenizer()
    rows = [json.loads(x) for x in (prompts_dir / "a1111.jsonl").read_text(encoding="utf-8").splitlines()]
    checked = 0
    for r in rows:
        for text, negative in ((r["prompt"], False), (r.get("negative_prompt") or "", True)):
            counts, _ = token_budget(text, truncates=False, negative=negative)
            per_call = [[len(ids) for ids, _ in weighted_chunks(text, tok, negative=negative, call=call)]
                        for call in calls_with_distinct_text(text, negative)]
            assert counts == max(per_call, key=sum), text
            checked += 1
    assert checked > 2_000


# ------------------------------------------------------------------ item 5: editing and alternation per step
DOCTESTS = {  # A1111's own doctests for get_learned_conditioning_prompt_schedules, 10 steps
    "test": [(10, "test")], "a [b:3]": [(3, "a "), (10, "a b")], "a [b: 3]": [(3, "a "), (10, "a b")],
    "a [[[b]]:2]": [(2, "a "), (10, "a [[b]]")], "[(a:2):3]": [(3, ""), (10, "(a:2)")],
    "a [b : c : 1] d": [(1, "a b  d"), (10, "a  c  d")], "a[b:[c:d:2]:1]e": [(1, "abe"), (2, "ace"), (10, "ade")],
    "a [unbalanced": [(10, "a [unbalanced")], "a [b:.5] c": [(5, "a  c"), (10, "a b c")],
    "((a][:b:c [d:3]": [(3, "((a][:b:c "), (10, "((a][:b:c d")],
    "[fe|]male": [(k, "female" if k % 2 else "male") for k in range(1, 11)],
    "[fe|||]male": [(k, "female" if k % 4 == 1 else "male") for k in range(1, 11)],
    # 1.6+: a number with "." is a fraction of the steps, capped at the step count: 1.5 never switches.
    "a [b:1.5] c": [(10, "a  c")],
}


def test_schedule_follows_a1111():
    from bridge.syntax.a1111 import prompt_schedule

    for text, expected in DOCTESTS.items():
        assert prompt_schedule(text, 10) == expected, text
    # A `|` outside an alternation fails A1111's parse: the text is one schedule, brackets and all, and the
    # parser says so, since the tree still shows an edit.
    assert prompt_schedule("a | [b:3]", 10) == [(10, "a | [b:3]")]
    assert [w.code for w in parse("(snow|rain), [b:3]").warnings] == ["editing-ignored"]
    assert parse("[snow|rain], [b:3]").warnings == []


def test_schedule_equals_a1111s_grammar_run_by_lark(prompts_dir):
    """Our recursive descent against the grammar itself on the doctests and the 40 shortest bracketed prompts
    of the corpus (the benchmark `benchmarks.a1111_parity` runs all of them)."""
    from bridge.syntax.a1111 import prompt_schedule
    from lark_schedule import ref_schedule

    rows = [json.loads(x) for x in (prompts_dir / "a1111.jsonl").read_text(encoding="utf-8").splitlines()]
    texts = sorted({t for r in rows for t in (r["prompt"], r.get("negative_prompt") or "") if "[" in t}, key=len)
    for text in list(DOCTESTS) + texts[:40]:
        assert prompt_schedule(text, 20) == ref_schedule(text, 20), text


def test_segments_and_the_encoder_agree_at_every_step(prompts_dir):
    """`segments(step=k)` (the tree) and `runs_at(call)` (A1111's passes) read the same (text, weight) on every
    well-formed corpus prompt at every step where the text changes: call c reads step max(c, 1)."""
    from bridge.syntax.a1111 import calls_with_distinct_text, runs_at
    from bridge.syntax.prompt import And, Break

    def merged(runs):
        out = []
        for r in runs:
            if r is None or type(r) in (And, Break) or r == ("BREAK", -1.0):
                out.append("|")
            elif r[0] and out and out[-1] != "|" and abs(out[-1][1] - r[1]) < 1e-9:
                out[-1] = (out[-1][0] + r[0], r[1])
            elif r[0]:
                out.append((r[0], r[1]))
        return [x if x == "|" else (x[0].strip(), round(x[1], 6)) for x in out if x == "|" or x[0].strip()]

    rows = [json.loads(x) for x in (prompts_dir / "a1111.jsonl").read_text(encoding="utf-8").splitlines()]
    checked = 0
    for r in rows:
        for text, negative in ((r["prompt"], False), (r.get("negative_prompt") or "", True)):
            tree = parse(text, negative=negative)
            if tree.warnings:
                continue  # malformed: A1111's passes read it their own way (test below)
            for call in calls_with_distinct_text(text, negative):
                assert merged(segments(tree.nodes, step=max(call, 1))) == merged(runs_at(text, call, negative)), text
                checked += 1
    assert checked > 2_500


def test_per_step_reading_of_editing_and_alternation():
    from bridge.syntax.a1111 import read

    [part] = read("a [snowy:misty:0.4] forest", steps=10)
    assert [part.text_at(c) for c in range(10)] == ["a snowy forest"] * 5 + ["a misty forest"] * 5
    [part] = read("[cat|dog]", steps=4)
    assert [part.text_at(c) for c in range(4)] == ["cat", "cat", "dog", "cat"]
    assert segments(parse("[cat|dog]").nodes, step=2, steps=4) == [("dog", 1.0)]


# ------------------------------------------------------------------ item 7: malformed input, as A1111 reads it
def test_malformed_input_as_a1111_reads_it():
    from bridge.syntax.a1111 import and_parts, attention, read

    # An unclosed bracket: the raw text's trailing `:1.4` is the AND part's weight, read before the brackets.
    assert and_parts("1girl, (masterpiece:1.4") == [("1girl, (masterpiece", 1.4)]
    # re_weight's \s is any Unicode whitespace around the number; hypothesis found `\x1f`, which float() refuses.
    assert and_parts("Hypernet: \x1f0") == [("Hypernet", 0.0)]
    assert attention("1girl, (masterpiece") == [("1girl, ", 1.0), ("masterpiece", 1.1)]
    # Crossing brackets: round and square are separate stacks, so `)` closes `(` across the open `[`.
    assert attention("(a [b) c]") == [("a ", 1.1), ("b", 1.0), (" c", 1 / 1.1)]
    # Tags are removed before the schedule is parsed: the edit still switches at step 5 of 10.
    assert read("[smiling:0.5 <lora:x:1>]", steps=10)[0].schedule == [(5, ""), (10, "smiling")]
    # Unclosed, with the tag gone the raw text ends in `:0.5 `: that is the AND part's weight, and "[smiling"
    # an unclosed bracket (÷1.1).
    [part] = read("[smiling:0.5 <lora:x:1>", steps=10)
    assert (part.weight, part.schedule) == (0.5, [(10, "[smiling")])
    assert attention("[smiling") == [("smiling", 1 / 1.1)]
    # The documented A1111 bug: brackets multiply BREAK's -1 marker, and "BREAK" is then encoded as a word.
    assert attention("(b BREAK c)") == [("b", 1.1), ("BREAK", -1.1), ("c", 1.1)]
    assert a1111_chunks("(b BREAK c)") == [["b</w>", "break</w>", "c</w>"]]
    assert a1111_chunks("b BREAK c") == [["b</w>"], ["c</w>"]]


def test_inspect_shows_the_schedule(capsys):
    from bridge.cli import main

    assert main(["inspect", "a [snowy:misty:0.4] forest", "--steps", "10"]) == 0
    out = capsys.readouterr().out
    assert "until step   4: 'a snowy forest'" in out and "until step  10: 'a misty forest'" in out
    assert main(["inspect", "--json", "(a [b) c]"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["weights"] == [{"text": "a ", "weight": 1.1}, {"text": " c", "weight": 0.909091}]
    # The weights are those of the last of --steps: an edit at step 25 has not switched at step 20.
    for steps, expected in (("20", {"text": "x", "weight": 1.3}), ("30", {"text": "y", "weight": 1.2})):
        assert main(["inspect", "--json", "[(x:1.3):(y:1.2):25]", "--steps", steps]) == 0
        assert json.loads(capsys.readouterr().out)["weights"] == [expected]


def test_schedule_api():
    from bridge.syntax.a1111 import schedule

    assert schedule("a [b:c:0.5] AND d:0.7", steps=4) == [
        {"weight": 1.0, "steps": [{"until_step": 2, "text": "a b"}, {"until_step": 4, "text": "a c"}]},
        {"weight": 0.7, "steps": [{"until_step": 4, "text": " d"}]}]
