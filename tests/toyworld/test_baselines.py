"""The sceptic's baseline of benchmarks/toyworld_learning.py: a context-free word table mined from training
prompts and their oracle rewrites (#39). It must find the toy world's word rules where they are rules, and
nothing where a word's rewrite depends on its context."""

from __future__ import annotations

import json

import pytest

from benchmarks.toyworld_learning import apply_table, apply_table_woven, mine_table, prompt_rows
from toyworld import world


def test_the_table_learns_the_worlds_word_rules_from_training_prompts():
    table = mine_table(prompt_rows("train", 400))
    assert {"crimson": "red", "azure": "blue", "big": "large", "solid": ""}.items() <= table["replace"].items()
    held = [r for r in prompt_rows("heldout", 500) if r["drifts"] == ["vocabulary"]]
    right = lambda r: apply_table(table, r["prompt"]).replace("an ", "a ") == r["oracle"].replace("an ", "a ")  # noqa: E731
    seen = [r for r in held if not world.unseen_words(r["prompt"])]
    assert seen and all(right(r) for r in seen)
    # A class member no training prompt says is beyond any table mined from them (#39).
    unseen = [r for r in held if world.unseen_words(r["prompt"])]
    assert unseen and not any(right(r) for r in unseen)


def test_a_rewrite_that_depends_on_context_is_left_out():
    pairs = [("a hot dog", "a sausage"), ("a hot day", "a warm day"), ("a hot sun", "a hot sun"),
             ("a hot stove", "a hot stove"), ("a cold day", "a chilly day")] * 3
    table = mine_table([{"prompt": p, "oracle": o} for p, o in pairs])
    assert "hot" not in table["replace"]  # replaced in 2 of its 4 contexts, two different ways
    assert table["replace"]["hot dog"] == "sausage"  # a phrase replaced wherever it occurs is a rule
    assert apply_table(table, "a cold hot day") == "a chilly hot day"


def test_an_ending_added_to_most_prompts_is_appended_to_every_prompt():
    table = mine_table([{"prompt": f"a {w}", "oracle": f"a {w} on white"} for w in "abc"]
                       + [{"prompt": "a d on black", "oracle": "a d on black"}])
    assert table["append"] == ["on white"] and apply_table(table, "a e") == "a e on white"


def test_the_table_meets_a1111_syntax_on_the_adapters_terms():
    """On woven prompts (--syntax) the table rewrites the prompt's words and keeps the syntax where it was, as the
    adapter's flat format does; a prompt without syntax is `apply_table`'s."""
    table = mine_table(prompt_rows("train", 400))
    assert apply_table_woven(table, "a big (crimson:1.2) circle BREAK on the left <lora:x:0.7>") == (
        "a large (red:1.2) circle BREAK on the left <lora:x:0.7>")
    assert apply_table_woven(table, "a crimson circle, on the left, on a white background") == (
        "a red circle, on the left, on a white background")
    assert apply_table_woven(table, "a big crimson circle") == apply_table(table, "a big crimson circle")


@pytest.mark.slow
def test_the_pixel_judge_sees_what_the_oracle_fixes():
    """Read-back from the pixels, the benchmark's second judge: on held-out prompts toy-sd2 draws the colour
    toy-sd15 drew far more often from the oracle's prompt than from the prompt as written (crimson and azure
    are words toy-sd2 never learned), and the background at least as often."""
    from dataclasses import replace

    from benchmarks.toyworld_learning import REDUCED, readback

    result = readback(replace(REDUCED, eval_prompts=24), [])
    s = result["strategies"]
    assert result["prompts"] == 24 and "adapter" not in s
    assert s["oracle"]["colour"] >= s["identity"]["colour"] + 0.15, s
    assert s["oracle"]["background"] >= s["identity"]["background"], s


def test_the_benchmark_can_score_fresh_held_out_prompts(tmp_path):
    """`--heldout-seed S` (#39's acceptance asks for prompts drawn with a seed the tests do not use): seed 0 is
    the committed split; another seed writes a fresh draw of the held-out split where the stages read it."""
    from dataclasses import replace

    from benchmarks.toyworld_learning import REDUCED, eval_config, heldout_file, heldout_rows

    assert heldout_rows(REDUCED) == prompt_rows("heldout")
    fresh = replace(REDUCED, heldout_seed=5)
    path = heldout_file(tmp_path, fresh)
    assert eval_config(tmp_path, fresh).prompts == str(path)
    rows = [json.loads(line) for line in path.open(encoding="utf-8")]
    assert rows == heldout_rows(fresh) and len(rows) == 500
    assert all(world.split_of(world.read(r["prompt"], world.SOURCE)) == "heldout" for r in rows)
    committed = {r["prompt"] for r in prompt_rows("heldout")}
    assert sum(r["prompt"] in committed for r in rows) < 100  # mostly new prompts, from a finite world


@pytest.mark.parametrize("argv, name", [
    (["--out", "/tmp/x", "--seeds", "0,1,2"], ""),
    (["--out", "/tmp/x", "--reduced", "--broken", "frozen"], "reduced-broken-frozen"),
    (["--out", "/tmp/x", "--heldout-seed", "7"], "heldout7"),
    (["--out", "/tmp/x", "--outside", "0.5", "--preserve-penalty", "0.01"], "outside0p5-preserve0p01"),
    (["--out", "/tmp/outside", "--algo", "raft"], "raft"),
])
def test_each_variant_names_its_own_results_file(argv, name):
    """`--out DIR` is no `--outside` (a run's results were lost to that prefix once), and each flag that changes
    the recipe names the file."""
    from benchmarks.toyworld_learning import _variant

    assert _variant(argv) == name


def test_the_drift_benchmark_reads_each_models_default_background(tmp_path):
    """benchmarks.toyworld_drift's `default_background`: only prompts that name no background count, each model
    is held to its own default (toy-sd15 white, toy-sd2 black), read from the pixels at every seed. toy-sd15
    draws its white there (toy-sd2's black is the figure the benchmark watches: fine-tuning it for real prompt
    shapes made it less reliable)."""
    from benchmarks.toyworld_drift import default_background

    rows = [{"index": i, "prompt": p, "seeds": [1, 2, 3], "strategies": {"identity": {"negative": None}}}
            for i, p in enumerate(["a crimson circle", "a big azure square on the left",
                                   "a crimson triangle on a beige background", "a crimson circle by bridget riley"])]
    out = default_background({"rows": rows}, tmp_path / "cache")
    assert out["toy-sd15"]["default"] == "white" and out["toy-sd2"]["default"] == "black"
    assert out["toy-sd15"]["images"] == out["toy-sd2"]["images"] == 9  # the beige prompt names its background
    assert out["toy-sd15"]["prompts"] == 3 and out["toy-sd15"]["share"] >= 7 / 9
    assert out["toy-sd2"]["with_artist"]["images"] == 3 and out["toy-sd2"]["without_artist"]["images"] == 6
    assert 0 <= out["toy-sd2"]["every_seed"] <= out["toy-sd2"]["share"] <= 1
