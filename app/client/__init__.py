"""`copilot chat`: a terminal client that uses only the public HTTP API (`/api/v1`).

It imports nothing else from `app/`, so it doubles as an example of a client: start a turn
with `POST /chat`, read the UI message stream (`sse.py`), show it (`render.py`), resume it with
`Last-Event-ID` after a dropped connection and stop it with `POST /chat/{id}/stop`
(`turn.py`), and the sessions API for `/sessions` and `/resume` (`api.py`, `chat.py`).
"""
