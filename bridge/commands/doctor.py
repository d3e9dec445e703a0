"""`sd-bridge doctor`: what this machine has for sd-bridge: versions, device, CPU kernels, caches, local presets."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DoctorConfig:
    """Print versions, device, cache locations and which presets are available locally."""

    json: bool = field(default=False, metadata={"help": "print one JSON object instead of text"})


def doctor_report() -> dict:
    import importlib.metadata as md
    import os
    import platform

    import torch

    from bridge.models import engine, loading, presets

    versions = {}
    for dist in ["sd-bridge", "torch", "torchvision", "diffusers", "transformers", "peft", "open_clip_torch",
                 "datasets", "accelerate", "gradio", "safetensors", "ctranslate2"]:
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = None
    device = {"cuda": torch.cuda.is_available(), "auto": loading.resolve_device("auto"),
              "threads": torch.get_num_threads(), "ctranslate2_cpu_isa": engine.planned_isa()}
    if torch.cuda.is_available():
        device["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    avail = {}
    for kind, table in presets.tables().items():
        for name, preset in table.items():
            avail[name] = {"kind": kind, "hub_id": preset.hub_id, "revision": preset.revision,
                           "family": "toy" if preset.toy else "tiny" if preset.tiny else "hub",
                           "local": loading.is_available_locally(preset)}
    return {
        "python": platform.python_version(),
        "versions": versions,
        "device": device,
        "caches": {"sd_bridge": str(loading.cache_dir()),
                   "hf_home": os.environ.get("HF_HOME", str(os.path.expanduser("~/.cache/huggingface"))),
                   "hf_hub_offline": os.environ.get("HF_HUB_OFFLINE", "0")},
        "presets": avail,
    }


def run_doctor(cfg: DoctorConfig, log=print) -> dict:
    import json

    report = doctor_report()
    if cfg.json:
        log(json.dumps(report, indent=2))
        return report
    log(f"python {report['python']}")
    for dist, ver in report["versions"].items():
        log(f"  {dist:16s} {ver or 'not installed'}")
    d = report["device"]
    log(f"device: auto -> {d['auto']} (cuda available: {d['cuda']}, cpu threads: {d['threads']}; exports on "
        f"ctranslate2 run its {d['ctranslate2_cpu_isa']} cpu kernels)")
    for key, value in report["caches"].items():
        log(f"cache {key}: {value}")
    log("presets (local = loadable without network):")
    for name, info in report["presets"].items():
        where = info["hub_id"] or {"toy": "toy world, shipped in toyworld/weights",
                                   "tiny": "built offline by bridge.models.tiny"}[info["family"]]
        log(f"  {info['kind']:8s} {name:14s} {'local  ' if info['local'] else 'missing'} {where}@{info['revision']}")
    return report
