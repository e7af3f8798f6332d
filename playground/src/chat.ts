// The AI SDK's own chat logic (`AbstractChat` from `ai`) with a state that tells the page
// when to redraw: what `useChat` does with React state, without React.
import { AbstractChat, type ChatInit, type ChatState, type ChatStatus } from "ai";
import type { ChatMessage } from "./api";

type Listener = () => void;

class ObservableState implements ChatState<ChatMessage> {
  #messages: ChatMessage[];
  #status: ChatStatus = "ready";
  #error: Error | undefined = undefined;
  readonly listeners = new Set<Listener>();

  constructor(messages: ChatMessage[]) {
    this.#messages = messages;
  }

  get messages(): ChatMessage[] {
    return this.#messages;
  }
  set messages(messages: ChatMessage[]) {
    this.#messages = [...messages];
    this.changed();
  }
  get status(): ChatStatus {
    return this.#status;
  }
  set status(status: ChatStatus) {
    this.#status = status;
    this.changed();
  }
  get error(): Error | undefined {
    return this.#error;
  }
  set error(error: Error | undefined) {
    this.#error = error;
    this.changed();
  }

  pushMessage = (message: ChatMessage): void => {
    this.#messages = this.#messages.concat(message);
    this.changed();
  };
  popMessage = (): void => {
    this.#messages = this.#messages.slice(0, -1);
    this.changed();
  };
  replaceMessage = (index: number, message: ChatMessage): void => {
    this.#messages = [
      ...this.#messages.slice(0, index),
      this.snapshot(message),
      ...this.#messages.slice(index + 1),
    ];
    this.changed();
  };
  // The SDK mutates the message it streams into: keep a copy of what was drawn.
  snapshot = <T>(value: T): T => structuredClone(value);

  private changed(): void {
    for (const listener of this.listeners) listener();
  }
}

export class PageChat extends AbstractChat<ChatMessage> {
  readonly #state: ObservableState;

  constructor(init: ChatInit<ChatMessage>) {
    const state = new ObservableState(init.messages ?? []);
    super({ ...init, state });
    this.#state = state;
  }

  /** Calls `listener` after every change of messages, status or error. */
  subscribe(listener: Listener): () => void {
    this.#state.listeners.add(listener);
    return () => this.#state.listeners.delete(listener);
  }
}
