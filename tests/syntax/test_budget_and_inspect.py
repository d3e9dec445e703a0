"""Token budget per BREAK chunk with the real CLIP tokenizer, and `sd-bridge inspect`."""

from __future__ import annotations

import json

import pytest

from bridge.cli import main
from bridge.syntax.tokens import count_tokens, token_budget


def test_chunks_are_counted_separately_and_networks_cost_nothing():
    counts, warnings = token_budget("a red fox <lora:x:1> BREAK (snow:1.2) AND a dog", truncates=True)
    assert counts == [count_tokens("a red fox"), count_tokens("snow"), count_tokens("a dog")]
    assert warnings == []


def test_long_chunk_warns_for_a_truncating_target_only():
    long = ", ".join(["highly detailed"] * 40)
    counts, warnings = token_budget(long, truncates=True)
    assert counts == [75, 44]  # 119 tokens, packed as A1111 packs them: the first chunk ends at a comma
    assert [w.code for w in warnings] == ["token-budget"] and "ignores the last 44" in warnings[0].message
    # It names what runs over (the text, not one of the chunks counted beside it) and which renderer loses it.
    assert warnings[0].message.startswith("the prompt has 119 tokens: plain diffusers encoding reads only")
    assert "A1111 and ComfyUI read every 75-token chunk" in warnings[0].message and "chunk 1" not in warnings[0].message
    _, warnings = token_budget(long, truncates=False)
    assert "goes on in another 75-token chunk" in warnings[0].message
    counts, warnings = token_budget(long.replace(", highly detailed, ", " BREAK ", 10), truncates=True)
    assert len(counts) == 11
    _, warnings = token_budget("a cat BREAK " + long, truncates=True)
    assert warnings[0].message.startswith("part 2 (between BREAKs) has 119 tokens")


def test_inspect_json_has_the_documented_keys(capsys):
    prompt = "(masterpiece:1.2), <lora:add_detail:0.7>, a [cat:dog:0.5] BREAK {soft light}, EasyNegative"
    assert main(["inspect", "--json", prompt, "--negative", "(worst quality:1.4), ng_deepnegative_v1_75t",
                 "--syntax", "novelai"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("roundtrip", "weights", "schedule", "networks", "embeddings", "chunks", "warnings", "syntax"):
        assert key in out and key in out["negative"]
    assert out["roundtrip"] == prompt
    assert {"text": "masterpiece", "weight": 1.2} in out["weights"]
    assert out["networks"] == [{"type": "lora", "name": "add_detail", "weight": 0.7}]
    assert out["embeddings"] == ["EasyNegative"]
    assert len(out["chunks"]) == 2
    assert {w["code"] for w in out["warnings"]} >= {"network-dropped", "embedding-dropped", "braces-converted"}
    assert out["syntax"] == "(masterpiece:1.2), a [cat:dog:0.5] BREAK (soft light:1.05)"
    assert out["negative"]["embeddings"] == ["ng_deepnegative_v1_75t"]


def test_inspect_text_output_and_policy_flags(capsys):
    assert main(["inspect", "a cat <lora:x:1>", "--networks", "keep"]) == 0
    text = capsys.readouterr().out
    assert "Network '<lora:x:1>'" in text and "syntax: a cat <lora:x:1>" in text and "[network-kept]" in text


def test_inspect_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["inspect"])
    assert exc.value.code == 2 and "give a prompt" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["inspect", "x", "--target", "sd9"])
    assert "unknown pipeline preset 'sd9'" in capsys.readouterr().err
