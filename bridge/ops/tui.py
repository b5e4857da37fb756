"""The live terminal UI: renders a :class:`~bridge.board.BoardSnapshot`.

Three entry points share one set of facts:

* :func:`render` builds one rich renderable (header, supervision tree,
  connections, scopes, active runs, recent log lines) from a snapshot;
* :func:`run_live` redraws that renderable in place until told to stop (the
  terminal of ``bridge start`` and ``bridge top``);
* :func:`plain_status` prints the same facts as plain lines (``bridge status``).

Everything here is a pure function of the snapshot and a clock reading, so no
other thread ever touches the UI: they publish to the board, and the UI reads
copies. Text that comes from the outside (log lines, details, reasons, channel
names) is always wrapped in :class:`rich.text.Text`, never parsed as markup, and
every string of a snapshot is made terminal-safe first
(:func:`bridge.sanitize.terminal_safe_fields`): rich's ``Text`` passes ESC
sequences through, so a channel named ``\x1b]0;pwned\x07`` would otherwise
retitle the operator's terminal.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from bridge.board import ActorRow, BoardSnapshot, ConnectionRow, RunRow, ScopeRow, StoreRow
from bridge.model import ScopeKey
from bridge.sanitize import terminal_safe, terminal_safe_fields

__all__ = [
    "DEFAULT_LOG_LINES",
    "DEFAULT_MAX_CHILDREN",
    "DEFAULT_MAX_SCOPES",
    "format_age",
    "format_bytes",
    "plain_status",
    "render",
    "run_live",
]

#: Scope rows shown before a ``+N more`` line.
DEFAULT_MAX_SCOPES = 15
#: Children of one kind shown under one tree node before a ``+N more`` line.
DEFAULT_MAX_CHILDREN = 8
#: Recent log lines shown at the bottom.
DEFAULT_LOG_LINES = 8
#: A snapshot older than this (seconds) is flagged as stale in the header.
STALE_AFTER_S = 3.0

_STATE_STYLES = {
    # actors
    "running": "green",
    "restarting": "yellow",
    "failed": "bold red",
    "stopped": "dim",
    # connections
    "connected": "green",
    "connecting": "yellow",
    "reconnecting": "yellow",
    # scopes
    "idle": "dim",
    "debouncing": "cyan",
    "queued": "magenta",
}


def format_age(seconds: float) -> str:
    """Format a duration compactly for a narrow column.

    Args:
        seconds: Duration in seconds; negative values (clock skew) count as 0.

    Returns:
        ``"0.4s"`` under one second, ``"12s"`` under a minute, ``"3m12s"``
        under an hour, ``"2h05m"`` under a day, ``"3d04h"`` beyond.
    """
    if seconds != seconds or seconds < 0:  # NaN or negative
        seconds = 0.0
    if seconds < 1:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def _state_text(state: str) -> Text:
    return Text(state, style=_STATE_STYLES.get(state, ""))


def _scope_state(row: ScopeRow) -> str:
    if row.state == "queued":
        return f"queued {row.queued}"
    return row.state


def _channel_of(scope_key: str) -> str:
    """Return the channel (and thread) of a scope key; the text itself when it is none."""
    try:
        key = ScopeKey.parse(scope_key)
    except ValueError:
        return scope_key
    return f"{key.channel}/{key.thread}" if key.thread else key.channel


def _age_or_dash(now: float, then: float | None) -> str:
    if then is None or then <= 0:
        return "-"
    return format_age(now - then)


def _short_run_id(run_id: str) -> str:
    return run_id if len(run_id) <= 8 else run_id[:8]


# --------------------------------------------------------------------------- tree


def _children_by_parent(
    actors: Sequence[ActorRow],
) -> tuple[list[ActorRow], dict[str, list[ActorRow]]]:
    """Split actors into roots and a parent id -> children map.

    Rows whose parent is not on the board are treated as roots so that nothing
    published disappears from the tree.
    """
    ids = {row.id for row in actors}
    roots: list[ActorRow] = []
    children: dict[str, list[ActorRow]] = {}
    for row in actors:
        if row.parent is None or row.parent not in ids or row.parent == row.id:
            roots.append(row)
        else:
            children.setdefault(row.parent, []).append(row)
    return roots, children


def _group_by_kind(rows: Sequence[ActorRow]) -> list[tuple[str, list[ActorRow]]]:
    groups: dict[str, list[ActorRow]] = {}
    for row in rows:
        groups.setdefault(row.kind, []).append(row)
    return list(groups.items())


def _actor_label(row: ActorRow) -> Text:
    label = Text()
    label.append(row.id, style="bold" if row.kind == "supervisor" else "")
    label.append(" ")
    label.append_text(_state_text(row.state))
    if row.restarts:
        label.append(f" restarts={row.restarts}", style="yellow")
    if row.detail:
        label.append(f"  {row.detail}", style="dim")
    return label


def _add_actor(
    node: Tree,
    row: ActorRow,
    children: dict[str, list[ActorRow]],
    max_children: int,
    seen: set[str],
) -> None:
    seen.add(row.id)
    branch = node.add(_actor_label(row))
    _add_children(branch, children.get(row.id, []), children, max_children, seen)


def _add_children(
    node: Tree,
    rows: Sequence[ActorRow],
    children: dict[str, list[ActorRow]],
    max_children: int,
    seen: set[str],
) -> None:
    for kind, group in _group_by_kind([r for r in rows if r.id not in seen]):
        target = node
        if len(group) > 1:
            failed = sum(1 for r in group if r.state == "failed")
            head = Text(f"{kind} ({len(group)})", style="bold")
            if failed:
                head.append(f" {failed} failed", style="bold red")
            target = node.add(head)
        for row in group[:max_children]:
            _add_actor(target, row, children, max_children, seen)
        if len(group) > max_children:
            target.add(Text(f"+{len(group) - max_children} more", style="dim"))


def _supervision_tree(actors: Sequence[ActorRow], max_children: int) -> RenderableType:
    if not actors:
        return Text("no actors yet", style="dim")
    roots, children = _children_by_parent(actors)
    tree = Tree(Text("supervision", style="bold"), guide_style="dim", hide_root=True)
    seen: set[str] = set()
    for root in roots:
        _add_actor(tree, root, children, max_children, seen)
    # Anything left unreachable (a parent cycle) is still shown.
    leftovers = [row for row in actors if row.id not in seen]
    if leftovers:
        _add_children(tree, leftovers, children, max_children, seen)
    return tree


# --------------------------------------------------------------------------- tables


#: Columns never wrapped or cut (the others give way on a narrow terminal).
_KEEP_WHOLE = frozenset({"state"})


def _table(*columns: str) -> Table:
    table = Table(box=box.SIMPLE_HEAD, expand=False, pad_edge=False, show_edge=False)
    for name in columns:
        whole = name in _KEEP_WHOLE
        table.add_column(name, overflow="fold" if whole else "ellipsis", no_wrap=whole,
                         min_width=len("queued 99") if whole else None)
    return table


def _connections_table(rows: Sequence[ConnectionRow], now: float) -> RenderableType:
    if not rows:
        return Text("no connections yet", style="dim")
    table = _table("agent", "space", "state", "reconn", "token age", "renewed", "chans",
                   "last event", "silent", "reason")
    for row in rows:
        table.add_row(
            Text(row.agent),
            Text(row.space),
            _state_text(row.state),
            str(row.reconnects),
            _age_or_dash(now, row.token_at),
            str(row.token_refreshes),
            str(row.channels),
            _age_or_dash(now, row.last_event_at),
            str(row.silences),
            Text(row.reason, style="dim"),
        )
    return table


def _scopes_table(rows: Sequence[ScopeRow], now: float, max_rows: int) -> RenderableType:
    if not rows:
        return Text("no scopes yet", style="dim")
    table = _table("channel", "agent", "state", "last", "recv", "engaged", "runs", "fail",
                   "sent", "outbox", "retries")
    for row in rows[:max_rows]:
        table.add_row(
            Text(row.channel),
            Text(row.agent),
            Text(_scope_state(row), style=_STATE_STYLES.get(row.state, "")),
            _age_or_dash(now, row.last_activity),
            str(row.received),
            str(row.engaged),
            str(row.runs),
            Text(str(row.failures), style="red" if row.failures else ""),
            str(row.delivered),
            Text(str(row.undelivered), style="yellow" if row.undelivered else ""),
            Text(str(row.retries), style="yellow" if row.retries else ""),
        )
    if len(rows) > max_rows:
        return Group(table, Text(f"+{len(rows) - max_rows} more", style="dim"))
    return table


def _runs_table(rows: Sequence[RunRow], now: float) -> RenderableType:
    if not rows:
        return Text("no active runs", style="dim")
    table = _table("run", "agent", "channel", "elapsed", "detail")
    for row in rows:
        table.add_row(
            Text(_short_run_id(row.run_id)),
            Text(row.agent),
            Text(_channel_of(row.scope_key)),
            format_age(now - row.started_at),
            Text(row.detail, style="dim"),
        )
    return table


def _logs(lines: Sequence[str], count: int) -> RenderableType:
    shown = list(lines[-count:]) if count > 0 else []
    if not shown:
        return Text("no log lines yet", style="dim")
    return Group(*(Text(line, no_wrap=True, overflow="ellipsis") for line in shown))


def _header(snapshot: BoardSnapshot, now: float, title: str) -> Text:
    header = Text()
    header.append(title, style="bold")
    header.append(f"  pid {snapshot.pid}  up {format_age(now - snapshot.started_at)}")
    counts = (
        f"  connections {len(snapshot.connections)}  scopes {len(snapshot.scopes)}"
        f"  runs {len(snapshot.runs)}"
    )
    header.append(counts, style="dim")
    if snapshot.store is not None:
        header.append(f"  store {_store_brief(snapshot.store)}", style="dim")
    failed = sum(1 for row in snapshot.actors if row.state == "failed")
    if failed:
        header.append(f"  {failed} failed", style="bold red")
    lag = now - snapshot.taken_at
    if lag > STALE_AFTER_S:
        header.append(f"  (status {format_age(lag)} old)", style="yellow")
    return header


def format_bytes(size: int) -> str:
    """Format a size in bytes compactly: ``"512 B"``, ``"3.4 kB"``, ``"12.0 MB"``, ``"1.5 GB"``."""
    value = float(max(0, size))
    for unit in ("B", "kB", "MB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def _store_brief(row: StoreRow) -> str:
    """``1.2 MB (journal 1234, outbox 56, runs 7)`` for the header line."""
    journal = sum(row.rows.get("inbound", {}).values())
    outbox = sum(row.rows.get("outbox", {}).values())
    runs = sum(row.rows.get("runs", {}).values())
    return f"{format_bytes(row.total_bytes)} (journal {journal}, outbox {outbox}, runs {runs})"


def _plain_store(row: StoreRow | None, now: float) -> list[str]:
    if row is None:
        return ["  not measured yet"]
    lines = [f"  size={row.total_bytes} bytes db={row.db_bytes} wal={row.wal_bytes}"
             f" retention={row.retention_days:g}d pruned={row.pruned}"
             f" last_prune={_age_or_dash(now, row.pruned_at)}"]
    for table, counts in row.rows.items():
        shown = " ".join(f"{state}={count}" for state, count in sorted(counts.items()))
        lines.append(f"  {table} {shown or 'empty'}")
    return lines


def render(
    snapshot: BoardSnapshot,
    now: float | None = None,
    *,
    title: str = "bridge",
    max_scopes: int = DEFAULT_MAX_SCOPES,
    max_children: int = DEFAULT_MAX_CHILDREN,
    log_lines: int = DEFAULT_LOG_LINES,
) -> RenderableType:
    """Build the whole status screen for one snapshot.

    Args:
        snapshot: The board copy to show.
        now: Epoch seconds used for ages (uptime, token age, last activity,
            run elapsed); defaults to ``time.time()``.
        title: Shown first in the header line.
        max_scopes: Scope rows shown before a ``+N more`` line.
        max_children: Actors of one kind shown under one tree node before a
            ``+N more`` line.
        log_lines: How many of the most recent log lines to show.

    Returns:
        A :class:`rich.console.Group`: the header line, then panels for the
        supervision tree, connections, scopes, active runs and log lines. Empty
        sections say so (``"no scopes yet"``). It renders at any width.
    """
    now = time.time() if now is None else now
    snapshot = terminal_safe_fields(snapshot)
    return Group(
        _header(snapshot, now, title),
        Panel(_supervision_tree(snapshot.actors, max_children), title="actors", title_align="left"),
        Panel(
            _connections_table(snapshot.connections, now), title="connections", title_align="left"
        ),
        Panel(
            _scopes_table(snapshot.scopes, now, max_scopes),
            title=f"scopes ({len(snapshot.scopes)})",
            title_align="left",
        ),
        Panel(_runs_table(snapshot.runs, now), title="active runs", title_align="left"),
        Panel(_logs(snapshot.logs, log_lines), title="log", title_align="left"),
    )


def _message_panel(text: str, title: str, style: str = "yellow") -> RenderableType:
    return Panel(Text(text, style=style), title=title, title_align="left")


def run_live(
    source: Callable[[], BoardSnapshot | None],
    stop: threading.Event,
    *,
    console: Console | None = None,
    refresh_per_second: float = 4.0,
    title: str = "bridge",
    waiting_text: str = "waiting for the bridge…",
) -> None:
    """Redraw the status screen in place until ``stop`` is set.

    Uses :class:`rich.live.Live` with ``auto_refresh=False`` (no refresh thread
    racing this loop: one ``source()`` call and one ``update(..., refresh=True)``
    per tick), ``screen=False`` (no alternate screen, so nothing is cleared: Live
    moves the cursor up over its previous frame and overwrites it, which does
    not flicker) and ``transient=False`` (the last frame stays on the terminal
    after exit). Frames taller than the terminal are cropped with an ellipsis.
    The ``with`` block restores the cursor and stdout/stderr on every exit path.

    Args:
        source: Called once per tick; returns the snapshot to show, or None when
            no bridge state is available (then ``waiting_text`` is shown). An
            exception from it (other than KeyboardInterrupt and friends) is
            shown in the panel, and the loop carries on.
        stop: Set by another thread (or a signal handler) to end the loop; the
            function returns within one tick, at most 0.25 s, after it is set.
        console: Where to draw; defaults to a new :class:`rich.console.Console`
            on stdout.
        refresh_per_second: Ticks per second (> 0).
        title: Shown in the header line.
        waiting_text: Message shown while ``source`` returns None, e.g.
            ``"waiting for the bridge… (no status in /srv/bridge/var)"``.

    Raises:
        ValueError: If ``refresh_per_second`` is not positive.
        KeyboardInterrupt: Propagated to the caller (after the terminal is
            restored).
    """
    if refresh_per_second <= 0:
        raise ValueError(f"refresh_per_second must be > 0, got {refresh_per_second}")
    interval = min(1.0 / refresh_per_second, 0.25)
    console = console if console is not None else Console()
    with Live(
        console=console,
        auto_refresh=False,
        screen=False,
        transient=False,
        redirect_stdout=True,
        redirect_stderr=True,
        vertical_overflow="ellipsis",
    ) as live:
        while not stop.is_set():
            frame: RenderableType
            try:
                snapshot = source()
            except Exception as exc:  # shown, not fatal: the next tick may succeed
                frame = _message_panel(terminal_safe(f"cannot read bridge state: {exc}"),
                                       title, style="red")
            else:
                if snapshot is None:
                    frame = _message_panel(waiting_text, title)
                else:
                    frame = render(snapshot, title=title)
            live.update(frame, refresh=True)
            stop.wait(interval)


# --------------------------------------------------------------------------- plain


def _plain_tree(actors: Sequence[ActorRow]) -> list[str]:
    roots, children = _children_by_parent(actors)
    lines: list[str] = []
    seen: set[str] = set()

    def walk(row: ActorRow, depth: int) -> None:
        if row.id in seen:
            return
        seen.add(row.id)
        line = f"{'  ' * depth}{row.id} {row.state}"
        if row.restarts:
            line += f" restarts={row.restarts}"
        if row.detail:
            line += f" ({row.detail})"
        lines.append(line)
        for child in children.get(row.id, []):
            walk(child, depth + 1)

    for root in roots:
        walk(root, 1)
    for row in actors:
        walk(row, 1)
    return lines


def plain_status(snapshot: BoardSnapshot, now: float | None = None) -> str:
    """Return the facts of :func:`render` as plain text for ``bridge status``.

    Args:
        snapshot: The board copy to describe.
        now: Epoch seconds used for ages; defaults to ``time.time()``.

    Returns:
        Lines without colour codes, no trailing newline, e.g.::

            bridge pid 123, up 5m02s
            actors:
              supervisor running
                gateway:echo:dev running
            connections:
              echo@dev connected reconnects=0 token_age=1m02s renewed=0 channels=3 ...
            scopes:
              general echo queued 3 last=12s received=5 engaged=3 runs=2 failures=0
            runs:
              3f2a9c1d echo general 12s thinking
            store:
              size=2142208 bytes db=2097152 wal=45056 retention=14d pruned=120 last_prune=12m05s
              inbound done=812 received=1
              outbox posted=790
              runs ended=790
              sessions rows=3
              ...
            logs:
              ...

        Every scope is listed (no cap); an empty section reads ``  none``.
    """
    now = time.time() if now is None else now
    snapshot = terminal_safe_fields(snapshot)
    head = f"bridge pid {snapshot.pid}, up {format_age(now - snapshot.started_at)}"
    lag = now - snapshot.taken_at
    if lag > STALE_AFTER_S:
        head += f" (status {format_age(lag)} old)"
    lines = [head, "actors:"]
    lines += _plain_tree(snapshot.actors) or ["  none"]
    lines.append("connections:")
    for conn in snapshot.connections:
        line = (
            f"  {conn.agent}@{conn.space} {conn.state} reconnects={conn.reconnects}"
            f" token_age={_age_or_dash(now, conn.token_at)} renewed={conn.token_refreshes}"
            f" channels={conn.channels} last_event={_age_or_dash(now, conn.last_event_at)}"
            f" silences={conn.silences}"
        )
        if conn.reason:
            line += f" reason={conn.reason}"
        lines.append(line)
    if not snapshot.connections:
        lines.append("  none")
    lines.append("scopes:")
    for scope in snapshot.scopes:
        lines.append(
            f"  {scope.channel} {scope.agent} {_scope_state(scope)}"
            f" last={_age_or_dash(now, scope.last_activity)} received={scope.received}"
            f" engaged={scope.engaged} runs={scope.runs} failures={scope.failures}"
            f" delivered={scope.delivered} outbox={scope.undelivered} retries={scope.retries}"
            f" last_piece={scope.last_delivered or '-'}"
        )
    if not snapshot.scopes:
        lines.append("  none")
    lines.append("runs:")
    for run in snapshot.runs:
        line = (
            f"  {_short_run_id(run.run_id)} {run.agent} {_channel_of(run.scope_key)}"
            f" {format_age(now - run.started_at)}"
        )
        if run.detail:
            line += f" {run.detail}"
        lines.append(line)
    if not snapshot.runs:
        lines.append("  none")
    lines.append("store:")
    lines += _plain_store(snapshot.store, now)
    lines.append("logs:")
    lines += [f"  {line}" for line in snapshot.logs[-DEFAULT_LOG_LINES:]] or ["  none"]
    return "\n".join(lines)
