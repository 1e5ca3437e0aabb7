#!/usr/bin/env node
// Real-browser check of auth-jit's Swagger UI (/api/docs) with headless Debian Chromium.
//
//   node swagger_ui.mjs --base http://127.0.0.1:PORT --client-id ID --secret SECRET \
//       --audience AUD --screenshot OUT.png [--timeout SECONDS] [--chromium /usr/bin/chromium]
//
// 1. fetches BASE/api/openapi.json and lists every documented operation (METHOD path);
// 2. opens BASE/api/docs/ and checks each operation is rendered as an `.opblock`;
// 3. enters the client's HTTP Basic credentials through "Authorize" (scheme `basicAuth`);
// 4. on `POST /api/token`: "Try it out", request body {"audience": AUD}, "Execute", and
//    reads the live response status and body from the page (must be 200 with a token);
// 5. saves a full-page screenshot and prints one JSON line; exit 0 only when all passed.
//
// Never downloads a browser: playwright-core drives the system Chromium.

import { rmSync } from 'node:fs';
import { mkdir, rm, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';

const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
const TOKEN_OP = { method: 'POST', path: '/api/token' };
const SCHEME = 'basicAuth';
const STEP_TIMEOUT_MS = 20_000;

let printed = false;
function report(obj, code) {
  if (!printed) {
    printed = true;
    process.stdout.write(JSON.stringify(obj) + '\n');
  }
  process.exitCode = code;
}

function usage(msg) {
  report({ error: `usage: ${msg}; node swagger_ui.mjs --base URL --client-id ID --secret SECRET --audience AUD --screenshot OUT.png [--timeout SECONDS]` }, 1);
  process.exit(1);
}

let opts;
try {
  ({ values: opts } = parseArgs({
    options: {
      base: { type: 'string' },
      'client-id': { type: 'string' },
      secret: { type: 'string' },
      audience: { type: 'string' },
      screenshot: { type: 'string' },
      timeout: { type: 'string', default: '90' },
      chromium: { type: 'string', default: '/usr/bin/chromium' },
    },
    strict: true,
    allowPositionals: false,
  }));
} catch (e) {
  usage(e.message);
}
for (const k of ['base', 'client-id', 'secret', 'audience', 'screenshot']) {
  if (!opts[k]) usage(`--${k} is required`);
}
const base = opts.base.replace(/\/+$/, '');
const timeoutMs = Math.max(10, Number(opts.timeout) || 90) * 1000;
const shotPath = opts.screenshot;

// What is known so far; printed alongside "error" on failure.
const result = { operations: null, missing: null, status: null, has_token: false, screenshot: null };
let step = 'start';
let browser = null;
let page = null;
let userDataDir = null;

// Last resort: if even closing the browser hangs, exit anyway (playwright kills the
// Chromium it launched when this process exits).
const hardKill = setTimeout(() => {
  report({ ...result, error: `hard timeout after ${timeoutMs + 15_000} ms (step: ${step})` }, 1);
  if (userDataDir) try { rmSync(userDataDir, { recursive: true, force: true }); } catch {}
  process.exit(1);
}, timeoutMs + 15_000);
hardKill.unref();

const clean = (s) => (s ?? '').replace(/[\u200b\u00a0]/g, ' ').replace(/\s+/g, ' ').trim();
const key = (m, p) => `${m.toUpperCase()} ${p}`;

async function documentedOperations() {
  step = 'fetch openapi.json';
  const res = await fetch(`${base}/api/openapi.json`, { signal: AbortSignal.timeout(STEP_TIMEOUT_MS) });
  if (!res.ok) throw new Error(`GET /api/openapi.json answered ${res.status}`);
  const doc = await res.json();
  const ops = [];
  for (const [p, item] of Object.entries(doc.paths ?? {})) {
    for (const m of HTTP_METHODS) if (item && item[m]) ops.push(key(m, p));
  }
  if (ops.length === 0) throw new Error('openapi.json documents no operation');
  return ops;
}

async function run() {
  const documented = await documentedOperations();
  result.operations = documented.length;

  step = 'launch chromium';
  // launchPersistentContext with a fresh temp profile: playwright then passes exactly this
  // --user-data-dir, and we delete it afterwards.
  userDataDir = await mkdtemp(path.join(tmpdir(), 'aj-swagger-ui-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: opts.chromium,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1280, height: 900 },
    timeout: 30_000,
  });
  browser = context;
  context.setDefaultTimeout(STEP_TIMEOUT_MS);
  page = context.pages()[0] ?? (await context.newPage());
  // A 401 carrying `WWW-Authenticate: Basic` (auth-jit's answer to bad credentials) makes
  // Chromium ask for credentials with its own login prompt; headless, nobody answers it and
  // the request hangs forever. Cancel such challenges so the page gets the 401 as it is.
  const cdp = await context.newCDPSession(page);
  cdp.on('Fetch.requestPaused', (e) => {
    cdp.send('Fetch.continueRequest', { requestId: e.requestId }).catch(() => {});
  });
  cdp.on('Fetch.authRequired', (e) => {
    cdp
      .send('Fetch.continueWithAuth', { requestId: e.requestId, authChallengeResponse: { response: 'CancelAuth' } })
      .catch(() => {});
  });
  await cdp.send('Fetch.enable', { handleAuthRequests: true, patterns: [{ urlPattern: '*' }] });
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e.message ?? e)));

  step = 'open /api/docs/';
  const nav = await page.goto(`${base}/api/docs/`, { waitUntil: 'load' });
  if (!nav || !nav.ok()) throw new Error(`GET /api/docs/ answered ${nav?.status()}`);
  step = 'wait for Swagger UI to render';
  await page.locator('.swagger-ui .information-container .info .title').first().waitFor();
  await page.locator('.swagger-ui .opblock').first().waitFor();
  // All operations arrive in one render; allow a short settle for slow machines.
  await page
    .waitForFunction((n) => document.querySelectorAll('.swagger-ui .opblock').length >= n, documented.length, { timeout: 5_000 })
    .catch(() => {});

  step = 'list rendered operations';
  const rendered = await page.$$eval('.swagger-ui .opblock', (blocks) =>
    blocks.map((b) => {
      const m = b.querySelector('.opblock-summary-method');
      const p = b.querySelector('.opblock-summary-path');
      return {
        method: m ? m.textContent : '',
        path: p ? p.getAttribute('data-path') || p.textContent : '',
      };
    }),
  );
  const renderedSet = new Set(rendered.map((o) => key(clean(o.method), clean(o.path))));
  result.missing = documented.filter((k) => !renderedSet.has(k));

  step = 'authorize (basicAuth)';
  await page.locator('.swagger-ui .auth-wrapper button.authorize').click();
  const modal = page.locator('.swagger-ui .dialog-ux .modal-ux');
  await modal.waitFor();
  const container = modal.locator('.auth-container').filter({
    has: page.locator('h4', { hasText: SCHEME }),
  });
  await container.locator('input[name="username"]').fill(opts['client-id']);
  await container.locator('input[name="password"]').fill(opts.secret);
  await container.locator('.auth-btn-wrapper button.authorize').click();
  // Swagger UI swaps the form for "Authorized" and a Logout button once stored.
  await container.locator('h6', { hasText: 'Authorized' }).waitFor();
  await container.locator('.auth-btn-wrapper button.btn-done').click();
  await modal.waitFor({ state: 'detached' });
  await page.locator('.swagger-ui .auth-wrapper button.authorize.locked').waitFor();

  step = `expand ${key(TOKEN_OP.method, TOKEN_OP.path)}`;
  const op = page
    .locator(`.swagger-ui .opblock.opblock-${TOKEN_OP.method.toLowerCase()}`)
    .filter({ has: page.locator(`.opblock-summary-path[data-path="${TOKEN_OP.path}"]`) });
  if ((await op.count()) !== 1) throw new Error(`expected one opblock for ${key(TOKEN_OP.method, TOKEN_OP.path)}, found ${await op.count()}`);
  await op.locator('.opblock-summary-control').click();
  await op.locator('.opblock-body').waitFor();

  step = 'try it out';
  await op.locator('button.try-out__btn', { hasText: 'Try it out' }).click();
  const editor = op.locator('textarea.body-param__text');
  await editor.waitFor();
  await editor.fill(JSON.stringify({ audience: opts.audience }, null, 2));

  step = 'execute';
  await op.locator('button.execute').click();
  step = 'wait for live response';
  const live = op.locator('.responses-wrapper .live-responses-table');
  const statusCell = live.locator('tbody tr.response .response-col_status').first();
  await statusCell.waitFor();
  const statusText = clean(await statusCell.textContent());
  // The body sits in `.highlight-code` next to copy/Download buttons; read only its <pre>.
  const bodyEl = live.locator('.response-col_description .highlight-code pre.microlight').first();
  const body = (await bodyEl.count()) > 0 ? ((await bodyEl.textContent()) ?? '').trim() : '';
  let json = null;
  try { json = JSON.parse(body); } catch {}
  const status = Number.parseInt(statusText, 10);
  result.status = Number.isNaN(status) ? statusText : status;
  result.has_token =
    typeof json?.access_token === 'string' && json.access_token.length > 0 && typeof json?.token_type === 'string';

  step = 'screenshot';
  await mkdir(path.dirname(path.resolve(shotPath)), { recursive: true });
  await page.screenshot({ path: shotPath, fullPage: true });
  result.screenshot = shotPath;

  step = 'verdict';
  const problems = [];
  if (result.missing.length) problems.push(`operations not rendered: ${result.missing.join(', ')}`);
  if (result.status !== 200) problems.push(`POST /api/token answered ${statusText || '(no status)'}: ${clean(body).slice(0, 300) || '(no body)'}`);
  else if (!result.has_token) problems.push(`200 body lacks access_token/token_type: ${clean(body).slice(0, 300)}`);
  if (problems.length) {
    if (pageErrors.length) problems.push(`page errors: ${pageErrors.slice(0, 3).join(' | ')}`);
    throw new Error(problems.join('; '));
  }
}

async function closeBrowser() {
  if (browser) {
    const b = browser;
    browser = null;
    await Promise.race([b.close().catch(() => {}), new Promise((r) => setTimeout(r, 10_000))]);
  }
  if (userDataDir) await rm(userDataDir, { recursive: true, force: true }).catch(() => {});
}

let timer;
const overall = new Promise((_, reject) => {
  timer = setTimeout(() => reject(new Error(`overall timeout after ${timeoutMs} ms`)), timeoutMs);
});

try {
  await Promise.race([run(), overall]);
  report(result, 0);
} catch (e) {
  const msg = String(e?.message ?? e).split('\n')[0];
  // Best effort: a screenshot of whatever the page shows helps to see why.
  if (page && !result.screenshot) {
    try {
      await mkdir(path.dirname(path.resolve(shotPath)), { recursive: true });
      await page.screenshot({ path: shotPath, fullPage: true, timeout: 5_000 });
      result.screenshot = shotPath;
    } catch {}
  }
  report({ ...result, error: `${step}: ${msg}` }, 1);
} finally {
  clearTimeout(timer);
  await closeBrowser();
}
process.exit(process.exitCode ?? 1);
