// The UI message chunk set the server may send: the chunk types and top-level fields that
// every `ai` release the server supports accepts (5.0.92+, every 6.x, every 7.x), including
// the older releases whose zod schemas were strict and rejected any unknown field.
// PROTOCOL.md explains each entry; protocol-probe.mjs re-checks it against the installed
// packages. Field kinds: "string", "boolean", "object" (a JSON object), "providerMetadata"
// (an object of objects: {provider: {key: json}}), "any" (any JSON value, null included).
// An optional field is omitted when it has no value, never sent as null.

export const FINISH_REASONS = ['stop', 'length', 'content-filter', 'tool-calls', 'error', 'other'];

const TOOL_FLAGS = { providerExecuted: 'boolean', dynamic: 'boolean' };
const PM = { providerMetadata: 'providerMetadata' };

export const CHUNK_SET = {
  start: { required: {}, optional: { messageId: 'string', messageMetadata: 'object' } },
  'start-step': { required: {}, optional: {} },
  'finish-step': { required: {}, optional: {} },
  'text-start': { required: { id: 'string' }, optional: { ...PM } },
  'text-delta': { required: { id: 'string', delta: 'string' }, optional: { ...PM } },
  'text-end': { required: { id: 'string' }, optional: { ...PM } },
  'reasoning-start': { required: { id: 'string' }, optional: { ...PM } },
  'reasoning-delta': { required: { id: 'string', delta: 'string' }, optional: { ...PM } },
  'reasoning-end': { required: { id: 'string' }, optional: { ...PM } },
  'tool-input-start': {
    required: { toolCallId: 'string', toolName: 'string' },
    optional: { ...TOOL_FLAGS },
  },
  'tool-input-delta': { required: { toolCallId: 'string', inputTextDelta: 'string' }, optional: {} },
  'tool-input-available': {
    required: { toolCallId: 'string', toolName: 'string', input: 'any' },
    optional: { ...TOOL_FLAGS, ...PM },
  },
  'tool-input-error': {
    required: { toolCallId: 'string', toolName: 'string', input: 'any', errorText: 'string' },
    optional: { ...TOOL_FLAGS, ...PM },
  },
  'tool-output-available': {
    required: { toolCallId: 'string', output: 'any' },
    optional: { ...TOOL_FLAGS },
  },
  'tool-output-error': {
    required: { toolCallId: 'string', errorText: 'string' },
    optional: { ...TOOL_FLAGS },
  },
  'message-metadata': { required: { messageMetadata: 'object' }, optional: {} },
  error: { required: { errorText: 'string' }, optional: {} },
  finish: { required: {}, optional: { finishReason: 'string', messageMetadata: 'object' } },
  abort: { required: {}, optional: {} },
};

/** The rule for `data-<name>` chunks (custom parts: data-status, data-error, ...). */
export const DATA_CHUNK = { required: { data: 'any' }, optional: { id: 'string', transient: 'boolean' } };

function kindOf(value) {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  return typeof value;
}

function fits(kind, value) {
  const actual = kindOf(value);
  if (kind === 'any') return actual !== 'undefined';
  if (kind === 'providerMetadata') {
    return actual === 'object' && Object.values(value).every((v) => kindOf(v) === 'object');
  }
  return actual === kind;
}

/** Problems (strings) with one parsed chunk against the cross-version set; [] when it fits. */
export function checkChunkShape(chunk) {
  if (kindOf(chunk) !== 'object') return [`chunk is not a JSON object: ${JSON.stringify(chunk)}`];
  const { type } = chunk;
  if (typeof type !== 'string') return [`chunk has no string "type": ${JSON.stringify(chunk)}`];
  const rule = type.startsWith('data-') && type.length > 5 ? DATA_CHUNK : CHUNK_SET[type];
  if (rule === undefined) return [`chunk type "${type}" is not in the cross-version chunk set`];
  const problems = [];
  for (const [field, kind] of Object.entries(rule.required)) {
    if (!(field in chunk)) problems.push(`${type}: required field "${field}" is missing`);
    else if (!fits(kind, chunk[field])) {
      problems.push(`${type}: field "${field}" must be ${kind}, got ${kindOf(chunk[field])}`);
    }
  }
  for (const [field, value] of Object.entries(chunk)) {
    if (field === 'type' || field in rule.required) continue;
    const kind = rule.optional[field];
    if (kind === undefined) {
      problems.push(`${type}: field "${field}" is not accepted by strict releases (5.0.92-5.0.216, 6.0.0-6.0.230, 7.0.0-7.0.31)`);
    } else if (value === null) {
      problems.push(`${type}: optional field "${field}" is null (omit it instead)`);
    } else if (!fits(kind, value)) {
      problems.push(`${type}: field "${field}" must be ${kind}, got ${kindOf(value)}`);
    }
  }
  if (type === 'finish' && chunk.finishReason != null && !FINISH_REASONS.includes(chunk.finishReason)) {
    problems.push(`finish: finishReason "${chunk.finishReason}" is not one of ${FINISH_REASONS.join('|')}`);
  }
  return problems;
}
