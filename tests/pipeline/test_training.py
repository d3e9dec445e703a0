"""training/: the optimiser learns a synthetic reward; end to end on tiny presets; resume; the render cache."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import datasets
import pytest
import torch

from bridge import Translator
from bridge.models import presets
from bridge.models.render import Renderer
from bridge.models.render_cache import RenderCache
from bridge.models.score import Scorer
from conftest import PROMPTS, accelerate_launch, read_jsonl
from training.config import TrainConfig
from training.reward import word_presence_reward
from training.trainer import run_train

TINY = dict(target="tiny-sd2", rewriter="tiny-t5", scorer="tiny-clip", device="cpu", progress=False)
EVAL_TINY = dict(target="tiny-sd2", scorer="tiny-clip", device="cpu")


@pytest.fixture(scope="module")
def synthetic_data(tmp_path_factory, prompts_dir):
    """Prompt groups without images: enough for a synthetic reward, which never looks at them."""
    prompts = [json.loads(line)["prompt"].strip()
               for line in (prompts_dir / "plain.jsonl").read_text(encoding="utf-8").splitlines()[:16]]
    out = tmp_path_factory.mktemp("syn") / "ds"
    datasets.Dataset.from_dict({
        "prompt": prompts, "negative_prompt": [None] * 16, "seed": list(range(16)), "prompt_index": list(range(16)),
        "embedding": [[0.0] * 32] * 16, "scorer": ["tiny-clip"] * 16, "preset": ["tiny-sd15"] * 16,
    }).save_to_disk(str(out))
    return out


@pytest.fixture(scope="module")
def gathered(tmp_path_factory, prompts_dir):
    from data.gather import GatherConfig, run_gather

    out = tmp_path_factory.mktemp("gathered") / "ds"
    run_gather(GatherConfig(prompts=str(prompts_dir / "a1111.jsonl"), out=out, preset="tiny-sd15", scorer="tiny-clip",
                            seeds=2, limit=6, device="cpu", progress=False), log=lambda *_: None)
    return out


# "animal" is a word the untrained tiny-t5 samples in ~16% of candidates: a reward with signal from step 1.
@pytest.mark.parametrize("algo", ["grpo", "raft"])
def test_mean_reward_rises_clearly_on_a_synthetic_reward(synthetic_data, tmp_path, algo):
    # kl_coef=0: this checks that the objective climbs the reward; with the KL to the base model (which
    # never says "animal") the policy reaches 1.0 in 5 steps and is then pulled back to ~0.85.
    cfg = TrainConfig(data=synthetic_data, out=tmp_path / algo, steps=20, warm_start_steps=0, prompts_per_step=8, k=4,
                      lr=1e-3, max_new_tokens=8, lora_r=8, lora_targets=["q", "v", "wo"], algo=algo, kl_coef=0.0,
                      **TINY)
    history = run_train(cfg, log=lambda *_: None, reward_fn=word_presence_reward("animal"))["history"]
    rewards = [h["reward_mean"] for h in history]
    first, last = sum(rewards[:3]) / 3, sum(rewards[-5:]) / 5
    assert first < 0.5 and last > 0.9, rewards
    # The edit record (the faithfulness guard's licence): the reward accepted the rewrites that add "animal".
    from bridge.models.faithfulness import EditRecord, content, leaf_words

    record = EditRecord.load(tmp_path / algo)
    first_step = json.loads((tmp_path / algo / "train_log.jsonl").read_text().splitlines()[0])
    assert record.learned_add("animal") and "edits" in first_step
    assert "| edit record (`edits.json`" in (tmp_path / algo / "README.md").read_text()  # the card says it
    prompts = datasets.load_from_disk(str(synthetic_data))["prompt"]
    assert all(record.seen(w) for p in prompts for w in content(leaf_words(p)))


@pytest.fixture(scope="module")
def held_out(tmp_path_factory, prompts_dir):
    """Three a1111 prompts that `gathered` does not hold: the validation set of the learning curve."""
    from data.gather import GatherConfig, run_gather

    root = tmp_path_factory.mktemp("val")
    lines = (prompts_dir / "a1111.jsonl").read_text(encoding="utf-8").splitlines()[6:9]
    (root / "val.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    run_gather(GatherConfig(prompts=str(root / "val.jsonl"), out=root / "ds", preset="tiny-sd15", scorer="tiny-clip",
                            seeds=1, device="cpu", progress=False), log=lambda *_: None)
    return root / "ds"


def test_end_to_end_on_tiny_presets(gathered, held_out, tmp_path):
    from peft import PeftModel

    from bridge.models.loading import load_rewriter

    out = tmp_path / "adapter"
    cfg = TrainConfig(data=gathered, out=out, steps=3, warm_start_steps=2, prompts_per_step=3, k=2, lr=1e-2,
                      max_new_tokens=8, lora_r=4, checkpoint_every=2, val_data=held_out, **TINY)
    base_before = {k: v.clone() for k, v in load_rewriter(presets.rewriter("tiny-t5"))[0].state_dict().items()}
    result = run_train(cfg, log=lambda *_: None)
    for name in ("adapter_model.safetensors", "adapter_config.json", "sd_bridge_adapter.json", "config.json",
                 "train_log.jsonl", "README.md", "learning_curves.png"):
        assert (out / name).is_file(), name
    # LoRA weights moved (B starts at zero), the base model's did not.
    model = PeftModel.from_pretrained(load_rewriter(presets.rewriter("tiny-t5"))[0], str(out))
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)
    base_after = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
                  for k, v in model.state_dict().items() if "lora_" not in k}
    for k, v in base_before.items():
        torch.testing.assert_close(base_after[k], v, msg=k)
    # Per-step log: rewards, KL, renders, cache hits, time split.
    rows = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [(r["step"], r["phase"]) for r in rows] == [
        (1, "warm_start"), (2, "warm_start"), (2, "val"), (3, "grpo"), (4, "grpo"), (4, "val"), (5, "grpo"), (5, "val")]
    # Held-out agreement when optimisation starts and at each checkpoint, against identity on the same prompts.
    val = [r for r in rows if r["phase"] == "val"]
    assert all(r["val_prompts"] == 3 and -1 <= r["val_agreement"] <= 1 for r in val)
    assert len({r["val_identity"] for r in val}) == 1
    card = (out / "README.md").read_text()
    assert "held-out agreement" in card and "![learning curves](learning_curves.png)" in card
    rl = rows[3]
    for key in ("reward_mean", "reward_std", "reward_max", "kl", "loss", "renders", "cache_hits", "fallbacks",
                "time_generate", "time_render", "time_score", "time_update"):
        assert key in rl, key
    assert -1 <= rl["reward_mean"] <= 1
    assert "reward, first step" in (out / "README.md").read_text()
    # The adapter reloads through the serving path and translates, structure intact.
    tr = Translator.from_pretrained(out)
    t = tr.translate(["(masterpiece:1.2), a red fox <lora:x:1> BREAK snow"])[0]
    assert t.strategy.startswith("adapter:") and "(" in t.translated_prompt and "BREAK" in t.translated_prompt
    assert result["summary"]["rl_steps"] == 3
    # Eval refuses to score the adapter on its own training prompts (seeds derive from the prompt, so it
    # would even reuse cached renders), unless asked; then the overlap is counted.
    from bridge.models.rewriter import prompt_hash
    from eval.config import EvalConfig
    from eval.run import run_eval

    trained = json.loads((out / "train_prompts.json").read_text())["sha256"]
    gathered_prompts = set(datasets.load_from_disk(str(gathered))["prompt"])
    assert sorted(prompt_hash(p) for p in gathered_prompts) == trained
    with pytest.raises(ValueError, match=r"(\d+) of \1 eval prompts were in the training data"):
        run_eval(EvalConfig(prompts=str(gathered), out=tmp_path / "r", source="tiny-sd15", adapter=[out], seeds=1,
                            no_syntax=True, **EVAL_TINY), log=lambda *_: None)
    report = run_eval(EvalConfig(prompts=str(gathered), out=tmp_path / "r", source="tiny-sd15", adapter=[out],
                                 seeds=1, no_syntax=True, allow_train_overlap=True, **EVAL_TINY), log=lambda *_: None)
    assert report["strategies"]["adapter:adapter"]["train_overlap"] == len(gathered_prompts)
    # The report shows the adapter's learning curves.
    assert (tmp_path / "r" / "curves-adapter.png").is_file()
    assert "![learning curves of adapter:adapter](curves-adapter.png)" in (tmp_path / "r" / "report.md").read_text()
    assert "Learning curves: adapter:adapter" in (tmp_path / "r" / "report.html").read_text()


def test_validation_set_must_be_held_out(synthetic_data, tmp_path):
    with pytest.raises(ValueError, match=r"--val-data .*nowhere is not a gathered dataset"):
        TrainConfig(data=synthetic_data, out=tmp_path / "a", val_data=tmp_path / "nowhere", **TINY)
    cfg = TrainConfig(data=synthetic_data, out=tmp_path / "a", val_data=synthetic_data, steps=1, warm_start_steps=0,
                      prompts_per_step=2, k=2, max_new_tokens=4, lora_r=4, **TINY)
    with pytest.raises(ValueError, match=r"--val-data: 16 of 16 validation prompts are also training prompts"):
        run_train(cfg, log=lambda *_: None, reward_fn=word_presence_reward("animal"))


def test_resume_continues_exactly(synthetic_data, tmp_path):
    from safetensors.torch import load_file

    common = dict(data=synthetic_data, warm_start_steps=2, prompts_per_step=4, k=2, lr=1e-3, max_new_tokens=6,
                  lora_r=4, checkpoint_every=2, **TINY)
    reward = word_presence_reward("animal")
    run_train(TrainConfig(out=tmp_path / "a", steps=4, **common), log=lambda *_: None, reward_fn=reward)
    run_train(TrainConfig(out=tmp_path / "b", steps=2, **common), log=lambda *_: None, reward_fn=reward)
    run_train(TrainConfig(out=tmp_path / "b", steps=4, resume="latest", **common), log=lambda *_: None,
              reward_fn=reward)
    a, b = load_file(str(tmp_path / "a" / "adapter_model.safetensors")), load_file(str(tmp_path / "b" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)
    log_a = [json.loads(x)["step"] for x in (tmp_path / "a" / "train_log.jsonl").read_text().splitlines()]
    log_b = [json.loads(x)["step"] for x in (tmp_path / "b" / "train_log.jsonl").read_text().splitlines()]
    assert log_a == log_b == [1, 2, 3, 4, 5, 6]
    assert (tmp_path / "a" / "edits.json").read_bytes() == (tmp_path / "b" / "edits.json").read_bytes()
    with pytest.raises(ValueError, match=r"step-000006 was written with lr=0.001, this run has lr=0.5"):
        run_train(TrainConfig(out=tmp_path / "b", steps=6, resume="latest", **{**common, "lr": 0.5}),
                  log=lambda *_: None, reward_fn=reward)


def test_a_run_never_resumes_another_runs_checkpoints(synthetic_data, tmp_path):
    """Run A checkpoints; a fresh run B (other lr) into the same --out is refused before it overwrites
    anything, so a later `--resume latest` cannot pick A's checkpoint as B's. A checkpoint left half-written
    by a kill is not a checkpoint: `--resume latest` takes the newest complete one."""
    import shutil

    common = dict(data=synthetic_data, warm_start_steps=0, prompts_per_step=2, k=2, max_new_tokens=4, lora_r=4,
                  checkpoint_every=2, **TINY)
    reward = word_presence_reward("animal")
    out = tmp_path / "run"
    run_train(TrainConfig(out=out, steps=4, lr=1e-3, **common), log=lambda *_: None, reward_fn=reward)
    config_before = (out / "config.json").read_text()
    with pytest.raises(ValueError, match=r"holds checkpoints of an earlier run \(latest step-000004\); continue it"):
        run_train(TrainConfig(out=out, steps=2, lr=5e-3, **common), log=lambda *_: None, reward_fn=reward)
    assert (out / "config.json").read_text() == config_before  # nothing of A's was overwritten
    with pytest.raises(ValueError, match=r"was written with lr=0.001, this run has lr=0.005"):
        run_train(TrainConfig(out=out, steps=6, lr=5e-3, resume="latest", **common), log=lambda *_: None,
                  reward_fn=reward)
    # A kill while step-6 was being written: a partial directory, and a step directory missing a file.
    shutil.copytree(out / "checkpoints" / "step-000004", out / "checkpoints" / "step-000006.partial")
    shutil.copytree(out / "checkpoints" / "step-000004", out / "checkpoints" / "step-000008")
    (out / "checkpoints" / "step-000008" / "optimizer.safetensors").unlink()
    result = run_train(TrainConfig(out=out, steps=6, lr=1e-3, resume="latest", **common), log=lambda *_: None,
                       reward_fn=reward)
    assert [h["step"] for h in result["history"]] == [5, 6]


@pytest.mark.slow
def test_resume_after_kills_at_random_moments_equals_uninterrupted_run(gathered, tmp_path):
    """`sd-bridge train` with the real reward on tiny presets, SIGKILLed at random moments after a new checkpoint
    (mid-step, mid-checkpoint-write), once as a fresh run and once resumed with `--resume latest`, then resumed to
    the end: the final adapter and the log equal the uninterrupted run's. (A third kill was one more resumed
    run: the same case again.)"""
    import random
    import signal
    import sys
    import time

    from safetensors.torch import load_file

    rng = random.Random(11)
    flags = ["--data", str(gathered), "--target", "tiny-sd2", "--rewriter", "tiny-t5", "--scorer", "tiny-clip",
             "--device", "cpu", "--steps", "8", "--warm-start-steps", "1", "--prompts-per-step", "2", "--k", "2",
             "--lr", "1e-2", "--max-new-tokens", "6", "--lora-r", "4", "--checkpoint-every", "1", "--no-progress"]
    train = [sys.executable, "-m", "bridge.cli", "train", *flags]
    from bridge.cli import main  # the uninterrupted run in this process: a subprocess adds only its start-up

    assert main(["train", *flags, "--out", str(tmp_path / "a")]) == 0
    out = tmp_path / "b"
    done = lambda: sorted(p.name for p in (out / "checkpoints").glob("step-*") if "." not in p.name)  # noqa: E731
    for kill in range(2):
        before = len(done()) if (out / "checkpoints").exists() else 0
        proc = subprocess.Popen(train + ["--out", str(out)] + (["--resume", "latest"] if kill else []),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while proc.poll() is None and time.time() < deadline and (
                not (out / "checkpoints").exists() or len(done()) <= before):
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not (out / "adapter_model.safetensors").exists(), f"the run finished before kill {kill + 1}"
    finish = subprocess.run(train + ["--out", str(out), "--resume", "latest"], capture_output=True, text=True)
    assert finish.returncode == 0, finish.stderr[-2000:]
    a, b = load_file(str(tmp_path / "a" / "adapter_model.safetensors")), load_file(str(out / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)
    steps = lambda d: [json.loads(x)["step"] for x in (d / "train_log.jsonl").read_text().splitlines()]  # noqa: E731
    assert steps(out) == steps(tmp_path / "a")


def test_duplicate_candidates_are_rendered_once(tmp_path):
    target = presets.pipeline("tiny-sd2")
    cache = RenderCache(tmp_path, Renderer(target), Scorer(presets.scorer("tiny-clip")))
    emb = cache.embeddings(["a cat", "a cat", "a dog", "a cat"], [1, 1, 1, 2])
    assert emb.shape == (4, 32)
    torch.testing.assert_close(emb[0], emb[1])
    assert cache.snapshot()["renders"] == 3  # (cat,1) once, (dog,1), (cat,2)
    again = cache.embeddings(["a cat", "a dog"], [1, 1])
    torch.testing.assert_close(again[0], emb[0])
    assert cache.snapshot()["renders"] == 3 and cache.snapshot()["cache_hits"] == 3
    fresh = RenderCache(tmp_path, Renderer(target), Scorer(presets.scorer("tiny-clip")))  # another run, same disk
    fresh.embeddings(["a cat"], [2])
    assert fresh.snapshot()["renders"] == 0


def test_bad_data_and_mismatched_presets(tmp_path, gathered, synthetic_data):
    with pytest.raises(FileNotFoundError, match="not a gathered dataset"):
        run_train(TrainConfig(data=tmp_path, out=tmp_path / "o", **TINY), log=lambda *_: None)
    with pytest.raises(ValueError, match="scorer"):
        run_train(TrainConfig(data=gathered, out=tmp_path / "o", **{**TINY, "scorer": "vit-l-14"}), log=lambda *_: None)
    broken = tmp_path / "broken"
    datasets.Dataset.from_dict({"prompt": ["a"]}).save_to_disk(str(broken))
    with pytest.raises(ValueError, match="lacks column"):
        run_train(TrainConfig(data=broken, out=tmp_path / "o", **TINY), log=lambda *_: None)
    with pytest.raises(ValueError, match="k >= 2"):
        TrainConfig(data=gathered, out=tmp_path / "o", k=1, **TINY)


def test_cli_dry_run(gathered, capsys):
    from bridge.cli import main

    assert main(["train", "--data", str(gathered), "--target", "tiny-sd2", "--rewriter", "tiny-t5", "--scorer",
                 "tiny-clip", "--steps", "10", "--k", "4", "--prompts-per-step", "2", "--dry-run", "--device", "cpu", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["generations"] == 10 * 2 * 4 and plan["renders_at_most"] == 10 * 2 * 4 * 2
    assert plan["estimated_seconds_at_most"] > 0


@pytest.mark.slow
def test_two_process_ddp_run(synthetic_data, tmp_path):
    """Unequal work: one leaf per micro-batch and two passes per rollout, so the processes run different
    numbers of backward passes per step (their prompts have different leaf counts); gradients sync once
    per optimiser step (no_sync on the others) and the run finishes."""
    cmd = [*accelerate_launch(2), "-m", "bridge.cli", "train",
           "--data", str(synthetic_data), "--out", str(tmp_path / "ddp"), "--target", "tiny-sd2", "--rewriter", "tiny-t5",
           "--scorer", "tiny-clip", "--steps", "2", "--warm-start-steps", "1", "--prompts-per-step", "4", "--k", "2",
           "--max-new-tokens", "6", "--device", "cpu", "--no-progress", "--reward-seeds", "1",
           "--micro-batch", "1", "--updates-per-step", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "ddp" / "adapter_model.safetensors").is_file()


# ------------------------------------------------------------------ pinned defects (learning issue)
def test_zero_std_group_gets_zero_advantage_and_is_counted():
    import torch

    from training.losses import group_advantages, zero_signal_fraction

    # Group 1: candidates that render alike (render noise only); group 2: real differences.
    r = torch.tensor([0.5, 0.5 + 1e-5, 0.5, 0.5 - 1e-5, 0.1, 0.9, 0.2, 0.3])
    adv = group_advantages(r, 4, min_std=1e-3)
    assert adv[:4].abs().max() == 0
    assert adv[4:].abs().max() > 0.5 and adv[5] == adv[4:].max()
    assert zero_signal_fraction(r, 4, 1e-3) == 0.5
    # Without the threshold the noise becomes advantages of about +-1: the defect this pins.
    assert group_advantages(r, 4)[:4].abs().max() > 0.5
    # The sample std (n - 1), as trl takes it; Dr. GRPO's advantage is the centred reward alone.
    g = torch.tensor([0.1, 0.9, 0.2, 0.3])
    torch.testing.assert_close(group_advantages(g, 4), (g - g.mean()) / (g.std(unbiased=True) + 1e-6))
    torch.testing.assert_close(group_advantages(r, 4, min_std=1e-3, scale=False), r - r.view(2, 4).mean(1).repeat_interleave(4))


def _rollout(text: str, fallback: bool = False):
    from training.trainer import Rollout

    return Rollout(text, None, [("in", text, [5, 1])], fallback, False)


def test_raft_fine_tunes_only_on_a_best_that_beats_the_prompt_as_written(synthetic_data, tmp_path, monkeypatch):
    """#39: fine-tuning on a best of K that ties identity, or that does not read back, teaches noise."""
    import torch

    from training import trainer

    seen = []
    monkeypatch.setattr(trainer, "sft_update", lambda model, opt, acc, tok, samples, *a: seen.append(samples) or 0.0)
    monkeypatch.setattr(trainer, "idle_update", lambda *a, **k: seen.append("idle"))
    cfg = TrainConfig(data=synthetic_data, out=tmp_path, algo="raft", k=2, min_group_std=0.01, **TINY)
    flat = [_rollout("tie"), _rollout("tie too"), _rollout("better"), _rollout("unreadable", fallback=True)]
    r = torch.tensor([0.505, 0.50, 0.70, 0.90])  # group 1 ties identity within the floor; group 2's best is unreadable
    stats = trainer.update_policy(cfg, None, None, None, None, flat, r, None, identity=torch.tensor([0.5, 0.6]))
    assert seen == [[("in", "better")]] and stats["raft_groups_used"] == 0.5
    seen.clear()
    trainer.update_policy(cfg, None, None, None, None, flat[:2], r[:2], None, identity=torch.tensor([0.6]))
    assert seen == ["idle"]  # nothing beats identity: an idle step keeps DDP in step, nothing is learned


def test_an_unreadable_candidate_scores_below_the_prompt_as_written(synthetic_data, tmp_path, monkeypatch):
    """#39: a candidate whose structure does not read back was scored as identity, so making one cost
    nothing. It now scores the prompt as written minus --fallback-penalty, and its sampled tokens carry that
    advantage; RAFT also scores each prompt as written, the bar its best must clear."""
    from training import trainer

    real = trainer.rollout

    def half_unreadable(*args, **kwargs):
        groups = real(*args, **kwargs)
        for group in groups:
            group[0] = trainer.Rollout(group[0].text, group[0].negative, group[0].sequences, True, False)
        return groups

    monkeypatch.setattr(trainer, "rollout", half_unreadable)
    got = []
    # update_policy(cfg, model, opt, accelerator, tokenizer, flat, r, reference, identity)
    monkeypatch.setattr(trainer, "update_policy", lambda cfg, *a: got.append((a[5], a[7])) or {})
    for algo in ("grpo", "raft"):
        cfg = TrainConfig(data=synthetic_data, out=tmp_path / algo, steps=1, warm_start_steps=0, prompts_per_step=4,
                          k=2, max_new_tokens=6, fallback_penalty=0.25, algo=algo, **TINY)
        run_train(cfg, log=lambda *_: None, reward_fn=lambda sources, candidates, **_: [0.5] * len(candidates))
    (r, none), (r_raft, identity) = got
    assert r.tolist()[::2] == [0.25] * 4 and r.tolist()[1::2] == [0.5] * 4 and none is None
    assert r_raft.tolist() == r.tolist() and identity.tolist() == [0.5] * 4


def test_each_content_word_dropped_or_added_costs_the_preserve_penalty():
    """#40: the render is indifferent to many words a person wrote on purpose, so --preserve-penalty charges
    every content word a candidate drops or adds, as the serving guard counts them: moving a word or changing a
    function word is free, a fallback changed nothing, and a rewritten negative pays too."""
    from training.trainer import Rollout, candidate_edits, edit_sizes

    def cand(text, negative=None, fallback=False):
        return Rollout(text, negative, [], fallback, False)

    source, neg = "masterpiece, a crimson fox in the snow", "blurry, lowres"
    flat = [cand(source, neg), cand("a crimson fox in the snow, masterpiece", neg), cand("the crimson fox on snow", neg),
            cand("a red fox in the snow", neg), cand("a red circle", neg), cand("a red circle", neg, fallback=True),
            cand(source, "blurry")]
    assert edit_sizes(candidate_edits(flat, [source] * 7, [neg] * 7, frozenset())) == [0, 0, 1, 3, 6, 0, 1]


def test_the_preserve_penalty_reaches_the_update(synthetic_data, tmp_path, monkeypatch):
    """Wired where the fallback penalty is: with a reward that ties, the candidate that added a word scores
    less by exactly the penalty, and without the flag nothing changes."""
    from training import trainer

    real = trainer.rollout

    def one_adds_a_word(*args, **kwargs):
        groups = real(*args, **kwargs)
        for group, prompt in zip(groups, args[3]):
            group[0] = trainer.Rollout(prompt, group[0].negative, group[0].sequences, False, False)
            group[1] = trainer.Rollout(prompt + " zebra", group[1].negative, group[1].sequences, False, False)
        return groups

    monkeypatch.setattr(trainer, "rollout", one_adds_a_word)
    got = []
    monkeypatch.setattr(trainer, "update_policy", lambda cfg, *a: got.append(a[5].tolist()) or {})
    for penalty in (0.0, 0.125):
        cfg = TrainConfig(data=synthetic_data, out=tmp_path / str(penalty), steps=1, warm_start_steps=0,
                          prompts_per_step=4, k=2, max_new_tokens=6, preserve_penalty=penalty, **TINY)
        run_train(cfg, log=lambda *_: None, reward_fn=lambda sources, candidates, **_: [0.5] * len(candidates))
    assert got == [[0.5] * 8, [0.5, 0.375] * 4]


def test_clip_acts_only_once_the_policy_moved_from_the_rollout():
    import torch

    from training.losses import grpo_loss

    old = torch.log(torch.full((2, 3), 0.3))
    mask = torch.ones(2, 3)
    adv = torch.tensor([1.0, -1.0])
    _, first = grpo_loss(old.clone(), old, old, mask, adv, clip_eps=0.2, kl_coef=0.0)
    assert first["clip_frac"] == 0.0  # the first pass over a rollout: ratio 1
    _, later = grpo_loss(old + 0.5, old, old, mask, adv, clip_eps=0.2, kl_coef=0.0)
    assert later["clip_frac"] == 1.0  # ratio e^0.5 > 1.2: a later pass clips


def test_token_penalty_only_where_renders_truncate(tmp_path):
    import torch

    from training.config import TrainConfig
    from training.reward import ClipAgreementReward
    from training.trainer import _clip_reward, _render_cache

    class SameImage:  # every candidate renders the source image exactly
        def embeddings(self, prompts, seeds, negatives):
            return torch.ones(len(prompts), 4)

    long = "a " + "very " * 120 + "long prompt"  # ~123 CLIP tokens
    kwargs = dict(seeds=[[0]], source_embeddings=[torch.ones(1, 4)], negatives=[None])
    chunked = ClipAgreementReward(SameImage(), None, token_penalty=0.1, truncates=False)
    truncated = ClipAgreementReward(SameImage(), None, token_penalty=0.1, truncates=True)
    assert chunked([long], [long], **kwargs) == [pytest.approx(1.0)]
    assert truncated([long], [long], **kwargs)[0] < 0.97
    cfg = TrainConfig(data=tmp_path, out=tmp_path / "a", target="tiny-sd2", rewriter="tiny-t5", scorer="tiny-clip")
    reward = _clip_reward(cfg, _render_cache(cfg, "cpu"))
    assert reward.truncates is False  # training renders with A1111 weighting, which chunks


def test_logprobs_are_the_samplers_at_its_temperature():
    """The policy gradient scores the sampled ids at the sampling temperature, exactly as the sampler drew
    them (trl divides logits by T too); re-encoding the decoded text is not the same sequence."""
    import torch

    from bridge.models.loading import load_rewriter
    from bridge.models.rewriter import PREFIX, _generated_ids
    from training.losses import token_logprobs

    model, tok = load_rewriter(presets.rewriter("tiny-t5"), dtype="float32")
    texts = ["a lighthouse at dusk, oil painting", "portrait of a cat"]
    enc = tok([PREFIX + t for t in texts], return_tensors="pt", padding=True)
    torch.manual_seed(0)
    out = model.generate(**enc, do_sample=True, top_k=0, top_p=1.0, temperature=0.7, max_new_tokens=12,
                         num_return_sequences=4, return_dict_in_generate=True, output_scores=True)
    ids = [_generated_ids(row, tok) for row in out.sequences.tolist()]
    steps = torch.stack(out.scores, 1).log_softmax(-1)  # the sampler's processed (T-scaled) log-probs
    sampler = [sum(float(steps[r, t, i]) for t, i in enumerate(row)) for r, row in enumerate(ids)]
    inputs = [t for t in texts for _ in range(4)]
    with torch.no_grad():
        ours, _ = token_logprobs(model, tok, inputs, [""] * 8, PREFIX, temperature=0.7, output_ids=ids)
        at_one, _ = token_logprobs(model, tok, inputs, [""] * 8, PREFIX, temperature=1.0, output_ids=ids)
    assert ours.sum(-1).tolist() == pytest.approx(sampler, abs=1e-3)
    assert at_one.sum(-1).tolist() != pytest.approx(sampler, abs=1e-3)  # the old bug: raw logits


def test_every_sampled_token_weighs_the_same():
    """DAPO-style normalisation: a 1-token leaf and a 3-token leaf contribute per token, not per leaf."""
    import torch

    from training.losses import grpo_loss

    logp = torch.zeros(2, 3, requires_grad=True)
    mask = torch.tensor([[1.0, 0, 0], [1.0, 1, 1]])
    loss, _ = grpo_loss(logp, logp.detach(), logp.detach(), mask, torch.tensor([1.0, 1.0]), 0.2, 0.0, total_tokens=4)
    loss.backward()
    grads = logp.grad[mask.bool()]
    assert torch.allclose(grads, torch.full_like(grads, -0.25))  # 1/4 for each of the 4 real tokens
    # Split into two calls (micro-batches) with the batch's token count: the same gradients.
    split = torch.zeros(2, 3, requires_grad=True)
    for r in range(2):
        part, _ = grpo_loss(split[r : r + 1], logp[r : r + 1].detach(), logp[r : r + 1].detach(), mask[r : r + 1],
                            torch.tensor([1.0]), 0.2, 0.0, total_tokens=4)
        part.backward()
    assert torch.allclose(split.grad, logp.grad)


def test_candidates_render_with_the_negative_the_translator_serves():
    from types import SimpleNamespace

    from bridge.translator import Translator
    from training.config import TrainConfig
    from training.data import policy_inputs

    rows = read_jsonl(PROMPTS / "a1111.jsonl")[:30]
    groups = [SimpleNamespace(prompt=r["prompt"], negative_prompt=r["negative_prompt"]) for r in rows]
    cfg = TrainConfig(data=Path("unused"), out=Path("unused"), **{k: v for k, v in TINY.items() if k != "progress"})
    prompts, negatives = policy_inputs(cfg, groups)
    served = Translator.from_pretrained(None, "tiny-sd2").translate([r["prompt"] for r in rows],
                                                                     [r["negative_prompt"] for r in rows])
    assert prompts == [t.translated_prompt for t in served]
    assert negatives == [t.translated_negative_prompt for t in served]
    assert any(n != r["negative_prompt"] for n, r in zip(negatives, rows))  # the policy did change some


def test_kl_is_zero_at_the_warm_start_point(synthetic_data, tmp_path, monkeypatch):
    """The KL anchor is the warm-started adapter: the first GRPO step, still at that point, has KL 0. With
    the base model as anchor (the old behaviour, forced here) the same step has KL > 0."""
    from training import trainer
    from training.checkpoints import checkpoints

    def run(out):
        cfg = TrainConfig(data=synthetic_data, out=out, steps=1, warm_start_steps=3, prompts_per_step=4, k=2,
                          lr=3e-2, max_new_tokens=6, lora_r=4, **TINY)
        return [h for h in run_train(cfg, log=lambda *_: None, reward_fn=word_presence_reward("animal"))["history"]
                if h["phase"] == "grpo"][0]

    first = run(tmp_path / "anchored")
    assert first["kl"] == pytest.approx(0.0, abs=1e-6)
    assert (tmp_path / "anchored" / "checkpoints" / trainer.REFERENCE).is_file()
    # A fresh run into a directory with a stale reference (an earlier run killed after its warm start, before
    # its first checkpoint; a directory with checkpoints is refused) anchors to its own warm start.
    import shutil

    for ckpt in checkpoints(tmp_path / "anchored"):
        shutil.rmtree(ckpt)
    with (tmp_path / "anchored" / "checkpoints" / trainer.REFERENCE).open("r+b") as fh:
        fh.seek(-64, 2)
        fh.write(b"\x3f" * 64)  # corrupt the old reference's last weights
    assert run(tmp_path / "anchored")["kl"] == pytest.approx(0.0, abs=1e-6)
    monkeypatch.setattr(trainer, "reference_weights", lambda *a, **k: None)
    assert run(tmp_path / "base")["kl"] > 1e-4


def test_warm_start_pairs_are_in_the_models_format(tmp_path):
    from bridge.models.rewriter import NEGATIVE_PREFIX, PREFIX
    from training.trainer import warm_pairs

    cfg = TrainConfig(data=tmp_path, out=tmp_path / "a", **TINY)  # the flat format: the prompt's words
    prompts, negatives = ["(masterpiece:1.2), a fox BREAK snow", "a cat"], ["blurry, ugly", None]
    assert warm_pairs(cfg, prompts, negatives, frozenset()) == sorted([
        (PREFIX + "masterpiece, a fox snow", "masterpiece, a fox snow"), (PREFIX + "a cat", "a cat")])
    marked = TrainConfig(data=tmp_path, out=tmp_path / "a", format="marked", **TINY)
    assert warm_pairs(marked, prompts, negatives, frozenset()) == sorted([
        (PREFIX + "[1] masterpiece [2] a fox [3] snow", "[1] masterpiece [2] a fox [3] snow"),
        (PREFIX + "a cat", "a cat")])
    both = TrainConfig(data=tmp_path, out=tmp_path / "a", rewrite_negative=True, **TINY)
    assert (NEGATIVE_PREFIX + "blurry, ugly", "blurry, ugly") in warm_pairs(both, prompts, negatives, frozenset())
    leafwise = TrainConfig(data=tmp_path, out=tmp_path / "a", format="leaf", **TINY)
    assert {a for a, _ in warm_pairs(leafwise, prompts, negatives, frozenset())} == {
        PREFIX + x for x in ("masterpiece", "a fox", "snow", "a cat")}
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"source": "(crimson:1.1), fox", "target": "(red:1.1), fox, white background"}\n'
                     '{"source": "a, (b)", "target": "a"}\n')
    extra = TrainConfig(data=tmp_path, out=tmp_path / "a", warm_start_pairs=pairs, **TINY)
    with pytest.raises(ValueError, match=r"pairs.jsonl:2: source and target must have the same number of text"):
        warm_pairs(extra, prompts, negatives, frozenset())
    pairs.write_text('{"source": "(crimson:1.1), fox", "target": "(red:1.1), fox, white background"}\n')
    assert (PREFIX + "crimson, fox", "red, fox, white background") in warm_pairs(
        extra, prompts, negatives, frozenset())


def test_rewrite_negative_samples_and_renders_rewritten_negatives(tmp_path, prompts_dir):
    """With --rewrite-negative each candidate carries a sampled rewrite of its negative prompt, rendered with
    it; the adapter says so, and serving rewrites negatives too."""
    prompts = [json.loads(line)["prompt"].strip()
               for line in (prompts_dir / "plain.jsonl").read_text(encoding="utf-8").splitlines()[:4]]
    data = tmp_path / "ds"
    datasets.Dataset.from_dict({
        "prompt": prompts, "negative_prompt": ["blurry, ugly hands"] * 4, "seed": list(range(4)),
        "prompt_index": list(range(4)), "embedding": [[0.0] * 32] * 4, "scorer": ["tiny-clip"] * 4,
        "preset": ["tiny-sd15"] * 4}).save_to_disk(str(data))
    seen = []

    def reward(sources, candidates, negatives, **_):
        seen.extend(negatives)
        return [float(len(n or "")) / 100 for n in negatives]

    out = tmp_path / "adapter"
    run_train(TrainConfig(data=data, out=out, steps=2, warm_start_steps=1, prompts_per_step=4, k=2, lr=1e-3,
                          max_new_tokens=6, lora_r=4, rewrite_negative=True, **TINY), log=lambda *_: None,
              reward_fn=reward)
    assert len(seen) == 2 * 4 * 2 and any(n != "blurry, ugly hands" for n in seen)
    meta = json.loads((out / "sd_bridge_adapter.json").read_text())
    assert meta["rewrite_negative"] is True and meta["format"] == "flat"
    assert Translator.from_pretrained(out).meta.rewrite_negative

