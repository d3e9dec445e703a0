"""The toy world's presets, registered with sd-bridge through the `sd_bridge.presets` entry point
(pyproject.toml): the library knows their names as its offline fallback, never their files.

toy-sd15 and toy-sd2 are trained on their own dialect (toyworld.world); toy-sd2 has a wider text encoder and
"!" padding, like SD 2.x. Both predict v, toy-sd15 too, unlike SD 1.5, because an epsilon toy UNet never
learned where to draw (toyworld/build.py says why). They render at 32 px in 15 steps with guidance 2, the
best of 1, 1.5, 2, 3 and 5 by colour and background read back from the pixels (docs/toyworld.md).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from bridge.models.presets import AdapterPreset, PipelinePreset, Preset, RewriterPreset, ScorerPreset

WEIGHTS = Path(__file__).resolve().parent / "weights"
# A toy world built elsewhere (`sd-bridge toyworld build --out DIR`, or a fine-tune of a copy): every toy preset
# then loads from DIR, so a benchmark measures a candidate build before it replaces the committed one.
WEIGHTS_ENV = "SD_BRIDGE_TOY_WEIGHTS"
# In every render-cache key: renders of an older build are never reused. v3: toy-sd15 trained 4x longer.
# v4: toy-sd15 reads the vocabulary classes (a member's embedding tied to its class's word), toy-t5 rebuilt.
# v5: toy-sd2 trained 20,000 steps instead of 3,000 (it drew the shape asked for on 46% of renders).
# v6: the artist drift depends on the shape (the context drift): toy-sd15 and toy-t5 rebuilt.
# v7: both pipelines fine-tuned on captions in real prompts' shapes (`toyworld build --only shapes`).
REVISION = "toy-v7"


def weights_dir() -> tuple[Path, str]:
    """(where the toy models load from, their revision): the committed build, or the build `WEIGHTS_ENV` names,
    whose revision carries a digest of its models' build records, so no cache serves one build's renders for
    another's."""
    other = os.environ.get(WEIGHTS_ENV)
    if not other:
        return WEIGHTS, REVISION
    root = Path(other).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"{WEIGHTS_ENV}={other}: no such directory (a `toyworld build --out DIR`)")
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(root.glob("*/toyworld_build.json"))))
    return root, f"{REVISION}+{digest.hexdigest()[:12]}"


def presets() -> list[Preset]:
    weights, revision = weights_dir()

    def at(name: str) -> str:
        return str(weights / name)

    return [
        PipelinePreset("toy-sd15", None, revision, "sd1", 32, "v_prediction", 64, steps=15, guidance=2.0,
                       local_path=at("toy-sd15"), toy=True),
        PipelinePreset("toy-sd2", None, revision, "sd2", 32, "v_prediction", 96, steps=15, guidance=2.0,
                       local_path=at("toy-sd2"), toy=True),
        ScorerPreset("toy-clip", "toy-clip", None, None, revision, local_path=at("toy-clip"), toy=True),
        RewriterPreset("toy-t5", None, revision, max_new_tokens=32, local_path=at("toy-t5"), toy=True),
        # The documented recipe's adapter (benchmarks/toyworld_learning.py, training seed 0): `--adapter toy`,
        # and what translate, the app and the demo use for toy-sd2 when no adapter is named.
        AdapterPreset("toy", at("toy-adapter"), "toy-sd2", toy=True),
    ]
