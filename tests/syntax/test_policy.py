"""Migration policy and the `syntax` strategy."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.models import presets
from bridge.syntax.policy import MigrationPolicy, apply_policy, migrate_parameters, size_fits, suggest_size
from bridge.syntax.prompt import parse
from conftest import read_jsonl


def codes(result) -> list[str]:
    return [w.code for w in result.warnings]


def test_default_policy_drops_sd1_networks_and_embeddings_with_warnings():
    r = apply_policy("(masterpiece:1.2), <lora:add_detail:0.7>, a cat, EasyNegative, <hypernet:h:1>")
    assert r.prompt == "(masterpiece:1.2), a cat"  # no empty item left behind
    assert codes(r) == ["network-dropped", "embedding-dropped", "network-dropped"]
    span = r.warnings[0].span
    assert "(masterpiece:1.2), <lora:add_detail:0.7>"[span[0] : span[1]] == "<lora:add_detail:0.7>"


def test_keep_policy_keeps_everything_but_still_warns():
    policy = MigrationPolicy(networks="keep", embeddings="keep")
    r = apply_policy("a cat, <lora:x:0.5>, EasyNegative", policy)
    assert r.prompt == "a cat, <lora:x:0.5>, EasyNegative"
    assert codes(r) == ["network-kept", "embedding-kept"]


def test_map_policy_uses_the_user_table(tmp_path):
    table = tmp_path / "map.json"
    table.write_text(json.dumps({"add_detail": "add_detail_sd2"}))
    policy = MigrationPolicy(networks="map", network_map=table)
    r = apply_policy("a cat <lora:add_detail:0.7> <lora:unknown:1>", policy)
    assert r.prompt == "a cat <lora:add_detail_sd2:0.7>"
    assert codes(r) == ["network-mapped", "network-dropped"]
    assert apply_policy(r.prompt, policy).prompt == r.prompt  # the mapped name is already a target name
    with pytest.raises(ValueError, match="network_map"):
        MigrationPolicy(networks="map")
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        apply_policy("x", MigrationPolicy(networks="map", network_map=bad))


def test_unknown_tags_wildcards_and_structure_are_kept():
    src = "<foo:bar>, __season__, {a|b}, [cat:dog:0.5] BREAK [red|blue] AND (x:1.2) :0.8"
    assert apply_policy(src).prompt == src


def test_braces_are_text_unless_the_source_is_novelai():
    """A1111 reads `{x}` as text, so an A1111 prompt keeps its braces; NovelAI weighting is the explicit source
    dialect, and its braces become A1111 weights."""
    assert apply_policy("{cat}, {{dog}}").prompt == "{cat}, {{dog}}" and codes(apply_policy("{cat}")) == []
    r = apply_policy("{cat}, {{dog}}", MigrationPolicy(syntax="novelai"))
    assert r.prompt == "(cat:1.05), (dog:1.1025)"
    assert codes(r) == ["braces-converted", "braces-converted"]


def test_emptied_brackets_disappear_and_commas_collapse():
    assert apply_policy("a, (<lora:x:1>), b").prompt == "a, b"
    assert apply_policy("<lora:x:1>, a cat").prompt == "a cat"
    assert apply_policy("a  cat ,  dog").prompt == "a cat, dog"


def test_parse_warnings_are_carried_into_the_result():
    assert "unclosed-bracket" in codes(apply_policy("a (cat"))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list("()[]{}<>:|\\, .1a\n") + ["<lora:", "BREAK", "AND", "EasyNegative", "__"]),
                max_size=40).map("".join))
def test_syntax_strategy_is_idempotent_on_soup(s):
    once = apply_policy(s).prompt
    assert apply_policy(once).prompt == once


def test_syntax_strategy_is_idempotent_on_the_corpus(prompts_dir):
    for policy in (MigrationPolicy(), MigrationPolicy(networks="keep", embeddings="keep", syntax="novelai")):
        for row in read_jsonl(prompts_dir / "a1111.jsonl"):
            for text in (row["prompt"], row["negative_prompt"] or ""):
                once = apply_policy(text, policy).prompt
                assert apply_policy(once, policy).prompt == once
                assert "<lora:" not in once or policy.networks == "keep"


def test_sd1_settings_are_dropped_and_a_size_that_does_not_fit_is_flagged():
    sd2, sd21, sd15 = presets.pipeline("sd2-base"), presets.pipeline("sd21"), presets.pipeline("sd15")
    params = {"Steps": "20", "Sampler": "Euler a", "Size": "512x1024", "Model hash": "6ce0161689",
              "Model": "v1-5-pruned-emaonly", "VAE": "vae-ft-mse-840000", "Clip skip": "2", "Lora hashes": "x: 1a2b"}
    kept, w = migrate_parameters(params, sd2)
    # Pasted into A1111 these would switch an SD2 run back to SD1's model, VAE and text layer (issue #43).
    assert kept == {"Steps": "20", "Sampler": "Euler a", "Size": "512x1024"}
    assert [x.code for x in w] == ["sd1-settings"]
    for pair in ("Model: v1-5-pruned-emaonly", "Model hash: 6ce0161689", "VAE: vae-ft-mse-840000", "Clip skip: 2",
                 "Lora hashes: x: 1a2b"):
        assert pair in w[0].message
    kept, _ = migrate_parameters(params, sd2, MigrationPolicy(networks="keep"))
    assert kept["Lora hashes"] == "x: 1a2b"  # the LoRAs stay in the prompt, so their hashes stay true
    assert migrate_parameters(params, sd15) == (params, [])  # an SD1 target keeps its own settings
    kept, w = migrate_parameters({"Size": "512x768", "Steps": "20"}, sd21)
    assert [x.code for x in w] == ["size"] and "768x1152" in w[0].message and kept == {"Size": "512x768", "Steps": "20"}
    assert migrate_parameters({"Clip skip": "1", "Size": "768x768"}, sd21)[1][0].code == "sd1-settings"
    assert migrate_parameters({"Size": "768x768"}, sd21)[1] == []
    assert size_fits((512, 512), 512) and not size_fits((500, 512), 512) and not size_fits((256, 256), 512)
    assert suggest_size((512, 768), 768) == "768x1152"


def test_syntax_output_reparses_with_the_same_weights():
    src = "((masterpiece)), [blurry], (cat:1.3), <lora:x:1>, {soft}"
    out = apply_policy(src, MigrationPolicy(syntax="novelai")).prompt  # NovelAI in, A1111 out
    weights = {w["text"]: round(w["weight"], 4) for w in
               __import__("bridge.syntax.prompt", fromlist=["weighted_spans"]).weighted_spans(parse(out).nodes)}
    assert weights == {"masterpiece": 1.21, "blurry": 0.9091, "cat": 1.3, "soft": 1.05}
