"""The Claude Agent SDK backend."""
