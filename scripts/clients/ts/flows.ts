// The README's main flows through the TypeScript client that @hey-api/openapi-ts
// generated from the served OpenAPI document (./client: the fetch client, its types,
// SDK functions and zod schemas; responses validated against the document at run
// time), written the way a client author would. Run by scripts/check-clients (tsx, on
// Node 20), which starts the stack, generates the client and type-checks this file.
//
// Prints one line per flow, `NAME: ok (…)` or `NAME: FAIL reason`, and each failure's
// stack on stderr; exits 1 when any flow failed.
//
// Where the generated client cannot say what the document says, the flow says so:
//   - cookie parameters (`in: cookie`, the refresh token of /auth/refresh and
//     /auth/logout): hey-api drops them from the generated types, so the flow sends the
//     `Cookie` header itself, from the `Set-Cookie` the document declares;
//   - the webhook has no SDK function (nothing to call): the receiver here checks the
//     delivery with the generated zod schema of the document's `webhooks` entry.
//
// Environment: CLIENTS_BASE, CLIENTS_PASSWORD (accounts {admin,user,promoter}-typescript@
// clients.example), CLIENTS_MAIL_DIR, CLIENTS_SPEC (the served document).

import { createHmac, randomUUID } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import { deflateSync } from 'node:zlib';
import { Webhook } from 'standardwebhooks';

import { createClient, createConfig, type Client } from './client/client/index.ts';
import * as sdk from './client/sdk.gen.ts';
import type * as T from './client/types.gen.ts';
import * as z from './client/zod.gen.ts';

const BASE = process.env.CLIENTS_BASE!;
const PASSWORD = process.env.CLIENTS_PASSWORD!;
const MAIL_DIR = process.env.CLIENTS_MAIL_DIR!;
const SPEC = JSON.parse(readFileSync(process.env.CLIENTS_SPEC!, 'utf8'));
const NAME = 'typescript';
const [ADMIN, USER, PROMOTER] = ['admin', 'user', 'promoter'].map((r) => `${r}-${NAME}@clients.example`);
const REFRESH_COOKIE = '__Secure-conveyor_refresh';
const TIMEOUT_MS = Number(process.env.CLIENTS_TIMEOUT ?? '60') * 1000;
const FINAL = ['succeeded', 'failed', 'partially_failed', 'cancelled', 'suppressed'];

class FlowError extends Error {}

function check(condition: unknown, message: string): asserts condition {
  if (!condition) throw new FlowError(message);
}

function anonymous(): Client {
  return createClient(createConfig({ baseUrl: BASE }));
}

function authed(token: string): Client {
  return createClient(createConfig({ baseUrl: BASE, auth: token }));
}

type Outcome<D> = { data?: D; error?: unknown; response?: Response };

function describe(result: Outcome<unknown>): string {
  const body = JSON.stringify(result.error ?? result.data ?? null).slice(0, 300);
  return `${result.response?.status} ${result.response?.headers.get('content-type')}: ${body}`;
}

/** A generated call's answer, checked: its status, and its data (already validated
 * against the document's schema by the SDK's zod validator). */
function expect<D>(result: Outcome<D>, status: number): D {
  check(result.response?.status === status, `expected ${status}, got ${describe(result)}`);
  check(result.data !== undefined, `${status} without data: ${describe(result)}`);
  return result.data;
}

/** An error answer read as the document's Problem (zod schema of the document). */
function expectProblem(result: Outcome<unknown>, status: number): T.Problem {
  check(result.response?.status === status, `expected ${status}, got ${describe(result)}`);
  const kind = result.response?.headers.get('content-type');
  check(kind === 'application/problem+json', `${status} as ${kind}, not application/problem+json`);
  return z.zProblem.parse(result.error);
}

async function waitFor<R>(what: string, probe: () => Promise<R | undefined | null | false>): Promise<R> {
  const deadline = Date.now() + TIMEOUT_MS;
  for (;;) {
    const result = await probe();
    if (result) return result;
    if (Date.now() > deadline) throw new FlowError(`${what}: not within ${TIMEOUT_MS / 1000} s`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/** The refresh token from the Set-Cookie header the document declares. */
function refreshCookie(response: Response | undefined): string {
  const cookies = response?.headers.getSetCookie() ?? [];
  for (const header of cookies) {
    const [pair] = header.split(';');
    const at = pair.indexOf('=');
    if (pair.slice(0, at).trim() === REFRESH_COOKIE) return pair.slice(at + 1);
  }
  throw new FlowError(`no ${REFRESH_COOKIE} cookie in ${JSON.stringify(cookies)}`);
}

function isChallenge(answer: T.LoginResponse): answer is T.MfaChallenge {
  return 'mfa_required' in answer;
}

async function login(email: string): Promise<{ tokens: T.TokenResponse; cookie: string }> {
  const result = await sdk.authLogin({ client: anonymous(), body: { email, password: PASSWORD } });
  const answer = expect(result, 200);
  check(!isChallenge(answer), `login of ${email} answered an MFA challenge`);
  return { tokens: answer, cookie: refreshCookie(result.response) };
}

async function token(email: string): Promise<Client> {
  return authed((await login(email)).tokens.access_token);
}

/** RFC 6238 (SHA-1, 6 digits, 30 s) for the step holding `at` (Unix seconds). */
function totp(secret: string, at: number): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const c of secret.replace(/=+$/, '').toUpperCase()) bits += alphabet.indexOf(c).toString(2).padStart(5, '0');
  const key = Buffer.from(bits.match(/.{8}/g)!.map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(at / 30)));
  const digest = createHmac('sha1', key).update(counter).digest();
  const offset = digest[digest.length - 1] & 0x0f;
  return String((digest.readUInt32BE(offset) & 0x7fffffff) % 1_000_000).padStart(6, '0');
}

/** A valid 2x2 PNG with random pixels (new content on every run). */
function png(): Buffer {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (data: Buffer) => {
    let c = 0xffffffff;
    for (const byte of data) c = crcTable[(c ^ byte) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (kind: string, data: Buffer) => {
    const head = Buffer.alloc(4);
    head.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(kind, 'ascii'), data]);
    const tail = Buffer.alloc(4);
    tail.writeUInt32BE(crc(body));
    return Buffer.concat([head, body, tail]);
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(2, 0);
  header.writeUInt32BE(2, 4);
  header.set([8, 2, 0, 0, 0], 8);
  const pixels = Buffer.from(randomUUID().replace(/-/g, ''), 'hex');
  const rows = Buffer.concat([Buffer.from([0]), pixels.subarray(0, 6), Buffer.from([0]), pixels.subarray(6, 12)]);
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', header),
    chunk('IDAT', deflateSync(rows)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

/** Polls GET /requests/{id} until the request is finished; checks it succeeded. */
async function waitRequest(client: Client, id: string): Promise<T.RequestDetail> {
  const detail = await waitFor(`request ${id} finished`, async () => {
    const current = expect(await sdk.requestsShow({ client, path: { id } }), 200);
    return FINAL.includes(current.status) ? current : undefined;
  });
  check(detail.status === 'succeeded', `request ${id} ended ${detail.status}`);
  return detail;
}

/** The decoded text of the newest message the test SMTP server stored for address. */
async function mailTo(address: string): Promise<string> {
  return waitFor(`a message to ${address}`, async () => {
    let names: string[] = [];
    try {
      names = readdirSync(MAIL_DIR).filter((n) => n.endsWith('.eml')).sort().reverse();
    } catch {
      return undefined;
    }
    for (const name of names) {
      const raw = readFileSync(`${MAIL_DIR}/${name}`, 'latin1');
      const envelope = /^X-Envelope-To: (.*)$/m.exec(raw)?.[1] ?? '';
      if (!envelope.includes(address)) continue;
      const body = raw.slice(raw.search(/\r?\n\r?\n/));
      const decoded = /quoted-printable/i.test(raw)
        ? body.replace(/=\r?\n/g, '').replace(/=([0-9A-F]{2})/g, (_, hex) => String.fromCharCode(parseInt(hex, 16)))
        : body;
      return raw.slice(0, raw.search(/\r?\n\r?\n/)) + '\n\n' + decoded;
    }
    return undefined;
  });
}

const FLOWS: Array<[string, () => Promise<string>]> = [];
const flow = (name: string, run: () => Promise<string>) => FLOWS.push([name, run]);

flow('register_confirm', async () => {
  const email = `new-${NAME}-${randomUUID().slice(0, 8)}@clients.example`;
  expect(await sdk.authRegister({ client: anonymous(), body: { email, password: PASSWORD, display_name: 'Ada' } }), 202);
  const message = await mailTo(email);
  const link = /verify-email\?token=([A-Za-z0-9_-]+)/.exec(message);
  check(link, `no verification link in the message: ${message.slice(0, 300)}`);
  const verified = expect(await sdk.authVerifyEmail({ client: anonymous(), body: { token: link[1] } }), 200);
  check(verified.email_verified && !verified.already_verified, `verify-email answered ${JSON.stringify(verified)}`);
  const me = expect(await sdk.authMe({ client: await token(email) }), 200);
  check(me.email_verified, `GET /me after confirming: email_verified ${me.email_verified}`);
  return `${email} confirmed`;
});

/** The headers of /auth/refresh and /auth/logout as their generated types declare them,
 * plus the refresh cookie: hey-api leaves `in: cookie` parameters out of the types, so
 * the Cookie header is sent by hand, under the name the document declares. */
function csrfHeaders(cookie: string, operation: 'refresh' | 'logout') {
  const declared: Array<{ in: string; name: string }> = SPEC.paths[`/api/v1/auth/${operation}`].post.parameters ?? [];
  check(declared.some((p) => p.in === 'cookie' && p.name === REFRESH_COOKIE),
    `/auth/${operation} does not declare the ${REFRESH_COOKIE} cookie`);
  const typed: T.AuthRefreshData['headers'] & T.AuthLogoutData['headers'] = { 'X-Requested-With': 'conveyor-client-check' };
  return { ...typed, Cookie: `${REFRESH_COOKIE}=${cookie}` };
}

flow('login_refresh_logout', async () => {
  const { cookie } = await login(USER);
  const refreshed = await sdk.authRefresh({ client: anonymous(), headers: csrfHeaders(cookie, 'refresh') });
  const fresh = expect(refreshed, 200);
  const rotated = refreshCookie(refreshed.response);
  check(rotated !== cookie, 'the refresh cookie was not rotated');
  const me = expect(await sdk.authMe({ client: authed(fresh.access_token) }), 200);
  check(me.email === USER, `GET /me with the refreshed token: ${me.email}`);
  const out = await sdk.authLogout({ client: anonymous(), headers: csrfHeaders(rotated, 'logout') });
  check(out.response?.status === 204, `logout: ${describe(out)}`);
  const again = await sdk.authRefresh({ client: anonymous(), headers: csrfHeaders(rotated, 'refresh') });
  const problem = expectProblem(again, 401);
  const gone = await sdk.authMe({ client: authed(fresh.access_token) });
  check(gone.response?.status === 401, `the access token outlived logout: ${describe(gone)}`);
  return `refreshed, signed out (${problem.code} after); Cookie header by hand`;
});

flow('admin_2fa_login', async () => {
  const client = await token(ADMIN);
  const setup = expect(await sdk.authSetup2Fa({ client }), 200);
  const now = Date.now() / 1000;
  const codes = expect(await sdk.authEnable2Fa({ client, body: { code: totp(setup.secret, now) } }), 200);
  check(codes.recovery_codes.length === 10, `${codes.recovery_codes.length} recovery codes`);
  const first = await sdk.authLogin({ client: anonymous(), body: { email: ADMIN, password: PASSWORD } });
  const challenge = expect(first, 200);
  check(isChallenge(challenge), `with 2FA on, login answered ${JSON.stringify(challenge).slice(0, 200)}`);
  check(challenge.mfa_required, 'the challenge says mfa_required false');
  check(first.response?.headers.getSetCookie().length === 0, 'a refresh cookie before the second factor');
  // a code is accepted once: the next 30-second step's (within the ±1 step window)
  const second = await sdk.authLoginMfa({
    client: anonymous(),
    body: { mfa_token: challenge.mfa_token, code: totp(setup.secret, now + 30) },
  });
  const admin = expect(second, 200);
  refreshCookie(second.response);
  const queues = expect(await sdk.adminListQueues({ client: authed(admin.access_token) }), 200);
  return `MFA login, ${queues.queues.length} queues listed`;
});

flow('email_poll', async () => {
  const client = await token(USER);
  const subject = `Report ${randomUUID().slice(0, 8)}`;
  const sent = await sdk.emailsSendEmail({
    client,
    headers: { 'Idempotency-Key': randomUUID() },
    body: { to: ['Bob <bob@example.org>'], subject, text: 'Numbers attached', html: '<p>Numbers attached</p>' },
  });
  const accepted = expect(sent, 202);
  check(sent.response?.headers.get('location') === accepted.location, "Location differs from the body's location");
  const detail = await waitRequest(client, accepted.id);
  check(detail.succeeded === 1 && detail.total === 1, `counts: ${JSON.stringify(detail)}`);
  await waitFor('the message at the SMTP server', async () => (await mailTo('bob@example.org')).includes(subject));
  return `request ${accepted.id} succeeded`;
});

flow('campaign', async () => {
  const client = await token(PROMOTER);
  const recipients = ['a@example.org', 'b@example.org', 'c@example.org', 'a@example.org'];
  const accepted = expect(
    await sdk.emailsSendCampaign({ client, body: { name: 'Spring', subject: 'Hello', text: 'Spring is here', recipients } }),
    202,
  );
  check(accepted.total === 3, `total ${accepted.total}, not 3 distinct recipients`);
  const detail = await waitRequest(client, accepted.id);
  const stats = expect(await sdk.emailsCampaignStats({ client, path: { id: accepted.id } }), 200);
  check(stats.total === 3, `stats total ${stats.total}`);
  return `${detail.succeeded}/${detail.total} sent; stats: ${stats.delivered} delivered`;
});

flow('event_stream', async () => {
  const client = await token(USER);
  const accepted = expect(
    await sdk.emailsSendEmail({ client, body: { to: ['carol@example.org'], subject: 'Stream', text: 'Follow me' } }),
    202,
  );
  const names: Array<string | undefined> = [];
  const errors: unknown[] = [];
  const { stream } = await sdk.requestsStreamEvents({
    client,
    path: { id: accepted.id },
    sseMaxRetryAttempts: 1,
    onSseEvent: (event) => names.push(event.event),
    onSseError: (error) => errors.push(error),
    signal: AbortSignal.timeout(TIMEOUT_MS),
  });
  const progress: T.Progress[] = [];
  for await (const event of stream) progress.push(event);
  check(errors.length === 0, `the stream failed: ${String(errors[0]).slice(0, 300)}`);
  check(progress.length > 0, 'no events');
  check(names.every((n) => n === 'progress'), `event types ${JSON.stringify(names)}`);
  for (const p of progress) check(p.id === accepted.id, `an event of another request: ${p.id}`);
  const versions = progress.map((p) => p.version);
  check(versions.every((v, i) => i === 0 || v > versions[i - 1]), `versions not rising: ${versions}`);
  const last = progress[progress.length - 1];
  check(last.finished && last.status === 'succeeded', `last event: ${JSON.stringify(last)}`);
  return `${progress.length} events, versions [${versions.join(', ')}]`;
});

flow('upload_download', async () => {
  const client = await token(USER);
  const content = png();
  const file = new File([new Uint8Array(content)], 'pixel.png', { type: 'image/png' });
  const upload = expect(await sdk.uploadsUpload({ client, body: { file, description: 'A pixel, 2026' } }), 202);
  await waitFor(`upload ${upload.id} clean`, async () => {
    const view = expect(await sdk.uploadsShow({ client, path: { id: upload.id } }), 200);
    check(!['infected', 'rejected'].includes(view.status), `upload ${view.status}`);
    return view.status === 'clean' ? view : undefined;
  });
  const download = await sdk.uploadsDownload({ client, path: { id: upload.id } });
  const blob = expect(download, 200);
  const served = download.response?.headers.get('content-type');
  check(served === 'image/png', `served as ${served}, not image/png`);
  const declared = Object.keys(SPEC.paths['/api/v1/uploads/{id}/content'].get.responses['200'].content ?? {});
  check(declared.includes(served), `the served type ${served} is not among the declared ${declared}`);
  check(blob instanceof Blob, `the body came as ${typeof blob}, not a Blob`);
  const bytes = Buffer.from(await blob.arrayBuffer());
  check(bytes.equals(content), `downloaded ${bytes.length} bytes differ from the ${content.length} uploaded`);
  return `${content.length} bytes back as ${served}`;
});

flow('paging', async () => {
  const client = await token(USER);
  for (let n = 0; n < 3; n++) {
    expect(await sdk.emailsSendEmail({ client, body: { to: [`page${n}@example.org`], subject: `Page ${n}`, text: '…' } }), 202);
  }
  const whole = expect(await sdk.requestsList({ client, query: { limit: 100 } }), 200);
  const seen: string[] = [];
  let cursor: string | undefined;
  let pages = 0;
  for (;;) {
    const page = expect(await sdk.requestsList({ client, query: { limit: 2, ...(cursor ? { cursor } : {}) } }), 200);
    pages++;
    check(page.items.length <= 2, `a page of ${page.items.length} items with limit 2`);
    seen.push(...page.items.map((item) => item.id));
    cursor = page.next_cursor ?? undefined;
    if (!cursor) break;
    check(pages < 100, 'more than 100 pages');
  }
  const expected = whole.items.map((item) => item.id);
  check(new Set(seen).size === seen.length, 'a request on two pages');
  check(JSON.stringify(seen.slice(0, expected.length)) === JSON.stringify(expected),
    `pages gave ${seen.length} requests, one page of 100 gave ${expected.length}`);
  return `${seen.length} requests on ${pages} pages`;
});

flow('problems', async () => {
  const client = await token(USER);
  const invalid = expectProblem(
    await sdk.emailsSendEmail({ client, body: { to: ['not an address'], subject: 'Hi', text: 'Hello' } }),
    422,
  );
  check(invalid.code === 'validation_failed', `422 code ${invalid.code}`);
  check(invalid.errors?.some((e) => e.field.startsWith('to')), `422 errors ${JSON.stringify(invalid.errors)}`);
  const missing = expectProblem(await sdk.requestsShow({ client, path: { id: randomUUID() } }), 404);
  check(missing.code === 'not_found' && missing.status === 404, `404 problem ${JSON.stringify(missing)}`);
  return `422 ${invalid.code} (${invalid.errors?.[0]?.field}), 404 ${missing.code}`;
});

flow('webhook', async () => {
  check(SPEC.webhooks?.['request.finished']?.post, 'the document has no webhooks entry for request.finished');
  const client = await token(USER);
  const { secret } = expect(await sdk.webhooksRotate({ client }), 201);
  const deliveries: Array<{ headers: IncomingHttpHeaders; body: string }> = [];
  const server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (c: Buffer) => chunks.push(c));
    request.on('end', () => {
      deliveries.push({ headers: request.headers, body: Buffer.concat(chunks).toString('utf8') });
      response.writeHead(204).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  let accepted: T.Accepted;
  let delivery: { headers: IncomingHttpHeaders; body: string };
  try {
    const address = server.address();
    check(address && typeof address === 'object', 'the receiver has no address');
    const callback_url = `http://127.0.0.1:${address.port}/conveyor`;
    accepted = expect(
      await sdk.emailsSendEmail({ client, body: { to: ['dave@example.org'], subject: 'Hook', text: 'Call me', callback_url } }),
      202,
    );
    delivery = await waitFor('a webhook delivery', async () => deliveries[0]);
  } finally {
    server.close();
  }
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(delivery.headers)) headers[name] = String(value);
  new Webhook(secret).verify(delivery.body, headers); // throws WebhookVerificationError
  // The generated zod schema of the document's webhooks entry: body and headers.
  const event = z.zWebhooksRequestFinishedWebhookRequest.parse({ body: JSON.parse(delivery.body), headers }).body;
  check(event.type === 'request.finished', `event type ${event.type}`);
  check(event.data.id === accepted.id && event.data.status === 'succeeded', `event data ${JSON.stringify(event.data)}`);
  await waitFor('the request showing its webhook delivered', async () => {
    const detail = expect(await sdk.requestsShow({ client, path: { id: accepted.id } }), 200);
    return detail.webhook?.status === 'delivered';
  });
  return `${headers['webhook-id']} verified, body matches the document`;
});

let failed = 0;
for (const [name, run] of FLOWS) {
  const started = Date.now();
  try {
    const note = await run();
    console.log(`${name}: ok (${((Date.now() - started) / 1000).toFixed(1)} s${note ? '; ' + note : ''})`);
  } catch (error) {
    failed++;
    const reason = error instanceof Error ? `${error.name}: ${error.message}` : JSON.stringify(error);
    console.log(`${name}: FAIL ${reason.replace(/\s+/g, ' ').slice(0, 400)}`);
    console.error(`--- ${name}\n${error instanceof Error ? error.stack : reason}`);
  }
}
process.exitCode = failed ? 1 : 0;
