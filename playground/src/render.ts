// UIMessages as DOM. Text goes in through textContent only: nothing a model or a user wrote
// is ever parsed as HTML (and the CSP would refuse inline script anyway).
import type { ChatMessage, MessageMetadata } from "./api";

type Part = ChatMessage["parts"][number];

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className?: string,
  text?: string,
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function json(value: unknown): string {
  if (value === undefined) return "";
  if (typeof value === "string") return value;
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

/** What a message's footer does: rate it, regenerate it. */
export interface MessageActions {
  rate?: (rating: "up" | "down" | null) => void;
  regenerate?: () => void;
}

interface ErrorData {
  code?: string;
  message?: string;
  retryable?: boolean;
  retry_after_s?: number;
}

function renderError(data: ErrorData, regenerate?: () => void): HTMLElement {
  const box = el("div", "part part-error");
  box.append(el("strong", "error-code", data.code ?? "error"), " ");
  box.append(el("span", "error-message", data.message ?? ""));
  let hint = data.retryable ? "Retrying may help" : "Retrying will not help";
  if (data.retryable && data.retry_after_s) hint += ` (after ${data.retry_after_s} s)`;
  const line = el("div", "error-retry", `${hint}.`);
  line.dataset.retryable = String(Boolean(data.retryable));
  if (data.retryable && regenerate) {
    const again = el("button", "link retry", "Retry");
    again.type = "button";
    again.addEventListener("click", regenerate);
    line.append(" ", again);
  }
  box.append(line);
  return box;
}

function renderTool(part: Part & { toolCallId: string }): HTMLElement {
  const p = part as Part & {
    toolName?: string;
    state: string;
    input?: unknown;
    output?: unknown;
    errorText?: string;
  };
  const name = p.type === "dynamic-tool" ? (p.toolName ?? "tool") : p.type.slice(5);
  const box = el("div", "part part-tool");
  box.dataset.state = p.state;
  const head = el("div", "tool-head");
  head.append(el("span", "tool-name", name), el("span", "tool-state", p.state));
  box.append(head);
  if (p.input !== undefined) {
    box.append(el("div", "label", "input"), el("pre", "tool-input", json(p.input)));
  }
  if (p.state === "output-available") {
    box.append(el("div", "label", "output"), el("pre", "tool-output", json(p.output)));
  } else if (p.state === "output-error") {
    box.append(el("div", "label", "error"), el("pre", "tool-error", p.errorText ?? ""));
  }
  return box;
}

function renderPart(part: Part, actions: MessageActions, collapsed: Set<string>, key: string) {
  switch (part.type) {
    case "text":
      return el("div", "part part-text", part.text);
    case "reasoning": {
      const box = el("details", "part part-reasoning");
      box.open = !collapsed.has(key);
      box.addEventListener("toggle", () => {
        if (box.open) collapsed.delete(key);
        else collapsed.add(key);
      });
      box.append(el("summary", undefined, "Reasoning"), el("div", "reasoning-text", part.text));
      return box;
    }
    case "step-start":
      return null;
    case "file":
      return el("div", "part part-file", `📎 ${part.filename ?? part.mediaType}`);
    case "data-error":
      return renderError(part.data as ErrorData, actions.regenerate);
    case "data-steer": {
      const text = (part.data as { text?: string }).text ?? "";
      return el("div", "part part-steer", `↪ steered: ${text}`);
    }
    default:
      if ("toolCallId" in part) return renderTool(part);
      return el("pre", "part part-other", json(part));
  }
}

export function usageText(meta: MessageMetadata | undefined): string | null {
  if (!meta?.usage) return null;
  const u = meta.usage;
  const bits = [`${u.inputTokens} in / ${u.outputTokens} out tokens`];
  if (u.cacheReadTokens) bits.push(`${u.cacheReadTokens} cached`);
  if (typeof meta.costUsd === "number") bits.push(`$${meta.costUsd.toFixed(6)}`);
  if (meta.model) bits.unshift(meta.model);
  return bits.join(" · ");
}

export function renderMessage(
  message: ChatMessage,
  actions: MessageActions,
  collapsed: Set<string>,
): HTMLElement {
  const box = el("article", `message message-${message.role}`);
  box.dataset.role = message.role;
  box.dataset.id = message.id;
  message.parts.forEach((part, index) => {
    const node = renderPart(part, actions, collapsed, `${message.id}:${index}`);
    if (node) box.append(node);
  });
  if (message.role !== "assistant") return box;
  const foot = el("footer", "message-foot");
  const usage = usageText(message.metadata);
  if (usage) foot.append(el("span", "usage", usage));
  if (actions.rate) {
    const rating = message.metadata?.feedback?.rating ?? null;
    for (const [value, label, title] of [
      ["up", "👍", "Good reply"],
      ["down", "👎", "Bad reply"],
    ] as const) {
      const thumb = el("button", `thumb thumb-${value}`, label);
      thumb.type = "button";
      thumb.title = title;
      thumb.setAttribute("aria-pressed", String(rating === value));
      thumb.addEventListener("click", () => actions.rate?.(rating === value ? null : value));
      foot.append(thumb);
    }
  }
  if (actions.regenerate) {
    const again = el("button", "link regenerate", "Regenerate");
    again.type = "button";
    again.addEventListener("click", actions.regenerate);
    foot.append(again);
  }
  if (foot.childElementCount) box.append(foot);
  return box;
}
