"""The codex agent: the real Codex CLI against a scripted Responses endpoint on loopback,
and fake CLIs (small Python scripts) for crashes, garbage and hangs."""

from __future__ import annotations

import base64
import json
import logging
import os
import textwrap
from pathlib import Path

import pytest

from adapters.agents import agent_problems, build_agent
from adapters.agents.codex import CodexAgent
from adapters.agents.jsonl import JsonlRun
from bridge.agent import (
    Notice,
    RunContext,
    RunDone,
    RunFailed,
    SessionStarted,
    ToolFinished,
    ToolStarted,
    Usage,
)
from bridge.cli.compose import load_config
from bridge.config import AgentSettings, ConfigError
from tests.fakes.clis import cli_path
from tests.fakes.models import Fail, Say, ScriptedModel, Shell, Stall
from tests.fakes.runs import Collector, context, fake_cli, no_leaks, prompt, run_to_end, wait_for

#: Config that keeps the CLI off the network: no analytics, no plugin/app sync from GitHub
#: or chatgpt.com, no endless reconnects.
QUIET_CONFIG = """\
[analytics]
enabled = false

[features]
plugins = false
remote_plugin = false
apps = false
unbounded_connection_retries = false
"""


def settings(tmp_path: Path, extra: str = "", binary: str | None = None) -> AgentSettings:
    """Load a bridge config with one codex agent named ``coder``."""
    binary_line = f'binary = "{binary}"' if binary else ""
    (tmp_path / "bridge.toml").write_text(textwrap.dedent(f"""\
        [bridge]
        state_dir = "var"

        [fabric]
        center_url = "http://127.0.0.1:1/api"

        [agents.coder]
        kind = "codex"
        api_key = "fak_dev_coder"
        workspace = "ws"
        stop_grace_s = 1
        {binary_line}
        """) + textwrap.dedent(extra) + textwrap.dedent("""
        [[bindings]]
        agent = "coder"
        guild = "dev"
        """), encoding="utf-8")
    return load_config(tmp_path / "bridge.toml").agents["coder"]


def real_codex(tmp_path: Path, model: ScriptedModel, extra: str = "") -> CodexAgent:
    """A codex agent on the real CLI, pointed at ``model`` through extra_args."""
    home = tmp_path / "codex-home"
    home.mkdir(exist_ok=True)
    (home / "config.toml").write_text(QUIET_CONFIG, encoding="utf-8")
    provider = (f'model_providers.fake={{name="fake", base_url="{model.url}/v1", '
                f'wire_api="responses", env_key="FAKE_MODEL_KEY", request_max_retries=0, '
                f'stream_max_retries=0}}')
    agent = build_agent(settings(tmp_path, f"""
        codex_home = "codex-home"
        model_api_key = "sk-codex-test-key"
        idle_timeout_s = 60
        extra_args = ["-c", '{provider}', "-c", 'model_provider="fake"',
                      "-c", 'model="fake-model"']
        env = {{ FAKE_MODEL_KEY = "fake-model-key-123" }}
        """ + extra, binary=str(cli_path("codex"))))
    assert isinstance(agent, CodexAgent)
    return agent


# --- config and argv -----------------------------------------------------------------------

def test_config_defaults(tmp_path: Path) -> None:
    agent = settings(tmp_path)
    assert agent.sandbox == "workspace-write"
    assert agent.idle_timeout_s == 300
    assert agent.binary == "codex"
    assert agent.model_api_key is None
    assert agent.codex_home == tmp_path / "var" / "codex-home" / "coder"
    assert agent.extra_args == () and agent.env == ()


def test_config_values_and_secret_refs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEX_TEST_KEY", "sk-from-env-123")
    (tmp_path / "token.txt").write_text("file-secret-456\n")
    agent = settings(tmp_path, """
        model_api_key = "env:CODEX_TEST_KEY"
        sandbox = "read-only"
        idle_timeout_s = 12.5
        binary = "bin/codex"
        extra_args = ["-c", "x=1"]
        env = { A_TOKEN = "file:token.txt", PLAIN = "value-1" }
        """)
    assert agent.model_api_key is not None and agent.model_api_key.reveal() == "sk-from-env-123"
    assert "sk-from-env" not in repr(agent)
    assert agent.sandbox == "read-only" and agent.idle_timeout_s == 12.5
    assert agent.binary == str(tmp_path / "bin" / "codex")
    assert agent.extra_args == ("-c", "x=1")
    assert {k: v.reveal() for k, v in agent.env} == {"A_TOKEN": "file-secret-456",
                                                      "PLAIN": "value-1"}


@pytest.mark.parametrize(("extra", "key", "words"), [
    ('sandbox = "none"', "agents.coder.sandbox", ["read-only", "'none'"]),
    ("idle_timeout_s = 0", "agents.coder.idle_timeout_s", ["more than zero"]),
    ('env = { GOOD = "env:UNSET_VAR_CODEX_TEST" }', "agents.coder.env.GOOD", ["UNSET_VAR"]),
    ("env = { X = 3 }", "agents.coder.env.X", ["string"]),
    ('permission_mode = "plan"', "agents.coder.permission_mode", ["only to kind claude"]),
    ('model_api_key = "env:UNSET_VAR_CODEX_TEST"', "agents.coder.model_api_key",
     ["UNSET_VAR"]),
    ('extra_args = ["a", 1]', "agents.coder.extra_args", ["list of strings"]),
])
def test_config_errors_name_line_and_key(tmp_path: Path, extra: str, key: str,
                                         words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        settings(tmp_path, extra)
    message = str(info.value)
    assert info.value.key == key, message
    text = (tmp_path / "bridge.toml").read_text().splitlines()
    assert info.value.line is not None and extra.split("=")[0].strip() in \
        text[info.value.line - 1], message
    for word in words:
        assert word in message


def test_codex_keys_refused_on_other_kinds(tmp_path: Path) -> None:
    (tmp_path / "bridge.toml").write_text(textwrap.dedent("""\
        [fabric]
        center_url = "http://127.0.0.1:1/api"
        [agents.echo]
        kind = "echo"
        api_key = "fak_dev_echo"
        sandbox = "read-only"
        [[bindings]]
        agent = "echo"
        guild = "dev"
        """))
    with pytest.raises(ConfigError, match=r"bridge.toml:6: agents.echo.sandbox: applies only"):
        load_config(tmp_path / "bridge.toml")


def test_argv_new_and_resume(tmp_path: Path) -> None:
    agent = CodexAgent(settings(tmp_path, 'extra_args = ["-c", "k=1"]'))
    ws = tmp_path / "ws"
    assert agent.argv(context(ws)) == [
        "codex", "exec", "--json", "--skip-git-repo-check", "--cd", str(ws),
        "--sandbox", "workspace-write", "-c", "k=1", "-"]
    ctx = context(ws, "thread-9")
    ctx = type(ctx)(ctx.run_id, ctx.scope_key, ws, "thread-9", (Path("/i/a.png"),))
    assert agent.argv(ctx) == [
        "codex", "exec", "--json", "--skip-git-repo-check", "--cd", str(ws),
        "--sandbox", "workspace-write", "-c", "k=1", "resume", "--image=/i/a.png",
        "thread-9", "-"]


def test_child_env_is_minimal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FABRIC_SECRET_OF_BRIDGE", "do-not-leak")
    agent = CodexAgent(settings(tmp_path, """
        model_api_key = "sk-model-1234"
        env = { EXTRA = "yes-extra" }
        """))
    env = agent.env()
    assert "FABRIC_SECRET_OF_BRIDGE" not in env
    assert env["CODEX_API_KEY"] == "sk-model-1234"
    assert env["CODEX_HOME"] == str(tmp_path / "var" / "codex-home" / "coder")
    assert env["EXTRA"] == "yes-extra"
    assert env["PATH"] == os.environ["PATH"]


def test_agent_problems_for_a_missing_binary(tmp_path: Path) -> None:
    agent = settings(tmp_path, binary="/nonexistent/codex")
    assert agent_problems(agent) == [
        "agent coder: binary /nonexistent/codex is not an executable file"]
    agent = settings(tmp_path, binary="no-such-codex-binary")
    assert "not on PATH" in agent_problems(agent)[0]


# --- the real CLI --------------------------------------------------------------------------

def test_plain_answer(tmp_path: Path) -> None:
    with ScriptedModel([Say("The answer is 42.")]) as model:
        agent = real_codex(tmp_path, model)
        run = agent.start(prompt("what is six times seven?"), context(tmp_path / "ws"))
        assert isinstance(run, JsonlRun)
        events = run_to_end(run)
        no_leaks(run.pid)
    thread = events[0]
    assert isinstance(thread, SessionStarted)
    assert events[-1] == RunDone("The answer is 42.", thread.session_id)
    assert Usage(input_tokens=120, output_tokens=30) in events
    assert not [e for e in events if isinstance(e, RunFailed)]
    (request,) = model.main_requests()
    assert "what is six times seven?" in request.text()
    # the rendered prompt's message line, as the JSON of the request spells it
    asked = prompt("what is six times seven?").messages[0].render()
    assert json.dumps(asked)[1:-1] in request.text()
    # only loopback was contacted, and the configured key was used for the provider
    assert request.headers.get("authorization") == "Bearer fake-model-key-123"


def test_shell_tool_step(tmp_path: Path) -> None:
    with ScriptedModel([Shell("echo tool-output-7"), Say("Ran it.")]) as model:
        agent = real_codex(tmp_path, model)
        events = run_to_end(agent.start(prompt("run echo"), context(tmp_path / "ws")))
    started = [e for e in events if isinstance(e, ToolStarted)]
    finished = [e for e in events if isinstance(e, ToolFinished)]
    assert [s.title for s in started] == ["echo tool-output-7"]
    assert finished == [ToolFinished(started[0].step_id, True, "exit 0")]
    assert isinstance(events[-1], RunDone) and events[-1].answer == "Ran it."
    _, second = model.main_requests()
    assert "tool-output-7" in second.text()  # the command really ran; its output went back


def test_follow_up_resumes_the_thread(tmp_path: Path) -> None:
    with ScriptedModel([Say("First answer."), Say("Second answer.")]) as model:
        agent = real_codex(tmp_path, model)
        first = run_to_end(agent.start(prompt("question one"), context(tmp_path / "ws")))
        done = first[-1]
        assert isinstance(done, RunDone) and done.session_id
        second = run_to_end(agent.start(prompt("question two"),
                                        context(tmp_path / "ws", done.session_id)))
    assert second[-1] == RunDone("Second answer.", done.session_id)
    _, request = model.main_requests()
    assert "question one" in request.text() and "First answer." in request.text()
    assert "question two" in request.text()


def test_stop_mid_run(tmp_path: Path) -> None:
    with ScriptedModel([Stall()]) as model:
        agent = real_codex(tmp_path, model)
        run = agent.start(prompt("take your time"), context(tmp_path / "ws"))
        assert isinstance(run, JsonlRun)
        collector = Collector(run)
        wait_for(model.stalled.is_set, 30, "the model request")
        run.stop()
        terminal = collector.terminal(timeout_s=10)
        no_leaks(run.pid)
    assert isinstance(terminal, RunFailed) and terminal.reason == "stopped"
    started = [e for e in collector.events if isinstance(e, SessionStarted)]
    assert terminal.session_id == started[0].session_id  # still resumable


def test_model_error_fails_the_run(tmp_path: Path) -> None:
    with ScriptedModel([Fail(400, "scripted bad request")]) as model:
        agent = real_codex(tmp_path, model)
        events = run_to_end(agent.start(prompt("x"), context(tmp_path / "ws")))
    assert isinstance(events[-1], RunFailed)
    assert events[-1].reason == "scripted bad request"
    assert Notice("codex: scripted bad request") in events


# --- fake CLIs -----------------------------------------------------------------------------

def fake_agent(tmp_path: Path, body: str, extra: str = "") -> CodexAgent:
    script = fake_cli(tmp_path / "bin", "codex", body)
    agent = build_agent(settings(tmp_path, extra, binary=str(script)))
    assert isinstance(agent, CodexAgent)
    return agent


def test_fake_cli_gets_the_prompt_on_stdin_and_its_argv(tmp_path: Path) -> None:
    agent = fake_agent(tmp_path, """
        import json, os, sys
        text = sys.stdin.read()
        print(json.dumps({"type": "thread.started", "thread_id": "T1"}))
        msg = {"argv": sys.argv[1:], "stdin": text, "cwd": os.getcwd(),
               "home": os.environ.get("CODEX_HOME")}
        print(json.dumps({"type": "item.completed",
                          "item": {"id": "1", "type": "agent_message", "text": json.dumps(msg)}}))
        print(json.dumps({"type": "turn.completed", "usage": {}}))
        """)
    events = run_to_end(agent.start(prompt("hello"), context(tmp_path / "ws")))
    done = events[-1]
    assert isinstance(done, RunDone) and done.session_id == "T1"
    seen = json.loads(done.answer)
    assert seen["argv"][-1] == "-" and "--json" in seen["argv"]
    assert prompt("hello").render() in seen["stdin"]
    assert seen["cwd"] == str(tmp_path / "ws")
    assert Path(seen["home"]).is_dir()


def test_fake_cli_crash_fails_with_stderr_in_log(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    agent = fake_agent(tmp_path, """
        import json, sys
        print(json.dumps({"type": "thread.started", "thread_id": "T2"}), flush=True)
        print("panic: something broke inside", file=sys.stderr)
        sys.exit(3)
        """)
    with caplog.at_level(logging.WARNING):
        events = run_to_end(agent.start(prompt("x"), context(tmp_path / "ws")))
    assert events[-1] == RunFailed(
        "codex exited with status 3 before finishing: panic: something broke inside", "T2")
    assert "stderr tail: panic: something broke inside" in caplog.text


def test_fake_cli_garbage_fails_and_is_killed(tmp_path: Path) -> None:
    agent = fake_agent(tmp_path, """
        import sys, time
        print("Segmentation fault (not JSON)", flush=True)
        time.sleep(60)
        """)
    run = agent.start(prompt("x"), context(tmp_path / "ws"))
    assert isinstance(run, JsonlRun)
    events = run_to_end(run, timeout_s=20)
    assert events == [RunFailed(
        "codex wrote a line that is not a JSON object: 'Segmentation fault (not JSON)'")]
    no_leaks(run.pid)


def test_fake_cli_silent_past_idle_timeout(tmp_path: Path) -> None:
    agent = fake_agent(tmp_path, """
        import json, time
        print(json.dumps({"type": "thread.started", "thread_id": "T3"}), flush=True)
        time.sleep(60)
        """, "idle_timeout_s = 2")
    run = agent.start(prompt("x"), context(tmp_path / "ws"))
    assert isinstance(run, JsonlRun)
    events = run_to_end(run, timeout_s=20)
    assert events == [SessionStarted("T3"), RunFailed("codex wrote nothing for 2 s; stopped", "T3")]
    no_leaks(run.pid)


def test_fake_cli_oversize_line_is_skipped_and_answer_cut(tmp_path: Path) -> None:
    agent = fake_agent(tmp_path, """
        import json, sys
        sys.stdout.write("x" * 5_000_000 + "\\n")
        print(json.dumps({"type": "item.completed",
                          "item": {"id": "1", "type": "agent_message", "text": "a" * 500}}))
        print(json.dumps({"type": "turn.completed", "usage": {}}))
        """, "max_output_bytes = 100")
    events = run_to_end(agent.start(prompt("x"), context(tmp_path / "ws")))
    done = events[-1]
    assert isinstance(done, RunDone)
    assert done.answer.startswith("a" * 100 + "\n\n[answer cut: 400 more characters")


def test_fake_cli_exit_without_terminal_event(tmp_path: Path) -> None:
    agent = fake_agent(tmp_path, """
        import json
        print(json.dumps({"type": "turn.started"}))
        """)
    events = run_to_end(agent.start(prompt("x"), context(tmp_path / "ws")))
    assert events == [RunFailed("codex exited with status 0 before finishing")]


def test_fake_cli_ignoring_sigterm_is_killed(tmp_path: Path) -> None:
    agent = fake_agent(tmp_path, """
        import json, signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        subprocess.Popen([sys.executable, "-c",
                          "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                          "time.sleep(60)"])
        print(json.dumps({"type": "thread.started", "thread_id": "T4"}), flush=True)
        open("ready", "w").close()
        time.sleep(60)
        """)
    run = agent.start(prompt("x"), context(tmp_path / "ws"))
    assert isinstance(run, JsonlRun)
    collector = Collector(run)
    wait_for((tmp_path / "ws" / "ready").exists, 20, "the fake CLI to be ready")
    run.stop()
    assert collector.terminal(timeout_s=15) == RunFailed("stopped", "T4")
    no_leaks(run.pid)


def test_missing_binary_raises_oserror(tmp_path: Path) -> None:
    agent = build_agent(settings(tmp_path, binary="/nonexistent/codex"))
    with pytest.raises(OSError):
        agent.start(prompt("x"), context(tmp_path / "ws"))


def test_images_are_attached_on_new_and_resumed_runs(tmp_path: Path) -> None:
    png = tmp_path / "dot.png"
    png.write_bytes(base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5E"
        "rkJggg=="))
    with ScriptedModel([Say("I see a dot."), Say("Still a dot.")]) as model:
        agent = real_codex(tmp_path, model)
        ws = tmp_path / "ws"
        first = run_to_end(agent.start(prompt("look"), RunContext("r1", "s", ws, None, (png,))))
        done = first[-1]
        assert isinstance(done, RunDone) and done.answer == "I see a dot."
        second = run_to_end(agent.start(prompt("again"),
                                        RunContext("r2", "s", ws, done.session_id, (png,))))
    assert second[-1] == RunDone("Still a dot.", done.session_id)
    one, two = model.main_requests()
    assert one.text().count('"input_image"') == 1
    assert two.text().count('"input_image"') == 2  # the earlier one is in the history
