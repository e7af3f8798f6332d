"""The model's context: its size, and the ladder that makes a conversation fit the window."""
