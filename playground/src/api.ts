// The REST API of copilot-server (same origin), with the tab's credentials.
import type { UIMessage } from "ai";

const STORAGE_KEY = "copilot.playground.credential";
export const API = "/api/v1";
const enc = encodeURIComponent;

/** A JWT goes out as a bearer token, anything else as an API key. */
const JWT = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;

export function credential(): string | null {
  return sessionStorage.getItem(STORAGE_KEY);
}

export function setCredential(value: string | null): void {
  if (value) sessionStorage.setItem(STORAGE_KEY, value);
  else sessionStorage.removeItem(STORAGE_KEY);
}

export function authHeaders(): Record<string, string> {
  const value = credential()?.trim().replace(/^Bearer\s+/i, "");
  if (!value) return {};
  return JWT.test(value) ? { Authorization: `Bearer ${value}` } : { "X-API-Key": value };
}

/** An error the server answered before any stream: its envelope's code and message. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** `{"error": {"code", "message"}}` from a response body, or the text as it is. */
export function describeError(status: number, body: string): ApiError {
  try {
    const parsed = JSON.parse(body) as { error?: { code?: string; message?: string } };
    if (parsed.error?.code) {
      return new ApiError(status, parsed.error.code, parsed.error.message ?? "");
    }
  } catch {
    // not JSON: fall through
  }
  return new ApiError(status, `http_${status}`, body || `HTTP ${status}`);
}

export async function api<T>(path: string, init: RequestInit = {}): Promise<T> {
  const headers: Record<string, string> = { ...authHeaders() };
  if (init.body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(API + path, { ...init, headers });
  if (!response.ok) throw describeError(response.status, await response.text());
  return (response.status === 204 ? undefined : await response.json()) as T;
}

export interface Usage {
  inputTokens: number;
  outputTokens: number;
  cacheReadTokens?: number;
  cacheWriteTokens?: number;
}

export interface MessageMetadata {
  turnId?: string;
  model?: string;
  usage?: Usage;
  costUsd?: number;
  createdAt?: string;
  feedback?: { rating: "up" | "down"; comment?: string | null };
  status?: string;
  position?: number;
  onConflict?: string;
}

export type ChatMessage = UIMessage<MessageMetadata>;

export interface Session {
  id: string;
  title: string | null;
  status: "idle" | "running" | "queued";
  queue_length: number;
  created_at: string;
}

export const sessions = {
  page: (cursor: string | null) =>
    api<{ sessions: Session[]; next_cursor: string | null }>(
      `/sessions?limit=20${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`,
    ),
  get: (id: string) => api<Session>(`/sessions/${enc(id)}`),
  create: () => api<Session>("/sessions", { method: "POST", body: "{}" }),
  rename: (id: string, title: string) =>
    api<Session>(`/sessions/${enc(id)}`, { method: "PATCH", body: JSON.stringify({ title }) }),
  remove: (id: string) => api<void>(`/sessions/${enc(id)}`, { method: "DELETE" }),
  messages: (id: string, before?: string) =>
    api<{ messages: ChatMessage[]; has_more: boolean }>(
      `/sessions/${enc(id)}/messages?limit=50${before ? `&before=${encodeURIComponent(before)}` : ""}`,
    ),
  rate: (id: string, messageId: string, rating: "up" | "down" | null) =>
    rating
      ? api<unknown>(`/sessions/${enc(id)}/messages/${enc(messageId)}/feedback`, {
          method: "PUT",
          body: JSON.stringify({ rating }),
        })
      : api<void>(`/sessions/${enc(id)}/messages/${enc(messageId)}/feedback`, { method: "DELETE" }),
  cancelQueued: (id: string, messageId: string) =>
    api<void>(`/sessions/${enc(id)}/messages/${enc(messageId)}`, { method: "DELETE" }),
  stop: (id: string) => api<void>(`/chat/${enc(id)}/stop`, { method: "POST" }),
};
