"""The toy world: where translation quality is measured offline (../shared/DESIGN.md §6).

- `world`       the scene grammar, its ground-truth drawings, the source/target dialects, the drift table,
                the oracle, the prompt generator and the train/held-out split
- `build`       `sd-bridge toyworld build`: trains toy-sd15, toy-sd2 (diffusers pipelines), toy-clip
                (open_clip) and toy-t5 (a paraphraser) from the grammar
- `presets`     toy-sd15, toy-sd2, toy-clip and toy-t5, registered with sd-bridge through the
                `sd_bridge.presets` entry point (the library never imports this package)
- `weights/`    the built models, each with its build record
- `prompts/`    the committed train and held-out splits

The lab, apart from the product: it builds on the library (bridge.*); its commands (`sd-bridge toyworld
build|prompts|sheet`) are in bridge.commands.
"""
