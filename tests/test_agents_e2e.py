"""The real Codex and Claude Code CLIs through the whole bridge, against scripted
model endpoints on loopback: status messages, answers with footers, resumed
sessions, and /stop."""

from __future__ import annotations

import contextlib
import functools
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from actors.app import BridgeApp
from adapters.chat.fabric.devguild import DevGuild
from bridge.cli.compose import load_config
from tests.fakes.clis import cli_path
from tests.fakes.models import Say, ScriptedModel, Shell, Stall, Step
from tests.support import Member, start_bridge, wait_until, write_config

QUIET_CODEX = "[analytics]\nenabled = false\n[features]\nplugins = false\n" \
              "remote_plugin = false\napps = false\nunbounded_connection_retries = false\n"
RUN_WAIT_S = 60.0


def agent_table(kind: str, tmp_path: Path, model: ScriptedModel, name: str = "coder") -> str:
    """An ``[agents.<name>]`` table for the real CLI of ``kind``, speaking as the seeded echo."""
    if kind == "codex":
        home = tmp_path / "codex-home"
        home.mkdir(exist_ok=True)
        (home / "config.toml").write_text(QUIET_CODEX, encoding="utf-8")
        provider = (f'model_providers.fake={{name="fake", base_url="{model.url}/v1", '
                    f'wire_api="responses", env_key="FAKE_MODEL_KEY", request_max_retries=0, '
                    f'stream_max_retries=0}}')
        extra = textwrap.dedent(f"""
            codex_home = "{home}"
            extra_args = ["-c", '{provider}', "-c", 'model_provider="fake"',
                          "-c", 'model="fake-model"']
            env = {{ FAKE_MODEL_KEY = "fake-model-key-123" }}
        """)
    else:
        extra = textwrap.dedent(f"""
            model_base_url = "{model.url}"
            allowed_tools = ["Bash"]
        """)
    return textwrap.dedent(f"""
        [agents.{name}]
        kind = "{kind}"
        api_key = "fak_dev_echo"
        model_api_key = "sk-test-model-key-0000"
        binary = "{cli_path(kind)}"
        workspace = "{tmp_path / 'ws'}"
        idle_timeout_s = 60
        stop_grace_s = 1
    """) + extra


@pytest.fixture(params=["codex", "claude"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextlib.contextmanager
def start(tmp_path: Path, devguild: DevGuild, kind: str,
          script: list[Step]) -> Iterator[tuple[BridgeApp, ScriptedModel]]:
    with ScriptedModel(script) as model:
        bindings = '[[bindings]]\nagent = "coder"\nguild = "dev"\nchannels = ["general"]\n'
        config = write_config(tmp_path, devguild.center_url, debounce_s=0.05,
                              agents=agent_table(kind, tmp_path, model), bindings=bindings)
        app = start_bridge(config)
        try:
            yield app, model
        finally:
            app.stop()


def test_tool_step_status_answer_and_resumed_session(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member], kind: str) -> None:
    script: list[Step] = [Shell("echo hi-from-shell", "let me run it"), Say("it printed hi"),
                          Say("the second answer")]
    with start(tmp_path, devguild, kind, script) as (_app, model):
        alice = members("alice")
        alice.post("general", "please run the greeting")
        answer = alice.wait_reply("echo", "general", lambda c: c.startswith("it printed hi"),
                                  RUN_WAIT_S)
        assert "\n\n— " in answer  # the footer: duration, tokens
        statuses = [c for c in alice.messages_from("echo", "general")
                    if "coder · " in c]
        assert len(statuses) == 1, statuses
        assert "echo hi-from-shell" in statuses[0]
        alice.post("general", "and once more")
        alice.wait_reply("echo", "general", lambda c: c.startswith("the second answer"),
                         RUN_WAIT_S)
        last = model.main_requests()[-1].text()
        assert "please run the greeting" in last and "it printed hi" in last


def test_stop_mid_run_keeps_the_session(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member], kind: str) -> None:
    with start(tmp_path, devguild, kind, [Stall(), Say("after the stop")]) as (app, model):
        alice = members("alice")
        alice.post("general", "think forever")
        wait_until(lambda: model.main_requests(), RUN_WAIT_S, "the model to be asked")
        alice.post("general", "/stop")
        failed = alice.wait_reply("echo", "general", lambda c: "run failed" in c, RUN_WAIT_S)
        assert "stopped by alice" in failed
        model.release()
        wait_until(lambda: not app.board.snapshot().runs, what="the run to end")
        alice.post("general", "are you back?")
        alice.wait_reply("echo", "general", lambda c: c.startswith("after the stop"),
                         RUN_WAIT_S)
        assert "think forever" in model.main_requests()[-1].text()  # the session resumed


def starts(prefix: str, content: str) -> bool:
    return content.startswith(prefix)


def test_session_survives_a_restart_and_new_starts_fresh(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member]) -> None:
    script: list[Step] = [Say("first answer"), Say("second answer"), Say("fresh answer")]
    with ScriptedModel(script) as model:
        config = write_config(tmp_path, devguild.center_url, debounce_s=0.05,
                              agents=agent_table("codex", tmp_path, model),
                              bindings='[[bindings]]\nagent = "coder"\nguild = "dev"\n')
        alice = members("alice")
        for step, (text, expected) in enumerate([("remember the word kiwi", "first answer"),
                                                 ("which word?", "second answer")]):
            app = start_bridge(config)  # a new bridge process state each time
            try:
                alice.post("general", text)
                alice.wait_reply("echo", "general", functools.partial(starts, expected),
                                 RUN_WAIT_S)
                if step == 1:
                    assert "remember the word kiwi" in model.main_requests()[-1].text()
                    alice.post("general", "/new")
                    alice.wait_reply("echo", "general", lambda c: "fresh session" in c)
                    alice.post("general", "hello again")
                    alice.wait_reply("echo", "general", lambda c: c.startswith("fresh answer"),
                                     RUN_WAIT_S)
                    assert "kiwi" not in model.main_requests()[-1].text()
            finally:
                app.stop()


def test_eviction_and_rebuild_keep_dedup_and_session(
        tmp_path: Path, devguild: DevGuild, members: Callable[[str], Member]) -> None:
    with ScriptedModel([Say("first answer"), Say("second answer")]) as model:
        config = write_config(tmp_path, devguild.center_url, debounce_s=0.05,
                              agents=agent_table("codex", tmp_path, model),
                              bindings='[[bindings]]\nagent = "coder"\nguild = "dev"\n',
                              extra="")
        text = config.path.read_text().replace("[bridge]", "[bridge]\nscope_idle_s = 0.3")
        config.path.write_text(text)
        app = start_bridge(load_config(config.path))
        try:
            alice = members("alice")
            first = alice.post("general", "remember the word plum")
            alice.wait_reply("echo", "general", functools.partial(starts, "first answer"),
                             RUN_WAIT_S)
            scope_id = f"scope:fabric:coder:dev:{devguild.channel_id('general')}"
            wait_until(lambda: all(a.id != scope_id for a in app.board.snapshot().actors),
                       what="the idle scope to stop")
            # A redelivery after the rebuild is not run again, and the journal still
            # knows the message (the dedup state lives in the store, not the actor).
            devguild.redeliver(devguild.channel_id("general"), first["seq"])
            assert app.store is not None
            assert app.store.count_inbound(scope_id.removeprefix("scope:")) == {"done": 1}
            alice.post("general", "which word?")
            alice.wait_reply("echo", "general", functools.partial(starts, "second answer"),
                             RUN_WAIT_S)
            assert len(model.main_requests()) == 2  # the duplicate started no run
            assert "remember the word plum" in model.main_requests()[-1].text()  # resumed
        finally:
            app.stop()
