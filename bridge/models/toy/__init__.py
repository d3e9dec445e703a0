"""The toy world: where translation quality is measured offline (../shared/DESIGN.md §6).

- `world`       the scene grammar, its ground-truth drawings, the source/target dialects, the drift table,
                the oracle, the prompt generator and the train/held-out split
- `build`       `sd-bridge toyworld build`: trains toy-sd15, toy-sd2 (diffusers pipelines), toy-clip
                (open_clip) and toy-t5 (a paraphraser) from the grammar
- `weights/`    the built models (presets toy-sd15, toy-sd2, toy-clip, toy-t5), each with its build record
- `prompts/`    the committed train and held-out splits

Its commands `sd-bridge toyworld prompts` and `toyworld sheet` are in bridge.commands.
"""
