"""Uploads under chat load (issue 13): the durable-chat load of `python -m bench` (scenario 3: the same Node
load generator, clients and message), bounded in time, against ONE Parlor process, first alone and then
while 8 clients upload 4000x3000 JPEGs in a loop for the whole window. Prints one table: uploads/s, the
server's RSS peak (the process and its image workers apart), and the chat's acks/s and ack p50/p99 without
and with the uploads, with the ratio of the p99s (the issue's check 8: at most 2x). See bench/README.md.

    .venv/bin/python -m bench.uploads              # 500 chat clients, 25 s per phase
    .venv/bin/python -m bench.uploads --quick      # 100 clients, 8 s per phase: a smoke run
    .venv/bin/python -m bench.uploads --repeat 3   # three rounds (phase order alternating), median figures

A separate entry point rather than scenario 6 of `python -m bench`: that table compares Parlor with the two
relays, which have no uploads, and each of its scenarios starts a fresh server per target; here one
Parlor process runs both phases so the two figures differ by the uploads alone. The pieces are shared:
the database, ports and processes (bench/infra.py), how Parlor is started (bench/targets.py) and the load
generator run with its phase marks (bench/scenarios.py)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp

from bench.infra import Infra, Proc, cpu_seconds, raise_fd_limit, rss_kib
from bench.scenarios import FULL, QUICK, Runner, Sizes, log
from bench.targets import BenchUser, Parlor

WIDTH, HEIGHT = 4000, 3000
JPEG_QUALITY = 80  # with the noise below: about 4.6 MB
SAMPLE_SECONDS = 0.2
UPLOAD_TIMEOUT = 120.0  # seconds for one upload, whatever the load
DRAIN_SECONDS = 60.0  # uploads in flight when the window closes get this long to finish
MAX_UPLOADS_PER_CLIENT = 10_000  # a count bound beside the window's deadline
# Per client: far more than a window allows, so the window's deadline ends each phase.
MESSAGES_PER_CLIENT = 100_000
# Upload settings the bench sets itself (the rest of Parlor's environment: bench/targets.py); inherited
# values are dropped so that a developer's shell cannot change what is measured.
_UPLOAD_VARS = (
    "UPLOAD_RATE_PER_MINUTE",
    "UPLOAD_MAX_BYTES",
    "FREE_STORAGE_MB",
    "IMAGE_WORKERS",
    "IMAGE_MAX_SIDE",
    "IMAGE_MAX_PIXELS",
    "S3_BUCKET",
    "S3_ENDPOINT_URL",
    "S3_REGION",
    "S3_ACCESS_KEY_ID",
    "S3_SECRET_ACCESS_KEY",
)
PHASES = ("without", "with")


# --- the picture -----------------------------------------------------------------------------------


def make_jpeg(width: int = WIDTH, height: int = HEIGHT) -> bytes:
    """A photo-sized JPEG that compresses like a photo: three gradients (one per channel) under Gaussian
    noise (one channel's at half resolution), so the encoder has detail everywhere, unlike a flat colour
    that shrinks to a few KB and decodes in no time."""
    from PIL import Image, ImageChops

    vertical = Image.linear_gradient("L").resize((width, height))
    horizontal = Image.linear_gradient("L").transpose(Image.Transpose.ROTATE_90).resize((width, height))
    radial = Image.radial_gradient("L").resize((width, height))
    channels = []
    for gradient, scale in ((horizontal, 1), (vertical, 2), (radial, 1)):
        noise = Image.effect_noise((width // scale, height // scale), 40)
        if scale > 1:
            noise = noise.resize((width, height), Image.Resampling.BILINEAR)
        channels.append(ImageChops.add(gradient, noise, 1.0, -128))  # noise is centred on 128
    buffer = io.BytesIO()
    Image.merge("RGB", channels).save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def multipart_body(jpeg: bytes) -> tuple[bytes, str]:
    """The upload's body, built once: `category` before `file`, as the handler streams it."""
    boundary = f"parlorbench{uuid.uuid4().hex}"
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="category"\r\n\r\n'
        "chat_attachment\r\n"
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="photo.jpg"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return head + jpeg + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


# --- Parlor with uploads allowed -------------------------------------------------------------------


class UploadingParlor(Parlor):
    """Parlor as `python -m bench` starts it, plus: no upload rate limit to speak of, unlimited storage
    (the free plan's 100 MB would fill in seconds), the local blob store under the run's DATA_DIR."""

    def __init__(self, infra: Infra, *, image_workers: int, log_level: str) -> None:
        super().__init__(infra, log_level=log_level)
        self.image_workers = image_workers
        workers = f"IMAGE_WORKERS={image_workers}" if image_workers else "IMAGE_WORKERS default"
        self.label = f"Parlor (python -m server, persona deleted: no AI replies; {workers})"

    async def _spawn(self, name: str, env: dict[str, str]) -> Proc:
        for var in _UPLOAD_VARS:
            env.pop(var, None)
        # UPLOAD_RATE_PER_MINUTE has no "unlimited" (0 is refused); per IP the limit is four times this.
        env.update(UPLOAD_RATE_PER_MINUTE="1000000", FREE_STORAGE_MB="0")
        if self.image_workers:
            env["IMAGE_WORKERS"] = str(self.image_workers)
        return await super()._spawn(name, env)


# --- sampling the server and its image workers -----------------------------------------------------


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (the image pool's forkserver, its workers, multiprocessing's resource
    tracker), from /proc/<pid>/task/<tid>/children: any thread may have started one."""
    found: list[int] = []
    stack = [pid]
    while stack:
        parent = stack.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{parent}/task/{tid}/children") as f:
                    kids = [int(x) for x in f.read().split()]
            except OSError:
                continue
            found.extend(kids)
            stack.extend(kids)
    return found


@dataclass
class PhaseSample:
    server_peak_kib: int = 0
    children_peak_kib: int = 0
    children_peak_count: int = 0
    # pid -> (CPU seconds when first seen in this phase, latest CPU seconds)
    children_cpu: dict[int, tuple[float, float]] = field(default_factory=dict)
    started: float = 0.0
    ended: float = 0.0

    def children_cpu_pct(self) -> float:
        wall = (self.ended or time.monotonic()) - self.started
        used = sum(last - first for first, last in self.children_cpu.values())
        return 100.0 * used / wall if wall > 0 else 0.0


class Sampler:
    """RSS of the server process and (summed) of its descendants every SAMPLE_SECONDS, from
    /proc/<pid>/status (VmRSS), as peaks per phase; plus the descendants' CPU per phase."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.overall = PhaseSample(started=time.monotonic())
        self.current: PhaseSample | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def begin(self) -> PhaseSample:
        """A new phase: existing workers count from their CPU now, workers started later from zero."""
        phase = PhaseSample(started=time.monotonic())
        for pid in descendants(self.pid):
            with contextlib.suppress(OSError, RuntimeError):
                now = cpu_seconds(pid)
                phase.children_cpu[pid] = (now, now)
        self.current = phase
        return phase

    def end(self) -> None:
        self.sample()
        if self.current is not None:
            self.current.ended = time.monotonic()
            self.current = None

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_SECONDS)

    def sample(self) -> None:
        try:
            server = rss_kib(self.pid)
        except (OSError, RuntimeError):
            return  # the server is gone: the bench reports its exit
        children = 0
        count = 0
        cpu: dict[int, float] = {}
        for pid in descendants(self.pid):
            try:  # a worker may exit between the listing and the read (recycled after its tasks)
                children += rss_kib(pid)
                cpu[pid] = cpu_seconds(pid)
                count += 1
            except (OSError, RuntimeError):
                continue
        for phase in (self.overall, self.current):
            if phase is None:
                continue
            phase.server_peak_kib = max(phase.server_peak_kib, server)
            phase.children_peak_kib = max(phase.children_peak_kib, children)
            phase.children_peak_count = max(phase.children_peak_count, count)
            if phase is self.current:
                for pid, seconds in cpu.items():
                    first, _ = phase.children_cpu.get(pid, (0.0, 0.0))
                    phase.children_cpu[pid] = (first, seconds)


# --- the uploaders ---------------------------------------------------------------------------------


@dataclass
class UploadStats:
    window_start: float = 0.0
    window_end: float = 0.0
    statuses: Counter[str] = field(default_factory=Counter)
    done_in_window: int = 0  # 201s that finished inside the window
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def record(self, status: str, started: float, detail: str = "") -> None:
        finished = time.monotonic()
        self.statuses[status] += 1
        if status == "201":
            self.latencies_ms.append((finished - started) * 1000)
            if self.window_end == 0.0 or finished <= self.window_end:
                self.done_in_window += 1
        elif len(self.errors) < 5:
            self.errors.append(f"{status} {detail}"[:300])

    def summary(self) -> dict[str, Any]:
        window = self.window_end - self.window_start
        ordered = sorted(self.latencies_ms)
        return {
            "uploads": self.done_in_window,
            "uploads_per_s": self.done_in_window / window if window > 0 else 0.0,
            "uploads_201_total": self.statuses.get("201", 0),
            "non_201": sum(n for status, n in self.statuses.items() if status != "201"),
            "statuses": dict(self.statuses),
            "upload_p50_ms": _percentile(ordered, 50),
            "upload_p99_ms": _percentile(ordered, 99),
            "errors": self.errors,
            "window_seconds": window,
        }


class Uploaders:
    """`count` clients, each its own user with its own aiohttp session (opened once, closed by `close`),
    uploading the same JPEG in a loop until told to stop (or their count bound)."""

    def __init__(self, url: str, users: list[BenchUser], body: bytes, content_type: str) -> None:
        self.url = url + "/api/v1/files/upload"
        self.users = users
        self.body = body
        self.content_type = content_type
        self.stats = UploadStats()
        self._sessions: list[aiohttp.ClientSession] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._rusage0: resource.struct_rusage | None = None

    async def warm_up(self) -> None:
        """One upload per client before anything is measured: the image pool starts its workers on the
        first image, and that start-up is not what either phase measures."""
        self._sessions = [
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {user.token}"}) for user in self.users
        ]
        stats = UploadStats()
        await asyncio.gather(*(self._upload_once(http, stats) for http in self._sessions))
        if stats.statuses.get("201", 0) != len(self.users):
            raise RuntimeError(f"warm-up uploads failed: {dict(stats.statuses)} {stats.errors}")

    def start(self) -> None:
        self.stats = UploadStats(window_start=time.monotonic())
        self._stop.clear()
        self._rusage0 = resource.getrusage(resource.RUSAGE_SELF)
        self._tasks = [asyncio.create_task(self._loop(http)) for http in self._sessions]

    async def stop(self) -> dict[str, Any]:
        self.stats.window_end = time.monotonic()
        self._stop.set()
        own_cpu = 0.0
        if self._rusage0 is not None:
            now = resource.getrusage(resource.RUSAGE_SELF)
            used = (now.ru_utime - self._rusage0.ru_utime) + (now.ru_stime - self._rusage0.ru_stime)
            window = self.stats.window_end - self.stats.window_start
            own_cpu = 100.0 * used / window if window > 0 else 0.0
        # Uploads in flight finish (they count in the totals, not in uploads/s); past the drain, cancelled.
        pending: set[asyncio.Task[None]] = set()
        if self._tasks:
            _done, pending = await asyncio.wait(self._tasks, timeout=DRAIN_SECONDS)
        for task in pending:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        summary = self.stats.summary()
        summary["in_flight_cancelled"] = len(pending)
        # The orchestrator's own CPU: the uploaders plus the sampling and the load generator's pipe.
        summary["orchestrator_cpu_pct"] = own_cpu
        return summary

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for http in self._sessions:
            await http.close()
        self._sessions = []

    async def _loop(self, http: aiohttp.ClientSession) -> None:
        for _ in range(MAX_UPLOADS_PER_CLIENT):
            if self._stop.is_set():
                return
            await self._upload_once(http, self.stats)

    async def _upload_once(self, http: aiohttp.ClientSession, stats: UploadStats) -> None:
        started = time.monotonic()
        try:
            async with http.post(
                self.url,
                data=self.body,
                headers={"Content-Type": self.content_type},
                timeout=aiohttp.ClientTimeout(total=UPLOAD_TIMEOUT),
            ) as resp:
                text = await resp.text()
                stats.record(str(resp.status), started, text)
        except (aiohttp.ClientError, TimeoutError) as err:
            stats.record(type(err).__name__, started, str(err))


# --- the run ---------------------------------------------------------------------------------------


class PhaseRunner(Runner):
    """The bench's runner (scenario 3's load generator run, with its phase marks), and at the marks: the
    sampler's phase, the load average and, in the phase with uploads, the uploaders, started at "start"
    and stopped at "end", so every figure covers the chat's measured window and nothing else."""

    def __init__(self, infra: Infra, target: Parlor, sizes: Sizes, sampler: Sampler) -> None:
        super().__init__(infra, [target], sizes)
        self.sampler = sampler
        self.uploaders: Uploaders | None = None
        self.window: dict[str, Any] = {}
        self.profile_to: Path | None = None
        self._spy: subprocess.Popen[bytes] | None = None

    async def _sample(self, name: str, pids: list[int]) -> dict[str, Any]:
        sample = await super()._sample(name, pids)
        if name == "start":
            if self.profile_to is not None:
                self._spy = _profiler(self.sampler.pid, self.profile_to)
            self.window["load_before"] = os.getloadavg()
            self.window["phase"] = self.sampler.begin()
            if self.uploaders is not None:
                self.uploaders.start()
        elif name == "end":
            self.sampler.end()
            self.window["load_after"] = os.getloadavg()
            if self.uploaders is not None:
                self.window["uploads"] = await self.uploaders.stop()
            await self._stop_profiler()
        return sample

    async def _stop_profiler(self) -> None:
        if self._spy is not None:
            self._spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            await asyncio.to_thread(self._spy.wait, 30)
            self._spy = None

    async def phase(
        self, server: Proc, chat_users: list[BenchUser], uploaders: Uploaders | None, *, tag: str
    ) -> dict[str, Any]:
        """One run of the chat load (with or without the uploads) and its figures."""
        acked_path = self.infra.workdir / f"acked-{tag}.json"
        self.uploaders = uploaders
        self.window = {}
        try:
            result = await self._loadgen("durable", [server], chat_users, acked_path)
        finally:
            self.uploaders = None
            if uploaders is not None and "uploads" not in self.window:
                await uploaders.stop()  # the load generator failed inside the window
            await self._stop_profiler()
        result["durable_check"] = await self._check_durable(acked_path)
        acked_path.unlink(missing_ok=True)
        window: PhaseSample = self.window["phase"]
        result.update(
            server_rss_peak_kib=window.server_peak_kib,
            workers_rss_peak_kib=window.children_peak_kib,
            workers_count_peak=window.children_peak_count,
            workers_cpu_pct=window.children_cpu_pct(),
            load_before=self.window["load_before"],
            load_after=self.window["load_after"],
        )
        if "uploads" in self.window:
            result["uploads"] = self.window["uploads"]
        return result


def _profiler(pid: int, out: Path) -> subprocess.Popen[bytes]:
    out.parent.mkdir(parents=True, exist_ok=True)
    exe = Path(sys.executable).parent / "py-spy"
    argv = [str(exe) if exe.exists() else "py-spy", "record", "--pid", str(pid), "--rate", "250"]
    return subprocess.Popen([*argv, "--format", "raw", "--nonblocking", "-o", str(out)], stdout=subprocess.DEVNULL)


async def run(args: argparse.Namespace) -> int:
    raise_fd_limit()
    base = QUICK if args.quick else FULL
    sizes: Sizes = replace(
        base,
        durable_clients=args.clients or base.durable_clients,
        durable_messages_per_client=MESSAGES_PER_CLIENT,
        durable_seconds=args.seconds or (8.0 if args.quick else 25.0),
    )
    if shutil.which("node") is None:
        raise SystemExit("node (20+) is needed for the load generator")
    workdir = Path(tempfile.mkdtemp(prefix="parlor-bench-uploads-"))
    infra = Infra(workdir, embedded=args.embedded)
    started = time.monotonic()
    rounds: list[dict[str, dict[str, Any]]] = []
    jpeg_bytes = 0
    sampler: Sampler | None = None
    uploaders: Uploaders | None = None
    target = UploadingParlor(infra, image_workers=args.image_workers, log_level=args.log_level)
    try:
        log(f"workdir {workdir}; generating a {WIDTH}x{HEIGHT} JPEG")
        jpeg = await asyncio.to_thread(make_jpeg)
        jpeg_bytes = len(jpeg)
        body, content_type = multipart_body(jpeg)
        await infra.start_database()
        procs = await target.start(1)
        server = procs[0]
        log(f"Parlor on {server.url}; {sizes.durable_clients} chat users + {args.uploaders} uploaders")
        users = await target.users(sizes.durable_clients + args.uploaders, server.url)
        chat_users, upload_users = users[: sizes.durable_clients], users[sizes.durable_clients :]
        sampler = Sampler(server.pid)
        sampler.start()
        runner = PhaseRunner(infra, target, sizes, sampler)
        uploaders = Uploaders(server.url, upload_users, body, content_type)
        await uploaders.warm_up()
        for round_ in range(args.repeat):
            # Alternating order: whatever drifts over a run (table sizes, the machine) hits both phases.
            order = PHASES if round_ % 2 == 0 else PHASES[::-1]
            results: dict[str, dict[str, Any]] = {}
            for phase in order:
                log(f"round {round_ + 1}/{args.repeat}: chat {phase} uploads")
                tag = f"{round_ + 1}-{phase}"
                if args.profile is not None:
                    runner.profile_to = args.profile / f"uploads-{tag}.folded"
                results[phase] = await runner.phase(server, chat_users, uploaders if phase == "with" else None, tag=tag)
                log(f"  {json.dumps(_brief(results[phase]))}")
            rounds.append(results)
    finally:
        if uploaders is not None:
            await uploaders.close()
        if sampler is not None:
            await sampler.stop()
        await infra.close()
        if args.keep_workdir:
            log(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - started
    figures = median_figures(rounds)
    print(headline(args, sizes, target, infra, jpeg_bytes, elapsed, sampler))
    print()
    print(table(figures, rounds))
    if args.json:
        args.json.write_text(json.dumps({"sizes": asdict(sizes), "rounds": rounds, "figures": figures}, indent=2))
    # Non-zero when check 8 is not met or anything failed (a chat send, an upload), for scripts and CI.
    failed = any(
        r[phase].get("errors") or (r[phase].get("uploads") or {}).get("non_201") for r in rounds for phase in PHASES
    )
    return 0 if figures.get("check_met") and not failed else 1


# --- the figures and the table ---------------------------------------------------------------------


def _percentile(ordered: list[float], p: float) -> float | None:
    if not ordered:
        return None
    index = min(len(ordered) - 1, max(0, -(-len(ordered) * p // 100) - 1))
    return ordered[int(index)]


def _phase_figures(result: dict[str, Any]) -> dict[str, Any]:
    latency = result.get("latency") or {}
    check = result.get("durable_check") or {}
    uploads = result.get("uploads") or {}
    return {
        "acks_per_s": result.get("acks_per_s"),
        "p50_ms": latency.get("p50_ms"),
        "p99_ms": latency.get("p99_ms"),
        "errors": result.get("errors"),
        "acked_in_postgres": f"{check.get('in_postgres', 0):,}/{check.get('acked', 0):,}",
        "uploads_per_s": uploads.get("uploads_per_s"),
        "uploads": uploads.get("uploads"),
        "uploads_201_total": uploads.get("uploads_201_total"),
        "non_201": uploads.get("non_201"),
        "upload_p50_ms": uploads.get("upload_p50_ms"),
        "upload_p99_ms": uploads.get("upload_p99_ms"),
        "server_rss_peak_mib": result["server_rss_peak_kib"] / 1024,
        "workers_rss_peak_mib": result["workers_rss_peak_kib"] / 1024,
        "workers_count_peak": result["workers_count_peak"],
        "cpu_loadgen": result.get("loadgen_cpu_pct"),
        "cpu_server": result.get("server_cpu_pct"),
        "cpu_workers": result["workers_cpu_pct"],
        "cpu_uploaders": uploads.get("orchestrator_cpu_pct"),
        "load": f"{result['load_before'][0]:.2f} → {result['load_after'][0]:.2f}",
    }


def _round_ratio(round_: dict[str, dict[str, Any]]) -> float | None:
    without = (round_["without"].get("latency") or {}).get("p99_ms")
    with_ = (round_["with"].get("latency") or {}).get("p99_ms")
    return with_ / without if without and with_ is not None else None


def median_figures(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """The figures of the round whose p99 ratio (with / without uploads) is the median; of an even count,
    the higher of the two middle ones (the less flattering). A round's two phases run back to back on the
    same server, so its ratio is the fair one; pairing phases of different rounds would add the
    machine's drift between them."""
    ratios = [_round_ratio(r) for r in rounds]
    # A round without a ratio (a phase failed) sorts last, as the worst.
    ranked = [r if r is not None else float("inf") for r in ratios]
    chosen = sorted(range(len(rounds)), key=ranked.__getitem__)[len(rounds) // 2]
    ratio = ratios[chosen]
    out: dict[str, Any] = {phase: _phase_figures(rounds[chosen][phase]) for phase in PHASES}
    out["round"] = chosen + 1
    out["p99_ratio"] = ratio
    out["round_ratios"] = ratios
    out["check_met"] = ratio is not None and ratio <= 2.0
    return out


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def table(figures: dict[str, Any], rounds: list[dict[str, dict[str, Any]]]) -> str:
    a, b = figures["without"], figures["with"]

    def ratio(key: str) -> str:
        x, y = a.get(key), b.get(key)
        return _fmt(y / x, 2) if isinstance(x, (int, float)) and isinstance(y, (int, float)) and x else ""

    ratio_99 = figures["p99_ratio"]
    verdict = "-" if ratio_99 is None else ("met" if figures["check_met"] else "NOT met")
    rows = [
        ("chat acks/s (msgs/s)", _fmt(a["acks_per_s"], 0), _fmt(b["acks_per_s"], 0), ratio("acks_per_s"), ""),
        ("chat p50 ack ms", _fmt(a["p50_ms"]), _fmt(b["p50_ms"]), ratio("p50_ms"), ""),
        ("chat p99 ack ms", _fmt(a["p99_ms"]), _fmt(b["p99_ms"]), _fmt(ratio_99, 2), f"≤2x (check 8): {verdict}"),
        ("chat errors", _fmt(a["errors"], 0), _fmt(b["errors"], 0), "", "0"),
        ("acked msgs in PostgreSQL", a["acked_in_postgres"], b["acked_in_postgres"], "", "all"),
        ("uploads/s (201 in window)", "", _fmt(b["uploads_per_s"], 2), "", ""),
        ("uploads: 201 in window / total", "", f"{_fmt(b['uploads'], 0)} / {_fmt(b['uploads_201_total'], 0)}", "", ""),
        ("uploads: non-201", "", _fmt(b["non_201"], 0), "", "0"),
        ("upload p50 / p99 ms", "", f"{_fmt(b['upload_p50_ms'], 0)} / {_fmt(b['upload_p99_ms'], 0)}", "", ""),
        ("server RSS peak MiB", _fmt(a["server_rss_peak_mib"]), _fmt(b["server_rss_peak_mib"]), "", ""),
        (
            "image workers RSS peak MiB (procs)",
            f"{_fmt(a['workers_rss_peak_mib'])} ({a['workers_count_peak']})",
            f"{_fmt(b['workers_rss_peak_mib'])} ({b['workers_count_peak']})",
            "",
            "",
        ),
        (
            "CPU % loadgen / server / workers / uploaders",
            f"{_fmt(a['cpu_loadgen'], 0)} / {_fmt(a['cpu_server'], 0)} / {_fmt(a['cpu_workers'], 0)} / -",
            f"{_fmt(b['cpu_loadgen'], 0)} / {_fmt(b['cpu_server'], 0)} / {_fmt(b['cpu_workers'], 0)} / "
            f"{_fmt(b['cpu_uploaders'], 0)}",
            "",
            "",
        ),
        ("load average (1 min) before → after", a["load"], b["load"], "", ""),
    ]
    header = ("figure", "without uploads", "with uploads", "with/without", "aim")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["| " + " | ".join(str(h).ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    lines.append(
        "|" + "|".join(("-" * (w + 2)) if i == 0 else ("-" * (w + 1) + ":") for i, w in enumerate(widths)) + "|"
    )
    for r in rows:
        cells = [str(r[0]).ljust(widths[0])] + [str(c).rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    if len(rounds) > 1:
        per = ", ".join(
            f"{_fmt(r['without']['latency']['p99_ms'])} → {_fmt(r['with']['latency']['p99_ms'])}" for r in rounds
        )
        lines.append("")
        lines.append(
            f"Figures of round {figures['round']}, the median by p99 ratio. p99 ms per round (without → with): "
            f"{per}; ratios {', '.join(_fmt(x, 2) for x in figures['round_ratios'])}."
        )
    errors = [e for r in rounds for e in (r["with"].get("uploads") or {}).get("errors", [])]
    if errors:
        lines.append("")
        lines.append("Upload errors (first few): " + "; ".join(errors[:3]))
    return "\n".join(lines)


def headline(
    args: argparse.Namespace,
    sizes: Sizes,
    target: UploadingParlor,
    infra: Infra,
    jpeg_bytes: int,
    elapsed: float,
    sampler: Sampler | None,
) -> str:
    cores = os.cpu_count() or 0
    affinity = len(os.sched_getaffinity(0))
    load = os.getloadavg()
    workers = args.image_workers or min(4, cores or 1)
    return (
        f"Uploads under chat load, {time.strftime('%Y-%m-%d %H:%M %Z')}, {elapsed:.0f} s. "
        f"Machine: nproc {affinity} ({cores} cores), load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
        f"at the end; {infra.postgres_kind}. {target.label}: one process, {workers} image workers. "
        f"Chat: scenario 3's load, {sizes.durable_clients} clients (one user, one socket and one session each; "
        f"send, wait for the ack, send the next), {sizes.durable_seconds:g} s per phase. Uploads: "
        f"{args.uploaders} clients (a user each) posting a {WIDTH}x{HEIGHT} JPEG of {jpeg_bytes / 1e6:.1f} MB "
        f"(chat_attachment) in a loop through the whole window. "
        + (f"{args.repeat} rounds, phase order alternating." if args.repeat > 1 else "One round.")
        + (
            f" Peak RSS over the whole run: server {sampler.overall.server_peak_kib / 1024:.0f} MiB, "
            f"workers {sampler.overall.children_peak_kib / 1024:.0f} MiB."
            if sampler is not None
            else ""
        )
    )


def _brief(result: dict[str, Any]) -> dict[str, Any]:
    figures = _phase_figures(result)
    keep = (
        "acks_per_s",
        "p50_ms",
        "p99_ms",
        "errors",
        "uploads_per_s",
        "non_201",
        "server_rss_peak_mib",
        "workers_rss_peak_mib",
        "cpu_server",
        "cpu_workers",
        "load",
    )
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in figures.items() if k in keep}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.uploads", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="100 chat clients, 8 s per phase: a smoke run")
    p.add_argument("--clients", type=int, help="chat clients (default 500, quick 100)")
    p.add_argument("--seconds", type=float, help="seconds per phase (default 25, quick 8)")
    p.add_argument("--uploaders", type=int, default=8, help="upload clients, each its own user (default 8)")
    p.add_argument("--image-workers", type=int, default=0, help="IMAGE_WORKERS (default: Parlor's, one per CPU)")
    p.add_argument("--repeat", type=int, default=1, help="rounds of both phases, order alternating (default 1)")
    p.add_argument("--json", type=Path, help="also write every figure as JSON to this file")
    p.add_argument("--embedded", action="store_true", help="use pgserver even if 5432 answers")
    p.add_argument("--log-level", default="INFO", help="Parlor's LOG_LEVEL during the bench (default INFO)")
    p.add_argument("--profile", type=Path, help="diagnosis only: py-spy the server in each phase into this folder")
    p.add_argument("--keep-workdir", action="store_true", help="keep the server's and load generator's logs")
    args = p.parse_args(argv)
    args.repeat = max(1, args.repeat)
    if not 1 <= args.uploaders <= 64:
        p.error("--uploaders: 1 to 64")
    return args


def main() -> None:
    sys.exit(asyncio.run(run(parse_args())))


if __name__ == "__main__":
    main()
