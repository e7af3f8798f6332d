// Records every HTTP exchange a chat transport makes and audits each UI message stream twice:
// once against the wire contract (design.md section 4 + chunk-set.mjs), byte for byte, and
// once through the SDK version's own parser (`DefaultChatTransport.processResponseStream` +
// `readUIMessageStream`), which, unlike `AbstractChat`, keeps going after an `error` chunk,
// so a chunk the SDK rejects after the error is still caught.

import { checkChunkShape } from './chunk-set.mjs';

const EXPECTED_HEADERS = {
  'content-type': (v) => v.split(';')[0].trim() === 'text/event-stream',
  'cache-control': (v) => v.includes('no-cache'),
  'x-vercel-ai-ui-message-stream': (v) => v === 'v1',
  'x-accel-buffering': (v) => v === 'no',
};

/** Parse SSE text as the EventSource spec does: events with id, data lines, and comments. */
export function parseSse(text) {
  const events = [];
  const comments = [];
  let current = { id: undefined, event: undefined, data: [] };
  const dispatch = () => {
    if (current.data.length > 0) events.push(current);
    current = { id: undefined, event: undefined, data: [] };
  };
  for (const line of text.split(/\r\n|\r|\n/)) {
    if (line === '') {
      dispatch();
      continue;
    }
    if (line.startsWith(':')) {
      comments.push(line.slice(1).trim());
      continue;
    }
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') current.data.push(value);
    else if (field === 'id') current.id = value;
    else if (field === 'event') current.event = value;
  }
  const trailing = current.data.length > 0;
  return { events, comments, trailing };
}

/** Check the sequencing rules of one turn's chunks; returns a list of problems. */
export function checkSequence(chunks) {
  const problems = [];
  const say = (i, message) => problems.push(`chunk #${i} (${chunks[i]?.type}): ${message}`);
  let starts = 0;
  let finishedAt = -1;
  let stepOpen = false;
  const openText = new Set();
  const openReasoning = new Set();
  const tools = new Map(); // toolCallId -> { toolName, dynamic, state, step }
  const stepTools = new Set();
  chunks.forEach((chunk, i) => {
    const { type } = chunk;
    if (finishedAt !== -1) say(i, 'chunk after "finish"');
    if (starts === 0 && type !== 'start' && !(type.startsWith('data-') && chunk.transient === true)) {
      say(i, 'only transient data-* chunks may come before "start"');
    }
    const needsStep = /^(text|reasoning|tool)-/.test(type);
    if (needsStep && !stepOpen) say(i, 'content chunk outside a start-step/finish-step pair');
    switch (type) {
      case 'start':
        starts += 1;
        if (starts > 1) say(i, 'more than one "start"');
        if (typeof chunk.messageId !== 'string' || chunk.messageId === '') {
          say(i, '"start" must carry the messageId the assistant message is stored under');
        }
        break;
      case 'start-step':
        if (stepOpen) say(i, 'start-step while a step is open');
        stepOpen = true;
        stepTools.clear();
        break;
      case 'finish-step':
        if (!stepOpen) say(i, 'finish-step without start-step');
        if (openText.size) say(i, `text part(s) ${[...openText].join(',')} not closed before finish-step`);
        if (openReasoning.size) say(i, `reasoning part(s) ${[...openReasoning].join(',')} not closed before finish-step`);
        for (const id of stepTools) {
          const call = tools.get(id);
          if (!['output-available', 'output-error'].includes(call.state)) {
            say(i, `tool call ${id} left in state ${call.state} at finish-step (send tool-output-error)`);
          }
        }
        openText.clear();
        openReasoning.clear();
        stepOpen = false;
        break;
      case 'text-start':
      case 'reasoning-start': {
        const open = type === 'text-start' ? openText : openReasoning;
        if (open.has(chunk.id)) say(i, `part ${chunk.id} is already open`);
        open.add(chunk.id);
        break;
      }
      case 'text-delta':
      case 'text-end':
      case 'reasoning-delta':
      case 'reasoning-end': {
        const open = type.startsWith('text') ? openText : openReasoning;
        if (!open.has(chunk.id)) say(i, `part ${chunk.id} was not opened (or already closed)`);
        if (type.endsWith('-end')) open.delete(chunk.id);
        break;
      }
      case 'tool-input-start':
      case 'tool-input-available':
      case 'tool-input-error': {
        const prior = tools.get(chunk.toolCallId);
        if (type === 'tool-input-start' && prior) say(i, `tool call ${chunk.toolCallId} started twice`);
        if (prior && prior.state !== 'input-streaming') {
          say(i, `tool call ${chunk.toolCallId} already in state ${prior.state}`);
        }
        if (prior && prior.toolName !== chunk.toolName) say(i, 'toolName differs from tool-input-start');
        if (prior && prior.dynamic !== chunk.dynamic) {
          say(i, '"dynamic" must be repeated identically on every chunk of a tool call (ai 5 relies on it)');
        }
        const state = { 'tool-input-start': 'input-streaming', 'tool-input-available': 'input-available', 'tool-input-error': 'output-error' }[type];
        tools.set(chunk.toolCallId, { toolName: chunk.toolName, dynamic: chunk.dynamic, state });
        stepTools.add(chunk.toolCallId);
        break;
      }
      case 'tool-input-delta': {
        const call = tools.get(chunk.toolCallId);
        if (!call || call.state !== 'input-streaming') say(i, `no streaming tool call ${chunk.toolCallId}`);
        break;
      }
      case 'tool-output-available':
      case 'tool-output-error': {
        const call = tools.get(chunk.toolCallId);
        if (!call) say(i, `no tool call ${chunk.toolCallId} (send tool-input-available first)`);
        else {
          if (call.state !== 'input-available') say(i, `tool call ${chunk.toolCallId} is in state ${call.state}`);
          if (call.dynamic !== chunk.dynamic) {
            say(i, '"dynamic" must be repeated identically on every chunk of a tool call (ai 5 relies on it)');
          }
          call.state = type === 'tool-output-available' ? 'output-available' : 'output-error';
        }
        break;
      }
      case 'finish':
        finishedAt = i;
        if (stepOpen) say(i, 'finish while a step is open');
        break;
      default:
        break;
    }
  });
  if (starts === 0 && isTurnless(chunks)) return problems;
  if (starts === 0) problems.push('no "start" chunk');
  if (finishedAt === -1) problems.push('no "finish" chunk (a turn always ends with finish)');
  return problems;
}

/** A transient `data-*` chunk: a status of the wait (queued, steering), no part of any turn. */
export function isTransientData(chunk) {
  return typeof chunk?.type === 'string' && chunk.type.startsWith('data-') && chunk.transient === true;
}

/**
 * The stream of a message that got no turn of its own (double-texting: it steered the running
 * turn, or was cancelled while queued): transient `data-*` chunks only, the last a
 * `data-status` "steered" or "cancelled". It has no start and no finish, and needs none.
 */
export function isTurnless(chunks) {
  const last = chunks.at(-1);
  return chunks.length > 0 && chunks.every(isTransientData) && last.type === 'data-status'
    && ['steered', 'cancelled'].includes(last.data?.status);
}

/** Audit the raw SSE text of one response: framing, ids, [DONE], each chunk's shape, order. */
export function auditWire(text) {
  const problems = [];
  const { events, comments, trailing } = parseSse(text);
  if (trailing) problems.push('stream ended in the middle of an event (no blank line after the last data line)');
  const doneAt = events.findIndex((e) => e.data.length === 1 && e.data[0] === '[DONE]');
  if (doneAt === -1) problems.push('no "data: [DONE]" at the end');
  else if (doneAt !== events.length - 1) problems.push('events after "data: [DONE]"');
  const chunks = [];
  let lastId = -1;
  events.forEach((event, i) => {
    if (i === doneAt) return;
    if (event.data.length !== 1) problems.push(`event #${i} has ${event.data.length} data lines (one chunk per data line)`);
    const raw = event.data.join('\n');
    let chunk;
    try {
      chunk = JSON.parse(raw);
    } catch {
      problems.push(`event #${i} is not JSON: ${raw.slice(0, 120)}`);
      return;
    }
    // A transient status (queued, steering) is no chunk of the turn: it has no place to
    // resume from, so no `id:` (the server sends it without one).
    if (event.id === undefined) {
      if (!isTransientData(chunk)) problems.push(`event #${i} (${chunk?.type}) has no "id:" line`);
    }
    else if (!/^\d+$/.test(event.id)) problems.push(`event #${i} id "${event.id}" is not a sequence number`);
    else {
      const seq = Number(event.id);
      if (seq <= lastId) problems.push(`event #${i} id ${seq} does not increase (previous ${lastId})`);
      lastId = seq;
    }
    for (const p of checkChunkShape(chunk)) problems.push(`event #${i}: ${p}`);
    chunks.push(chunk);
  });
  problems.push(...checkSequence(chunks.filter((c) => c && typeof c.type === 'string')));
  return { problems, chunks, comments, events };
}

/** Read a byte stream to text. */
async function readAll(stream) {
  const decoder = new TextDecoder();
  let text = '';
  for await (const bytes of stream) text += decoder.decode(bytes, { stream: true });
  return text + decoder.decode();
}

/** Feed a byte stream through the SDK version's own parser and message assembler. */
async function auditWithSdk(sdk, stream) {
  const errors = [];
  let message;
  const transport = new sdk.DefaultChatTransport({ api: 'http://audit.invalid' });
  try {
    const chunks = transport.processResponseStream(stream);
    for await (const snapshot of sdk.readUIMessageStream({ stream: chunks, onError: (e) => errors.push(e) })) {
      message = snapshot;
    }
  } catch (e) {
    errors.push(e);
  }
  return { errors, message };
}

/**
 * Split SDK errors into those that merely surface a server `error` chunk and those where the
 * SDK rejected the stream. A surfaced error chunk is a plain Error whose message is the
 * chunk's errorText; anything else (AI_TypeValidationError, AI_JSONParseError,
 * AI_UIMessageStreamError, TypeError, ai 5's plain "tool-output-error must be preceded by a
 * tool-input-available") is a rejection.
 */
export function classifyErrors(errors, errorTexts) {
  const remaining = [...errorTexts];
  const surfaced = [];
  const rejected = [];
  for (const error of errors) {
    const at = error?.name === 'Error' ? remaining.indexOf(error.message) : -1;
    if (at !== -1) {
      remaining.splice(at, 1);
      surfaced.push(error);
    } else rejected.push(error);
  }
  return { surfaced, rejected };
}

/** The zod issues of a rejected chunk, keeping only the union branch of the chunk's type. */
function zodSummary(cause) {
  if (!Array.isArray(cause?.issues)) return undefined;
  const issues = [];
  for (const issue of cause.issues) {
    if (issue.code === 'invalid_union' && Array.isArray(issue.errors)) {
      const branch = issue.errors.find((b) => !b.some((i) => i.path?.[0] === 'type'));
      issues.push(...(branch ?? [{ path: ['type'], message: 'no chunk variant has this type' }]));
    } else issues.push(issue);
  }
  return issues.map((i) => `${(i.path ?? []).join('.') || '(chunk)'}: ${i.message}`).join(', ');
}

export function describeError(error) {
  if (!(error instanceof Error)) return String(error);
  if (error.name === 'AI_TypeValidationError' && 'value' in error) {
    const why = zodSummary(error.cause) ?? error.message;
    return `AI_TypeValidationError: ${JSON.stringify(error.value).slice(0, 300)} -> ${why}`;
  }
  const status = error.statusCode ? ` (HTTP ${error.statusCode})` : '';
  const why = error.cause?.code ?? (error.cause instanceof Error ? error.cause.message : undefined);
  const cause = why ? ` [${why}]` : '';
  return `${error.name}${status}: ${error.message.replace(/\s+/g, ' ').slice(0, 400)}${cause}`;
}

/**
 * A fetch for `DefaultChatTransport({fetch})` that records each exchange in `log` and tees
 * every event-stream body into the two audits. `exchange.done` settles when both have run.
 */
export function recordingFetch(sdk, log) {
  return async (url, init = {}) => {
    const exchange = {
      method: init.method ?? 'GET',
      url: String(url),
      requestBody: typeof init.body === 'string' ? safeJson(init.body) : undefined,
      status: undefined,
      headers: {},
      done: Promise.resolve(),
      sentAt: performance.now(),
      endedAt: undefined,
    };
    log.push(exchange);
    // A body that breaks off (network error, or the chat aborting it) is recorded, never
    // thrown: `done` always settles, so waiting on it cannot crash the client.
    const brokeOff = (error) => {
      exchange.readError = error;
      exchange.endedAt ??= performance.now();
    };
    let response;
    try {
      response = await fetch(url, init);
    } catch (error) {
      exchange.fetchError = error;
      throw error;
    }
    exchange.status = response.status;
    response.headers.forEach((value, key) => {
      exchange.headers[key] = value;
    });
    const isStream = (exchange.headers['content-type'] ?? '').startsWith('text/event-stream');
    if (!response.ok || !response.body || !isStream) {
      exchange.endedAt = performance.now();
      if (response.status !== 204) exchange.done = response.clone().text().then((t) => { exchange.text = t; }).catch(brokeOff);
      return response;
    }
    const [forSdk, forAudit] = response.body.tee();
    const [forWire, forParser] = forAudit.tee();
    const whole = readAll(forWire).then((text) => {
      exchange.endedAt = performance.now();
      return text;
    });
    exchange.done = Promise.all([whole, auditWithSdk(sdk, forParser)]).then(([text, sdkAudit]) => {
      exchange.text = text;
      const wire = auditWire(text);
      exchange.chunks = wire.chunks;
      exchange.ids = wire.events.filter((e) => !(e.data.length === 1 && e.data[0] === '[DONE]')).map((e) => e.id);
      exchange.comments = wire.comments;
      exchange.wireProblems = wire.problems;
      for (const [name, ok] of Object.entries(EXPECTED_HEADERS)) {
        const value = exchange.headers[name];
        if (value === undefined || !ok(value)) exchange.wireProblems.unshift(`header ${name}: ${value ?? '(missing)'}`);
      }
      exchange.errorTexts = wire.chunks.filter((c) => c?.type === 'error').map((c) => c.errorText);
      const { surfaced, rejected } = classifyErrors(sdkAudit.errors, exchange.errorTexts);
      exchange.sdkSurfaced = surfaced;
      exchange.sdkRejected = rejected;
      exchange.assembled = sdkAudit.message;
    }).catch(brokeOff);
    return new Response(forSdk, { status: response.status, statusText: response.statusText, headers: response.headers });
  };
}

function safeJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** What came back, for messages: the HTTP status and the start of the body, or the fetch error. */
export function answerOf(exchange) {
  if (exchange === undefined) return 'no request was made';
  if (exchange.fetchError) return `request failed: ${describeError(exchange.fetchError)}`;
  const body = (exchange.text ?? '').replace(/\s+/g, ' ').slice(0, 300);
  return `HTTP ${exchange.status}${body ? `: ${body}` : ''}`;
}

/** One line per exchange: method, path, status, and the chunk types in order (runs collapsed). */
export function traceExchange(exchange) {
  const path = new URL(exchange.url).pathname;
  const types = (exchange.chunks ?? []).map((c) => c?.type ?? '?');
  const runs = [];
  for (const t of types) {
    const last = runs[runs.length - 1];
    if (last && last.t === t) last.n += 1;
    else runs.push({ t, n: 1 });
  }
  const list = runs.map(({ t, n }) => (n > 1 ? `${t}x${n}` : t)).join(', ');
  const status = exchange.fetchError ? 'no response' : exchange.status;
  return `${exchange.method} ${path} -> ${status}${list ? `: ${list}` : ''}`;
}
