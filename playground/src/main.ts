// The playground: sign in, sessions on the left, a chat on the right.
import { DefaultChatTransport } from "ai";
import "./style.css";
import {
  ApiError,
  type ChatMessage,
  type Session,
  authHeaders,
  credential,
  describeError,
  sessions as rest,
  setCredential,
} from "./api";
import { PageChat } from "./chat";
import { type Mode, type Waiting, sendWhileBusy } from "./queue";
import { el, renderMessage } from "./render";

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;

const ui = {
  signin: $("signin"),
  signinForm: $<HTMLFormElement>("signin-form"),
  signinToken: $<HTMLInputElement>("signin-token"),
  signinError: $("signin-error"),
  app: $("app"),
  sessions: $<HTMLUListElement>("sessions"),
  moreSessions: $<HTMLButtonElement>("more-sessions"),
  newSession: $<HTMLButtonElement>("new-session"),
  whoami: $("whoami"),
  signout: $<HTMLButtonElement>("signout"),
  empty: $("empty"),
  conversation: $("conversation"),
  thread: $("thread"),
  older: $<HTMLButtonElement>("older"),
  messages: $("messages"),
  pending: $("pending"),
  statusLine: $("status-line"),
  chatError: $("chat-error"),
  queue: $<HTMLUListElement>("queue"),
  composer: $<HTMLFormElement>("composer"),
  input: $<HTMLTextAreaElement>("input"),
  busyMode: $<HTMLSelectElement>("busy-mode"),
  stop: $<HTMLButtonElement>("stop"),
  send: $<HTMLButtonElement>("send"),
};

// ---- state ----
let list: Session[] = [];
let cursor: string | null = null;
let chat: PageChat | null = null;
let unsubscribe: (() => void) | null = null;
let hasOlder = false;
let waiting: Waiting[] = [];
let statusNote: string | null = null;
let drawScheduled = false;
let lastStatus = "ready";
// The resume request of a chat just opened: a send waits for it (its 204 sets the status).
let resuming: Promise<void> = Promise.resolve();
let following: Promise<void> | null = null;
let followAgain = false;
let resync = false;
// Turns followed since the user last sent: a bound in case the server keeps saying
// "running" while its stream answers 204.
let follows = 0;
const MAX_FOLLOWS = 20;
const collapsed = new Set<string>();
const drawn = new WeakMap<ChatMessage, { key: string; node: HTMLElement }>();

// ---- sign in ----
function signedOut(message?: string): void {
  ui.app.hidden = true;
  ui.signin.hidden = false;
  ui.signinError.hidden = !message;
  ui.signinError.textContent = message ?? "";
  ui.signinToken.focus();
}

ui.signinForm.addEventListener("submit", (event) => {
  event.preventDefault();
  setCredential(ui.signinToken.value.trim() || null);
  void start();
});

ui.signout.addEventListener("click", () => {
  setCredential(null);
  location.hash = "";
  location.reload();
});

/** An API call; a 401 sends the page back to the sign-in box. */
async function guarded<T>(call: () => Promise<T>): Promise<T | undefined> {
  try {
    return await call();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      setCredential(null);
      signedOut(`${error.code}: ${error.message}`);
      return undefined;
    }
    showError(error);
    return undefined;
  }
}

function showError(error: unknown): void {
  ui.chatError.hidden = false;
  ui.chatError.textContent =
    error instanceof ApiError ? `${error.code}: ${error.message}` : String(error);
}

async function start(): Promise<void> {
  let page: Awaited<ReturnType<typeof rest.page>>;
  try {
    page = await rest.page(null);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      const tried = credential() !== null;
      setCredential(null);
      signedOut(tried ? `${error.code}: ${error.message}` : undefined);
      return;
    }
    throw error;
  }
  ui.signin.hidden = true;
  ui.app.hidden = false;
  const local = credential() === null;
  ui.whoami.textContent = local ? "local mode (no sign-in needed)" : "signed in";
  ui.signout.hidden = local;
  list = page.sessions;
  cursor = page.next_cursor;
  drawSessions();
  const wanted = decodeURIComponent(location.hash.slice(1));
  if (wanted) await openSession(wanted);
}

// ---- sessions ----
function drawSessions(): void {
  ui.sessions.replaceChildren(...list.map(sessionItem));
  ui.moreSessions.hidden = cursor === null;
}

function sessionItem(session: Session): HTMLLIElement {
  const item = el("li", "session");
  item.dataset.id = session.id;
  if (chat?.id === session.id) item.classList.add("current");
  const open = el("button", "session-open", session.title || "New chat");
  open.type = "button";
  open.title = `${session.id} · ${new Date(session.created_at).toLocaleString()}`;
  open.addEventListener("click", () => void openSession(session.id));
  item.append(open);
  if (session.status !== "idle") item.append(el("span", "badge", session.status));
  const rename = el("button", "link session-rename", "Rename");
  rename.type = "button";
  rename.addEventListener("click", () => startRename(item, session));
  const remove = el("button", "link session-delete", "Delete");
  remove.type = "button";
  remove.addEventListener("click", () => {
    if (remove.dataset.confirm !== "1") {
      remove.dataset.confirm = "1";
      remove.textContent = "Delete?";
      setTimeout(() => {
        remove.dataset.confirm = "";
        remove.textContent = "Delete";
      }, 4000);
      return;
    }
    void deleteSession(session.id);
  });
  item.append(el("span", "session-actions"));
  item.lastElementChild?.append(rename, remove);
  return item;
}

function startRename(item: HTMLLIElement, session: Session): void {
  const input = el("input", "session-title-input");
  input.value = session.title ?? "";
  input.setAttribute("aria-label", "New title");
  item.replaceChildren(input);
  input.focus();
  input.select();
  let done = false;
  const finish = async (save: boolean) => {
    if (done) return;
    done = true;
    const title = input.value.trim();
    if (save && title && title !== session.title) {
      const updated = await guarded(() => rest.rename(session.id, title));
      if (updated) list = list.map((s) => (s.id === updated.id ? updated : s));
    }
    drawSessions();
  };
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") void finish(true);
    if (event.key === "Escape") void finish(false);
  });
  input.addEventListener("blur", () => void finish(true));
}

async function deleteSession(id: string): Promise<void> {
  const deleted = await guarded(async () => {
    await rest.remove(id);
    return true;
  });
  if (!deleted) return;
  list = list.filter((s) => s.id !== id);
  if (chat?.id === id) closeChat();
  drawSessions();
}

ui.moreSessions.addEventListener("click", async () => {
  const page = await guarded(() => rest.page(cursor));
  if (!page) return;
  const known = new Set(list.map((s) => s.id));
  list = list.concat(page.sessions.filter((s) => !known.has(s.id)));
  cursor = page.next_cursor;
  drawSessions();
});

ui.newSession.addEventListener("click", async () => {
  const created = await guarded(() => rest.create());
  if (!created) return;
  list = [created, ...list];
  drawSessions();
  await openSession(created.id);
  ui.input.focus();
});

async function refreshSession(id: string): Promise<void> {
  const fresh = await rest.get(id).catch(() => null);
  if (fresh) {
    list = list.map((s) => (s.id === id ? fresh : s));
    drawSessions();
  }
}

// ---- the chat ----
function closeChat(): void {
  unsubscribe?.();
  void chat?.stop();
  chat = null;
  waiting = [];
  statusNote = null;
  ui.conversation.hidden = true;
  ui.empty.hidden = false;
  if (location.hash) history.replaceState(null, "", location.pathname);
}

/** The server's history: the chat's messages, and the queue's waiting ones. */
function split(messages: ChatMessage[]): [ChatMessage[], Waiting[]] {
  const shown: ChatMessage[] = [];
  const queued: Waiting[] = [];
  for (const message of messages) {
    if (message.metadata?.status === "queued") {
      const text = message.parts.map((p) => (p.type === "text" ? p.text : "")).join("");
      const mode = message.metadata.onConflict === "steer" ? "steer" : "enqueue";
      const state = mode === "steer" ? "steering" : "queued";
      queued.push({ id: message.id, text, mode, state, position: message.metadata.position });
    } else shown.push(message);
  }
  return [shown, queued];
}

async function openSession(id: string): Promise<void> {
  const page = await guarded(() => rest.messages(id));
  if (!page) {
    if (chat === null) closeChat();
    return;
  }
  unsubscribe?.();
  void chat?.stop();
  const [shown, queued] = split(page.messages);
  waiting = queued;
  hasOlder = page.has_more;
  statusNote = null;
  ui.chatError.hidden = true;
  chat = new PageChat({
    id,
    messages: shown,
    transport: new DefaultChatTransport({
      api: "/api/v1/chat",
      headers: () => authHeaders(),
      // The server's history is the truth: send only the newest message.
      prepareSendMessagesRequest: ({ id, messages, trigger, messageId, body }) => ({
        body: { ...body, id, messages: messages.slice(-1), trigger, messageId },
      }),
    }),
    onData: (part) => {
      if (part.type !== "data-status") return;
      statusNote = describeStatus(part.data as Record<string, unknown>);
      scheduleDraw();
    },
  });
  lastStatus = "ready";
  unsubscribe = chat.subscribe(() => {
    const status = chat?.status ?? "ready";
    if (status !== lastStatus && (status === "ready" || status === "error")) {
      setTimeout(afterTurn, 0);
    }
    lastStatus = status;
    scheduleDraw();
  });
  if (location.hash.slice(1) !== id) history.replaceState(null, "", `#${id}`);
  ui.empty.hidden = true;
  ui.conversation.hidden = false;
  drawSessions();
  draw();
  ui.thread.scrollTop = ui.thread.scrollHeight;
  // A reply still running (this page was reloaded mid-stream, or another tab runs it):
  // GET /chat/{id}/stream replays it from its start; 204 when none runs.
  resuming = chat.resumeStream();
  await resuming;
}

function describeStatus(data: Record<string, unknown>): string {
  switch (data.status) {
    case "retrying":
      return `Retrying (attempt ${data.attempt}) after ${data.code}, in ${data.delay_s} s`;
    case "compacting":
      return "Compacting the conversation to fit the context window";
    case "queued":
      return `Queued (position ${data.position})`;
    default:
      return String(data.status);
  }
}

/** A reply ended: follow the queue, one at a time (a call meanwhile runs it once more). */
function afterTurn(): void {
  if (following) {
    followAgain = true;
    return;
  }
  following = followQueue().finally(() => {
    following = null;
    if (followAgain) {
      followAgain = false;
      afterTurn();
    }
  });
}

/** If messages wait, take the server's history and follow the next turn. */
async function followQueue(): Promise<void> {
  const current = chat;
  if (!current || current.status === "submitted" || current.status === "streaming") return;
  statusNote = null;
  void refreshSession(current.id);
  if (waiting.length === 0 && !resync) {
    scheduleDraw();
    return;
  }
  resync = false;
  // The session before its history: a turn running now has its reply left out of the
  // history and is followed below; one that ended since is in the history.
  const session = await rest.get(current.id).catch(() => null);
  const page = await rest.messages(current.id).catch(() => null);
  if (!page || chat !== current || (current.status as string) === "streaming") return;
  const [shown, queued] = split(page.messages);
  const errors = waiting.filter((w) => w.state === "error" || w.state === "sending");
  waiting = [...queued, ...errors.filter((w) => !queued.some((q) => q.id === w.id))];
  current.messages = shown;
  scheduleDraw();
  if ((queued.length > 0 || (session && session.status !== "idle")) && follows < MAX_FOLLOWS) {
    follows += 1;
    // The next queued message is next: show it in the thread while its reply streams.
    const next = queued.find((q) => q.mode === "enqueue") ?? queued[0];
    if (next) {
      waiting = waiting.filter((w) => w !== next);
      current.messages = [
        ...shown,
        { id: next.id, role: "user", parts: [{ type: "text", text: next.text }] },
      ];
    }
    await current.resumeStream();
    // The server's history once more: the turn may have ended before the resume asked
    // (then 204 and nothing streamed), or more messages may wait.
    resync = true;
    followAgain = true;
  }
}

function scheduleDraw(): void {
  if (drawScheduled) return;
  drawScheduled = true;
  requestAnimationFrame(() => {
    drawScheduled = false;
    draw();
  });
}

function draw(): void {
  const current = chat;
  if (!current) return;
  const busy = current.status === "submitted" || current.status === "streaming";
  const stick = ui.thread.scrollHeight - ui.thread.scrollTop - ui.thread.clientHeight < 40;
  const messages = current.messages;
  const lastAssistant = messages.findLastIndex((m) => m.role === "assistant");
  // A message object is replaced only when it changed (the state's snapshots), so the nodes
  // of the others are kept: their selection, focus and open/closed reasoning survive.
  const nodes = messages.map((message, index) => {
    const settled = !busy || index < messages.length - 1;
    const last = index === lastAssistant && !busy;
    const key = `${settled}|${last}`;
    const cached = drawn.get(message);
    if (cached?.key === key) return cached.node;
    const node = renderMessage(
      message,
      {
        rate:
          message.role === "assistant" && settled
            ? (rating) => void rate(message.id, rating)
            : undefined,
        regenerate: last ? () => void current.regenerate() : undefined,
      },
      collapsed,
    );
    drawn.set(message, { key, node });
    return node;
  });
  const children = ui.messages.children;
  nodes.forEach((node, index) => {
    if (children[index] !== node) {
      if (children[index]) children[index].replaceWith(node);
      else ui.messages.append(node);
    }
  });
  while (children.length > nodes.length) children[children.length - 1].remove();
  ui.pending.hidden = current.status !== "submitted";
  ui.older.hidden = !hasOlder;
  ui.older.disabled = busy;
  ui.stop.hidden = !busy;
  ui.busyMode.parentElement!.hidden = !busy;
  ui.send.textContent = busy ? (ui.busyMode.value === "steer" ? "Steer" : "Queue") : "Send";
  ui.statusLine.hidden = !(busy && statusNote);
  ui.statusLine.textContent = statusNote ?? "";
  if (current.error) {
    ui.chatError.hidden = false;
    ui.chatError.textContent = errorText(current.error);
  }
  ui.queue.replaceChildren(...waiting.map(queueItem));
  if (stick) ui.thread.scrollTop = ui.thread.scrollHeight;
}

/** An HTTP error before the stream is the body of the response: show its code. */
function errorText(error: Error): string {
  const message = error.message;
  if (message.trimStart().startsWith("{")) {
    const parsed = describeError(0, message);
    return `${parsed.code}: ${parsed.message}`;
  }
  return message;
}

function queueItem(entry: Waiting): HTMLLIElement {
  const item = el("li", `queued queued-${entry.state}`);
  item.dataset.id = entry.id;
  const label =
    entry.state === "error"
      ? `not sent: ${entry.error}`
      : entry.state === "sending"
        ? "sending"
        : entry.state === "steering"
          ? "will steer the running reply"
          : `waiting (position ${entry.position ?? "?"})`;
  item.append(el("span", "queued-text", entry.text), el("span", "queued-state", label));
  if (entry.state === "queued" || entry.state === "steering") {
    const cancel = el("button", "link queued-cancel", "Cancel");
    cancel.type = "button";
    cancel.addEventListener("click", async () => {
      if (!chat) return;
      await guarded(() => rest.cancelQueued(chat!.id, entry.id));
      waiting = waiting.filter((w) => w.id !== entry.id);
      scheduleDraw();
    });
    item.append(cancel);
  } else if (entry.state === "error") {
    const dismiss = el("button", "link", "Dismiss");
    dismiss.type = "button";
    dismiss.addEventListener("click", () => {
      waiting = waiting.filter((w) => w.id !== entry.id);
      scheduleDraw();
    });
    item.append(dismiss);
  }
  return item;
}

async function rate(messageId: string, rating: "up" | "down" | null): Promise<void> {
  const current = chat;
  if (!current) return;
  const ok = await guarded(async () => {
    await rest.rate(current.id, messageId, rating);
    return true;
  });
  if (!ok || chat !== current) return;
  current.messages = current.messages.map((m) => {
    if (m.id !== messageId) return m;
    const metadata = { ...m.metadata };
    if (rating) metadata.feedback = { rating };
    else delete metadata.feedback;
    return { ...m, metadata };
  });
}

ui.older.addEventListener("click", async () => {
  const current = chat;
  const first = current?.messages[0];
  if (!current || !first) return;
  const page = await guarded(() => rest.messages(current.id, first.id));
  if (!page || chat !== current) return;
  hasOlder = page.has_more;
  const top = ui.thread.scrollHeight - ui.thread.scrollTop;
  current.messages = [...page.messages, ...current.messages];
  draw();
  ui.thread.scrollTop = ui.thread.scrollHeight - top;
});

ui.composer.addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = ui.input.value.trim();
  const current = chat;
  if (!text || !current) return;
  ui.input.value = "";
  follows = 0;
  await resuming;
  ui.chatError.hidden = true;
  if (current.status === "submitted" || current.status === "streaming") {
    const mode = ui.busyMode.value as Mode;
    void sendWhileBusy(
      current.id,
      text,
      mode,
      (entry, id) => {
        const rest = waiting.filter((w) => w.id !== id);
        waiting = entry ? [...rest, entry] : rest;
        scheduleDraw();
      },
      () => {
        if (chat === current && current.status !== "streaming") afterTurn();
      },
    );
    return;
  }
  if (current.error) current.clearError();
  // A turn this page does not know of (another tab's, or the queue's next) may be running:
  // the message then waits for it instead of a 409, and this stream follows its own turn.
  void current.sendMessage({ text }, { body: { on_conflict: "enqueue" } });
});

ui.input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.composer.requestSubmit();
  }
});

ui.busyMode.addEventListener("change", scheduleDraw);

ui.stop.addEventListener("click", async () => {
  const current = chat;
  if (!current) return;
  // The server's turn goes on when a client disconnects: stop it there, and let its stream
  // end by itself (with what was stored); cut the stream only if that takes too long.
  await guarded(() => rest.stop(current.id));
  setTimeout(() => {
    if (chat === current && current.status !== "ready") void current.stop();
  }, 5000);
});

window.addEventListener("hashchange", () => {
  const wanted = decodeURIComponent(location.hash.slice(1));
  if (wanted && wanted !== chat?.id) void openSession(wanted);
});

void start();
