"""The floor of bench/sdk.py: N sessions on the bare claude-agent-sdk, a cold turn then a warm one.

    python bench/sdk_bare.py BASE_URL ROOT N ROUNDS

Talks to its parent by lines: it prints READY; then, for each of ROUNDS rounds of N new
sessions, on each line it reads it runs a phase and prints its results as JSON (the cold turns,
then the warm ones), and on the third it closes the round's CLIs and prints CLOSED.

The CLI gets the options and environment the backend gives it, with the same tools (the
service's built-in ones, as an in-process MCP server: any SDK app with tools has one), and
without what the service adds (the transcript store, hooks, the HTTP stream, persistence).
Turns are timed from `connect()` (cold: the CLI is spawned) or `query()` (warm) to the first
text delta. The parent reads the CPU of this process
tree between the phases, while the CLIs are open.
"""

import asyncio
import json
import os
import sys
import time

from claude_agent_sdk import ClaudeAgentOptions, ClaudeSDKClient, ResultMessage, StreamEvent

from app.backends.builtin_tools import register_builtin_tools
from app.backends.claude_sdk.mcp_tools import registry_server
from app.backends.tools import ToolRegistry

PROMPT, TOKENS = "[[fake:text tokens=50 rate=500]]", 50
TOOLS = ToolRegistry()
register_builtin_tools(TOOLS)


def client(base_url: str, root: str) -> ClaudeSDKClient:
    """A client whose CLI has its own cwd, HOME, config and TMPDIR under `root`."""
    dirs = {k: os.path.join(root, k) for k in ("work", "home", "tmp")}
    for d in dirs.values():
        os.makedirs(d)
    env = {
        "HOME": dirs["home"],
        "CLAUDE_CONFIG_DIR": os.path.join(dirs["home"], ".claude"),
        "TMPDIR": dirs["tmp"],
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": "bench",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_RETRIES": "1",
    }
    server, allowed = registry_server(TOOLS)
    return ClaudeSDKClient(
        ClaudeAgentOptions(
            model="claude-sonnet-4-6",
            system_prompt="You are a helpful assistant.",
            include_partial_messages=True,
            setting_sources=[],
            cwd=dirs["work"],
            env=env,
            tools=[],
            allowed_tools=allowed,
            mcp_servers={"copilot": server},
            permission_mode="dontAsk",
            max_turns=9,
        )
    )


async def turn(c: ClaudeSDKClient, t0: float, cold: bool) -> tuple[float | None, bool]:
    """One turn: seconds from `t0` to the first text delta, and whether it went wrong."""
    if cold:
        await c.connect()
    await c.query(PROMPT)
    first, text, failed = None, "", True
    async for m in c.receive_response():
        delta = m.event.get("delta", {}) if isinstance(m, StreamEvent) else {}
        if delta.get("type") == "text_delta":
            first, text = first or time.perf_counter() - t0, text + delta["text"]
        if isinstance(m, ResultMessage):
            failed = m.is_error or len(text.split()) != TOKENS
    return first, failed


async def main(base_url: str, root: str, n: int, rounds: int) -> None:
    """Each round: all cold turns at once, then (after the last) all warm turns at once."""
    warm_up = client(base_url, os.path.join(root, "w"))  # first-use costs of this process
    await turn(warm_up, time.perf_counter(), True)
    await warm_up.disconnect()
    print("READY", flush=True)
    for r in range(rounds):
        clients = [client(base_url, os.path.join(root, f"r{r}s{i}")) for i in range(n)]
        for cold in (True, False):
            await asyncio.to_thread(sys.stdin.readline)
            turns = await asyncio.gather(*(turn(c, time.perf_counter(), cold) for c in clients))
            print(json.dumps(turns), flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        for c in clients:
            await c.disconnect()
        print("CLOSED", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
