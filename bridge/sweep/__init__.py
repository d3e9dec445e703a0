"""Breadth and nearness (issue #14): what a model draws for one prompt over many seeds.

- `run`        `sd-bridge sweep`: render a prompt over seeds per model/strategy, write grids and sweep.json
- `grid`       the grid PNG per prompt and the HTML page of every render
- `breadth`    mean pairwise distance with a bootstrap interval, clusters, breadth ratio
- `reference`  `sd-bridge index`: a reference collection embedded once; exact and approximate search
"""
