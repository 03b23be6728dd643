"""The fault campaign (issue 12): a three-region mesh under mixed load while a seeded schedule
injects faults, then an independent checker (bench/campaign_checker.py) decides.

    python -m bench.campaign --seed S --minutes M [--regions 3] [--drain 300] [--keep]

Load, for M minutes, on every region (one worker ×2 each; short timers as in the partition test):
direct submissions to the tenant's home, forwarded ones sent to another region, ``submit-batch``
files (regionmesh.batch.submit_batch) and a non-Python producer that publishes raw protocol-2 JSON
messages with kombu (task ``regionmesh.submit``, the wire kwargs of docs/reference/wire.md). A submission counts as
acknowledged once its publish returned; every producer closes the documented pop-before-unacked
gap as the durability contract (docs/explanation/durability.md) asks of producers (direct/forwarded: ``client.Journal`` and
``confirm``; batch: re-running the missing lines; raw: publishing the same message again), and
each re-send is counted.

Faults, one at a time (random.Random(seed)), each after the mesh is healthy again (every region
holds its lease): pool-process SIGKILL (preferably one running a step), worker main-process
SIGKILL (restarted), Redis SIGKILL and restart, PostgreSQL SIGKILL (postmaster and backends) and
restart, a replication cut for 10–60 s through TCP proxies (one region cut off both ways, deaf,
unheard, or one pair of regions), a broker link cut for 10–60 s (forwarders reach other regions'
Redis through proxies), a region SIGKILLed, failed over once its lease expired, brought back
and restored, and a graceful tenant move. Step handlers append to an external effect ledger.

After M minutes the producers stop, the mesh drains (everything must finish within ``--drain``
seconds), and the checker prints a table and writes bench/results/campaign-<seed>.json; exit 1
on any violation, printing the seed.

Modules, one job each: ``record`` (the plan, and what was sent and injected), ``mesh`` (the proxied
mesh and its health), ``producers`` (three kinds), ``faults`` (eight kinds), ``schedule`` (which
fault when), ``resend`` (the batch and raw producers' re-sender), ``drain``, ``verdict`` (gather,
judge, report), ``run`` (one campaign start to end) and ``__main__`` (the command line).
"""
