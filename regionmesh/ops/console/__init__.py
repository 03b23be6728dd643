"""``regionmesh console``: the operator's web console, served from one region's database.

Pure parts (``auth``, ``filters``, ``dag``, ``present``) decide; ``views`` gathers what a page shows
through the repository and services; ``app`` wires the pages into a Starlette application that
``serve`` runs with uvicorn. Nothing loads from a CDN: templates and the one script are files here.
"""

from __future__ import annotations

from regionmesh.ops.console.app import create_app, serve

__all__ = ["create_app", "serve"]
