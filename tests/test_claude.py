"""The claude agent: the real Claude Code CLI against a scripted Messages endpoint on
loopback, and fake CLIs for crashes and garbage."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from adapters.agents import agent_problems, build_agent
from adapters.agents.claude import ClaudeAgent, permission_problem
from adapters.agents.jsonl import JsonlRun
from bridge.agent import RunDone, RunFailed, SessionStarted, ToolFinished, ToolStarted, Usage
from bridge.cli.compose import load_config
from bridge.config import AgentSettings, ConfigError
from tests.fakes.clis import cli_path
from tests.fakes.models import Fail, Say, ScriptedModel, Shell, Stall
from tests.fakes.runs import Collector, context, fake_cli, no_leaks, prompt, run_to_end, wait_for


def settings(tmp_path: Path, extra: str = "", binary: str | None = None) -> AgentSettings:
    """Load a bridge config with one claude agent named ``coder``."""
    binary_line = f'binary = "{binary}"' if binary else ""
    (tmp_path / "bridge.toml").write_text(textwrap.dedent(f"""\
        [bridge]
        state_dir = "var"

        [fabric]
        center_url = "http://127.0.0.1:1/api"

        [agents.coder]
        kind = "claude"
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


def real_claude(tmp_path: Path, model: ScriptedModel, extra: str = "") -> ClaudeAgent:
    """A claude agent on the real CLI, pointed at ``model`` with ANTHROPIC_BASE_URL."""
    agent = build_agent(settings(tmp_path, f"""
        model_api_key = "sk-ant-test-key-0000"
        model_base_url = "{model.url}"
        idle_timeout_s = 60
        """ + extra, binary=str(cli_path("claude"))))
    assert isinstance(agent, ClaudeAgent)
    return agent


# --- config and argv -----------------------------------------------------------------------

def test_config_defaults_and_permission_mode_from_sandbox(tmp_path: Path) -> None:
    agent = settings(tmp_path)
    assert agent.binary == "claude"
    assert agent.permission_mode == "acceptEdits"
    assert agent.config_dir == tmp_path / "var" / "claude-home" / "coder"
    assert settings(tmp_path, 'sandbox = "read-only"').permission_mode == "default"
    assert settings(tmp_path, 'sandbox = "danger-full-access"').permission_mode == \
        "bypassPermissions"
    explicit = settings(tmp_path, 'sandbox = "read-only"\npermission_mode = "plan"')
    assert explicit.permission_mode == "plan"


@pytest.mark.parametrize(("extra", "key", "words"), [
    ('permission_mode = "yolo"', "agents.coder.permission_mode", ["acceptEdits", "'yolo'"]),
    ('model_base_url = "localhost:1"', "agents.coder.model_base_url", ["http://"]),
    ('allowed_tools = "Bash"', "agents.coder.allowed_tools", ["list"]),
    ('codex_home = "x"', "agents.coder.codex_home", ["only to kind codex"]),
])
def test_config_errors(tmp_path: Path, extra: str, key: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        settings(tmp_path, extra)
    assert info.value.key == key
    assert info.value.line is not None
    for word in words:
        assert word in str(info.value)


def test_argv_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FABRIC_SECRET_OF_BRIDGE", "do-not-leak")
    agent = ClaudeAgent(settings(tmp_path, """
        allowed_tools = ["Bash(git diff:*)", "Edit"]
        extra_args = ["--model", "sonnet"]
        model_api_key = "sk-ant-secret-1"
        model_base_url = "http://127.0.0.1:9/"
        env = { DISABLE_AUTOUPDATER = "0" }
        """))
    assert agent.argv(context(tmp_path / "ws", "sess-1")) == [
        "claude", "-p", "--output-format", "stream-json", "--verbose",
        "--allowedTools", "Bash(git diff:*)", "Edit", "--permission-mode", "acceptEdits",
        "--resume", "sess-1", "--model", "sonnet"]
    assert "--resume" not in agent.argv(context(tmp_path / "ws"))
    env = agent.env()
    assert "FABRIC_SECRET_OF_BRIDGE" not in env
    assert env["ANTHROPIC_API_KEY"] == "sk-ant-secret-1"
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:9"
    assert env["CLAUDE_CONFIG_DIR"] == str(tmp_path / "var" / "claude-home" / "coder")
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert env["DISABLE_AUTOUPDATER"] == "0"  # the agent's env wins


def test_bypass_permissions_as_root_is_a_doctor_problem(tmp_path: Path) -> None:
    agent = settings(tmp_path, 'sandbox = "danger-full-access"')
    problem = permission_problem(agent, euid=0)
    assert problem is not None and "refused by Claude Code when running as root" in problem
    assert permission_problem(agent, euid=1000) is None
    assert permission_problem(settings(tmp_path), euid=0) is None  # the default works as root
    if os.geteuid() == 0:
        assert problem in agent_problems(agent)


# --- the real CLI --------------------------------------------------------------------------

def test_plain_answer(tmp_path: Path) -> None:
    with ScriptedModel([Say("The answer is 42.")]) as model:
        agent = real_claude(tmp_path, model)
        run = agent.start(prompt("what is six times seven?"), context(tmp_path / "ws"))
        assert isinstance(run, JsonlRun)
        events = run_to_end(run)
        no_leaks(run.pid)
    session = events[0]
    assert isinstance(session, SessionStarted)
    assert events[-1] == RunDone("The answer is 42.", session.session_id)
    usage = [e for e in events if isinstance(e, Usage)]
    assert len(usage) == 1 and usage[0].output_tokens == 30 and usage[0].turns == 1
    assert usage[0].cost_usd is not None
    (request,) = model.main_requests()
    # the rendered prompt's message line, as the JSON of the request spells it
    asked = prompt("what is six times seven?").messages[0].render()
    assert json.dumps(asked)[1:-1] in request.text()
    assert request.headers.get("x-api-key") == "sk-ant-test-key-0000"
    assert (tmp_path / "var" / "claude-home" / "coder" / ".claude.json").exists()  # isolated


def test_shell_tool_step_with_allowed_bash(tmp_path: Path) -> None:
    with ScriptedModel([Shell("echo tool-output-7"), Say("Ran it.")]) as model:
        agent = real_claude(tmp_path, model, 'allowed_tools = ["Bash"]')
        events = run_to_end(agent.start(prompt("run echo"), context(tmp_path / "ws")))
    started = [e for e in events if isinstance(e, ToolStarted)]
    assert [s.title for s in started] == ["echo tool-output-7"]
    assert [e for e in events if isinstance(e, ToolFinished)] == [
        ToolFinished(started[0].step_id, True, "")]
    assert isinstance(events[-1], RunDone) and events[-1].answer == "Ran it."
    _, second = model.main_requests()
    assert "tool-output-7" in second.text()


def test_default_permissions_deny_the_shell(tmp_path: Path) -> None:
    command = "python3 -c 'open(\"ran.txt\", \"w\")'"
    with ScriptedModel([Shell(command), Say("Could not.")]) as model:
        agent = real_claude(tmp_path, model)  # acceptEdits, no allowed tools
        events = run_to_end(agent.start(prompt("run it"), context(tmp_path / "ws")))
    finished = [e for e in events if isinstance(e, ToolFinished)]
    assert len(finished) == 1 and not finished[0].ok
    assert not (tmp_path / "ws" / "ran.txt").exists()
    assert isinstance(events[-1], RunDone)
    _, second = model.main_requests()
    assert "requires approval" in second.text()


def test_follow_up_resumes_the_session(tmp_path: Path) -> None:
    with ScriptedModel([Say("First answer."), Say("Second answer.")]) as model:
        agent = real_claude(tmp_path, model)
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
        agent = real_claude(tmp_path, model)
        run = agent.start(prompt("take your time"), context(tmp_path / "ws"))
        assert isinstance(run, JsonlRun)
        collector = Collector(run)
        wait_for(model.stalled.is_set, 30, "the model request")
        run.stop()
        terminal = collector.terminal(timeout_s=10)
        no_leaks(run.pid)
    assert isinstance(terminal, RunFailed) and terminal.reason == "stopped"
    started = [e for e in collector.events if isinstance(e, SessionStarted)]
    assert started and terminal.session_id == started[0].session_id


def test_model_error_fails_the_run(tmp_path: Path) -> None:
    with ScriptedModel([Fail(400, "scripted bad request")]) as model:
        agent = real_claude(tmp_path, model)
        events = run_to_end(agent.start(prompt("x"), context(tmp_path / "ws")))
    assert isinstance(events[-1], RunFailed)
    assert events[-1].reason == "API Error: 400 scripted bad request"


def test_bypass_permissions_as_root_fails_clearly(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("Claude Code refuses bypassPermissions only for root")
    with ScriptedModel([Say("never")]) as model:
        agent = real_claude(tmp_path, model, 'sandbox = "danger-full-access"')
        events = run_to_end(agent.start(prompt("x"), context(tmp_path / "ws")))
    assert events == [RunFailed("claude exited with status 1 before finishing: "
                                "--dangerously-skip-permissions cannot be used with root/sudo "
                                "privileges for security reasons")]
    assert model.main_requests() == []


# --- fake CLIs -----------------------------------------------------------------------------

def fake_agent(tmp_path: Path, body: str, extra: str = "") -> ClaudeAgent:
    script = fake_cli(tmp_path / "bin", "claude", body)
    agent = build_agent(settings(tmp_path, extra, binary=str(script)))
    assert isinstance(agent, ClaudeAgent)
    return agent


def test_fake_cli_crash_after_init(tmp_path: Path) -> None:
    agent = fake_agent(tmp_path, """
        import json, os, sys
        sys.stdin.read()
        print(json.dumps({"type": "system", "subtype": "init", "session_id": "S1"}), flush=True)
        print("TypeError: cannot read properties of undefined", file=sys.stderr)
        os.kill(os.getpid(), 9)
        """)
    events = run_to_end(agent.start(prompt("x"), context(tmp_path / "ws")))
    assert events == [SessionStarted("S1"), RunFailed(
        "claude was killed by signal 9 before finishing: TypeError: cannot read properties of "
        "undefined", "S1")]


def test_fake_cli_garbage(tmp_path: Path) -> None:
    agent = fake_agent(tmp_path, """
        print('{"type": "system", "subtype": "init", "session_id": "S2"}')
        print('[1, 2, 3]')
        """)
    events = run_to_end(agent.start(prompt("x"), context(tmp_path / "ws")))
    assert events == [SessionStarted("S2"), RunFailed(
        "claude wrote a line that is not a JSON object: '[1, 2, 3]'", "S2")]


def test_fake_cli_hang_past_idle_timeout_while_stderr_is_quiet(tmp_path: Path) -> None:
    agent = fake_agent(tmp_path, """
        import sys, time
        print("starting", file=sys.stderr, flush=True)
        time.sleep(60)
        """, "idle_timeout_s = 0.5")
    run = agent.start(prompt("x"), context(tmp_path / "ws"))
    assert isinstance(run, JsonlRun)
    assert run_to_end(run, timeout_s=20) == [RunFailed("claude wrote nothing for 0.5 s; stopped")]
    no_leaks(run.pid)


def test_fake_cli_result_line_ends_the_run_even_if_the_child_lingers(tmp_path: Path) -> None:
    agent = fake_agent(tmp_path, """
        import json, time
        print(json.dumps({"type": "result", "subtype": "success", "result": "fine",
                          "session_id": "S3", "usage": {"output_tokens": 1}}), flush=True)
        time.sleep(60)
        """)
    run = agent.start(prompt("x"), context(tmp_path / "ws"))
    assert isinstance(run, JsonlRun)
    events = run_to_end(run, timeout_s=20)
    assert events[-1] == RunDone("fine", "S3")
    no_leaks(run.pid)
    assert json.dumps(events[-1].answer) == '"fine"'


def test_fake_cli_leftover_cleans_up_before_it_is_killed(tmp_path: Path) -> None:
    # What a login shell of the CLI left running, like ``pyenv rehash`` from ~/.bashrc:
    # it holds a lock file that its EXIT trap removes. SIGKILLed, it left the lock
    # behind, and every later login shell (the Bash tool's) waited on it.
    lock = tmp_path / "shims.lock"
    agent = fake_agent(tmp_path, f"""
        import json, os, subprocess, sys, time
        sys.stdin.read()
        subprocess.Popen(["bash", "-c", "trap 'sleep 0.2; rm -f {lock}' EXIT; "
                          ": > {lock}; while true; do sleep 0.1; done"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
        while not os.path.exists({str(lock)!r}):
            time.sleep(0.01)
        print(json.dumps({{"type": "result", "subtype": "success", "result": "done",
                          "session_id": "S4"}}), flush=True)
        """)
    run = agent.start(prompt("x"), context(tmp_path / "ws"))
    assert isinstance(run, JsonlRun)
    assert run_to_end(run, timeout_s=20)[-1] == RunDone("done", "S4")
    no_leaks(run.pid)
    assert not lock.exists()


def test_fake_cli_stop_gives_every_process_the_grace_period(tmp_path: Path) -> None:
    # The CLI dies at once on SIGTERM; what it started still gets the grace period
    # (1 s) to clean up, not a SIGKILL as soon as the CLI is gone.
    lock = tmp_path / "shims.lock"
    agent = fake_agent(tmp_path, f"""
        import os, subprocess, sys, time
        sys.stdin.read()
        subprocess.Popen(["bash", "-c", "trap 'sleep 0.2; rm -f {lock}' EXIT; "
                          ": > {lock}; while true; do sleep 0.1; done"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
        time.sleep(60)
        """)
    run = agent.start(prompt("x"), context(tmp_path / "ws"))
    assert isinstance(run, JsonlRun)
    collector = Collector(run)
    wait_for(lock.exists, 20, "the leftover's lock")
    run.stop()
    assert collector.terminal(timeout_s=20) == RunFailed("stopped")
    no_leaks(run.pid)
    assert not lock.exists()
