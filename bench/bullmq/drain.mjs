#!/usr/bin/env node
// BullMQ baseline for the Conveyor queue-drain benchmark.
//
// usage: node drain.mjs --port P --jobs N --concurrency C
//
// Connects to a DEDICATED Redis on 127.0.0.1:P (it is FLUSHALLed), enqueues N
// no-op jobs with Queue.addBulk (removeOnComplete: true), then starts one
// Worker with concurrency C and times how long it takes to complete all N
// jobs. Prints exactly one JSON line on stdout; everything else goes to stderr.

import { Queue, Worker } from 'bullmq';
import IORedis from 'ioredis';
import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';

const require = createRequire(import.meta.url);
const BULLMQ_VERSION = require('bullmq/package.json').version;

const HOST = '127.0.0.1';
const QUEUE_NAME = 'drain-bench';
const CHUNK = 1000;
const TIMEOUT_MS = 300_000;

function die(msg, code = 2) {
  process.stderr.write(`drain.mjs: ${msg}\n`);
  process.exit(code);
}

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const m = /^--(port|jobs|concurrency)(?:=(.*))?$/.exec(a);
    if (!m) die(`unknown argument: ${a}\nusage: node drain.mjs --port P --jobs N --concurrency C`);
    const v = m[2] !== undefined ? m[2] : argv[++i];
    if (v === undefined || !/^[0-9]+$/.test(v) || Number(v) <= 0) {
      die(`--${m[1]} needs a positive integer, got ${JSON.stringify(v)}`);
    }
    out[m[1]] = Number(v);
  }
  for (const k of ['port', 'jobs', 'concurrency']) {
    if (out[k] === undefined) die(`missing --${k}\nusage: node drain.mjs --port P --jobs N --concurrency C`);
  }
  if (out.port > 65535) die(`--port out of range: ${out.port}`);
  // This script runs FLUSHALL; never do that to a default-port Redis, which is
  // almost certainly a shared instance and not one started for the benchmark.
  if (out.port === 6379) die('refusing to FLUSHALL 127.0.0.1:6379; start a dedicated redis-server on another port');
  return out;
}

const { port, jobs: N, concurrency: C } = parseArgs(process.argv.slice(2));
const connection = { host: HOST, port };

let queue;
let worker;

// The benchmark Redis is local and dedicated: if it stops accepting
// connections, fail fast instead of letting ioredis retry until the timeout.
function onConnError(who) {
  return e => {
    if (e && e.code === 'ECONNREFUSED') die(`${who}: Redis at ${HOST}:${port} went away (${e.message})`, 1);
    process.stderr.write(`${who} error: ${e && e.message}\n`);
  };
}

async function closeAll() {
  const closing = [];
  if (worker) closing.push(worker.close(true).catch(e => process.stderr.write(`worker.close: ${e.message}\n`)));
  if (queue) closing.push(queue.close().catch(e => process.stderr.write(`queue.close: ${e.message}\n`)));
  await Promise.all(closing);
}

const overall = setTimeout(async () => {
  process.stderr.write(`drain.mjs: TIMEOUT: not drained within ${TIMEOUT_MS / 1000} s\n`);
  // Do not wait for a graceful close forever.
  setTimeout(() => process.exit(3), 5000).unref();
  await closeAll();
  process.exit(3);
}, TIMEOUT_MS);

async function main() {
  // 1. Clean slate on the dedicated Redis.
  const admin = new IORedis({ ...connection, maxRetriesPerRequest: 1, connectTimeout: 5000, lazyConnect: true, retryStrategy: () => null });
  admin.on('error', () => {}); // surfaced via the rejected command below
  try {
    await admin.connect();
    await admin.flushall();
  } catch (e) {
    die(`cannot reach/flush Redis at ${HOST}:${port}: ${e.message}`);
  } finally {
    admin.disconnect();
  }

  // 2. Enqueue N no-op jobs in chunks.
  queue = new Queue(QUEUE_NAME, { connection });
  queue.on('error', onConnError('queue'));
  await queue.waitUntilReady();
  const tEnq = performance.now();
  const opts = { removeOnComplete: true };
  for (let done = 0; done < N; ) {
    const n = Math.min(CHUNK, N - done);
    const batch = new Array(n);
    for (let i = 0; i < n; i++) batch[i] = { name: 'noop', data: {}, opts };
    await queue.addBulk(batch);
    done += n;
  }
  const enqSecs = (performance.now() - tEnq) / 1000;
  const waiting = await queue.getWaitingCount();
  if (waiting !== N) die(`expected ${N} waiting jobs after enqueue, found ${waiting}`);
  process.stderr.write(`enqueued ${N} jobs in ${enqSecs.toFixed(3)} s\n`);

  // 3. One worker, no-op processor. Connections are made ready before the
  //    clock starts; the clock runs from run() until the N-th 'completed'.
  let completed = 0;
  let failed = 0;
  let resolveDone;
  const drained = new Promise(r => (resolveDone = r));
  let tEnd = 0;

  worker = new Worker(QUEUE_NAME, async () => {}, { connection, concurrency: C, autorun: false });
  worker.on('error', onConnError('worker'));
  // The 'completed' event is emitted locally after the job has been moved to
  // completed (and removed) in Redis; counting it costs one increment.
  worker.on('completed', () => {
    if (++completed + failed === N) {
      tEnd = performance.now();
      resolveDone();
    }
  });
  worker.on('failed', (_job, err) => {
    if (failed++ === 0) process.stderr.write(`job failed: ${err && err.message}\n`);
    if (completed + failed === N) {
      tEnd = performance.now();
      resolveDone();
    }
  });
  await worker.waitUntilReady();

  const tStart = performance.now();
  const running = worker.run().catch(e => process.stderr.write(`worker.run: ${e.message}\n`));
  await drained;
  const seconds = (tEnd - tStart) / 1000;

  // 4. Sanity check and clean shutdown.
  const counts = await queue.getJobCounts('waiting', 'active', 'completed', 'failed', 'delayed');
  await closeAll();
  await running;
  clearTimeout(overall);

  if (failed > 0) die(`${failed} of ${N} jobs failed`);
  if (counts.waiting || counts.active || counts.delayed || counts.failed) {
    die(`queue not empty after drain: ${JSON.stringify(counts)}`);
  }
  if (counts.completed) {
    process.stderr.write(`warning: ${counts.completed} completed jobs kept despite removeOnComplete\n`);
  }

  const result = {
    name: 'bullmq',
    version: BULLMQ_VERSION,
    jobs: N,
    concurrency: C,
    seconds: Number(seconds.toFixed(4)),
    jobs_per_sec: Number((N / seconds).toFixed(1)),
  };
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch(async e => {
  process.stderr.write(`drain.mjs: ${e && e.stack ? e.stack : e}\n`);
  setTimeout(() => process.exit(1), 5000).unref();
  await closeAll();
  process.exit(1);
});
