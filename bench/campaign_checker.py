"""The fault campaign's checker (``bench/checker/``), under the name the campaign and the tests
import it by."""

from bench.checker.evaluate import evaluate
from bench.checker.expected import plan, run_id
from bench.checker.faults import cut_off_from_majority
from bench.checker.gather import apply_error_counts, gather, read_ledger
from bench.checker.history import Ack, Bounds, Fault, History, SubmissionRecord
from bench.checker.pglogs import log_offsets, scan_pg_logs, worker_was_leaving
from bench.checker.verdict import Verdict, print_table

__all__ = ["Ack", "Bounds", "Fault", "History", "SubmissionRecord", "Verdict", "apply_error_counts",
           "cut_off_from_majority", "evaluate", "gather", "log_offsets", "plan", "print_table", "read_ledger",
           "run_id", "scan_pg_logs", "worker_was_leaving"]
