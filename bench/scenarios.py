"""The five scenarios of issue 6, each run against every target with the same Node load generator
(bench/loadgen/loadgen.mjs). The orchestrator samples the servers' RSS and CPU from /proc when the load
generator marks a phase, so setup (connecting, joining) never counts in a throughput or CPU figure."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bench.infra import CpuSample, Infra, Proc, rss_kib
from bench.targets import LOADGEN, Parlor, Target, ensure_npm

# Every message in every scenario and every target: the same 160-character content.
CONTENT = (
    "Tell me about the lighthouse keeper's daughter and the storm of 1893, in the voice you used yesterday. " * 2
)[:160]
LOADGEN_TIMEOUT = 300.0  # seconds; any single load-generator run is killed after this


@dataclass(frozen=True)
class Sizes:
    idle_sockets: int
    idle_users: int
    fanout_receivers: int
    fanout_messages: int
    fanout_seconds: float
    fanout_window_deliveries: int
    durable_clients: int
    durable_messages_per_client: int
    durable_seconds: float
    storm_users: int
    storm_readers_per_user: int
    storm_messages_while_away: int
    storm_messages_during: int
    storm_seconds: float
    connect_concurrency: int = 100

    @property
    def users(self) -> int:
        return max(self.idle_users, self.durable_clients, self.storm_users)


FULL = Sizes(
    idle_sockets=10_000,
    idle_users=20,
    fanout_receivers=1000,
    fanout_messages=200,
    fanout_seconds=20,
    fanout_window_deliveries=4000,
    durable_clients=500,
    durable_messages_per_client=100,
    durable_seconds=15,
    storm_users=500,
    storm_readers_per_user=4,
    storm_messages_while_away=4,
    storm_messages_during=2,
    storm_seconds=60,
)
QUICK = Sizes(
    idle_sockets=1000,
    idle_users=10,
    fanout_receivers=200,
    fanout_messages=300,
    fanout_seconds=8,
    fanout_window_deliveries=4000,
    durable_clients=100,
    durable_messages_per_client=30,
    durable_seconds=5,
    storm_users=100,
    storm_readers_per_user=4,
    storm_messages_while_away=2,
    storm_messages_during=1,
    storm_seconds=30,
)

# scenario key -> (loadgen scenario, nodes)
RUNS = {
    "idle": ("idle", 1),
    "fanout": ("fanout", 1),
    "durable": ("durable", 1),
    "storm": ("storm", 1),
    "fanout2": ("fanout", 2),
    "durable2": ("durable", 2),
}


# The figure that picks the median round of each scenario.
PRIMARY = {
    "idle": "kib_per_socket",
    "fanout": "deliveries_per_s",
    "durable": "acks_per_s",
    "storm": "seconds_until_half_current",
}


def median_round(scenario: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    """The round whose primary figure is the median (a failed round counts as the worst; of an even
    count, the less flattering middle one); every round's figure is kept in `rounds`."""
    if len(results) == 1:
        return results[0]
    field = PRIMARY[scenario]
    worst = float("inf") if scenario in ("idle", "storm") else float("-inf")

    def figure(result: dict[str, Any]) -> float:
        value = result.get(field)
        return float(value) if value is not None and "error" not in result else worst

    ordered = sorted(results, key=figure)
    middle = len(ordered) // 2
    if len(ordered) % 2 == 0 and worst < 0:
        middle -= 1  # even count: the less flattering of the two middle rounds
    chosen = dict(ordered[middle])
    chosen["rounds"] = [result.get(field) for result in results]
    chosen["rounds_field"] = field
    return chosen


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Runner:
    def __init__(
        self,
        infra: Infra,
        targets: list[Target],
        sizes: Sizes,
        *,
        client: str = "lite",
        profile: Path | None = None,
        repeat: int = 1,
    ) -> None:
        self.infra = infra
        self.client = client
        self.profile = profile
        self.targets = targets
        self.sizes = sizes
        self.results: dict[str, dict[str, dict[str, Any]]] = {}
        self.repeat = repeat
        self._n = 0
        ensure_npm(LOADGEN)

    def params(self, scenario: str) -> dict[str, Any]:
        s = self.sizes
        common = {"connect_concurrency": s.connect_concurrency}
        if scenario == "idle":
            return {**common, "sockets": s.idle_sockets, "warmup": min(200, s.idle_sockets // 10)}
        if scenario == "fanout":
            return {
                **common,
                "receivers": s.fanout_receivers,
                "messages": s.fanout_messages,
                "seconds": s.fanout_seconds,
                # Messages in flight: about 4,000 deliveries queued, whatever the room size.
                "window": max(2, round(s.fanout_window_deliveries / s.fanout_receivers)),
                "warmup_messages": 5,
                "drain_ms": 30_000,
            }
        if scenario == "durable":
            return {
                **common,
                "clients": s.durable_clients,
                "messages_per_client": s.durable_messages_per_client,
                "seconds": s.durable_seconds,
            }
        if scenario == "storm":
            return {
                **common,
                "users": s.storm_users,
                "readers_per_user": s.storm_readers_per_user,
                "messages_while_away": s.storm_messages_while_away,
                "messages_during_storm": s.storm_messages_during,
                "seconds": s.storm_seconds,
            }
        raise ValueError(scenario)

    def user_count(self, scenario: str) -> int:
        s = self.sizes
        return {"idle": s.idle_users, "fanout": 1, "durable": s.durable_clients, "storm": s.storm_users}[scenario]

    async def run(self, key: str) -> None:
        """Each round runs every target once, in turn, so a slow spell of this shared machine hits them
        alike; each target's figure is its median round (all rounds are kept in `rounds`)."""
        scenario, nodes = RUNS[key]
        rounds: dict[str, list[dict[str, Any]]] = {t.name: [] for t in self.targets}
        for round_ in range(self.repeat):
            for target in self.targets:
                of = f" round {round_ + 1}/{self.repeat}" if self.repeat > 1 else ""
                log(f"{key}: {target.name} ({nodes} process{'es' if nodes > 1 else ''}){of}")
                started = time.monotonic()
                try:
                    result = await self._run_one(target, scenario, nodes)
                except Exception as err:  # noqa: BLE001 - one failed cell must not lose the whole table
                    traceback.print_exc()
                    result = {"error": f"{type(err).__name__}: {err}"[:300]}
                result["wall_seconds"] = time.monotonic() - started
                rounds[target.name].append(result)
                log(f"{key}: {target.name}: {json.dumps(_brief(result))}")
        for name, results in rounds.items():
            self.results.setdefault(key, {})[name] = median_round(scenario, results)

    async def _run_one(self, target: Target, scenario: str, nodes: int) -> dict[str, Any]:
        procs = await target.start(nodes, redis=nodes > 1)
        spies: list[Any] = []
        try:
            users = await target.users(max(self.user_count(scenario), 1), procs[0].url)
            # After set-up (registrations, personas, sessions): the profile shows the scenario itself.
            spies = self._start_profilers(target, procs, scenario, nodes)
            acked_path = None
            if scenario == "durable" and isinstance(target, Parlor):
                self._n += 1
                acked_path = self.infra.workdir / f"acked-{self._n}.json"
            result = await self._loadgen(scenario, procs, users, acked_path)
            if acked_path is not None:
                result["durable_check"] = await self._check_durable(acked_path)
            return result
        finally:
            for spy in spies:
                spy.send_signal(signal.SIGINT)
            for spy in spies:
                await asyncio.to_thread(spy.wait, 30)
            await self.infra.stop(procs)

    def _start_profilers(self, target: Target, procs: list[Proc], scenario: str, nodes: int) -> list[Any]:
        """--profile: py-spy samples each Python server process (folded stacks, for flame graphs)."""
        if self.profile is None or target.name == "node-relay":
            return []
        self.profile.mkdir(parents=True, exist_ok=True)
        spies = []
        for i, proc in enumerate(procs):
            out = self.profile / f"{scenario}{nodes if nodes > 1 else ''}-{target.name}-{i}.folded"
            argv = ["py-spy", "record", "--pid", str(proc.pid), "--rate", "250", "--format", "raw"]
            spies.append(_spawn_quiet([*argv, "--nonblocking", "-o", str(out)]))
        return spies

    async def _loadgen(self, scenario: str, procs: list[Proc], users: list[Any], acked_path: Path | None) -> dict:
        self._n += 1
        config = {
            "scenario": scenario,
            "client": self.client,
            "urls": [p.url for p in procs],
            "users": [u.as_json() for u in users],
            "params": self.params(scenario),
            "content": CONTENT,
            "acked_path": str(acked_path) if acked_path else None,
        }
        path = self.infra.workdir / f"loadgen-{self._n}.json"
        path.write_text(json.dumps(config))
        stderr_path = self.infra.workdir / f"loadgen-{self._n}.log"
        pids = [p.pid for p in procs]
        marks: dict[str, Any] = {}
        result: dict[str, Any] | None = None
        with stderr_path.open("wb") as stderr:
            proc = await asyncio.create_subprocess_exec(
                "node",
                "--max-old-space-size=4096",
                str(LOADGEN / "loadgen.mjs"),
                str(path),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                limit=64 * 1024 * 1024,
            )
            assert proc.stdin and proc.stdout
            try:
                async with asyncio.timeout(LOADGEN_TIMEOUT):
                    while line := await proc.stdout.readline():
                        msg = json.loads(line)
                        if msg["type"] == "mark":
                            marks[msg["name"]] = await self._sample(msg["name"], pids)
                            proc.stdin.write(b"ok\n")
                            await proc.stdin.drain()
                        elif msg["type"] == "result":
                            result = msg["data"]
                        elif msg["type"] == "error":
                            raise RuntimeError(f"load generator: {msg['message']}")
                    await proc.wait()
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        if result is None:
            tail = stderr_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"load generator gave no result (exit {proc.returncode}): {tail}")
        if "baseline" in marks and "loaded" in marks:
            base, loaded = marks["baseline"]["rss_kib"], marks["loaded"]["rss_kib"]
            result["rss_baseline_kib"] = base
            result["rss_loaded_kib"] = loaded
            result["kib_per_socket"] = (loaded - base) / max(result["connected"], 1)
        if "start" in marks and "end" in marks:
            result["server_cpu_pct"] = marks["end"]["cpu"].percent_since(marks["start"]["cpu"])
        return result

    async def _sample(self, name: str, pids: list[int]) -> dict[str, Any]:
        if name in ("baseline", "loaded"):
            # Let the server finish handshakes, logging and buffers before reading its RSS.
            await asyncio.sleep(3.0)
            return {"rss_kib": sum(rss_kib(pid) for pid in pids)}
        return {"cpu": CpuSample.take(pids)}

    async def _check_durable(self, acked_path: Path) -> dict[str, Any]:
        """Every acked message must be in PostgreSQL with the seq its ack carried."""
        acked = json.loads(await asyncio.to_thread(acked_path.read_text))
        assert self.infra.database_url
        conn = await asyncpg.connect(self.infra.database_url)
        try:
            rows = await conn.fetch(
                "SELECT session_id::text, client_id::text, seq FROM messages WHERE client_id = ANY($1::uuid[])",
                [cid for _, cid, _ in acked],
            )
        finally:
            await conn.close()
        stored = {(r["session_id"], r["client_id"]): r["seq"] for r in rows}
        found = sum(1 for sid, cid, seq in acked if stored.get((sid, cid)) == seq)
        return {"acked": len(acked), "in_postgres": found}


def _spawn_quiet(argv: list[str]) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).parent / argv[0]
    return subprocess.Popen([str(exe) if exe.exists() else argv[0], *argv[1:]], stdout=subprocess.DEVNULL)


def _brief(result: dict[str, Any]) -> dict[str, Any]:
    keep = (
        "error",
        "kib_per_socket",
        "connects_per_s",
        "deliveries_per_s",
        "acks_per_s",
        "latency",
        "seconds_until_all_current",
        "messages_lost",
        "errors",
        "missing_deliveries",
        "durable_check",
        "loadgen_cpu_pct",
        "server_cpu_pct",
        "wall_seconds",
    )
    out = {k: result[k] for k in keep if k in result}
    for k, v in out.items():
        if isinstance(v, float):
            out[k] = round(v, 2)
        elif isinstance(v, dict):
            out[k] = {kk: round(vv, 2) if isinstance(vv, float) else vv for kk, vv in v.items()}
    return out


def sizes_dict(sizes: Sizes) -> dict[str, Any]:
    return asdict(sizes)
