"""The faithfulness guard (#40): words, edits, the edit record, and the guard in the translator."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge import Translator
from bridge.models import presets
from bridge.models.faithfulness import (
    CLASS_MIN, MIN_ACCEPTED, EditRecord, check, diff, leaf_words,
)
from bridge.models.rewriter import AdapterMeta
from bridge.syntax.policy import MigrationPolicy
from conftest import read_jsonl

WORDS = st.lists(st.sampled_from("a red crimson fox circle snow the of by greg large big on".split()), max_size=12)


def learned(*pairs: tuple[str, str], inserts: tuple[str, ...] = (), deletes: tuple[str, ...] = (),
            vocabulary: str = "") -> EditRecord:
    """A record as training leaves it when the reward accepted these replacements, inserts and deletes
    MIN_ACCEPTED times each, and the training prompts held `vocabulary`."""
    rec = EditRecord()
    for _ in range(MIN_ACCEPTED):
        for src, dst in pairs:
            rec.count(diff(src.split(), dst.split()), accepted=True)
        for w in inserts:
            rec.count(diff([], w.split()), accepted=True)
        for w in deletes:
            rec.count(diff(w.split(), []), accepted=True)
    rec.see([vocabulary] + [s for s, _ in pairs])
    return rec


@given(WORDS, WORDS)
def test_diff_is_the_multiset_difference_of_content_words(a, b):
    edit = diff(a, b)
    stop = {"a", "the", "of", "by", "on"}
    for w in set(a + b) - stop:
        assert edit.dropped.count(w) == max(0, a.count(w) - b.count(w))
        assert edit.added.count(w) == max(0, b.count(w) - a.count(w))
    assert not set(edit.dropped + edit.added) & stop  # function words are never content
    assert not diff(a, a).changed and not diff(a, list(reversed(a))).changed  # a word that only moves is kept


def test_words_are_read_from_text_leaves_only():
    assert leaf_words("(masterpiece:1.2), a Crimson fox <lora:x:1> BREAK [snow:rain:0.5]") == (
        "masterpiece", "a", "crimson", "fox", "snow", "rain")


def test_learned_edits_pass_and_everything_else_is_named():
    rec = learned(("crimson", "red"), ("big", "large"), inserts=("white background",), deletes=("solid",),
                  vocabulary="circle square on the left")
    assert check("a big crimson circle", "a large red circle on a white background", rec).ok
    assert check("a solid crimson circle", "a red circle", rec).ok
    # The review's rewrites: words the adapter never learned to change are named.
    v = check("a photo of a crimson fox in the snow, by greg rutkowski", "a red dotted circle on the right", rec)
    assert v.dropped == ["fox", "greg", "photo", "rutkowski", "snow"] and v.invented == ["circle", "dotted", "right"]
    assert "'fox'" in v.message() and "'dotted'" in v.message()
    assert check("a crimson circle and an azure square", "a red square", rec).dropped == ["azure", "circle"]
    assert check("masterpiece, best quality, a big square", "a large square", rec).dropped == [
        "best", "masterpiece", "quality"]
    # A word the adapter saw and always kept is not licensed to change, even into a learned word.
    assert not check("a crimson circle", "a red red", rec).ok
    # off takes anything; no record licenses nothing.
    assert check("a crimson fox", "a red circle", rec, mode="off").ok
    assert check("a crimson circle", "a red circle", None).dropped == ["crimson"]


def test_an_unseen_word_replaced_in_place_by_a_learned_class_passes():
    rec = learned(("crimson", "red"), ("scarlet", "red"), ("azure", "blue"), vocabulary="circle")
    assert rec.class_size("red") == 2 >= CLASS_MIN and rec.class_size("blue") == 1
    assert check("a vermilion circle", "a red circle", rec).ok  # never met "vermilion": a class member
    assert not check("a cobalt circle", "a blue circle", rec).ok  # "blue" was learned from one word only
    assert check("a cobalt circle", "a blue circle", rec, mode="lenient").ok
    assert not check("a vermilion fox", "a red circle", rec).ok  # "circle" for "fox" is an invention
    assert not check("a vermilion circle", "a red", rec).ok  # "circle" was seen: its loss is never licensed
    rec = learned(("crimson", "red"), ("scarlet", "red"), ("big", "large"), vocabulary="circle")
    assert check("a big vermilion circle", "a large red circle", rec).ok  # big -> large learned, one new pair
    # Two unseen words paired with learned words by position alone are no translation (found by the
    # benchmark: "minimalism, poster" -> "on a white background").
    rec = learned(("crimson", "red"), ("scarlet", "red"), ("azure", "white"), ("cobalt", "white"),
                  ("ochre", "background"), ("umber", "background"), vocabulary="square")
    assert not check("a square, minimalism, poster", "a square on a white background", rec).ok
    assert not check("a square, minimalism, poster", "a square on a white background", rec, mode="lenient").ok
    # Several unseen words in one replacement, each for a class target (#39's held-out members): they pass
    # where accepted rewrites wrote those targets inside several-for-several replacements, and not otherwise.
    pairs = (("crimson", "red"), ("scarlet", "red"), ("tiny", "small"), ("little", "small"))
    rec = learned(*pairs, ("tiny crimson", "small red"), ("little scarlet", "small red"), vocabulary="circle")
    assert rec.multi_target("small") and rec.multi_target("red")
    assert check("a petite cherry circle", "a small red circle", rec).ok
    assert not check("a petite cherry circle", "a small red circle", learned(*pairs, vocabulary="circle")).ok
    assert not check("a cute fluffy circle", "a small blue circle", rec).ok  # blue is no class target here
    # What is licensed alone is set aside before pairing: a learned drop, a learned add that is no class.
    rec = learned(("crimson", "red"), ("scarlet", "red"), ("by yayoi kusama", "dotted"), deletes=("solid",),
                  vocabulary="circle solid")
    assert check("a cherry solid circle", "a red circle", rec).ok
    assert check("a cherry circle by yayoi kusama", "a red dotted circle", rec).ok
    assert not check("a cherry fox solid circle", "a red circle", rec).ok  # "fox" is still lost
    rec = learned(("crimson", "red"), ("scarlet", "red"), ("huge", "large"), ("big", "large"),
                  ("by yayoi kusama", "dotted"), vocabulary="circle")
    assert check("a huge cherry circle by yayoi kusama", "a large red dotted circle", rec).ok  # huge pairs large
    # An unseen artist's name for a learned fill: three words in place, lenient only.
    rec = learned(("by bridget riley", "striped"), vocabulary="circle")
    assert not check("a circle by greg rutkowski", "a striped circle", rec).ok
    assert check("a circle by greg rutkowski", "a circle striped", rec, mode="lenient").ok
    rec = learned(("by bridget riley", "striped"), inserts=("white background",), vocabulary="circle")
    assert not check("a circle, highly detailed, 8k", "a circle on a white background", rec, mode="lenient").ok


def test_a_reward_that_rejects_an_edit_does_not_license_it():
    rec = EditRecord()
    for accepted in [True] * MIN_ACCEPTED + [False] * MIN_ACCEPTED:  # as often rejected as accepted: noise
        rec.count(diff("a crimson circle".split(), "a circle".split()), accepted)
    assert not rec.learned_drop("crimson")
    rec.count(diff("a crimson circle".split(), "a circle".split()), True)
    assert rec.learned_drop("crimson")


def test_the_record_round_trips_and_hides_its_words(tmp_path):
    rec = learned(("crimson", "red"), ("scarlet", "red"), vocabulary="a secret circle")
    rec.save(tmp_path)
    text = (tmp_path / "edits.json").read_text()
    assert "crimson" not in text and "secret" not in text  # the adapter ships; the training data does not
    back = EditRecord.load(tmp_path)
    assert back.to_json() == rec.to_json() and back.seen("secret") and back.learned_drop("crimson")
    assert EditRecord.load(tmp_path / "none") is None
    for bad in ("[1, 2]", '{"drop": {"x": [1]}}', '{"vocabulary": "abc"}', "{"):
        (tmp_path / "edits.json").write_text(bad)
        with pytest.raises(ValueError, match=r"edits.json is not .*edit record"):
            EditRecord.load(tmp_path)


# ------------------------------------------------------------------------------ in the translator
class _Scripted:
    """Stands in for `bridge.models.rewriter.generate`: answers from a table, records what was asked."""

    def __init__(self, answers: dict[str, str]):
        self.answers, self.asked = answers, []

    def __call__(self, model, tokenizer, texts, prefix="", num_candidates=1, **_):
        self.asked += list(texts)
        return [[(self.answers.get(t, t), [7, 1])] * num_candidates for t in texts]


class _Tok:
    eos_token_id = 1


ANSWERS = {"a crimson circle": "a red circle",
           "a photo of a crimson fox in the snow, by greg rutkowski": "a red dotted circle on the right",
           "[1] masterpiece [2] a crimson circle": "[1] best quality [2] a red circle",
           "a crimson fox": "a red circle",
           "a vermilion circle": "a red circle"}


def translator(mode: str, record: EditRecord | None) -> Translator:
    return Translator(presets.pipeline("tiny-sd2"), MigrationPolicy(faithfulness=mode), model=object(),
                      tokenizer=_Tok(), meta=AdapterMeta("tiny-t5", "x", "a", "b"), edits=record)


def test_the_guard_falls_back_with_a_warning_naming_the_words(monkeypatch):
    monkeypatch.setattr("bridge.models.rewriter.generate", _Scripted(ANSWERS))
    rec = learned(("crimson", "red"), ("scarlet", "red"), vocabulary="circle square")
    good, fox, parts = translator("strict", rec).translate(
        ["a crimson circle", "a photo of a crimson fox in the snow, by greg rutkowski",
         "(masterpiece:1.2), a crimson circle"])
    assert good.translated_prompt == "a red circle" and not good.unfaithful and not good.warnings
    assert fox.translated_prompt == "a photo of a crimson fox in the snow, by greg rutkowski" and fox.unfaithful
    [warning] = fox.warnings
    assert warning["code"] == "rewrite-unfaithful" and warning["field"] == "prompt" and "'fox'" in warning["message"]
    assert set(warning) == {"code", "message", "span", "field"}  # the shape of rewrite-fallback
    assert parts.unfaithful and "'masterpiece'" in parts.warnings[0]["message"]
    # The guard can fail: off lets the word-dropping rewrite through, and this is what the test must catch.
    off = translator("off", rec).translate(["a photo of a crimson fox in the snow, by greg rutkowski"])[0]
    assert off.translated_prompt == "a red dotted circle on the right" and not off.warnings


def test_a_prompt_with_nothing_the_adapter_knows_is_not_sent_and_comes_back_as_written(monkeypatch):
    script = _Scripted(ANSWERS)
    monkeypatch.setattr("bridge.models.rewriter.generate", script)
    tr = translator("strict", learned(("crimson", "red"), vocabulary="circle"))
    prompts = ["a photo of a fox in the snow", "masterpiece, best quality, 8k", "a crimson circle"]
    out = tr.translate(prompts)
    assert [t.translated_prompt for t in out] == prompts[:2] + ["a red circle"]
    assert script.asked == ["a crimson circle"] and not any(t.warnings for t in out)


def test_an_adapter_without_a_record_changes_no_content_word(monkeypatch):
    monkeypatch.setattr("bridge.models.rewriter.generate", _Scripted(ANSWERS))
    [t] = translator("strict", None).translate(["a crimson circle"])
    assert t.translated_prompt == "a crimson circle" and t.unfaithful


def test_negatives_are_guarded_by_their_own_record(monkeypatch):
    monkeypatch.setattr("bridge.models.rewriter.generate", _Scripted({"blurry": "blurry, outlined",
                                                                      "ugly, a fox": "outlined"}))
    meta = AdapterMeta("tiny-t5", "x", "a", "b", rewrite_negative=True)
    tr = Translator(presets.pipeline("tiny-sd2"), MigrationPolicy(), model=object(), tokenizer=_Tok(), meta=meta,
                    edits=EditRecord(), negative_edits=learned(inserts=("outlined",), vocabulary="blurry ugly"))
    kept, dropped = tr.translate(["x", "x"], ["blurry", "ugly, a fox"])
    assert kept.translated_negative_prompt == "blurry, outlined" and not kept.warnings
    assert dropped.translated_negative_prompt == "ugly, a fox"
    assert [(w["code"], w["field"]) for w in dropped.warnings] == [("rewrite-unfaithful", "negative_prompt")]


ROOT = Path(__file__).resolve().parents[2]
PROBES = "tests/fixtures/faithfulness_probes.jsonl"


def test_the_probe_set_is_what_users_write():
    """The committed probes (#40): at least 30, out-of-world and mixed, each with what it must keep."""
    rows = read_jsonl(ROOT / PROBES)
    assert len(rows) >= 30 and {r["kind"] for r in rows} == {"outside", "mixed"}
    assert all(r["keep"] and all(w in leaf_words(r["prompt"]) for w in r["keep"]) for r in rows)


def test_eval_counts_words_kept_and_invented_per_strategy():
    from eval.run import faithfulness_counts, faithfulness_summary

    counts = faithfulness_counts(["a crimson fox in the snow", "masterpiece, a cat"],
                                 ["a red circle in the snow", "masterpiece, a cat"], frozenset())
    # Source content words: crimson, fox, snow, masterpiece, cat (5); kept: snow, masterpiece, cat; invented:
    # red, circle.
    assert counts == {"words_kept": 3, "words": 5, "words_invented": 2}
    rejected = [{"prompt": "a crimson fox", "rewrite": "a red circle", "message": "…"}]
    summary = faithfulness_summary([{**counts, "rejected": rejected}, {**counts, "rejected": []}], prompts=4)
    assert summary == {"words_kept": 0.6, "words_invented_per_prompt": 1.0, "guard_rejections": 1,
                       "rejected": rejected}
