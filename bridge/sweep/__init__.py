"""Breadth and nearness (issue #14): what a model draws for one prompt over many seeds.

- `grid`       the grid PNG per prompt and the HTML page of every render
- `breadth`    mean pairwise distance with a bootstrap interval, clusters, breadth ratio
- `reference`  a reference collection embedded once; exact and approximate search

Their commands, `sd-bridge sweep` and `sd-bridge index`, are in bridge.commands.
"""
