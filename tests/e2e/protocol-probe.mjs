#!/usr/bin/env node
// Offline probe of what each installed `ai` major does with a given UI message stream: feeds
// hand-written SSE bodies to the version's `DefaultChatTransport.processResponseStream` and
// `readUIMessageStream` (the code `useChat` runs) and prints accept/reject per version. It
// is the evidence behind PROTOCOL.md and a regression check when the pinned versions move:
// it exits 1 when an outcome differs from the expectation written here.
//
//   node tests/e2e/protocol-probe.mjs          (VERBOSE=1 also prints the assembled message)

import { auditWire, classifyErrors, describeError } from './stream-audit.mjs';

const VERSIONS = ['ai5', 'ai6', 'ai7'];
const VERBOSE = process.env.VERBOSE === '1';

/** SSE body: one `id:`/`data:` event per chunk (strings are passed through raw), then [DONE]. */
function sse(items, { done = true } = {}) {
  let seq = 0;
  const body = items.map((c) => (typeof c === 'string' ? c : `id: ${seq++}\ndata: ${JSON.stringify(c)}\n\n`)).join('');
  return body + (done ? 'data: [DONE]\n\n' : '');
}

const start = { type: 'start', messageId: 'msg_1' };
const text = (id = 't0') => [
  { type: 'text-start', id },
  { type: 'text-delta', id, delta: 'hi' },
  { type: 'text-end', id },
];
const step = (...inner) => [{ type: 'start-step' }, ...inner, { type: 'finish-step' }];
const finish = { type: 'finish', finishReason: 'stop', messageMetadata: { usage: { input_tokens: 1 } } };
const call = (id, flags = {}) => [
  { type: 'tool-input-start', toolCallId: id, toolName: 'get_current_time', ...flags },
  { type: 'tool-input-delta', toolCallId: id, inputTextDelta: '{}' },
  { type: 'tool-input-available', toolCallId: id, toolName: 'get_current_time', input: {}, ...flags },
  { type: 'tool-output-available', toolCallId: id, output: { iso: 'now' }, ...flags },
];

/** A transient data-status event of a waiting message, without an `id:` line (as the server sends it). */
const status = (name, position) => `data: ${JSON.stringify({ type: 'data-status', data: { status: name, messageId: 'u2', ...(position ? { position } : {}) }, transient: true })}\n\n`;

const OK = { ai5: 'ok', ai6: 'ok', ai7: 'ok' };
const ALL = (outcome) => ({ ai5: outcome, ai6: outcome, ai7: outcome });

// Each case: the stream, and the expected outcome per version: "ok", "error-chunk" (only the
// server's error chunk surfaced) or the name of the error the SDK rejects the stream with;
// `message`, if given, must hold for the last message readUIMessageStream built (undefined:
// none).
const CASES = [
  {
    name: 'every chunk of the cross-version set',
    body: sse([
      { type: 'data-status', data: { status: 'queued' }, transient: true },
      { type: 'start', messageId: 'msg_1', messageMetadata: { model: 'm' } },
      ...step(
        { type: 'reasoning-start', id: 'r0' },
        { type: 'reasoning-delta', id: 'r0', delta: 'hmm' },
        { type: 'reasoning-end', id: 'r0', providerMetadata: { anthropic: { signature: 'sig' } } },
        ...call('c1', { providerExecuted: true }),
        { type: 'tool-input-available', toolCallId: 'c5', toolName: 'x', input: {}, providerMetadata: { p: { k: 1 } } },
        { type: 'tool-output-available', toolCallId: 'c5', output: null },
        ...call('c2', { dynamic: true }),
        { type: 'tool-input-available', toolCallId: 'c3', toolName: 'read_file', input: { path: 'x' } },
        { type: 'tool-output-error', toolCallId: 'c3', errorText: 'no such file' },
        { type: 'tool-input-error', toolCallId: 'c4', toolName: 'read_file', input: '{bad', errorText: 'bad JSON' },
      ),
      ...step(...text('t1')),
      { type: 'message-metadata', messageMetadata: { usage: { output_tokens: 2 } } },
      { type: 'data-error', id: 'e0', data: { code: 'overloaded', message: 'later', retryable: true, retry_after_s: 5 } },
      { type: 'error', errorText: 'later' },
      { type: 'finish', finishReason: 'error', messageMetadata: { usage: { input_tokens: 1 } } },
    ]),
    expect: ALL('error-chunk'),
  },
  { name: 'finish without fields', body: sse([start, ...step(...text()), { type: 'finish' }]), expect: OK },
  { name: 'finishReason stop + messageMetadata', body: sse([start, ...step(...text()), finish]), expect: OK },
  {
    name: "finishReason 'unknown'",
    body: sse([start, { type: 'finish', finishReason: 'unknown' }]),
    expect: { ai5: 'ok', ai6: 'AI_TypeValidationError', ai7: 'AI_TypeValidationError' },
  },
  {
    name: "finishReason 'interrupted'",
    body: sse([start, { type: 'finish', finishReason: 'interrupted' }]),
    expect: { ai5: 'AI_TypeValidationError', ai6: 'AI_TypeValidationError', ai7: 'ok' },
  },
  { name: 'finishReason null', body: sse([start, { type: 'finish', finishReason: null }]), expect: ALL('AI_TypeValidationError') },
  { name: 'messageMetadata null (z.unknown)', body: sse([start, { type: 'finish', messageMetadata: null }]), expect: OK },
  { name: 'start.messageId null', body: sse([{ type: 'start', messageId: null }, finish]), expect: ALL('AI_TypeValidationError') },
  { name: 'start without messageId', body: sse([{ type: 'start' }, finish]), expect: OK },
  { name: 'providerMetadata null', body: sse([start, ...step({ type: 'text-start', id: 't', providerMetadata: null }, { type: 'text-end', id: 't' }), finish]), expect: ALL('AI_TypeValidationError') },
  { name: 'dynamic null', body: sse([start, ...step({ type: 'tool-input-start', toolCallId: 'c', toolName: 'x', dynamic: null }), finish]), expect: ALL('AI_TypeValidationError') },
  { name: 'data-* id null', body: sse([start, { type: 'data-x', id: null, data: 1 }, finish]), expect: ALL('AI_TypeValidationError') },
  { name: 'data-* without data', body: sse([start, { type: 'data-x' }, finish]), expect: ALL('AI_TypeValidationError') },
  { name: 'unknown top-level field (loose schemas)', body: sse([start, ...step(...text()), { ...finish, durationMs: 5 }]), expect: OK },
  { name: 'unknown chunk type', body: sse([start, { type: 'heartbeat' }, finish]), expect: ALL('AI_TypeValidationError') },
  { name: 'non-JSON data line', body: sse([start, 'data: ping\n\n', finish]), expect: ALL('AI_JSONParseError') },
  { name: 'SSE comment ": ping"', body: sse([': ping\n\n', start, ': ping\n\n', ...step(...text()), finish]), expect: OK },
  { name: 'event: and retry: fields', body: sse(['event: message\nretry: 1000\n', start, finish]), expect: OK },
  { name: 'no data: [DONE]', body: sse([start, finish], { done: false }), expect: OK },
  { name: 'CRLF line ends', body: sse([start, ...step(...text()), finish]).replace(/\n/g, '\r\n'), expect: OK },
  { name: 'error chunk, then finish', body: sse([start, { type: 'error', errorText: 'boom' }, { type: 'finish', finishReason: 'error' }]), expect: ALL('error-chunk') },
  { name: 'abort (no fields)', body: sse([start, { type: 'abort' }, { type: 'finish' }]), expect: OK },
  { name: 'abort with reason', body: sse([start, { type: 'abort', reason: 'stopped' }]), expect: OK },
  { name: 'text-delta before text-start', body: sse([start, ...step({ type: 'text-delta', id: 't', delta: 'x' }), finish]), expect: { ai5: 'TypeError', ai6: 'AI_UIMessageStreamError', ai7: 'AI_UIMessageStreamError' } },
  {
    name: 'text-end after finish-step',
    body: sse([start, { type: 'start-step' }, { type: 'text-start', id: 't' }, { type: 'finish-step' }, { type: 'text-end', id: 't' }, finish]),
    expect: { ai5: 'TypeError', ai6: 'AI_UIMessageStreamError', ai7: 'ok' },
  },
  { name: 'static tool, providerExecuted', body: sse([start, ...step(...call('c', { providerExecuted: true })), finish]), expect: OK },
  { name: 'dynamic tool, dynamic on every chunk', body: sse([start, ...step(...call('c', { dynamic: true })), finish]), expect: OK },
  {
    name: 'dynamic tool, dynamic missing on output',
    body: sse([start, ...step(...call('c', { dynamic: true }).slice(0, 3), { type: 'tool-output-available', toolCallId: 'c', output: 1 }), finish]),
    expect: { ai5: 'Error', ai6: 'ok', ai7: 'ok' },
  },
  { name: 'tool output without its input', body: sse([start, ...step({ type: 'tool-output-available', toolCallId: 'zz', output: 1 }), finish]), expect: { ai5: 'Error', ai6: 'AI_UIMessageStreamError', ai7: 'AI_UIMessageStreamError' } },
  { name: 'tool-input-available without tool-input-start', body: sse([start, ...step(call('c')[2], call('c')[3]), finish]), expect: OK },
  // Double-texting (PROTOCOL.md section 7): the statuses of a message's wait are transient and
  // carry no `id:`; a steered (or cancelled) message's stream has no turn at all.
  {
    name: 'queued: id-less transient statuses, then the turn',
    body: `${status('queued', 2)}: ping\n\n${status('queued', 1)}${sse([start, ...step(...text()), finish])}`,
    expect: OK,
    message: (m) => m?.parts.every((p) => p.type !== 'data-status'),
  },
  {
    name: 'steered: transient statuses only, no start',
    body: `${status('steering', 1)}${status('steered')}data: [DONE]\n\n`,
    expect: OK,
    message: (m) => m === undefined,
  },
  {
    name: 'cancelled: transient statuses only, no start',
    body: `${status('queued', 1)}${status('cancelled')}data: [DONE]\n\n`,
    expect: OK,
    message: (m) => m === undefined,
  },
  {
    name: 'data-steer (with id) between two steps',
    body: sse([start, ...step(...call('c', { providerExecuted: true })), { type: 'data-steer', id: 'u2', data: { messageId: 'u2', text: 'no' } }, ...step(...text()), finish]),
    expect: OK,
    message: (m) => m?.parts.filter((p) => p.type !== 'step-start').map((p) => p.type).join() === 'tool-get_current_time,data-steer,text',
  },
  {
    name: 'data-steer between a tool\'s input and output',
    body: sse([start, ...step(...call('c', { providerExecuted: true }).slice(0, 3), { type: 'data-steer', id: 'u2', data: { messageId: 'u2', text: 'no' } }, call('c', { providerExecuted: true })[3]), ...step(...text()), finish]),
    expect: OK,
    message: (m) => m?.parts.filter((p) => p.type !== 'step-start').map((p) => p.type).join() === 'tool-get_current_time,data-steer,text'
      && m.parts[1].state === 'output-available',
  },
  { name: 'second start with another messageId', body: sse([start, ...step(...text('a')), { type: 'start', messageId: 'msg_2' }, ...step(...text('b')), finish]), expect: OK },
];

async function probe(sdk, body) {
  const bytes = new TextEncoder().encode(body);
  const stream = new ReadableStream({ start(c) { c.enqueue(bytes); c.close(); } });
  const transport = new sdk.DefaultChatTransport({ api: 'http://probe.invalid' });
  const errors = [];
  let message;
  for await (const m of sdk.readUIMessageStream({ stream: transport.processResponseStream(stream), onError: (e) => errors.push(e) })) {
    message = m;
  }
  const errorTexts = [...body.matchAll(/"type":"error","errorText":"([^"]*)"/g)].map((m) => m[1]);
  const { surfaced, rejected } = classifyErrors(errors, errorTexts);
  const outcome = rejected.length ? rejected[0].name : surfaced.length ? 'error-chunk' : 'ok';
  return { outcome, detail: rejected.length ? describeError(rejected[0]) : '', message };
}

const sdks = Object.fromEntries(await Promise.all(VERSIONS.map(async (v) => [v, await import(v)])));
let mismatches = 0;
const width = Math.max(...CASES.map((c) => c.name.length)) + 2;
console.log(`${'case'.padEnd(width)}${VERSIONS.map((v) => v.padEnd(26)).join('')}chat-client wire audit`);
for (const testCase of CASES) {
  const cells = [];
  for (const version of VERSIONS) {
    const { outcome, detail, message } = await probe(sdks[version], testCase.body);
    const expected = testCase.expect[version];
    let mark = outcome === expected ? '' : ` (expected ${expected})`;
    if (!mark && testCase.message && !testCase.message(message)) mark = ` (message: ${JSON.stringify(message?.parts ?? null)})`;
    if (mark) mismatches += 1;
    cells.push(`${outcome}${mark}`.padEnd(26));
    if (VERBOSE) console.log(`  ${version}: ${detail || JSON.stringify(message)}`);
  }
  const wire = auditWire(testCase.body).problems;
  console.log(`${testCase.name.padEnd(width)}${cells.join('')}${wire.length ? 'flags it' : 'ok'}`);
  if (VERBOSE && wire.length) console.log(`  wire: ${wire.join('; ')}`);
}
console.log(mismatches === 0 ? 'probe: every outcome as expected' : `probe: ${mismatches} outcome(s) differ from the expectation`);
process.exitCode = mismatches === 0 ? 0 : 1;
