"""The chaos suite's command-line options: how hard and how long to shake the stack."""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Options:
    """How hard and how long to shake the stack."""

    scenarios: tuple[str, ...]
    callers: int
    server_kills: int
    postgres_kills: int
    sigterms: int
    worker_kills: int
    warmup: float
    fault_gap: float
    postgres_down: float
    period_seconds: int
    grace_seconds: float
    gateway_latency: float
    attempts: int
    race_fraction: float
    settle_seconds: float
    quiesce_seconds: float
    seed: int
    out: Path | None
    keep: bool
    self_test_only: bool


def parse_args(argv: Sequence[str] | None) -> Options:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="python bench/chaos.py",
        description="Kill servers, PostgreSQL and the worker under journaled load; check that "
        "no event was lost or doubled and the money adds up.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--scenarios", default="single,replicas", help="comma-separated: single, replicas"
    )
    parser.add_argument("--callers", type=int, default=6, help="concurrent callers")
    parser.add_argument("--server-kills", type=int, default=10, help="kill -9 of a server")
    parser.add_argument("--postgres-kills", type=int, default=5, help="kill -9 of PostgreSQL")
    parser.add_argument("--sigterms", type=int, default=1, help="SIGTERM of a server (graceful)")
    parser.add_argument(
        "--worker-kills", type=int, default=1, help="kill -9 of the worker while invoicing"
    )
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of load before faults")
    parser.add_argument(
        "--fault-gap", type=float, default=1.0, help="seconds between a recovery and the next fault"
    )
    parser.add_argument(
        "--postgres-down", type=float, default=2.0, help="seconds PostgreSQL stays dead"
    )
    parser.add_argument(
        "--period-seconds", type=int, default=30, help="billing period of every contract"
    )
    parser.add_argument(
        "--grace-seconds", type=float, default=5.0, help="late-event window before invoicing"
    )
    parser.add_argument(
        "--gateway-latency",
        type=float,
        default=1.0,
        help="seconds the simulated gateway takes per charge (keeps invoices in flight longer)",
    )
    parser.add_argument(
        "--attempts", type=int, default=6, help="attempts per call during the load (then later)"
    )
    parser.add_argument(
        "--race-fraction",
        type=float,
        default=0.3,
        help="replicas: share of calls whose first attempt goes to every replica at once",
    )
    parser.add_argument(
        "--settle-seconds", type=float, default=90.0, help="retrying unacknowledged events, at most"
    )
    parser.add_argument(
        "--quiesce-seconds",
        type=float,
        default=60.0,
        help="waiting for invoices, outbox and holds to settle before checking, at most",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument(
        "--out", type=Path, default=None, help="where journals and logs go (default: a temp dir)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the database and Temporal data after the run"
    )
    parser.add_argument(
        "--self-test",
        action="store_true",
        help="only check the checker: a short run without faults, then doctored copies",
    )
    args = parser.parse_args(argv)
    scenarios = tuple(s.strip() for s in args.scenarios.split(",") if s.strip())
    if not scenarios or set(scenarios) - {"single", "replicas"}:
        parser.error("--scenarios takes single and/or replicas")
    if args.callers < 1 or args.attempts < 1 or args.period_seconds < 10:
        parser.error("--callers ≥ 1, --attempts ≥ 1, --period-seconds ≥ 10")
    if args.self_test:
        scenarios = ("single",)
    return Options(
        scenarios=scenarios,
        callers=args.callers,
        server_kills=0 if args.self_test else args.server_kills,
        postgres_kills=0 if args.self_test else args.postgres_kills,
        sigterms=0 if args.self_test else args.sigterms,
        worker_kills=0 if args.self_test else args.worker_kills,
        warmup=args.warmup if not args.self_test else 8.0,
        fault_gap=args.fault_gap,
        postgres_down=args.postgres_down,
        period_seconds=args.period_seconds,
        grace_seconds=args.grace_seconds,
        gateway_latency=args.gateway_latency,
        attempts=args.attempts,
        race_fraction=args.race_fraction,
        settle_seconds=args.settle_seconds,
        quiesce_seconds=args.quiesce_seconds,
        seed=args.seed if args.seed is not None else random.randrange(1 << 30),
        out=args.out,
        keep=args.keep,
        self_test_only=args.self_test,
    )
