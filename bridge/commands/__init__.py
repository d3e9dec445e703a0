"""Commands that are only commands: each parses its config, calls the library and prints.

The stages (data.gather, training.trainer, eval.run, bridge.io.migrate, bridge.sweep.run,
bridge.models.export, bridge.models.toy.build) are commands too, but other code calls them; no stage
imports from here.

- `translate`         `sd-bridge translate`
- `inspect`           `sd-bridge inspect`
- `doctor`            `sd-bridge doctor`
- `demo`              `sd-bridge demo`: gather -> train -> eval -> translate on the toy world
- `toyworld_prompts`  `sd-bridge toyworld prompts`
- `toyworld_sheet`    `sd-bridge toyworld sheet`
"""
