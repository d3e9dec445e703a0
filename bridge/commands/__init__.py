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


def stage(module: str, function: str):
    """The `run_*` of a command that only dispatches to a stage (gather, train, eval, toyworld build): the stage
    is library code that the demo, the benchmarks and the tests call too, so the command imports it when it
    runs and returns the exit status; the stage returns its summary."""
    def run(cfg, log=print) -> int:
        import importlib

        getattr(importlib.import_module(module), function)(cfg, log=log)
        return 0

    run.__name__ = run.__qualname__ = function
    run.__doc__ = f"`{function}` of {module}, as a command: 0 when it finishes."
    return run
