#!/usr/bin/env node
// End-to-end chat client: drives a running copilot-server with the real `ai` package, majors
// 5, 6 and 7 side by side, the way a `useChat` frontend does (an `AbstractChat` over the
// version's `DefaultChatTransport`, minus React), and audits every stream it receives.
//
//   BASE_URL=http://127.0.0.1:8000 node tests/e2e/chat-client.mjs
//
// env: BASE_URL (default http://127.0.0.1:8000), AUTH_TOKEN (sent as `Authorization: Bearer`),
//      AI_VERSIONS (default ai5,ai6,ai7), SCENARIO (default all = text,tool,error,regenerate,
//      resume,resume-live,queued,steered; or a comma list), SCENARIO_TIMEOUT_MS (default
//      60000), DEBUG=1 (raw SSE of every stream on stderr), WIRE_CHECKS=0 (skip the
//      wire-contract audit: only what the SDK itself rejects and the scenario checks count;
//      for telling the two kinds of failure apart), IDLE_RESUME (default 204: resuming a chat with no running turn must answer 204,
//      as design.md says; `any` also accepts a 200 replay of the last turn, which the SDK
//      handles as well).
// Prints `ok <version> <scenario>` or `FAIL <version> <scenario>: <why>` per pair, then
// `N passed, M failed` alone on a line; exits 1 when anything failed.

import { randomUUID } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';

import { answerOf, describeError, recordingFetch, traceExchange } from './stream-audit.mjs';

// --- The fake model's directives. The server's fake upstream reads these from the user text.
const DIRECTIVES = {
  text: 'hello',
  followUp: 'tell me more',
  tool: '[[fake:tool name=get_current_time input={}]]',
  error: '[[fake:error status=401]]',
  // The failed message stays in the history the model sees; a directive of its own wins.
  afterError: '[[fake:text text="Working again"]]',
  // Long enough (60 words at 40 a second: 1.5 s) for a second chat to resume it mid-turn.
  slow: '[[fake:text tokens=60 rate=40]]',
  // Sent while `slow` runs, with on_conflict "enqueue": answered in turns of their own, in order
  // (each slow enough, 0.5 s, for the next one's position to be seen going down).
  queuedChat: '[[fake:text text="the queued reply of the second chat, after the first turn" rate=20]]',
  queuedFetch: '[[fake:text text="the queued reply of a plain fetch, after the second chat" rate=20]]',
  // A tool call after 1.4 s of text (11 words at 8 a second): time for a steer to arrive before
  // the next model call. After the tool's result the fake answers "Tool result: ...".
  slowTool: '[[fake:tool name=calculate input={"expression": "6*7"} text="let me work this out step by step before calling the tool" rate=8]]',
  steer: 'no wait, use the other file',
};
const TOOL_NAME = 'get_current_time';
const QUEUED_CHAT_TEXT = 'the queued reply of the second chat, after the first turn';
const QUEUED_FETCH_TEXT = 'the queued reply of a plain fetch, after the second chat';

const BASE_URL = (process.env.BASE_URL ?? 'http://127.0.0.1:8000').replace(/\/+$/, '');
const API = `${BASE_URL}/api/v1/chat`;
const AUTH_TOKEN = process.env.AUTH_TOKEN;
const VERSIONS = (process.env.AI_VERSIONS ?? 'ai5,ai6,ai7').split(',').map((s) => s.trim()).filter(Boolean);
const ALL_SCENARIOS = ['text', 'tool', 'error', 'regenerate', 'resume', 'resume-live', 'queued', 'steered'];
const SCENARIO = process.env.SCENARIO ?? 'all';
const SCENARIOS = SCENARIO === 'all' ? ALL_SCENARIOS : SCENARIO.split(',').map((s) => s.trim()).filter(Boolean);
const TIMEOUT_MS = Number(process.env.SCENARIO_TIMEOUT_MS ?? 60000);
const DEBUG = process.env.DEBUG === '1' || process.env.DEBUG === 'true';
const WIRE_CHECKS = process.env.WIRE_CHECKS !== '0';
const IDLE_RESUME = process.env.IDLE_RESUME ?? '204';

class ScenarioFailure extends Error {}

function expect(condition, message) {
  if (!condition) throw new ScenarioFailure(message);
}

/** The `ChatState` a framework binding would provide, as plain memory. */
class MemoryChatState {
  constructor(messages = []) {
    this.status = 'ready';
    this.error = undefined;
    this.messages = messages;
  }

  pushMessage = (message) => {
    this.messages = this.messages.concat(message);
  };

  popMessage = () => {
    this.messages = this.messages.slice(0, -1);
  };

  replaceMessage = (index, message) => {
    this.messages = [...this.messages.slice(0, index), this.snapshot(message), ...this.messages.slice(index + 1)];
  };

  snapshot = (thing) => structuredClone(thing);
}

/** One version x scenario run: its chats, the HTTP exchanges they made, the errors they saw. */
class Run {
  constructor(sdk, version) {
    this.sdk = sdk;
    this.version = version;
    this.exchanges = [];
    this.chatErrors = [];
    this.toolCalls = [];
    this.chats = [];
  }

  /**
   * A chat over the version's `DefaultChatTransport`; `transport` adds options to it (`body`,
   * `prepareSendMessagesRequest`). `chat.seen` records what its callbacks got: `data`
   * (onData's chunks, transient ones included), `finished` (onFinish's arguments) and
   * `statuses` (every status it went through).
   */
  chat({ id = randomUUID(), messages = [], transport: options = {} } = {}) {
    const { sdk } = this;
    const transport = new sdk.DefaultChatTransport({
      api: API,
      headers: AUTH_TOKEN ? { Authorization: `Bearer ${AUTH_TOKEN}` } : undefined,
      fetch: recordingFetch(sdk, this.exchanges),
      ...options,
    });
    const seen = { data: [], finished: [], statuses: [] };
    class MemoryChat extends sdk.AbstractChat {
      setStatus(update) {
        if (seen.statuses.at(-1) !== update.status) seen.statuses.push(update.status);
        super.setStatus(update);
      }
    }
    const chat = new MemoryChat({
      id,
      transport,
      state: new MemoryChatState(structuredClone(messages)),
      onError: (error) => this.chatErrors.push(error),
      onData: (part) => seen.data.push(structuredClone(part)),
      onFinish: (finished) => seen.finished.push(structuredClone(finished)),
      // Called by every version for tool-input-available chunks without providerExecuted:
      // the server runs its tools itself, so this must never fire.
      onToolCall: ({ toolCall }) => {
        this.toolCalls.push(toolCall);
      },
    });
    chat.seen = seen;
    this.chats.push(chat);
    return chat;
  }

  /** Wait for every audit so far; fail on any wire problem or any chunk the SDK rejected. */
  async settle() {
    await Promise.all(this.exchanges.map((x) => x.done));
    for (const x of this.exchanges) {
      const where = `${x.method} ${new URL(x.url).pathname}`;
      if (x.readError) throw new ScenarioFailure(`the body of ${where} broke off: ${describeError(x.readError)}`);
      if (WIRE_CHECKS && x.wireProblems?.length) {
        throw new ScenarioFailure(`protocol error in ${where}: ${x.wireProblems.join('; ')}`);
      }
      if (x.sdkRejected?.length) {
        throw new ScenarioFailure(`${this.version} rejected a chunk of ${where}: ${x.sdkRejected.map(describeError).join('; ')}`);
      }
    }
  }

  /** Chat-level errors that are not the surfacing of a server `error` chunk. */
  unexpectedChatErrors() {
    const texts = this.exchanges.flatMap((x) => x.errorTexts ?? []);
    return this.chatErrors.filter((e) => !(e?.name === 'Error' && texts.includes(e.message)));
  }

  lastExchange(method) {
    return this.exchanges.filter((x) => x.method === method).at(-1);
  }
}

function textOf(message) {
  return message.parts.filter((p) => p.type === 'text').map((p) => p.text).join('');
}

function isOurToolPart(part) {
  return part.type === `tool-${TOOL_NAME}` || (part.type === 'dynamic-tool' && part.toolName === TOOL_NAME);
}

/** Send one user message and check the turn ended cleanly with an assistant reply. */
async function sendOk(run, chat, text) {
  const before = chat.messages.length;
  await chat.sendMessage({ text });
  await run.settle();
  const post = run.lastExchange('POST');
  expect(post?.status === 200, `POST /chat: ${answerOf(post)}`);
  const unexpected = run.unexpectedChatErrors();
  expect(unexpected.length === 0, `chat error: ${unexpected.map(describeError).join('; ')}`);
  expect(chat.status === 'ready', `chat status is ${chat.status} after the turn (${describeError(chat.error)})`);
  const body = post.requestBody;
  expect(body?.id === chat.id && body?.trigger === 'submit-message', 'transport body is not {id, messages, trigger}');
  expect(chat.messages.length === before + 2, `expected ${before + 2} messages, have ${chat.messages.length}`);
  const assistant = chat.messages.at(-1);
  expect(assistant.role === 'assistant', `last message role is ${assistant.role}`);
  const start = post.chunks.find((c) => c.type === 'start');
  expect(assistant.id === start.messageId, `assistant id ${assistant.id} != start.messageId ${start.messageId}`);
  expect(isDeepStrictEqual(stripUndefined(post.assembled), stripUndefined(assistant)),
    'readUIMessageStream and AbstractChat assembled different messages');
  return { assistant, post };
}

/** Wait for `condition()` to hold, checking every 10 ms, or fail with `message`. */
async function waitFor(condition, message, timeoutMs = 10000) {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new ScenarioFailure(`${message} (waited ${timeoutMs} ms)`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Resume `chat` when no turn runs: 204 (or, with IDLE_RESUME=any, a harmless replay). */
async function resumeIdle(run, chat, expected) {
  await chat.resumeStream();
  await Promise.all(run.exchanges.map((x) => x.done));
  const get = run.lastExchange('GET');
  expect(get !== undefined, `resumeStream made no GET request (${describeError(chat.error)})`);
  expect(new URL(get.url).pathname === `${new URL(API).pathname}/${encodeURIComponent(chat.id)}/stream`,
    `resume went to ${get.url}`);
  const allowed = IDLE_RESUME === 'any' ? [204, 200] : [204];
  expect(allowed.includes(get.status),
    `GET /chat/{id}/stream with no running turn: ${answerOf(get)} (expected ${allowed.join(' or ')})`);
  await run.settle();
  const unexpected = run.unexpectedChatErrors();
  expect(unexpected.length === 0, `chat error on resume: ${unexpected.map(describeError).join('; ')}`);
  expect(chat.status === 'ready', `chat status is ${chat.status} after resume (${describeError(chat.error)})`);
  expect(isDeepStrictEqual(shape(chat.messages), shape(expected)),
    `resume (HTTP ${get.status}) changed the messages: ${JSON.stringify(shape(chat.messages))}`);
}

/** What a user sees of a chat: each message's id, role and text. */
function shape(messages) {
  return messages.map((m) => [m.id, m.role, textOf(m)]);
}

/** Where two chunk lists first differ, for failure messages. */
function firstDifference(a, b) {
  const n = Math.max(a.length, b.length);
  for (let i = 0; i < n; i += 1) {
    if (!isDeepStrictEqual(a[i], b[i])) {
      return `#${i}: ${JSON.stringify(a[i]) ?? '(none)'} vs ${JSON.stringify(b[i]) ?? '(none)'}`;
    }
  }
  return 'none';
}

function stripUndefined(value) {
  return JSON.parse(JSON.stringify(value ?? null));
}

async function validateHistory(run, chat) {
  try {
    await run.sdk.validateUIMessages({ messages: chat.messages });
  } catch (error) {
    throw new ScenarioFailure(`the chat history is not valid UIMessages for ${run.version}: ${describeError(error)}`);
  }
}

/** GET a REST route of the server (JSON), with the client's credentials. */
async function getJson(path) {
  const response = await fetch(`${BASE_URL}/api/v1${path}`, {
    headers: AUTH_TOKEN ? { Authorization: `Bearer ${AUTH_TOKEN}` } : {},
  });
  expect(response.ok, `GET ${path}: HTTP ${response.status}`);
  return response.json();
}

/**
 * POST /chat with a plain `fetch`, the way a frontend sends a message outside `useChat`
 * (`{id, message, on_conflict}`), and read its SSE to the end. Recorded and audited like the
 * chats' requests.
 */
async function postPlain(run, body) {
  const sending = recordingFetch(run.sdk, run.exchanges)(API, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(AUTH_TOKEN ? { Authorization: `Bearer ${AUTH_TOKEN}` } : {}) },
    body: JSON.stringify(body),
  });
  const exchange = run.exchanges.at(-1); // recorded as the request goes out
  await (await sending).text();
  await exchange.done;
  return exchange;
}

/** The transient `data-status` chunks of a stream, before its turn (if any). */
function statusesOf(exchange) {
  return (exchange.chunks ?? []).filter((c) => c.type === 'data-status');
}

/**
 * Check the wait of a message sent during a turn: its stream opens with transient
 * `data-status` chunks about it (`waiting`: queued or steering, with a position), without
 * `id:` lines, and has none after its turn's `start`. Returns those status chunks.
 */
function checkWait(exchange, name, { messageId, waiting }) {
  const { chunks } = exchange;
  const startAt = chunks.findIndex((c) => c.type === 'start');
  const before = startAt === -1 ? chunks : chunks.slice(0, startAt);
  expect(before.length > 0 && before.every((c) => c.type === 'data-status' && c.transient === true),
    `${name}: expected transient data-status chunks first, got ${JSON.stringify(before.slice(0, 3))}`);
  expect(startAt === -1 || !chunks.slice(startAt).some((c) => c.type === 'data-status'),
    `${name}: a data-status chunk after start`);
  for (const c of before) {
    expect(c.data?.messageId === messageId, `${name}: data-status about message ${c.data?.messageId}, sent ${messageId}`);
  }
  const first = before[0].data;
  expect(first.status === waiting && Number.isInteger(first.position) && first.position >= 1,
    `${name}: the first status is ${JSON.stringify(first)}, expected ${waiting} with a position`);
  const ids = exchange.ids.slice(0, before.length);
  expect(ids.every((id) => id === undefined), `${name}: a transient status has an id: line (${ids})`);
  if (startAt !== -1) {
    expect(exchange.ids[startAt] === '0', `${name}: its turn's ids start at ${exchange.ids[startAt]}, not 0`);
  }
  return before;
}

function partsOf(message) {
  return message.parts.filter((p) => p.type !== 'step-start').map((p) => p.type);
}

const scenarios = {
  async text(run) {
    const chat = run.chat();
    const first = await sendOk(run, chat, DIRECTIVES.text);
    expect(textOf(first.assistant).length > 0, 'first reply has no non-empty text part');
    const second = await sendOk(run, chat, DIRECTIVES.followUp);
    expect(second.post.requestBody.messages.length === 3, 'second request did not carry the whole history');
    expect(textOf(second.assistant).length > 0, 'second reply has no non-empty text part');
    expect(second.assistant.id !== first.assistant.id, 'both replies have the same message id');
    await validateHistory(run, chat);
  },

  async tool(run) {
    const chat = run.chat();
    const { assistant } = await sendOk(run, chat, DIRECTIVES.tool);
    const toolAt = assistant.parts.findIndex(isOurToolPart);
    const kinds = assistant.parts.map((p) => p.type).join(', ');
    expect(toolAt !== -1, `no tool-${TOOL_NAME} or dynamic-tool part (parts: ${kinds})`);
    const tool = assistant.parts[toolAt];
    expect(tool.state === 'output-available', `tool part state is ${tool.state}${tool.errorText ? ` (${tool.errorText})` : ''}`);
    expect(tool.output !== undefined, 'tool part has no output');
    expect(tool.providerExecuted === true,
      `the tool part of a server-run tool has providerExecuted ${tool.providerExecuted} (send providerExecuted: true)`);
    expect(run.toolCalls.length === 0,
      `onToolCall was called for ${run.toolCalls.map((c) => c.toolName).join(', ')}: the chunks lack providerExecuted: true`);
    const textAfter = assistant.parts.slice(toolAt + 1).some((p) => p.type === 'text' && p.text.length > 0);
    expect(textAfter, `no non-empty text part after the tool part (parts: ${kinds})`);
    await validateHistory(run, chat);
  },

  async error(run) {
    const chat = run.chat();
    await chat.sendMessage({ text: DIRECTIVES.error });
    await Promise.all(run.exchanges.map((x) => x.done));
    const post = run.lastExchange('POST');
    expect(post?.status === 200, `expected a 200 stream carrying an error chunk; POST /chat: ${answerOf(post)}`);
    await run.settle();
    const unexpected = run.unexpectedChatErrors();
    expect(unexpected.length === 0, `chat error that is not the server's error chunk: ${unexpected.map(describeError).join('; ')}`);
    expect(post.errorTexts.length === 1, `expected exactly one error chunk, saw ${post.errorTexts.length}`);
    expect(run.chatErrors.length === 1, `onError was called ${run.chatErrors.length} times, expected once`);
    expect(chat.status === 'error', `chat status is ${chat.status}, expected error`);
    expect(chat.error?.message === post.errorTexts[0], 'chat.error is not the error chunk');
    const errorAt = post.chunks.findIndex((c) => c.type === 'error');
    const dataError = post.chunks.slice(0, errorAt).find((c) => c.type === 'data-error');
    expect(dataError !== undefined, 'no data-error chunk before the error chunk');
    const d = dataError.data ?? {};
    expect(typeof d.code === 'string' && typeof d.message === 'string' && typeof d.retryable === 'boolean',
      `data-error data is not {code, message, retryable}: ${JSON.stringify(d)}`);
    expect(post.assembled?.parts.some((p) => p.type === 'data-error'), 'the data-error part was not kept in the message');
    // The failed turn is over: the user's next message is answered at once.
    const retry = await sendOk(run, chat, DIRECTIVES.afterError);
    expect(textOf(retry.assistant).length > 0, 'the message after the error got no text');
  },

  async regenerate(run) {
    // useChat's regenerate(): the last reply is answered again and replaced, under a new id.
    const chat = run.chat();
    const first = await sendOk(run, chat, DIRECTIVES.text);
    // Named explicitly, as a "regenerate this reply" button does (without it the body has none).
    await chat.regenerate({ messageId: first.assistant.id });
    await run.settle();
    const post = run.lastExchange('POST');
    expect(post?.status === 200, `POST /chat (regenerate): ${answerOf(post)}`);
    const body = post.requestBody;
    expect(body?.trigger === 'regenerate-message' && body?.messageId === first.assistant.id,
      `regenerate sent trigger ${body?.trigger}, messageId ${body?.messageId} (last reply ${first.assistant.id})`);
    const unexpected = run.unexpectedChatErrors();
    expect(unexpected.length === 0, `chat error: ${unexpected.map(describeError).join('; ')}`);
    expect(chat.status === 'ready', `chat status is ${chat.status} after regenerate (${describeError(chat.error)})`);
    expect(chat.messages.length === 2, `expected the reply replaced (2 messages), have ${chat.messages.length}`);
    const reply = chat.messages[1];
    const start = post.chunks.find((c) => c.type === 'start');
    expect(reply.role === 'assistant' && reply.id === start?.messageId,
      `the new reply ${reply.id} is not start.messageId ${start?.messageId}`);
    expect(reply.id !== first.assistant.id, 'the regenerated reply kept the old message id');
    expect(textOf(reply).length > 0, 'the regenerated reply has no text');
    await sendOk(run, chat, DIRECTIVES.followUp);
    await validateHistory(run, chat);
  },

  async resume(run) {
    // A finished turn leaves nothing to resume: 204 and nothing changes. Checked twice: on
    // the chat that ran the turn, and on a fresh chat seeded with its history (a page reload).
    const chat = run.chat();
    await sendOk(run, chat, DIRECTIVES.text);
    const history = structuredClone(chat.messages);
    await resumeIdle(run, chat, history);
    await resumeIdle(run, run.chat({ id: chat.id, messages: history }), history);
  },

  async 'resume-live'(run) {
    // A second tab (or a reloaded page that kept the user's message) resumes while the turn
    // runs: 200 and the whole turn replayed from `start`, then live, so both tabs end with
    // the same message. Afterwards the chat is idle (204) and takes the next message at once.
    const chat = run.chat();
    const sending = chat.sendMessage({ text: DIRECTIVES.slow });
    await waitFor(() => chat.messages.at(-1)?.role === 'assistant' && textOf(chat.messages.at(-1)).length > 0,
      `the reply to ${DIRECTIVES.slow} never showed text (${answerOf(run.lastExchange('POST'))})`);
    const user = chat.messages.find((m) => m.role === 'user');
    const other = run.chat({ id: chat.id, messages: [structuredClone(user)] });
    await other.resumeStream();
    await sending;
    await run.settle();
    const post = run.lastExchange('POST');
    const get = run.lastExchange('GET');
    expect(post?.status === 200, `POST /chat: ${answerOf(post)}`);
    expect(get !== undefined, `resumeStream made no GET request (${describeError(other.error)})`);
    expect(get.sentAt < post.endedAt, 'the turn ended before the resume request was sent: make the slow reply slower');
    expect(get.status === 200, `GET /chat/{id}/stream while the turn runs: ${answerOf(get)} (expected 200 and a replay)`);
    expect(isDeepStrictEqual(get.chunks, post.chunks) && isDeepStrictEqual(get.ids, post.ids),
      `the resumed stream is not the whole turn replayed from start; first difference (GET vs POST) ${firstDifference(get.chunks, post.chunks)}`);
    const unexpected = run.unexpectedChatErrors();
    expect(unexpected.length === 0, `chat error: ${unexpected.map(describeError).join('; ')}`);
    for (const [name, c] of [['sending chat', chat], ['resumed chat', other]]) {
      expect(c.status === 'ready', `${name}: status is ${c.status} after the turn (${describeError(c.error)})`);
    }
    expect(isDeepStrictEqual(shape(other.messages), shape(chat.messages)),
      `the resumed chat differs from the sending one: ${JSON.stringify(shape(other.messages))} vs ${JSON.stringify(shape(chat.messages))}`);
    expect(textOf(other.messages.at(-1)).split(/\s+/).filter(Boolean).length === 60,
      `the resumed reply does not have the 60 words asked for: ${JSON.stringify(textOf(other.messages.at(-1)))}`);
    const finished = structuredClone(other.messages);
    await resumeIdle(run, other, finished);
    await sendOk(run, other, DIRECTIVES.followUp);
    await validateHistory(run, other);
  },

  async queued(run) {
    // useChat sends only once its stream is done, so a message typed during a turn goes out
    // through a second Chat on the same chat id, with on_conflict "enqueue" in the body, and
    // through a plain fetch. Each POST is answered 200 at once: transient data-status
    // "queued" (position 1, then 2 for the fetch, counting down), then its own turn.
    const chat = run.chat();
    const sending = chat.sendMessage({ text: DIRECTIVES.slow });
    await waitFor(() => chat.messages.at(-1)?.role === 'assistant' && textOf(chat.messages.at(-1)).length > 0,
      `the reply to ${DIRECTIVES.slow} never showed text (${answerOf(run.lastExchange('POST'))})`);
    const second = run.chat({ id: chat.id, transport: { body: { on_conflict: 'enqueue' } } });
    const queuing = second.sendMessage({ text: DIRECTIVES.queuedChat });
    await waitFor(() => second.seen.data.some((d) => d.type === 'data-status'),
      `the second chat got no data-status (${answerOf(run.exchanges.at(-1))})`);
    expect(second.status === 'submitted', `the queued chat's status is ${second.status} while it waits (expected submitted)`);
    const plain = await postPlain(run, { id: chat.id, message: DIRECTIVES.queuedFetch, on_conflict: 'enqueue' });
    await sending;
    await queuing;
    await run.settle();
    const [first, queued] = run.exchanges.filter((x) => x.method === 'POST');
    expect(first.status === 200 && queued.status === 200 && plain.status === 200,
      `POST /chat: ${[first, queued, plain].map(answerOf).join(' | ')}`);
    const unexpected = run.unexpectedChatErrors();
    expect(unexpected.length === 0, `chat error: ${unexpected.map(describeError).join('; ')}`);
    expect(!first.chunks.some((c) => c.type === 'data-status'), 'the first message (session idle) was queued');
    expect(chat.status === 'ready' && textOf(chat.messages.at(-1)).split(/\s+/).filter(Boolean).length === 60,
      `the first chat's turn did not complete: ${chat.status}, ${JSON.stringify(textOf(chat.messages.at(-1)))}`);

    // The second chat: the SDK takes the statuses before `start` (onData gets them, no part,
    // status stays "submitted"), then builds the reply of its own turn.
    const user = second.messages[0];
    const waited = checkWait(queued, 'second chat', { messageId: user.id, waiting: 'queued' });
    expect(waited[0].data.position === 1, `the second chat's position is ${waited[0].data.position}, expected 1`);
    const seenStatuses = second.seen.data.filter((d) => d.type === 'data-status');
    expect(isDeepStrictEqual(seenStatuses, waited), `onData got ${JSON.stringify(seenStatuses)}, the wire ${JSON.stringify(waited)}`);
    expect(second.status === 'ready' && second.error === undefined,
      `the queued chat ended ${second.status} (${describeError(second.error)})`);
    expect(isDeepStrictEqual(second.seen.statuses, ['submitted', 'streaming', 'ready']),
      `the queued chat went through ${second.seen.statuses.join(' -> ')}`);
    expect(second.messages.length === 2, `the queued chat has ${second.messages.length} messages, expected its user message and the reply`);
    const reply = second.messages[1];
    const start = queued.chunks.find((c) => c.type === 'start');
    expect(reply.role === 'assistant' && reply.id === start?.messageId, `the queued reply ${reply.id} is not start.messageId ${start?.messageId}`);
    expect(!reply.parts.some((p) => p.type === 'data-status'), 'a transient data-status became a part of the reply');
    expect(textOf(reply) === QUEUED_CHAT_TEXT, `the queued reply is ${JSON.stringify(textOf(reply))}`);
    expect(isDeepStrictEqual(stripUndefined(queued.assembled), stripUndefined(reply)),
      'readUIMessageStream and AbstractChat assembled different messages');
    expect(second.seen.finished.length === 1 && !second.seen.finished[0].isError && second.seen.finished[0].message.id === reply.id,
      `onFinish of the queued chat: ${JSON.stringify(second.seen.finished.map((f) => [f.message.id, f.isError]))}`);

    // The plain fetch waited behind the second chat: position 2, then 1, then its turn.
    const plainWait = checkWait(plain, 'plain fetch', { messageId: statusesOf(plain)[0]?.data?.messageId, waiting: 'queued' });
    const positions = plainWait.map((c) => c.data.position);
    expect(positions[0] === 2 && positions.at(-1) === 1 && positions.every((p, i) => i === 0 || p < positions[i - 1]),
      `the plain fetch's positions were ${positions.join(', ')} (expected 2, counting down to 1)`);
    expect(textOf(plain.assembled ?? { parts: [] }) === QUEUED_FETCH_TEXT,
      `the plain fetch's reply is ${JSON.stringify(textOf(plain.assembled ?? { parts: [] }))}`);

    // The server's history: three turns, in the order the messages were sent.
    const { messages } = await getJson(`/sessions/${encodeURIComponent(chat.id)}/messages`);
    expect(isDeepStrictEqual(messages.map((m) => m.role), ['user', 'assistant', 'user', 'assistant', 'user', 'assistant']),
      `the history holds ${messages.map((m) => m.role).join(', ')}`);
    expect(messages[2].id === user.id && messages[3].id === reply.id && messages[4].id === plainWait[0].data.messageId
      && textOf(messages[5]) === QUEUED_FETCH_TEXT, 'the history does not hold the queued messages and replies in order');
  },

  async steered(run) {
    // A message sent with on_conflict "steer" while a tool runs joins the running turn at its
    // next model call: its own stream says steering, then steered, and ends (no start, no
    // finish); the running turn's stream shows it as a data-steer part after the tool's.
    const chat = run.chat();
    const sending = chat.sendMessage({ text: DIRECTIVES.slowTool });
    await waitFor(() => chat.messages.at(-1)?.role === 'assistant' && textOf(chat.messages.at(-1)).length > 0,
      `the reply to the slow tool message never showed text (${answerOf(run.lastExchange('POST'))})`);
    const steering = run.chat({
      id: chat.id,
      transport: {
        prepareSendMessagesRequest: ({ id, messages }) => ({ body: { id, messages: messages.slice(-1), on_conflict: 'steer' } }),
      },
    });
    await steering.sendMessage({ text: DIRECTIVES.steer });
    await sending;
    await run.settle();
    const [first, steer] = run.exchanges.filter((x) => x.method === 'POST');
    expect(first.status === 200 && steer.status === 200, `POST /chat: ${answerOf(first)} | ${answerOf(steer)}`);
    const unexpected = run.unexpectedChatErrors();
    expect(unexpected.length === 0, `chat error: ${unexpected.map(describeError).join('; ')}`);

    // The steering chat: its stream is statuses only, and the SDK ends it quietly: status back
    // to ready, no error, no assistant message; onFinish still gets an empty assistant message
    // (the one it would have built), which is not in `messages`.
    const user = steering.messages[0];
    const waited = checkWait(steer, 'steering chat', { messageId: user.id, waiting: 'steering' });
    expect(waited.length === steer.chunks.length, `the steer got a turn of its own: ${traceExchange(steer)}`);
    const last = waited.at(-1).data;
    expect(last.status === 'steered' && typeof last.turnId === 'string',
      `the steer's last status is ${JSON.stringify(last)} (expected steered with a turnId)`);
    const seenStatuses = steering.seen.data.filter((d) => d.type === 'data-status');
    expect(isDeepStrictEqual(seenStatuses, waited), `onData got ${JSON.stringify(seenStatuses)}, the wire ${JSON.stringify(waited)}`);
    expect(steering.status === 'ready' && steering.error === undefined,
      `the steering chat ended ${steering.status} (${describeError(steering.error)})`);
    expect(isDeepStrictEqual(steering.seen.statuses, ['submitted', 'ready']),
      `the steering chat went through ${steering.seen.statuses.join(' -> ')}`);
    expect(isDeepStrictEqual(steering.messages.map((m) => m.role), ['user']),
      `the steering chat holds ${steering.messages.map((m) => `${m.role} [${partsOf(m)}]`).join(', ')}`);
    expect(steer.assembled === undefined, 'readUIMessageStream built a message from a stream without a turn');
    const [finished] = steering.seen.finished;
    expect(steering.seen.finished.length === 1 && !finished.isError && !finished.isAbort
      && finished.message.role === 'assistant' && finished.message.parts.length === 0
      && !finished.messages.some((m) => m.id === finished.message.id),
    `onFinish of the steering chat: ${JSON.stringify(steering.seen.finished)}`);

    // The running chat: tool part, then the data-steer part, then the text after the tool.
    expect(chat.status === 'ready', `the running chat ended ${chat.status} (${describeError(chat.error)})`);
    const reply = chat.messages.at(-1);
    const kinds = partsOf(reply);
    const toolAt = reply.parts.findIndex((p) => /calculate/.test(p.type === 'dynamic-tool' ? p.toolName : p.type));
    const steerAt = reply.parts.findIndex((p) => p.type === 'data-steer');
    const textAfter = reply.parts.findLastIndex((p) => p.type === 'text' && p.text.length > 0);
    expect(toolAt !== -1 && toolAt < steerAt && steerAt < textAfter,
      `expected the tool part, the data-steer part, then text; parts: ${kinds.join(', ')}`);
    expect(isDeepStrictEqual(stripUndefined(reply.parts[steerAt]),
      { type: 'data-steer', id: user.id, data: { messageId: user.id, text: DIRECTIVES.steer } }),
    `the data-steer part is ${JSON.stringify(reply.parts[steerAt])}`);
    expect(textOf(reply).includes('Tool result:'), `no text after the tool's result: ${JSON.stringify(textOf(reply))}`);
    const steerChunk = first.chunks.findIndex((c) => c.type === 'data-steer');
    expect(first.ids[steerChunk] !== undefined && first.chunks[steerChunk].transient === undefined,
      'the data-steer chunk is transient or has no id: line (it must be replayed on resume)');
    const { turns } = await getJson(`/sessions/${encodeURIComponent(chat.id)}/turns`);
    expect(turns.length === 1 && String(turns[0].id) === last.turnId,
      `steered into turn ${last.turnId}; the session's turns: ${JSON.stringify(turns.map((t) => t.id))}`);
    const { messages } = await getJson(`/sessions/${encodeURIComponent(chat.id)}/messages`);
    expect(isDeepStrictEqual(messages.map((m) => m.role), ['user', 'assistant']), `the history holds ${messages.map((m) => m.role).join(', ')}`);
    const stored = messages[1].parts.filter((p) => p.type === 'data-steer');
    expect(stored.length === 1 && isDeepStrictEqual(stored[0], stripUndefined(reply.parts[steerAt])),
      `the stored reply's data-steer parts: ${JSON.stringify(stored)}`);
    await validateHistory(run, chat);
  },
};

async function runOne(version, name) {
  const sdk = await import(version);
  const run = new Run(sdk, version);
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new ScenarioFailure(`timed out after ${TIMEOUT_MS} ms`)), TIMEOUT_MS);
  });
  try {
    await Promise.race([scenarios[name](run), timeout]);
    return { ok: true, run };
  } catch (error) {
    await Promise.all(run.chats.map((c) => c.stop().catch(() => {})));
    const why = error instanceof ScenarioFailure ? error.message : `client crashed: ${describeError(error)}\n${error?.stack ?? ''}`;
    return { ok: false, why, run };
  } finally {
    clearTimeout(timer);
  }
}

async function main() {
  const unknown = SCENARIOS.filter((s) => !(s in scenarios));
  if (unknown.length) {
    console.error(`unknown SCENARIO ${unknown.join(',')} (known: ${ALL_SCENARIOS.join(',')})`);
    process.exit(2);
  }
  let passed = 0;
  let failed = 0;
  for (const version of VERSIONS) {
    for (const name of SCENARIOS) {
      const { ok, why, run } = await runOne(version, name);
      if (ok) {
        passed += 1;
        console.log(`ok ${version} ${name}`);
      } else {
        failed += 1;
        console.log(`FAIL ${version} ${name}: ${why}`);
        for (const x of run.exchanges) console.log(`    ${traceExchange(x)}`);
      }
      if (DEBUG) {
        for (const x of run.exchanges) {
          console.error(`--- ${version} ${name} ${x.method} ${x.url} -> ${x.status}`);
          if (x.requestBody !== undefined) console.error(`request: ${JSON.stringify(x.requestBody)}`);
          console.error(x.text ?? '');
        }
      }
    }
  }
  console.log(`${passed} passed, ${failed} failed`);
  process.exitCode = failed === 0 ? 0 : 1;
}

await main();
