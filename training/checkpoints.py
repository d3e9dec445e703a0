"""Checkpoints of a training run: the LoRA and optimizer state in safetensors, written atomically, and the
run's settings, so that `--resume latest` continues exactly and refuses another run's checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from bridge.config import config_to_dict, first_difference
from training.config import TrainConfig

def save_checkpoint(path: Path, model, opt, step: int, accelerator, settings: dict | None = None) -> None:
    """Written into `path.partial` and renamed when complete, so a kill mid-write leaves no checkpoint that
    `--resume latest` would pick; `settings` (the run's fingerprint) lets a resume refuse another run's."""
    import shutil

    final, path = path, path.with_name(path.name + ".partial")
    shutil.rmtree(path, ignore_errors=True)
    _write_checkpoint(path, model, opt, step, accelerator, settings)
    if final.exists():
        shutil.rmtree(final)
    path.rename(final)


def _write_checkpoint(path: Path, model, opt, step: int, accelerator, settings: dict | None) -> None:
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    peft_model = accelerator.unwrap_model(model)
    save_file({k: v.contiguous().cpu() for k, v in get_peft_model_state_dict(peft_model).items()},
              str(path / "lora.safetensors"))
    state = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in state["state"].items():
        for name, value in st.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{name}"] = value.contiguous().cpu()
            else:
                scalars[f"{idx}.{name}"] = value
    save_file(tensors, str(path / "optimizer.safetensors"))
    (path / "trainer_state.json").write_text(json.dumps({"step": step, "param_groups": state["param_groups"],
                                                         "scalars": scalars, "settings": settings}), encoding="utf-8")


def load_checkpoint(path: Path, model, opt, accelerator) -> int:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    for name in CHECKPOINT_FILES:
        if not (path / name).is_file():
            raise FileNotFoundError(f"checkpoint {path} is incomplete (no {name})")
    set_peft_model_state_dict(accelerator.unwrap_model(model), load_file(str(path / "lora.safetensors")))
    meta = json.loads((path / "trainer_state.json").read_text())
    tensors = load_file(str(path / "optimizer.safetensors"))
    state: dict = {}
    for key, value in list(tensors.items()) + list(meta["scalars"].items()):
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value.to(accelerator.device) if torch.is_tensor(value) else value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return int(meta["step"])


CHECKPOINT_FILES = ("lora.safetensors", "optimizer.safetensors", "trainer_state.json")


def checkpoints(out: Path) -> list[Path]:
    """The complete checkpoints in OUT/checkpoints, oldest first (`step-N.partial` is one being written)."""
    import re

    found = sorted(p for p in (out / "checkpoints").glob("step-*") if re.fullmatch(r"step-\d+", p.name))
    return [p for p in found if all((p / f).is_file() for f in CHECKPOINT_FILES)]


def find_resume(cfg: TrainConfig) -> Path | None:
    """The checkpoint to resume from. A fresh run into a directory with checkpoints is refused: resuming
    later would pick them up as its own."""
    ckpts = checkpoints(cfg.out) if cfg.out else []
    if cfg.resume is None:
        if ckpts:
            raise ValueError(f"{cfg.out} holds checkpoints of an earlier run (latest {ckpts[-1].name}); continue it "
                             f"with --resume latest, or choose another --out (or delete {cfg.out / 'checkpoints'}) "
                             "to start over")
        return None
    if cfg.resume != "latest":
        return Path(cfg.resume)
    if not ckpts:
        raise FileNotFoundError(f"--resume latest: no complete checkpoint in {cfg.out / 'checkpoints'}")
    return ckpts[-1]


def same_run(cfg: TrainConfig) -> dict:
    """Settings a resumed run must share with the checkpointed one (steps may grow)."""
    skip = {"steps", "resume", "dry_run", "progress", "json", "push_to_hub", "tensorboard", "checkpoint_every", "device"}
    return {k: v for k, v in config_to_dict(cfg).items() if k not in skip}


def check_resume(cfg: TrainConfig, ckpt: Path) -> None:
    """Refuse a checkpoint written under other settings, naming the first one that differs. Checkpoints
    record their run's settings; older ones are compared with OUT/config.json."""
    state = json.loads((ckpt / "trainer_state.json").read_text()) if (ckpt / "trainer_state.json").is_file() else {}
    saved = state.get("settings")
    if saved is None and (cfg.out / "config.json").exists():
        saved = json.loads((cfg.out / "config.json").read_text())["config"]
    if saved is None:
        return
    diff = first_difference(saved, same_run(cfg))
    if diff is not None:
        key, before, now = diff
        raise ValueError(f"--resume: {ckpt} was written with {key}={before!r}, this run has {key}={now!r}; only "
                         "--steps may change (or choose another --out)")
