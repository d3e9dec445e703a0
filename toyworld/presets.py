"""The toy world's presets, registered with sd-bridge through the `sd_bridge.presets` entry point
(pyproject.toml): the library knows their names as its offline fallback, never their files.

toy-sd15 and toy-sd2 are trained on their own dialect (toyworld.world); toy-sd2 has a wider text encoder and
"!" padding, like SD 2.x. Both predict v, toy-sd15 too, unlike SD 1.5, because an epsilon toy UNet never
learned where to draw (toyworld/build.py says why). They render at 32 px in 15 steps with guidance 2, the
best of 1, 1.5, 2, 3 and 5 by colour and background read back from the pixels (docs/toyworld.md).
"""

from __future__ import annotations

from pathlib import Path

from bridge.models.presets import AdapterPreset, PipelinePreset, Preset, RewriterPreset, ScorerPreset

WEIGHTS = Path(__file__).resolve().parent / "weights"
# In every render-cache key: renders of an older build are never reused. v3: toy-sd15 trained 4x longer.
# v4: toy-sd15 reads the vocabulary classes (a member's embedding tied to its class's word), toy-t5 rebuilt.
# v5: toy-sd2 trained 20,000 steps instead of 3,000 (it drew the shape asked for on 46% of renders).
# v6: the artist drift depends on the shape (the context drift): toy-sd15 and toy-t5 rebuilt.
REVISION = "toy-v6"


def presets() -> list[Preset]:
    def at(name: str) -> str:
        return str(WEIGHTS / name)

    return [
        PipelinePreset("toy-sd15", None, REVISION, "sd1", 32, "v_prediction", 64, steps=15, guidance=2.0,
                       local_path=at("toy-sd15"), toy=True),
        PipelinePreset("toy-sd2", None, REVISION, "sd2", 32, "v_prediction", 96, steps=15, guidance=2.0,
                       local_path=at("toy-sd2"), toy=True),
        ScorerPreset("toy-clip", "toy-clip", None, None, REVISION, local_path=at("toy-clip"), toy=True),
        RewriterPreset("toy-t5", None, REVISION, max_new_tokens=32, local_path=at("toy-t5"), toy=True),
        # The documented recipe's adapter (benchmarks/toyworld_learning.py, training seed 0): `--adapter toy`,
        # and what translate, the app and the demo use for toy-sd2 when no adapter is named.
        AdapterPreset("toy", at("toy-adapter"), "toy-sd2", toy=True),
    ]
