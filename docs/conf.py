"""Sphinx configuration of the regionmesh docs site (MyST Markdown, the furo theme).

Built strictly by ``.ci/run``: ``python3 -m sphinx -W --keep-going -b html docs build/docs``.
Nothing here reaches the network: no intersphinx, no remote images, no CDN-hosted extensions.
"""

from __future__ import annotations

project = "regionmesh"
author = "the regionmesh authors"
copyright = "the regionmesh authors"
release = "0.1.0"

extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# Headings up to ### get anchors, so pages can link to one another's sections (`page.md#anchor`);
# a broken link or anchor is a warning, and -W makes it an error.
myst_heading_anchors = 3
myst_enable_extensions = ["deflist"]

html_theme = "furo"
html_title = "regionmesh"
html_static_path: list[str] = []
# The build must not depend on a network: no math CDN either (no page uses math).
html_math_renderer = None
