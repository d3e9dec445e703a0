"""Every `sd-bridge` command: each module is its Config (flags map 1:1 onto its fields through one parser,
bridge.config) and a `run_*` that calls the library or a stage and prints. Nothing below imports from here.

- `translate`, `inspect`, `doctor`             text and facts, no stage
- `migrate`                                    a prompt library (bridge.io.migrate)
- `gather`, `train`, `eval`                    the pipeline's stages (data/, training/, eval/)
- `export`                                     an adapter merged and converted (bridge.models.engine)
- `sweep`, `index`                             breadth over seeds, a reference index (bridge.sweep)
- `serve`                                      the Gradio app (app.py)
- `demo`                                       gather -> train -> eval -> translate on the toy world
- `toyworld_build`, `toyworld_prompts`, `toyworld_sheet`   the toy world (toyworld/)
"""
