"""The `claude_sdk` backend: the Claude Code CLI, driven through claude-agent-sdk, per session."""
