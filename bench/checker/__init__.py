"""The fault campaign's checker: an independent reading of what happened, sharing no code with the
system under test. Its inputs are the producers' records of what they were told (and what they
sent), the external effect ledger the step handlers append to, the fault log, each region's
PostgreSQL read with its own SQL, and the PostgreSQL server logs.

* ``history``: the inputs as values; ``verdict``: findings by class and the printed table;
* ``expected``: what must take effect, from definitions and inputs; ``faults``: the fault log as
  the independent clock; ``executions``: overlaps, forgiveness, lease overruns and order;
  ``accounting``: every acknowledged publish by submission id; ``compare``: regions side by side;
* ``evaluate``: pure, history in, verdict out; ``gather``, ``pglogs``: the reading.
"""

from bench.checker.evaluate import evaluate
from bench.checker.history import Ack, Bounds, Fault, History, SubmissionRecord
from bench.checker.verdict import Verdict, print_table

__all__ = ["Ack", "Bounds", "Fault", "History", "SubmissionRecord", "Verdict", "evaluate", "print_table"]
