"""The test kit: what the test suite (``tests/``) and the benchmarks (``bench/``) both use against a
real mesh, kept here so that neither imports the other's support code.

- ``proxy``: a TCP proxy a test can sever and heal (a real network cut between two regions).
- ``workflows``: the ``t_*`` workflows and ``t.*`` handlers; workers load them by module path
  (``REGIONMESH_WORKFLOWS=regionmesh.workers.examples,regionmesh.testing.workflows``), which works from
  any install, without the repository on ``PYTHONPATH``.
- ``ledger``: reads the external effect ledger the ``t.ledger`` handler writes.

Nothing in the package imports this (the layer test enforces it); it ships so that a worker started
from an installed wheel can load the test workflows. Importing ``workflows`` registers its handlers
and workflows in the default registry.
"""
