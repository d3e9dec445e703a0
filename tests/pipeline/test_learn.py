"""`sd-bridge learn`: the plan offline, the split by meaning, refusal of other settings, and the whole run on the
tiny models (plumbing) with a resume after a failure."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.cli import main
from bridge.commands.learn import LearnConfig, meaning_key, run_learn, split
from bridge.models.tiny import default_prompts_dir

A1111 = default_prompts_dir() / "a1111.jsonl"


def test_dry_run_plans_the_real_presets_offline(tmp_path, capsys, monkeypatch):
    """No weights, no network: the renders come from the library and the budget, the time from the committed
    table of measured rates, the memory from the committed architectures."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "bridge"
    assert main(["learn", str(A1111), "--source", "sd15", "--target", "sd2-base", "--dry-run", "--json",
                 "--device", "cpu"]) == 0  # as the issue asks it: no --out needed for a plan
    the_plan = json.loads(capsys.readouterr().out)
    assert the_plan["train_prompts"] == 120 and the_plan["heldout_prompts"] == 16 and the_plan["seeds"] == 2
    assert the_plan["source_renders"] == (120 + 16) * 2
    assert the_plan["target_renders"] == 40 * 8 * 4 + 16 * 2 * 3  # train at most, then eval's three strategies
    assert the_plan["estimated_seconds"] > 0 and the_plan["rates_from"] == {"sd15": "table", "sd2-base": "table"}
    # SD1.5 + SD2 + ViT-H-14 + flan-t5-base in fp32 at once (eval), x1.25: about 15 GB.
    assert 10 < the_plan["peak_memory_gb"] < 25 and the_plan["processes"] == 1
    assert not out.exists()  # a dry run writes nothing
    # Without --json it is for a person: a line per figure.
    assert main(["learn", str(A1111), "--dry-run", "--device", "cpu", "--out", str(out), "--budget", "medium"]) == 0
    text = capsys.readouterr().out
    assert "plan:" in text and "  source renders: " in text and "{" not in text


def test_bad_input_is_one_line(tmp_path, capsys):
    for argv, needle in ((["nope.jsonl"], "library not found"), ([str(A1111), "--budget", "huge"], "budget must be"),
                         ([str(A1111), "--heldout", "1.5"], "heldout must be between")):
        with pytest.raises(SystemExit) as stop:
            main(["learn", *argv, "--out", str(tmp_path / "o")])
        assert stop.value.code == 2 and needle in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["red", "fox", "snow", "a", "in", "the"]), min_size=1, max_size=8),
       st.floats(0.5, 1.5), st.integers(0, 3))
def test_a_meaning_written_another_way_has_one_key(words, weight, tags):
    """Weights, brackets, tags, case and word order do not change a prompt's meaning key, so its paraphrases
    land in the same split."""
    plain = " ".join(words)
    dressed = f"({words[0].upper()}:{weight:.2f}) " + " ".join(reversed(words[1:])) + " <lora:x:1>" * tags
    assert meaning_key(plain) == meaning_key(dressed)


def test_the_split_is_by_meaning_and_stable():
    from bridge.io.sources import PromptRecord

    records = [PromptRecord(f"a photo of subject {n}, ({w}:1.2)") for n in range(400) for w in ("red", "blue")]
    train, held = split(records, 0.1, seed=0)
    assert 0.05 < len(held) / len(records) < 0.15
    assert {meaning_key(r.prompt) for r in train}.isdisjoint(meaning_key(r.prompt) for r in held)
    assert split(records, 0.1, seed=0) == (train, held) and split(records, 0.1, seed=1) != (train, held)


def test_a_rerun_with_other_settings_is_refused_naming_it(tmp_path):
    from bridge.commands.learn import check_settings

    cfg = LearnConfig(library=A1111, out=tmp_path, source="tiny-sd15", target="tiny-sd2")
    (tmp_path / "learn.json").write_text(json.dumps({"settings": cfg.settings(), "done": []}))
    check_settings(cfg)  # the same settings: resumes
    other = LearnConfig(library=A1111, out=tmp_path, source="tiny-sd15", target="tiny-sd2", budget="medium")
    with pytest.raises(ValueError, match="holds a learn run with budget='small'; this run has budget='medium'"):
        check_settings(other)


@pytest.mark.slow
def test_learn_end_to_end_on_tiny_models_resumes_after_a_failure(tmp_path, monkeypatch):
    """prepare -> gather -> train -> eval -> export -> card; a run that fails in eval, rerun, skips what it did
    and ends where an uninterrupted run ends."""
    import bridge.commands.learn as learn

    library = tmp_path / "lib.txt"
    library.write_text("\n".join(f"a photo of a {c} {a}, (detailed:1.2)" for c in ("red", "blue", "green", "old")
                                 for a in ("fox", "car", "house", "tree", "boat", "lamp")) + "\n")
    common = dict(library=library, source="tiny-sd15", target="tiny-sd2", budget="32", heldout=0.25, device="cpu",
                  progress=False)
    whole = run_learn(LearnConfig(out=tmp_path / "whole", **common), log=lambda *_: None)
    for part in ("adapter/adapter_model.safetensors", "report/report.html", "export/sd_bridge_adapter.json",
                 "README.md", "prompts/heldout.jsonl"):
        assert (tmp_path / "whole" / part).is_file(), part
    assert "| adapter:adapter |" in (tmp_path / "whole" / "README.md").read_text()

    real_eval = learn._eval
    monkeypatch.setattr(learn, "_eval", lambda *a: (_ for _ in ()).throw(RuntimeError("killed")))
    with pytest.raises(RuntimeError, match="killed"):
        run_learn(LearnConfig(out=tmp_path / "resumed", **common), log=lambda *_: None)
    state = json.loads((tmp_path / "resumed" / "learn.json").read_text())
    assert state["done"] == ["prepare", "gather", "train"]
    monkeypatch.setattr(learn, "_eval", real_eval)
    lines: list[str] = []
    resumed = run_learn(LearnConfig(out=tmp_path / "resumed", **common), log=lines.append)
    assert any(line.startswith("resuming") and "done prepare, gather, train" in line for line in lines)
    assert resumed["agreement"] == whole["agreement"] and resumed["heldout_prompts"] == whole["heldout_prompts"]
    same = lambda p: (tmp_path / "whole" / p).read_bytes() == (tmp_path / "resumed" / p).read_bytes()  # noqa: E731
    assert same("adapter/adapter_model.safetensors") and same("prompts/train.jsonl")


@pytest.mark.slow
def test_learn_under_accelerate_launch_with_two_processes(tmp_path):
    """Two CPU processes (gloo): gather, train and eval share their work out, the main process alone says the plan,
    counting both, and writes learn's own files."""
    import subprocess

    from conftest import accelerate_launch

    library = tmp_path / "lib.txt"
    library.write_text("\n".join(f"a photo of a {c} {a}" for c in ("red", "blue", "old") for a in ("fox", "car", "tree",
                                                                                                   "boat")) + "\n")
    out = tmp_path / "bridge"
    proc = subprocess.run([*accelerate_launch(2), "-m", "bridge.cli", "learn", str(library), "--source", "tiny-sd15",
                           "--target", "tiny-sd2", "--budget", "32", "--heldout", "0.25", "--device", "cpu",
                           "--no-progress", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("plan:") == 1 and "  processes: 2" in proc.stdout
    state = json.loads((out / "learn.json").read_text())
    assert state["done"] == ["prepare", "gather", "train", "eval", "export", "card"]
    assert (out / "export" / "sd_bridge_adapter.json").is_file() and (out / "README.md").is_file()
    # The shards were shared out, and merged once (two processes each merging raced: 1 run in 4 failed).
    assert json.loads((out / "gather" / "summary.json").read_text())["processes"] == 2
