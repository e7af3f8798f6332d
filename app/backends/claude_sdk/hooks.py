"""PreToolUse guards for the CLI's built-in tools (workspace, Bash patterns, sub-agent cap),
and the PostToolUse hook that steers a running turn (`SteeringHook`, at the end).

They only matter when `COPILOT_SDK_BUILTIN_TOOLS` turns built-ins on; the registry's MCP tools
match none of the matchers, so they cost no hook round trip.

A denial is `hookSpecificOutput.permissionDecision = "deny"` with a reason. Measured with the
bundled CLI 2.1.330: the tool does not run, the model gets a `tool_result` with
`is_error: true` and the content `PreToolUse:<tool> hook error: <reason>` (the same text is the
`ToolResultBlock` of the `UserMessage` in the SDK stream), and the turn goes on.

Every matcher is `on_failure="block"`: a guard that raises denies the call instead of letting
it through.

- File tools (Read, Write, Edit, MultiEdit, NotebookEdit, LS, Glob, Grep): `file_path`,
  `notebook_path` and `path` must resolve (symlinks followed, relative paths taken from the
  workspace) inside the workspace; `~` paths are denied (HOME is outside). Glob's `pattern` may
  not be absolute outside the workspace nor contain `..`. Grep's `pattern` is a regex, not a
  path, and is not checked. The check runs before the tool does: a symlink swapped in between
  (which takes Bash) is not seen. The guards also fire for a sub-agent's tool calls (tested).
- Bash: the command is denied when any of the configured regexes is found in it
  (`DEFAULT_DENIED_BASH` is a sensible default). This is a tripwire, not a sandbox: quoting,
  variables, `eval`, scripts written first and run later all defeat patterns, and writes outside
  the workspace cannot be detected from a command line in general. Real confinement of Bash
  needs an OS sandbox (the CLI's `sandbox` settings, a container); without one, leave Bash off.
  Bash inherits the CLI's environment, `ANTHROPIC_API_KEY` included (measured: the CLI does
  not scrub it), so with Bash on, the key the CLI holds should be one you can afford to leak.
- Sub-agents (`Task`, the older name, and `Agent`): at most `max_subagents` per turn. The
  count is kept per `prompt_id` of the hook input (one per user prompt, so per turn, also on
  a warm client whose hooks were registered once at spawn); `SubagentCap.reset()` clears it
  for a caller that wants to reset explicitly.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

from claude_agent_sdk import HookContext, HookInput, HookJSONOutput, HookMatcher

from app.backends.events import TurnControl

FILE_TOOLS = ("Read", "Write", "Edit", "MultiEdit", "NotebookEdit", "LS", "Glob", "Grep")
SUBAGENT_TOOLS = ("Task", "Agent")
_PATH_ARGS = ("file_path", "notebook_path", "path")
_GLOB_MAGIC = re.compile(r"[*?\[{]")
_REMEMBERED_PROMPTS = 16

DEFAULT_DENIED_BASH: tuple[str, ...] = (
    r"\brm\s+(-\S+\s+)*(/|/\*|~/?|\$HOME/?)(\s|$)",  # rm [-rf] / ~ $HOME
    r"\bsudo\b|\bsu(\s|$)|\bdoas\b",
    r"\b(curl|wget)\b[^|]*\|\s*(sudo\s+)?(ba|da|z|k|c)?sh\b",  # download piped to a shell
    r"\b(curl|wget)\b[^|]*\|\s*(python[0-9.]*|perl|ruby|node)\b",
    r"\bmkfs(\.\w+)?\b|\bdd\b[^|;&]*\bof=/dev/|>\s*/dev/(sd|nvme|hd|xvd)",
    r":\(\)\s*\{\s*:\s*\|\s*:\s*&\s*\}\s*;\s*:",  # fork bomb
    r"\b(shutdown|reboot|halt|poweroff)\b",
    r"\bchmod\s+(-\S+\s+)*[0-7]*777\s+/(\s|$)|\bchown\s+(-\S+\s+)*\S+\s+/(\s|$)",
    r"/dev/tcp/|\b(nc|ncat|netcat)\b.*\s-[ec]\b",  # reverse shells
    # the CLI's environment, API key included, is Bash's (measured): keep it from being listed
    r"\bprintenv\b|(^|[;&|(]\s*)(env|set|export\s+-p|declare\s+-\w*[px]\w*)\s*($|[|;&>)])",
    r"/proc/[^/\s]+/environ|\$\{?!?ANTHROPIC_",
)


def deny(reason: str) -> HookJSONOutput:
    """A PreToolUse answer that refuses the call; the model sees `reason` as a tool error."""
    return {
        "hookSpecificOutput": {
            "hookEventName": "PreToolUse",
            "permissionDecision": "deny",
            "permissionDecisionReason": reason,
        }
    }


class WorkspaceGuard:
    """Keeps the file tools' paths inside one workspace directory."""

    def __init__(self, workspace: Path) -> None:
        self.root = os.path.realpath(workspace)

    def inside(self, raw: str) -> bool:
        """Whether a path argument resolves inside the workspace."""
        if not raw or "\0" in raw or raw.startswith("~"):
            return False
        resolved = os.path.realpath(os.path.join(self.root, raw))
        return resolved == self.root or resolved.startswith(self.root + os.sep)

    def problem(self, tool: str, tool_input: dict[str, Any]) -> str | None:
        """Why the call must be refused, or None."""
        for arg in _PATH_ARGS:
            value = tool_input.get(arg)
            if value is None:
                continue
            if not isinstance(value, str) or not self.inside(value):
                return f"{tool}: {arg} {value!r} is outside the workspace"
        pattern = tool_input.get("pattern") if tool == "Glob" else None
        if pattern is None:
            return None
        if not isinstance(pattern, str) or ".." in Path(pattern).parts:
            return f"Glob: pattern {pattern!r} may not leave the workspace"
        # The part before the first wildcard, and its directory: `/ws/work*/x` also matches a
        # sibling `/ws/work2`, `link/*` lists what a symlinked directory points to.
        static = _GLOB_MAGIC.split(pattern, maxsplit=1)[0]
        base = tool_input.get("path") or "."
        for prefix in (static, static[: static.rfind(os.sep) + 1]):
            if not self.inside(os.path.join(base, prefix)):
                return f"Glob: pattern {pattern!r} is outside the workspace"
        return None

    async def __call__(
        self, hook_input: HookInput, tool_use_id: str | None, context: HookContext
    ) -> HookJSONOutput:
        """The PreToolUse callback."""
        tool = str(hook_input.get("tool_name", ""))
        if tool not in FILE_TOOLS:
            return {}
        problem = self.problem(tool, _tool_input(hook_input))
        return deny(problem) if problem else {}


class BashGuard:
    """Refuses Bash commands that match a denied pattern."""

    def __init__(self, patterns: list[str]) -> None:
        try:
            self.patterns = [re.compile(p) for p in patterns]
        except re.error as exc:
            raise ValueError(f"bad denied Bash pattern {exc.pattern!r}: {exc}") from exc

    def problem(self, command: str) -> str | None:
        """Why the command must be refused, or None."""
        for pattern in self.patterns:
            if pattern.search(command):
                return f"Bash: command refused by policy (matches {pattern.pattern!r})"
        return None

    async def __call__(
        self, hook_input: HookInput, tool_use_id: str | None, context: HookContext
    ) -> HookJSONOutput:
        """The PreToolUse callback."""
        if hook_input.get("tool_name") != "Bash":
            return {}
        command = _tool_input(hook_input).get("command")
        if not isinstance(command, str):
            return deny("Bash: no command")
        problem = self.problem(command)
        return deny(problem) if problem else {}


class SubagentCap:
    """Allows at most `limit` sub-agents per turn (per user prompt)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._counts: OrderedDict[str | None, int] = OrderedDict()

    def reset(self) -> None:
        """Forget every count (a new turn starts from zero)."""
        self._counts.clear()

    def take(self, prompt_id: str | None) -> bool:
        """Count one sub-agent for the prompt; False when the cap is already reached."""
        used = self._counts.pop(prompt_id, 0)
        allowed = used < self.limit
        self._counts[prompt_id] = used + 1 if allowed else used  # most recent last
        while len(self._counts) > _REMEMBERED_PROMPTS:
            self._counts.popitem(last=False)
        return allowed

    async def __call__(
        self, hook_input: HookInput, tool_use_id: str | None, context: HookContext
    ) -> HookJSONOutput:
        """The PreToolUse callback."""
        if hook_input.get("tool_name") not in SUBAGENT_TOOLS:
            return {}
        prompt_id = hook_input.get("prompt_id")
        if self.take(prompt_id if isinstance(prompt_id, str) else None):
            return {}
        return deny(f"sub-agent limit reached: at most {self.limit} per turn")


def tool_guards(
    workspace: Path,
    *,
    denied_bash: list[str],
    max_subagents: int,
    subagent_cap: SubagentCap | None = None,
) -> dict[str, list[HookMatcher]]:
    """PreToolUse hooks for `ClaudeAgentOptions.hooks` guarding the CLI's built-in tools."""
    cap = subagent_cap if subagent_cap is not None else SubagentCap(max_subagents)
    return {
        "PreToolUse": [
            HookMatcher("|".join(FILE_TOOLS), [WorkspaceGuard(workspace)], on_failure="block"),
            HookMatcher("Bash", [BashGuard(denied_bash)], on_failure="block"),
            HookMatcher("|".join(SUBAGENT_TOOLS), [cap], on_failure="block"),
        ]
    }


STEER_HEADER = "The user sent a new message while you were working:"


class SteeringHook:
    """PostToolUse, on every tool: hands the messages sent to steer the running turn
    (`on_conflict: "steer"`, `TurnControl.steers`) to the model before its next call.

    Measured with the bundled CLI 2.1.330: the hook's `additionalContext` reaches the next
    request as a system message right after the tool's `tool_result`, within the same turn
    (one `ResultMessage`); the hook costs no measurable time. A `query()` sent to the busy
    client does the same, but a steer arriving during the final answer then becomes a second
    turn inside one `receive_response()`: a hook leaves such a steer in the queue, where it
    becomes the session's next turn. One per client (its hooks are fixed at spawn); `control`
    is the running turn's, set for the length of the turn.
    """

    def __init__(self) -> None:
        self.control: TurnControl | None = None

    async def __call__(
        self, hook_input: HookInput, tool_use_id: str | None, context: HookContext
    ) -> HookJSONOutput:
        """The PostToolUse callback."""
        control = self.control
        texts = await control.steers() if control is not None else []
        if not texts:
            return {}
        return {
            "hookSpecificOutput": {
                "hookEventName": "PostToolUse",
                "additionalContext": "\n\n".join([STEER_HEADER, *texts]),
            }
        }


def _tool_input(hook_input: HookInput) -> dict[str, Any]:
    value = hook_input.get("tool_input")
    return value if isinstance(value, dict) else {}
