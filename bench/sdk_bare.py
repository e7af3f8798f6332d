"""The floor of bench/sdk.py: N sessions on the bare claude-agent-sdk, a cold turn then a warm one.

    python bench/sdk_bare.py BASE_URL ROOT N

Talks to its parent by lines: it prints READY; on each line it reads it runs a phase and prints
its results as JSON (the cold turns, then the warm ones); on the third it closes the CLIs.

The CLI gets the options and environment the backend gives it, without what the backend adds
(its MCP server, transcript store, hooks). Turns are timed from `connect()` (cold: the CLI is
spawned) or `query()` (warm) to the first text delta. The parent reads the CPU of this process
tree between the phases, while the CLIs are open.
"""

import asyncio
import json
import os
import sys
import time

from claude_agent_sdk import ClaudeAgentOptions, ClaudeSDKClient, ResultMessage, StreamEvent

PROMPT, TOKENS = "[[fake:text tokens=50 rate=500]]", 50


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
    return ClaudeSDKClient(
        ClaudeAgentOptions(
            model="claude-sonnet-4-6",
            system_prompt="You are a helpful assistant.",
            include_partial_messages=True,
            setting_sources=[],
            cwd=dirs["work"],
            env=env,
            tools=[],
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


async def main(base_url: str, root: str, n: int) -> None:
    """All cold turns at once, then (after the last) all warm turns at once."""
    warm_up = client(base_url, os.path.join(root, "w"))  # first-use costs of this process
    await turn(warm_up, time.perf_counter(), True)
    await warm_up.disconnect()
    clients = [client(base_url, os.path.join(root, f"s{i}")) for i in range(n)]
    print("READY", flush=True)
    for cold in (True, False):
        await asyncio.to_thread(sys.stdin.readline)
        turns = await asyncio.gather(*(turn(c, time.perf_counter(), cold) for c in clients))
        print(json.dumps(turns), flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    for c in clients:
        await c.disconnect()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
