"""Load: hundreds of simulated participants rating at once against gunicorn and PostgreSQL. Run on demand:

    make bench-load            (starts scripts/services.sh's PostgreSQL if needed)
    .venv/bin/python benchmarks/bench_load.py [--participants 200] [--workers 4] [--threads 8]
        [--clips 5] [--per-participant 4] [--ramp 5] [--time-limit 300] [--think 0.1 0.6] [--keep-database]

Everything stays on loopback. The run:

1. creates a throwaway database next to DATABASE_URL's (the loopback PostgreSQL), migrates it, and
   builds an open ACR study from real 1-second H.264 + AAC clips (``tests.fixtures``; 3 scales, no
   environment check; enough ratings per clip that the study never fills up);
2. starts ``gunicorn studyapp.wsgi`` with production settings (DEBUG off, a SECRET_KEY, the database by
   URL, ``--workers`` processes × ``--threads`` threads) on a free loopback port;
3. runs ``--participants`` simulated participants at once (``tests/integration/load.py``: one thread and one
   cookie session each, started over ``--ramp`` seconds, all giving up after ``--time-limit`` seconds),
   each walking study link → consent → instructions → every trial (clip fetched with a byte range, "play",
   the clip's length of watching, "ended", the rating) → the end page with the completion code; after
   every rating each also GETs ``/healthz``, the trivial view that is the same server's baseline;
4. checks the database against what the participants were told: ratings = assignments × scales, none lost,
   none doubled, every participant completed with the code they were shown; and the log: no 5xx;
5. prints p50/p99 of the rating POST and of ``/healthz`` and their ratios, the other requests' latencies,
   throughput and wall time, drops the database, and exits 1 on any lost or doubled rating, any 5xx or
   any participant who did not finish.

The baseline: ``/healthz`` runs the same middleware and opens a database connection for one ``SELECT 1``
(connections are not kept between requests, the production default); the rating POST does that plus
parsing, two row locks, the watched-to-end check and the inserts in one transaction.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.integration.load import (  # noqa: E402
    GunicornServer, RequestLog, check_ratings, quantiles_ms, run_participants, server_env,
)

SECRET_KEY = "bench-load-secret-not-for-production"
MAX_PARTICIPANTS = 2000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--participants", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=8, help="threads per gunicorn worker")
    parser.add_argument("--clips", type=int, default=5, help="test clips in the study (at most 6 fixture clips)")
    parser.add_argument("--per-participant", type=int, default=4)
    parser.add_argument("--ramp", type=float, default=5.0, help="seconds over which the participants arrive")
    parser.add_argument("--time-limit", type=float, default=300.0, help="every participant gives up after this")
    parser.add_argument("--think", type=float, nargs=2, default=(0.1, 0.6), metavar=("LOW", "HIGH"),
                        help="seconds between a clip's end and the rating, uniform")
    parser.add_argument("--conn-max-age", type=int, default=0,
                        help="DATABASE_CONN_MAX_AGE of the server (0, the production default: one connection "
                        "per request)")
    parser.add_argument("--keep-database", action="store_true", help="do not drop the database at the end")
    args = parser.parse_args()
    if not 1 <= args.participants <= MAX_PARTICIPANTS:
        parser.error(f"--participants: 1 to {MAX_PARTICIPANTS}")
    if not 1 <= args.clips <= 6 or not 1 <= args.per_participant <= args.clips:
        parser.error("--clips 1..6 and --per-participant 1..clips")
    return args


def admin_connection(url: str):
    import psycopg

    parts = urlsplit(url)
    return psycopg.connect(host=parts.hostname, port=parts.port or 5432, user=parts.username or "postgres",
                           password=parts.password or None, dbname="postgres", autocommit=True)


def throwaway_database_url() -> tuple[str, str]:
    url = os.environ.get("DATABASE_URL", "")
    if urlsplit(url).scheme not in {"postgres", "postgresql"}:
        sys.exit("bench_load needs DATABASE_URL=postgres://… (eval \"$(scripts/services.sh env)\")")
    host = urlsplit(url).hostname
    if host not in {"127.0.0.1", "localhost", "::1"}:
        sys.exit(f"bench_load runs on loopback only; DATABASE_URL points at {host}")
    name = f"syncmos_bench_load_{os.getpid()}"
    with admin_connection(url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}")), name


def drop_database(url: str, name: str) -> None:
    with admin_connection(url) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def build_study(args: argparse.Namespace, work: Path):
    from tests.fixtures import make_study, write_clip_files

    clips_dir = work / "fixture-clips"
    clips_dir.mkdir()
    clip_files = write_clip_files(clips_dir)
    return make_study(clip_files, n_clips=args.clips, per_participant=args.per_participant,
                      ratings_per_clip=args.participants * args.per_participant + 1,
                      completion_url="https://app.prolific.com/submissions/complete")


def row(name: str, seconds: np.ndarray) -> str:
    q = quantiles_ms(seconds)
    return f"  {name:<26} n={seconds.size:>6}   p50 {q[50]:8.1f} ms   p99 {q[99]:8.1f} ms"


def report(args, log: RequestLog, results, wall: float, server_cpu: float, problems: list[str]) -> bool:
    rate, base = log.latencies("rate"), log.latencies("baseline")
    rate_q, base_q = quantiles_ms(rate), quantiles_ms(base)
    records = log.records
    errors_5xx = log.server_errors()
    no_answer = [r for r in records if r.status == 0]
    completed = sum(r.completed for r in results)
    print(f"\nsyncmos load: {args.participants} participants × {args.per_participant} clips × 3 scales, "
          f"gunicorn {args.workers} workers × {args.threads} threads, PostgreSQL (DATABASE_CONN_MAX_AGE="
          f"{args.conn_max_age}), loopback")
    print(f"  completed participants     {completed} / {len(results)}")
    print(f"  wall time                  {wall:.1f} s (arrivals over {args.ramp:.0f} s; each clip watched 1 s)")
    print(f"  requests                   {len(records)}  ({len(records) / wall:.0f} / s), "
          f"5xx: {len(errors_5xx)}, no answer (then sent again): {len(no_answer)} "
          f"{dict(Counter(f'{r.method} {r.kind}: {r.error}' for r in no_answer)) if no_answer else ''}")
    print(f"  gunicorn CPU               {server_cpu:.1f} s = {1000 * server_cpu / max(len(records), 1):.1f} ms per "
          f"request (PostgreSQL's own CPU not included)")
    load = os.getloadavg()
    print(f"  machine                    {os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / "
          f"{load[2]:.1f} (1/5/15 min) at the end")
    print(f"  rating POSTs               {rate.size}  ({rate.size / wall:.1f} / s), "
          f"participants finished {60 * completed / wall:.0f} / min")
    print("latency (answers below 400; a rating is 201):")
    print(row("rating POST", rate))
    print(row("/healthz (baseline)", base))
    for kind, name in (("event", "playback event POST"), ("page", "page GET"), ("media", "clip GET (range)"),
                       ("form", "form POST (consent/start)"), ("study_link", "study link GET")):
        print(row(name, log.latencies(kind)))
    print(f"ratio rating POST / healthz:  p50 {rate_q[50] / base_q[50]:.2f}×   p99 {rate_q[99] / base_q[99]:.2f}×")
    print("database checks (ratings = assignments × scales, none lost, none doubled, all completed, codes):")
    for problem in problems:
        print(f"  FAIL {problem}")
    for record in errors_5xx[:10]:
        print(f"  FAIL {record.status} {record.method} {record.path} ({record.error})")
    ok = not problems and not errors_5xx
    if ok:
        print("  ok: every confirmed rating stored exactly once, no 5xx")
    return ok


def main() -> int:
    args = parse_args()
    admin_url = os.environ.get("DATABASE_URL", "")
    database_url, database_name = throwaway_database_url()
    work = Path(tempfile.mkdtemp(prefix="syncmos-bench-load-"))
    (work / "media").mkdir()
    (work / "static").mkdir()
    os.environ.update(DJANGO_SETTINGS_MODULE="studyapp.settings", DEBUG="0", SECRET_KEY=SECRET_KEY,
                      DATABASE_URL=database_url, SYNCMOS_MEDIA_ROOT=str(work / "media"), CELERY_BROKER_URL="",
                      LOG_LEVEL="WARNING")
    server, ok = None, False
    try:
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)
        study = build_study(args, work)
        env = server_env(database_url, str(work / "media"), str(work / "static"), SECRET_KEY,
                         DATABASE_CONN_MAX_AGE=str(args.conn_max_age))
        server = GunicornServer(env, workers=args.workers, threads=args.threads, log_path=work / "gunicorn.log")
        started = time.monotonic()
        server.start()
        print(f"gunicorn up on {server.base_url} in {time.monotonic() - started:.1f} s; database {database_name}")
        # Every worker process imports its views before the measured run (a missing study: 404 pages).
        run_participants(server.base_url, "no-such-study", 4 * args.workers, RequestLog(), time_limit=30)

        log = RequestLog()
        cpu_before = server.cpu_seconds()
        started = time.monotonic()
        results = run_participants(server.base_url, study.public_id, args.participants, log,
                                   time_limit=args.time_limit, ramp_seconds=args.ramp, seed=1,
                                   max_participants=MAX_PARTICIPANTS, think_seconds=tuple(args.think),
                                   baseline_path="/healthz")
        wall = time.monotonic() - started
        server_cpu = server.cpu_seconds() - cpu_before
        server.stop()
        problems = check_ratings(study, results)
        ok = report(args, log, results, wall, server_cpu, problems)
        return 0 if ok else 1
    finally:
        if server is not None:
            server.stop()
        from django.db import connections

        connections.close_all()
        if args.keep_database:
            print(f"kept database {database_name}")
        else:
            drop_database(admin_url, database_name)
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept the server's log: {work / 'gunicorn.log'}")


if __name__ == "__main__":
    sys.exit(main())
