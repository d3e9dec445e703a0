"""`sd-bridge gather`: dataset layout, determinism, resume after a kill, 2-process accelerate, bad inputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pytest

from bridge.cli import main
from conftest import accelerate_launch

TINY = ["--preset", "tiny-sd15", "--scorer", "tiny-clip", "--no-progress"]


def gather(out: Path, prompts: Path, *extra: str) -> int:
    return main(["gather", "--prompts", str(prompts), "--out", str(out), *TINY, *extra])


def rows(path: Path) -> list[dict]:
    ds = datasets.load_from_disk(str(path))
    return [dict(r, image=np.asarray(r["image"])) for r in ds]


def assert_same_rows(a: list[dict], b: list[dict], pixel_atol: int = 0, emb_atol: float = 0.0):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        for key in ("prompt", "negative_prompt", "seed", "seed_index", "prompt_index", "preset", "settings"):
            assert x[key] == y[key], key
        assert np.abs(x["image"].astype(int) - y["image"].astype(int)).max() <= pixel_atol
        np.testing.assert_allclose(x["embedding"], y["embedding"], atol=emb_atol)


def _a1111_lines(prompts_dir: Path, n: int) -> list[str]:
    """The first n real A1111 prompts with their negatives, as prompt-file lines."""
    src = [json.loads(line) for line in (prompts_dir / "a1111.jsonl").read_text(encoding="utf-8").splitlines()[:n]]
    return [json.dumps({"prompt": r["prompt"], "negative_prompt": r["negative_prompt"]}) for r in src]


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory, prompts_dir) -> Path:
    """Six real A1111 prompts with negatives, one duplicate and one empty line (cleaning has work to do)."""
    path = tmp_path_factory.mktemp("prompts") / "p.jsonl"
    lines = _a1111_lines(prompts_dir, 6)
    lines += [lines[0], json.dumps({"prompt": "  ", "negative_prompt": None})]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory, prompt_file) -> Path:
    out = tmp_path_factory.mktemp("ref") / "ds"
    assert gather(out, prompt_file, "--seeds", "2", "--shard-prompts", "2", "--batch-size", "2") == 0
    return out


def test_dataset_layout_and_files_beside_it(reference):
    ds = datasets.load_from_disk(str(reference))
    assert len(ds) == 6 * 2
    for col in ("prompt", "negative_prompt", "seed", "image", "embedding", "preset", "revision", "settings"):
        assert col in ds.column_names
    assert isinstance(ds.features["image"], datasets.Image)
    assert len(ds[0]["embedding"]) == 32 and ds[0]["negative_prompt"]
    assert json.loads(ds[0]["settings"])["weighting"] == "a1111"
    summary = json.loads((reference / "summary.json").read_text())
    assert summary["rows"] == 12 and summary["cleaning"]["dropped"] == {"duplicate": 1, "empty": 1}
    config = json.loads((reference / "config.json").read_text())
    assert config["config"]["seeds"] == 2 and config["presets"]["source"]["name"] == "tiny-sd15"
    assert (reference / "contact_sheet.png").stat().st_size > 0
    # Seeds are a function of (base seed, prompt, k): the same prompt's seeds differ, and rerunning agrees.
    assert ds[0]["seed"] != ds[1]["seed"] and ds[0]["seed_index"] == 0 and ds[1]["seed_index"] == 1


def test_rerun_is_a_no_op_and_other_batching_gives_the_same_images(reference, prompt_file, tmp_path):
    before = rows(reference)
    assert gather(reference, prompt_file, "--seeds", "2", "--shard-prompts", "2", "--batch-size", "2") == 0
    assert_same_rows(before, rows(reference))
    other = tmp_path / "b1"
    assert gather(other, prompt_file, "--seeds", "2", "--shard-prompts", "2", "--batch-size", "1") == 0
    assert_same_rows(before, rows(other), pixel_atol=1, emb_atol=1e-3)



def test_rerun_removes_a_killed_runs_half_written_shard_and_keeps_a_live_ones(reference, prompt_file, tmp_path):
    """A SIGKILL during atomic_write leaves `.shard-K.parquet.PID.tmp` (seen in CI); the next run removes it.
    A temp file of a live process is another run's write in progress: kept."""
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    dead = out / ".gather" / ".shard-00000.parquet.4194305.tmp"  # above Linux's largest pid: never alive
    live = out / ".gather" / f".shard-00001.parquet.{os.getpid()}.tmp"
    for f in (dead, live):
        f.write_bytes(b"half a shard")
    assert gather(out, prompt_file, "--seeds", "2", "--shard-prompts", "2", "--batch-size", "2") == 0
    assert not dead.exists() and live.exists()
    assert_same_rows(rows(reference), rows(out))

def test_changed_settings_in_the_same_directory_are_refused(reference, prompt_file, capsys):
    assert gather(reference, prompt_file, "--seeds", "3", "--shard-prompts", "2") == 2
    assert "holds a gather with other prompts or settings (seeds: 2 there, 3 now)" in capsys.readouterr().err
    # The dtype decides the pixels: a rerun in bf16 must not add bf16 shards to an fp32 dataset.
    assert gather(reference, prompt_file, "--seeds", "2", "--shard-prompts", "2", "--dtype", "bf16") == 2
    assert "(dtype: 'float32' there, 'bfloat16' now)" in capsys.readouterr().err


def test_dry_run_renders_nothing(prompt_file, tmp_path, capsys):
    assert gather(tmp_path / "dry", prompt_file, "--dry-run", "--seeds", "3", "--json") == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["prompts"] == 6 and counts["renders"] == 18 and counts["renders_left"] == 18
    assert not (tmp_path / "dry").exists()
    # Without --json the plan is for a person to read: a line per figure, not JSON.
    assert gather(tmp_path / "dry", prompt_file, "--dry-run", "--seeds", "3") == 0
    text = capsys.readouterr().out
    assert "renders: 18" in text.splitlines() and "{" not in text


@pytest.mark.parametrize("args, needle", [
    (["--prompts", "/nonexistent/p.txt"], "not found"),
    (["--prompts", "EMPTY"], "no prompts"),
    (["--prompts", "PROMPTS", "--prompt-column", "text"], "no key 'text'"),
    (["--prompts", "PROMPTS", "--preset", "sd9"], "unknown pipeline preset"),
])
def test_bad_inputs(tmp_path, prompt_file, capsys, args, needle):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    args = [str(empty) if a == "EMPTY" else str(prompt_file) if a == "PROMPTS" else a for a in args]
    try:
        code = main(["gather", "--out", str(tmp_path / "o"), *TINY, *args])
    except SystemExit as exc:  # config errors exit from the parser
        code = exc.code
    assert code == 2
    assert needle in capsys.readouterr().err


def _env() -> dict:
    return dict(os.environ, PYTHONUNBUFFERED="1")


@pytest.mark.slow
def test_resume_after_kills_at_random_moments_equals_uninterrupted_run(prompts_dir, tmp_path):
    """SIGKILL twice, each at a random moment after the run has written another shard (so mid-render,
    mid-shard-write or between shards): once a fresh run, once the run resumed from it; then a rerun: the same
    rows as the uninterrupted run. (A third kill was one more resumed run: the same case again.)"""
    import random

    # 12 prompts, one shard each: with six, a loaded machine sometimes finished the run before a third kill.
    prompt_file = tmp_path / "p.jsonl"
    prompt_file.write_text("\n".join(_a1111_lines(prompts_dir, 12)) + "\n", encoding="utf-8")
    rng = random.Random(16)
    out, reference = tmp_path / "killed", tmp_path / "uninterrupted"
    flags = [*TINY, "--prompts", str(prompt_file), "--seeds", "2", "--shard-prompts", "1", "--batch-size", "2"]
    assert main(["gather", *flags, "--out", str(reference)]) == 0
    cmd = [sys.executable, "-m", "bridge.cli", "gather", *flags, "--out", str(out)]
    shards = lambda: len(list((out / ".gather").glob("shard-*.parquet")))  # noqa: E731
    for kill in range(2):
        before = shards() if out.exists() else 0
        proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 240
        while proc.poll() is None and time.time() < deadline and (not out.exists() or shards() <= before):
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not (out / "state.json").exists(), f"the run finished before kill {kill + 1}"
    assert shards() >= 2
    assert subprocess.run(cmd, env=_env(), capture_output=True).returncode == 0
    assert_same_rows(rows(reference), rows(out))
    assert not list((out / ".gather").glob(".*.tmp"))  # no half-written shard left behind


@pytest.mark.slow
def test_two_process_accelerate_run_matches_one_process(reference, prompt_file, tmp_path):
    out = tmp_path / "two"
    cmd = [*accelerate_launch(2), "-m", "bridge.cli", "gather",
           "--prompts", str(prompt_file), "--out", str(out), *TINY, "--seeds", "2", "--shard-prompts", "2",
           "--batch-size", "2"]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((out / "summary.json").read_text())["processes"] == 2
    # Same rows; pixels may differ by one level because each process runs with one CPU thread.
    assert_same_rows(rows(reference), rows(out), pixel_atol=1, emb_atol=1e-3)
