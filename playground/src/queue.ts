// Messages sent while a reply runs. `useChat`/`Chat` only send when the chat is ready, so
// these go out as their own POST with `on_conflict` (enqueue or steer). Its stream says
// `data-status` queued|steering (with the position), then steered or cancelled, or goes on
// with the message's own turn: there the page stops reading, and the chat follows that turn
// through its resume request once the running one has ended (see main.ts `afterTurn`).
import { generateId } from "ai";
import { API, authHeaders, describeError } from "./api";

export type Mode = "enqueue" | "steer";

export interface Waiting {
  id: string;
  text: string;
  mode: Mode;
  state: "sending" | "queued" | "steering" | "error";
  position?: number;
  error?: string;
}

interface StatusData {
  status?: string;
  messageId?: string;
  position?: number;
}

/** Calls `onChunk` for each JSON chunk of an SSE body until it returns false or the body ends. */
async function readChunks(
  body: ReadableStream<Uint8Array>,
  onChunk: (chunk: { type?: string; data?: unknown }) => boolean,
): Promise<void> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let end: number;
      while ((end = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, end).replace(/\r$/, "");
        buffer = buffer.slice(end + 1);
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        if (!onChunk(JSON.parse(data))) return;
      }
    }
  } finally {
    await reader.cancel().catch(() => undefined);
  }
}

/**
 * POSTs `text` with `on_conflict: mode` and keeps `entry` up to date until the message
 * steered the running reply, was cancelled, or its own turn started (`started` is called).
 */
export async function sendWhileBusy(
  chatId: string,
  text: string,
  mode: Mode,
  update: (entry: Waiting | null, id: string) => void,
  started: () => void,
): Promise<void> {
  const id = generateId();
  const entry: Waiting = { id, text, mode, state: "sending" };
  update(entry, id);
  try {
    const response = await fetch(`${API}/chat`, {
      method: "POST",
      headers: { ...authHeaders(), "content-type": "application/json" },
      body: JSON.stringify({
        id: chatId,
        messages: [{ id, role: "user", parts: [{ type: "text", text }] }],
        trigger: "submit-message",
        on_conflict: mode,
      }),
    });
    if (!response.ok || !response.body) {
      const error = describeError(response.status, await response.text());
      update({ ...entry, state: "error", error: `${error.code}: ${error.message}` }, id);
      return;
    }
    let ownTurn = false;
    await readChunks(response.body, (chunk) => {
      if (chunk.type === "data-status") {
        const data = (chunk.data ?? {}) as StatusData;
        if (data.status === "queued" || data.status === "steering") {
          update({ ...entry, state: data.status, position: data.position }, id);
        } else if (data.status === "steered" || data.status === "cancelled") {
          update(null, id);
          return false;
        }
        return true;
      }
      // Anything else is the message's own turn: the chat will follow it by resuming.
      ownTurn = true;
      return false;
    });
    if (ownTurn) started();
  } catch (error) {
    update({ ...entry, state: "error", error: String(error) }, id);
  }
}
