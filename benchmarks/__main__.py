"""Run every benchmark: `uv run python -m benchmarks` (or `make bench`); each writes benchmarks/results/NAME.json.
`benchmarks.a1111_parity` needs a checkout of the A1111 WebUI (`SD_BRIDGE_WEBUI=PATH`), `benchmarks.comfyui_parity` one of ComfyUI (`SD_BRIDGE_COMFYUI=PATH`);
each runs when its checkout is given."""

import os
import tempfile

from benchmarks import (
    a1111_parity,
    app_load,
    cli_start,
    comfyui_parity,
    demo_time,
    gather_overhead,
    inference_backends,
    migrate_speed_memory,
    onnx_runtime,
    parse_linear,
    prompt_parse,
    reference_index,
    reliability,
    sweep_breadth,
    toyworld_drift,
    toyworld_guidance,
    toyworld_learning,
    toyworld_syntax,
    train_step_split,
    translation_cache,
)

if __name__ == "__main__":
    cli_start.main([])
    app_load.main([])
    reliability.main([])
    prompt_parse.main()
    parse_linear.main()
    gather_overhead.main([])
    migrate_speed_memory.main([])
    translation_cache.main([])
    inference_backends.main([])  # about 45 minutes on 2 CPU cores
    onnx_runtime.main([])  # builds a second environment from the package registry (optimum-onnx, transformers 4.x)
    train_step_split.main([])
    toyworld_drift.main([])
    toyworld_guidance.main([])
    toyworld_syntax.main([])
    sweep_breadth.main([])
    reference_index.main([])
    with tempfile.TemporaryDirectory() as tmp:
        toyworld_learning.main(["--out", tmp])
    demo_time.main()
    if os.environ.get("SD_BRIDGE_WEBUI"):
        a1111_parity.main(["--webui", os.environ["SD_BRIDGE_WEBUI"]])
    if os.environ.get("SD_BRIDGE_COMFYUI"):
        comfyui_parity.main(["--comfyui", os.environ["SD_BRIDGE_COMFYUI"]]
                            + (["--webui", os.environ["SD_BRIDGE_WEBUI"]] if os.environ.get("SD_BRIDGE_WEBUI") else []))
