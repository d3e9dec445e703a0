"""Learning on the toy world: the documented recipe, with a reduced budget, gives an adapter that beats
identity on held-out prompts it never saw (slow: a few minutes on 2 CPU cores).

The assertion can fail: with a frozen adapter (lr 0) or a reward of random numbers, the same run recovers
little of the gap (`python -m benchmarks.toyworld_learning --out DIR --reduced --broken frozen|random-reward`;
docs/toyworld.md and its results files have the numbers)."""

from __future__ import annotations

import pytest

from benchmarks.toyworld_learning import REDUCED, run


@pytest.mark.slow
def test_grpo_adapter_recovers_the_gap_on_held_out_prompts(tmp_path):
    result = run(tmp_path, REDUCED)
    lo, _ = result["delta_ci95"]
    gap_lo, _ = result["gap_recovered_ci95"]
    # Beats identity with an interval excluding 0, and by a share of the oracle's gap that the untrained
    # toy-t5 (which paraphrases a little by itself) does not reach.
    assert lo > 0 and gap_lo > 0.3, result
    assert (tmp_path / "adapter" / "learning_curves.png").is_file()
    assert "Learning curves: adapter:adapter" in (tmp_path / "report" / "report.html").read_text()
    _export_agrees(tmp_path, REDUCED.eval_prompts)


def _export_agrees(tmp_path, n: int) -> None:
    """The trained adapter exported (#15) translates the held-out prompts as the adapter does: all of them in
    fp32, nearly all in int8 (a tie between two tokens may break the other way). An export that unloads the
    LoRA instead of merging it agrees on 17 of 60 and fails (checked when written)."""
    import json

    from benchmarks.toyworld_learning import PROMPTS
    from bridge.commands.export import ExportConfig, agreement, run_export

    prompts = [json.loads(line)["prompt"] for line in (PROMPTS / "heldout.jsonl").open(encoding="utf-8")][:n]
    for quantize, floor in (("none", 0.98), ("int8", 0.9)):
        out = tmp_path / f"export-{quantize}"
        run_export(ExportConfig(adapter=tmp_path / "adapter", out=out, quantize=quantize), log=lambda *_: None)
        result = agreement(tmp_path / "adapter", out, prompts)
        assert result["rate"] >= floor, (quantize, result["differing"])
