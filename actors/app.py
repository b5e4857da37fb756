"""The running bridge: lock, side services, timers, actor tree, status file."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import pykka

from actors.messages import Shutdown
from actors.pool import configure_shared_pool
from actors.runtime import CredentialCache, Runtime
from actors.scope import Scope
from actors.supervisor import Supervisor
from actors.timers import Timers
from bridge.agent import Agent
from bridge.board import Board
from bridge.config import AgentSettings, Config
from bridge.logs import remove_logging, setup_logging
from bridge.platform import ChatPlatform
from bridge.statefiles import StateLock, StatusWriter, write_status
from bridge.store import Store, open_store

log = logging.getLogger(__name__)

#: Seconds allowed for a clean stop (the operator's Ctrl-C must end within 5 s).
STOP_TIMEOUT_S = 4.0


class Service(Protocol):
    """Something the composition runs beside the actors (e.g. a dev chat server)."""

    def start(self, config: Config) -> Config:
        """Start; return the config the actors should use (it may point at the service)."""

    def stop(self) -> None:
        """Stop (idempotent; must not raise)."""


class BridgeApp:
    """Starts and stops the whole bridge in this process.

    It knows no chat platform and no agent kind: the composition
    (:mod:`bridge.cli.compose`) hands it their registries.

    Args:
        config: The validated config.
        board: Board to publish on (one is made when None).
        scope_class: Scope actor class (tests inject a misbehaving subclass).
        platforms: Builds the chat platforms (by name) from the config in effect.
        agents: Builds the agent for an ``[agents.NAME]`` table.
        services: Started after the state-dir lock, before the actors; stopped last.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self, config: Config, board: Board | None = None,
                 scope_class: type[Scope] = Scope, *,
                 platforms: Callable[[Config], Mapping[str, ChatPlatform]],
                 agents: Callable[[AgentSettings], Agent],
                 services: Sequence[Service] = ()) -> None:
        self.config = config
        self.board = board or Board()
        self.scope_class = scope_class
        self.platforms = platforms
        self.agents = agents
        self.services = list(services)
        self.started: list[Service] = []
        self.lock = StateLock(config.bridge.state_dir)
        self.timers = Timers()
        self.runtime: Runtime | None = None
        self.supervisor: pykka.ActorRef[Any] | None = None
        self.status_writer: StatusWriter | None = None
        self.log_handlers: list[logging.Handler] = []
        self.store: Store | None = None

    def start(self) -> None:
        """Take the state-dir lock, start the side services, then the actors.

        Raises:
            bridge.statefiles.AlreadyRunning: another bridge uses the state dir.
            bridge.store.StoreError: the state store is corrupt, locked or too new.
            OSError: a side service's port is taken.
        """
        self.lock.acquire()
        self.log_handlers = setup_logging(self.board, self.config.bridge.log_level, None)
        try:
            # status.json first: the one a crashed bridge left shows its runs, which
            # `status` would report as this bridge's while it starts.
            write_status(self.config.bridge.state_dir, self.board.snapshot())
            self.status_writer = StatusWriter(self.board.snapshot, self.config.bridge.state_dir)
            self.status_writer.start()
            config = self.config
            for service in self.services:
                config = service.start(config)
                self.started.append(service)
            self.store = open_store(config.bridge.state_dir)
            self.timers.start()
            # Scopes and deliveries run on the process's actor pool (actors/pool.py).
            configure_shared_pool(config.bridge.actor_threads)
            platforms = self.platforms(config)
            self.runtime = Runtime(config, self.board, self.timers, self.store,
                                   platforms=platforms, agents=self.agents)
            self.runtime.credentials = CredentialCache(
                {name: platform.limits.session_ttl_s for name, platform in platforms.items()})
            # composition: moves to the CLI
            self.supervisor = Supervisor.start(self.runtime, self.scope_class)
            log.info("bridge started (pid %d, state in %s)", os.getpid(), config.bridge.state_dir)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop everything in reverse dependency order, within about 5 s; idempotent."""
        started = time.monotonic()
        # Only the call that stops this app's tree sweeps stragglers: the sweep sees
        # every actor of the process, and another app may run in it (tests, restarts).
        running = self.supervisor is not None
        if self.runtime is not None:
            self.runtime.stopping.set()
        if self.supervisor is not None:
            try:
                self.supervisor.ask(Shutdown(STOP_TIMEOUT_S - 0.5), timeout=STOP_TIMEOUT_S)
            except (pykka.Timeout, pykka.ActorDeadError):
                log.warning("supervisor did not finish stopping its children in time")
            with contextlib.suppress(pykka.Timeout, pykka.ActorDeadError):
                self.supervisor.stop(block=True, timeout=1.0)
            self.supervisor = None
        stragglers = [ref for ref in pykka.ActorRegistry.get_all()
                      if running and ref.actor_class.__module__.startswith("actors.")]
        if stragglers:
            log.warning("stopping %d straggler actor(s): %s", len(stragglers),
                        ", ".join(sorted({r.actor_class.__name__ for r in stragglers})))
            for ref in stragglers:
                ref.stop(block=False)
        self.timers.stop()
        if self.store is not None:
            self.store.close()
            self.store = None
        while self.started:
            self.started.pop().stop()
        if self.status_writer is not None:
            self.status_writer.stop()
            self.status_writer = None
        if self.lock.held:
            self.lock.release()
            log.info("bridge stopped in %.2fs", time.monotonic() - started)
        remove_logging(self.log_handlers)
        self.log_handlers = []

    def __enter__(self) -> BridgeApp:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
