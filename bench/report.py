"""The one table the bench prints: Parlor's figure, each comparator's, the ratios and the issue's aims."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Results = dict[str, dict[str, dict[str, Any]]]
Getter = Callable[[dict[str, Any]], float | None]

TARGETS = ("parlor", "py-relay", "node-relay")
HEADLINE = {
    "idle": "kib_per_socket",
    "fanout": "deliveries_per_s",
    "durable": "acks_per_s",
    "storm": "seconds_until_all_current",
    "fanout2": "deliveries_per_s",
    "durable2": "acks_per_s",
}


def _get(*path: str) -> Getter:
    def getter(result: dict[str, Any]) -> float | None:
        value: Any = result
        for key in path:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return value if isinstance(value, (int, float)) else None

    return getter


def _fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


class Table:
    def __init__(self, results: Results, targets: list[str], sizes: Any) -> None:
        self.results = results
        self.targets = targets
        self.sizes = sizes
        self.rows: list[list[str]] = []
        self.notes: list[str] = []

    def cell(self, key: str, target: str) -> dict[str, Any] | None:
        return self.results.get(key, {}).get(target)

    def value(self, key: str, target: str, getter: Getter) -> float | None:
        result = self.cell(key, target)
        return getter(result) if result and "error" not in result else None

    def add(self, scenario: str, figure: str, key: str, getter: Getter, digits: int, aim: str = "") -> None:
        if key not in self.results:
            return
        values = {t: self.value(key, t, getter) for t in TARGETS}
        cells = []
        for t in TARGETS:
            result = self.cell(key, t)
            if t not in self.targets:
                cells.append("")
            elif result is not None and "error" in result:
                cells.append("ERR")
            else:
                cells.append(_fmt(values[t], digits))
        r_py = _ratio(values["parlor"], values["py-relay"])
        r_node = _ratio(values["parlor"], values["node-relay"])
        self.rows.append([scenario, figure, *cells, _fmt(r_py, 2), _fmt(r_node, 2), aim])

    def add_text(self, scenario: str, figure: str, cells: list[str], aim: str = "") -> None:
        self.rows.append([scenario, figure, *cells, "", "", aim])

    def cpu_row(self, key: str) -> None:
        if key not in self.results:
            return
        cells = []
        for t in TARGETS:
            lg = self.value(key, t, _get("loadgen_cpu_pct"))
            sv = self.value(key, t, _get("server_cpu_pct"))
            cells.append("" if lg is None and sv is None else f"{_fmt(lg, 0)} / {_fmt(sv, 0)}")
        self.add_text("", "CPU % loadgen / server", cells)

    def render(self) -> str:
        header = ["#", "figure", "Parlor", "py relay", "Node relay", "Parlor/py", "Parlor/node", "aim"]
        widths = [max(len(str(r[i])) for r in [header, *self.rows]) for i in range(len(header))]
        right = {2, 3, 4, 5, 6}

        def line(row: list[str]) -> str:
            out = []
            for i, c in enumerate(row):
                out.append(str(c).rjust(widths[i]) if i in right else str(c).ljust(widths[i]))
            return "| " + " | ".join(out) + " |"

        sep = "|" + "|".join(("-" * (w + 1) + ":") if i in right else "-" * (w + 2) for i, w in enumerate(widths)) + "|"
        lines = [line(header), sep, *(line(r) for r in self.rows)]
        if self.notes:
            lines.append("")
            lines.extend(f"- {n}" for n in self.notes)
        return "\n".join(lines)


def _aim_throughput(t: Table, key: str, getter: Getter) -> str:
    parlor, py, node = (t.value(key, x, getter) for x in TARGETS)
    r_py, r_node = _ratio(parlor, py), _ratio(parlor, node)
    if r_py is None or r_node is None:
        return "≥0.9 py, ≥0.5 node"
    met = r_py >= 0.9 and r_node >= 0.5
    return f"≥0.9 py, ≥0.5 node: {'met' if met else 'NOT met'}"


def build(results: Results, targets: list[str], sizes: Any) -> str:
    t = Table(results, targets, sizes)
    for scenario in (_idle, _fanout, _durable, _storm, _two_processes):
        scenario(t)
    _notes(t)
    return t.render()


def _idle(t: Table) -> None:
    if "idle" not in t.results:
        return
    g = _get("kib_per_socket")
    parlor, py = t.value("idle", "parlor", g), t.value("idle", "py-relay", g)
    r = _ratio(parlor, py)
    aim = "≤1.5x py" + ("" if r is None else (": met" if r <= 1.5 else ": NOT met"))
    t.add(f"1 idle, {t.sizes.idle_sockets:,} sockets", "KiB RSS per socket", "idle", g, 1, aim)
    t.add("", "connects/s (auth'd)", "idle", _get("connects_per_s"), 0)
    t.cpu_row("idle")


def _fanout(t: Table) -> None:
    if "fanout" not in t.results:
        return
    g = _get("deliveries_per_s")
    t.add(
        f"2 fan-out, room of {t.sizes.fanout_receivers:,}",
        "deliveries/s",
        "fanout",
        g,
        0,
        _aim_throughput(t, "fanout", g),
    )
    t.add("", "p50 latency ms", "fanout", _get("latency", "p50_ms"), 1)
    t.add("", "p99 latency ms", "fanout", _get("latency", "p99_ms"), 1)
    t.cpu_row("fanout")


def _durable(t: Table) -> None:
    if "durable" not in t.results:
        return
    g = _get("acks_per_s")
    t.add(
        f"3 durable, {t.sizes.durable_clients:,} clients", "acks/s", "durable", g, 0, _aim_throughput(t, "durable", g)
    )
    t.add("", "p50 ack ms", "durable", _get("latency", "p50_ms"), 1)
    t.add("", "p99 ack ms", "durable", _get("latency", "p99_ms"), 1)
    check = (t.cell("durable", "parlor") or {}).get("durable_check")
    if check:
        ok = check["in_postgres"] == check["acked"]
        t.add_text(
            "",
            "acked msgs in PostgreSQL",
            [f"{check['in_postgres']:,}/{check['acked']:,}", "n/a", "n/a"],
            "all: " + ("met" if ok else "NOT met"),
        )
    t.cpu_row("durable")


def _storm(t: Table) -> None:
    if "storm" not in t.results:
        return
    s = t.sizes
    readers = s.storm_users * s.storm_readers_per_user
    t.add(f"4 storm, {readers:,} sockets", "s until all current", "storm", _get("seconds_until_all_current"), 2)
    t.add("", "s until half current", "storm", _get("seconds_until_half_current"), 2)
    lost = [t.value("storm", x, _get("messages_lost")) for x in TARGETS]
    cells = ["" if x not in t.targets else _fmt(v, 0) for x, v in zip(TARGETS, lost, strict=True)]
    parlor_lost = lost[0]
    aim = "0" + ("" if parlor_lost is None else (": met" if parlor_lost == 0 else ": NOT met"))
    t.add_text("", "messages lost (synced sockets)", cells, aim)
    t.add("", f"sockets not back in {s.storm_seconds:.0f} s", "storm", _get("readers_not_back"), 0)
    t.cpu_row("storm")


def _two_processes(t: Table) -> None:
    for key, base, figure, g in (
        ("fanout2", "fanout", "fan-out deliveries/s", _get("deliveries_per_s")),
        ("durable2", "durable", "durable acks/s", _get("acks_per_s")),
    ):
        if key not in t.results:
            continue
        t.add("5 two processes + Redis", figure, key, g, 0)
        ratios = {x: _ratio(t.value(key, x, g), t.value(base, x, g)) for x in TARGETS}
        t.rows.append(
            [
                "",
                "  ratio 2 processes / 1",
                *("" if x not in t.targets else _fmt(ratios[x], 2) for x in TARGETS),
                _fmt(_ratio(ratios["parlor"], ratios["py-relay"]), 2),
                _fmt(_ratio(ratios["parlor"], ratios["node-relay"]), 2),
                "",
            ]
        )
        t.cpu_row(key)


def _notes(t: Table) -> None:
    """Anything that went wrong or was not clean goes under the table, not into a silent figure."""
    for key, per_target in t.results.items():
        for target, result in per_target.items():
            t.notes.extend(_result_notes(key, target, result, per_target))


def _result_notes(key: str, target: str, result: dict[str, Any], per_target: dict[str, Any]) -> list[str]:
    notes = []
    field = HEADLINE.get(key)
    if target not in TARGETS and field and result.get(field) is not None:
        # A diagnostic target (--targets lean) has no column: its headline figure goes here.
        parlor = (per_target.get("parlor") or {}).get(field)
        ratio = _ratio(parlor, result[field]) if parlor is not None else None
        notes.append(
            f"{key} / {target} (diagnostic): {field} = {result[field]:,.1f}"
            + ("" if ratio is None else f", Parlor/{target} = {ratio:.2f}")
        )
    if result.get("rounds"):
        figures = " · ".join("failed" if v is None else f"{v:,.1f}" for v in result["rounds"])
        notes.append(f"{key} / {target}: {result['rounds_field']} by round: {figures}")
    if "error" in result:
        notes.append(f"{key} / {target}: {result['error']}")
    for name in ("errors", "missing_deliveries", "duplicate_deliveries", "failed"):
        if result.get(name):
            notes.append(f"{key} / {target}: {name} = {result[name]}")
    if key == "storm" and result.get("seconds_until_all_current") is None and "error" not in result:
        notes.append(f"storm / {target}: only {result.get('current')}/{result.get('readers')} current at the deadline")
    return notes
