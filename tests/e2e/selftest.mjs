#!/usr/bin/env node
// Self-test of chat-client.mjs against stub_server.py: the client must pass a protocol-correct
// stub in every mode (204, or with IDLE_RESUME=any a replay, on an idle resume; static or
// dynamic tool parts; bearer auth) and
// must fail, for the right reason, on each deliberately broken stream (stub --fault).
//
//   node tests/e2e/selftest.mjs        (PYTHON=/path/to/python to bypass `uv run`)
//
// Prints one `ok`/`FAIL` line per case and `N passed, M failed`; exits 1 on any failure.

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const VERSIONS = ['ai5', 'ai6', 'ai7'];
// The stub has no queue: its cases run every scenario but those of double-texting.
const STUB_SCENARIOS = 'text,tool,error,regenerate,resume,resume-live';

// Each case: stub flags, client env, and the expected outcome per "<version> <scenario>"
// (default: every pair passes). An expected failure names a substring of its reason.
const CASES = [
  { name: 'correct stream', stub: [] },
  {
    name: 'replayed resume, dynamic tools, bearer auth',
    stub: ['--resume', 'replay', '--dynamic-tools', '--token', 'selftest-token'],
    env: { AUTH_TOKEN: 'selftest-token', IDLE_RESUME: 'any' },
  },
  {
    name: 'replay of a finished turn where 204 is due',
    stub: ['--resume', 'replay'],
    env: { SCENARIO: 'resume' },
    expect: all('resume', 'expected 204'),
  },
  {
    name: 'resume while running sends only what comes next',
    stub: ['--fault', 'resume-tail'],
    env: { SCENARIO: 'resume-live' },
    expect: all('resume-live', 'no "start" chunk'),
  },
  {
    name: 'tool chunks without providerExecuted',
    stub: ['--fault', 'no-provider-executed'],
    env: { SCENARIO: 'tool' },
    expect: all('tool', 'providerExecuted'),
  },
  {
    name: '409 for a message right after the previous turn',
    stub: ['--fault', 'busy-after-done'],
    env: { SCENARIO: 'text' },
    expect: all('text', 'HTTP 409'),
  },
  {
    name: 'missing bearer token',
    stub: ['--token', 'selftest-token'],
    env: { SCENARIO: 'text' },
    expect: all('text', 'HTTP 401'),
  },
  {
    name: 'unknown chunk type, SDK only',
    stub: ['--fault', 'unknown-chunk'],
    env: { SCENARIO: 'text', WIRE_CHECKS: '0' },
    expect: all('text', 'rejected a chunk'),
  },
  {
    name: 'null optional field, SDK only',
    stub: ['--fault', 'null-field'],
    env: { SCENARIO: 'text', WIRE_CHECKS: '0' },
    expect: all('text', 'AI_TypeValidationError'),
  },
  {
    name: "finishReason 'interrupted', SDK only",
    stub: ['--fault', 'finish-interrupted'],
    env: { SCENARIO: 'text', WIRE_CHECKS: '0' },
    expect: { 'ai5 text': 'AI_TypeValidationError', 'ai6 text': 'AI_TypeValidationError' },
  },
  {
    name: 'dynamic flag missing on tool output, SDK only',
    stub: ['--dynamic-tools', '--fault', 'dynamic-mismatch'],
    env: { SCENARIO: 'tool', WIRE_CHECKS: '0' },
    expect: { 'ai5 tool': 'tool-output-error must be preceded' },
  },
  {
    name: 'text-delta without text-start, SDK only',
    stub: ['--fault', 'delta-before-start'],
    env: { SCENARIO: 'text', WIRE_CHECKS: '0' },
    expect: all('text', 'rejected a chunk'),
  },
  {
    name: 'extra field: pinned SDKs accept, wire audit rejects',
    stub: ['--fault', 'extra-field'],
    env: { SCENARIO: 'text' },
    expect: all('text', 'not accepted by strict releases'),
  },
  { name: 'extra field, SDK only', stub: ['--fault', 'extra-field'], env: { SCENARIO: 'text', WIRE_CHECKS: '0' } },
  { name: 'no [DONE]', stub: ['--fault', 'no-done'], env: { SCENARIO: 'text' }, expect: all('text', '[DONE]') },
  { name: 'no id: lines', stub: ['--fault', 'no-ids'], env: { SCENARIO: 'text' }, expect: all('text', 'has no "id:" line') },
  {
    name: 'dynamic flag missing on tool output, wire audit',
    stub: ['--dynamic-tools', '--fault', 'dynamic-mismatch'],
    env: { SCENARIO: 'tool' },
    expect: all('tool', 'must be repeated identically'),
  },
];

function all(scenario, reason) {
  return Object.fromEntries(VERSIONS.map((v) => [`${v} ${scenario}`, reason]));
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}

async function waitForPort(port, deadlineMs) {
  const deadline = Date.now() + deadlineMs;
  while (Date.now() < deadline) {
    const up = await new Promise((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => {
        socket.end();
        resolve(true);
      });
      socket.on('error', () => resolve(false));
    });
    if (up) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`stub did not listen on ${port} within ${deadlineMs} ms`);
}

function python() {
  if (process.env.PYTHON) return [process.env.PYTHON, []];
  const venv = path.join(root, '.venv', 'bin', 'python');
  return existsSync(venv) ? [venv, []] : ['uv', ['run', 'python']];
}

function run(command, args, env) {
  return new Promise((resolve) => {
    const child = spawn(command, args, { cwd: root, env: { ...process.env, ...env } });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { out += d; });
    child.on('close', (code) => resolve({ code, out }));
  });
}

async function runCase(testCase) {
  const port = await freePort();
  const [py, pyArgs] = python();
  const stub = spawn(py, [...pyArgs, path.join(here, 'stub_server.py'), '--port', String(port), ...testCase.stub], {
    cwd: root,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stubErr = '';
  stub.stderr.on('data', (d) => { stubErr += d; });
  try {
    await waitForPort(port, 20000);
    const env = { BASE_URL: `http://127.0.0.1:${port}`, DEBUG: '0', SCENARIO: STUB_SCENARIOS, ...testCase.env };
    const { code, out } = await run(process.execPath, [path.join(here, 'chat-client.mjs')], env);
    const problems = [];
    const lines = out.split('\n');
    const results = new Map();
    for (const line of lines) {
      const m = line.match(/^(ok|FAIL) (\S+) (\S+)(?:: (.*))?$/);
      if (m) results.set(`${m[2]} ${m[3]}`, { ok: m[1] === 'ok', why: m[4] ?? '' });
    }
    if (results.size === 0) problems.push(`client printed no results:\n${out}`);
    const expected = testCase.expect ?? {};
    for (const [pair, result] of results) {
      const reason = expected[pair];
      if (reason === undefined && !result.ok) problems.push(`${pair} failed: ${result.why}`);
      if (reason !== undefined && result.ok) problems.push(`${pair} passed, expected a failure mentioning "${reason}"`);
      if (reason !== undefined && !result.ok && !result.why.includes(reason)) {
        problems.push(`${pair} failed for another reason: ${result.why}`);
      }
    }
    const anyFail = [...results.values()].some((r) => !r.ok);
    if ((code === 0) === anyFail) problems.push(`client exit code ${code} does not match its results`);
    if (!lines.some((l) => /^\d+ passed, \d+ failed$/.test(l))) problems.push('no summary line');
    return problems;
  } catch (error) {
    return [`${error.message}\n${stubErr}`];
  } finally {
    stub.kill('SIGTERM');
  }
}

let passed = 0;
let failed = 0;
for (const testCase of CASES) {
  const problems = await runCase(testCase);
  if (problems.length === 0) {
    passed += 1;
    console.log(`ok ${testCase.name}`);
  } else {
    failed += 1;
    console.log(`FAIL ${testCase.name}`);
    for (const p of problems) console.log(`    ${p}`);
  }
}
console.log(`${passed} passed, ${failed} failed`);
process.exitCode = failed === 0 ? 0 : 1;
