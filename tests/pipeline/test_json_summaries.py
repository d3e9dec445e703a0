"""`--json` on gather, train, eval and migrate: stdout holds one JSON object with the counts that the text
summary (now on stderr) shows, so a script can read either (issue #13)."""

from __future__ import annotations

import json
import re

import pytest

from bridge.cli import main

TINY = ["--device", "cpu", "--no-progress"]


def run_json(capsys, argv: list[str]) -> tuple[dict, str]:
    rc = main([*argv, "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) == 1, out  # nothing else on stdout: every log line went to stderr
    return json.loads(lines[0]), err


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("p") / "p.txt"
    path.write_text("a red fox in the snow\nan old lighthouse at dusk\na bowl of ramen\n", encoding="utf-8")
    return path


def test_gather_train_eval_json_summaries(capsys, tmp_path, prompt_file):
    gathered, adapter = tmp_path / "ds", tmp_path / "adapter"
    summary, err = run_json(capsys, ["gather", "--prompts", str(prompt_file), "--out", str(gathered), "--preset",
                                     "tiny-sd15", "--scorer", "tiny-clip", "--seeds", "2", *TINY])
    rows, prompts, seeds = map(int, re.search(r"gathered (\d+) rows \((\d+) prompts x (\d+) seeds\)", err).groups())
    assert (summary["rows"], summary["prompts"], summary["seeds"]) == (rows, prompts, seeds) == (6, 3, 2)

    summary, err = run_json(capsys, ["train", "--data", str(gathered), "--out", str(adapter), "--target", "tiny-sd2",
                                     "--rewriter", "tiny-t5", "--scorer", "tiny-clip", "--steps", "2",
                                     "--warm-start-steps", "0", "--k", "2", "--prompts-per-step", "2",
                                     "--max-new-tokens", "6", "--reward-seeds", "1", *TINY])
    steps, first, last = re.search(r"\((\d+) optimisation steps; reward first (\S+) -> last (\S+)\)", err).groups()
    assert summary["adapter"] == str(adapter) and summary["rl_steps"] == int(steps) == 2
    assert f"{summary['reward_first']:.4f}" == first and f"{summary['reward_last']:.4f}" == last

    summary, err = run_json(capsys, ["eval", "--prompts", str(gathered), "--out", str(tmp_path / "report"),
                                     "--source", "tiny-sd15", "--target", "tiny-sd2", "--scorer", "tiny-clip",
                                     "--adapter", str(adapter), "--allow-train-overlap", *TINY])
    text = dict(re.findall(r"^\s*(\S+): agreement (\S+) ", err, re.M))
    assert summary["prompts"] == 3 and set(summary["strategies"]) == set(text) >= {"identity", "syntax"}
    for name, agreement in text.items():
        assert f"{summary['strategies'][name]['agreement_mean']:.4f}" == agreement
    assert summary["report"]["html"].endswith("report.html")


def test_migrate_json_summary_counts_rows_errors_and_warnings(capsys, tmp_path):
    src = tmp_path / "lib.jsonl"
    src.write_text('{"prompt": "a cat <lora:x:1>"}\n{"prompt": 3}\nnot json\n{"prompt": "a dog"}\n', encoding="utf-8")
    rc = main(["migrate", str(src), "--out", str(tmp_path / "out.jsonl"), "--no-progress", "--json"])
    out, err = capsys.readouterr()
    assert rc == 3  # finished with row errors
    summary = json.loads(out)
    migrated, rows = map(int, re.search(r"migrated (\d+)/(\d+) rows", err).groups())
    assert (summary["migrated"], summary["rows"], summary["row_errors"]) == (migrated, rows, rows - migrated) == (2, 4, 2)
    assert summary["warnings"] == {"network-dropped": 1} and "network-dropped x1" in err
    assert summary["errors_file"].endswith("out.jsonl.errors.jsonl")
    assert main(["migrate", str(src), "--out", str(tmp_path / "o2.jsonl"), "--dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"input": str(src), "format": "jsonl", "rows": 4, "readable": 2,
                                                   "row_errors": 2}
