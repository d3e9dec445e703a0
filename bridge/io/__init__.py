"""Files in and out: where prompt libraries come from and where translations go.

- `sources`  prompt records from txt/csv/tsv/jsonl, A1111 infotext and PNG folders
- `clean`    normalise, drop empties, dedupe and filter a prompt list before it costs renders
- `migrate`  a whole library translated, streaming, resumable, atomic (`sd-bridge migrate`)
- `images`   captioned image grids (demo, contact sheets, eval)
"""
