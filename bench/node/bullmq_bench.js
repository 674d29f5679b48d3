// The BullMQ baseline of `bench`, run under node by the Rust harness.
//
//   node bullmq_bench.js enqueue <port> <queue> <jobs> <batch>
//       adds <jobs> no-op jobs with addBulk, <batch> per call; prints the rate.
//   node bullmq_bench.js work <port> <queue> <concurrency>
//       prints "ready", waits for "go" on stdin, then runs no-op jobs until
//       stdin closes.
//   node bullmq_bench.js enqueue-deliver <port> <queue> <jobs> <url> <secret> <body_template>
//       adds delivery jobs (the same event body our worker sends).
//   node bullmq_bench.js deliver <port> <queue> <concurrency>
//       as `work`, but each job signs its body (HMAC-SHA256, the two
//       signatures our worker sends) and POSTs it with undici's request
//       (keep-alive pool; Node's own fetch is the same client with ~5× the
//       overhead per request) to the job's URL; non-2xx fails the job.
//   node bullmq_bench.js produce-paced <port> <queue> <rate> <seconds> <url> <secret>
//       adds delivery jobs at <rate>/s, each stamped with its enqueue time.
//
// Jobs use removeOnComplete, as the issue asks.
'use strict';
const crypto = require('crypto');
const { Queue, Worker } = require('bullmq');
const undici = require('undici');

const [mode, port, name, ...rest] = process.argv.slice(2);
const connection = { host: '127.0.0.1', port: Number(port) };
const opts = { removeOnComplete: true, removeOnFail: true };

function nowUs() {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

function sign(secretB64, id, ts, body) {
  const key = Buffer.from(secretB64, 'base64');
  const legacy = crypto.createHmac('sha256', key).update(`${ts}.`).update(body).digest('hex');
  const standard = crypto
    .createHmac('sha256', key)
    .update(`${id}.${ts}.`)
    .update(body)
    .digest('base64');
  return { legacy: `sha256=${legacy}`, standard: `v1,${standard}` };
}

function deliveryJob(i, url, secret, stamp) {
  const id = `evt_${i.toString(16).padStart(26, '0')}`;
  const body = JSON.stringify({
    webhook_id: 'wh_bench',
    event_id: id,
    event_type: 'message.processed',
    timestamp: new Date().toISOString(),
    delivery_attempt: 1,
    data: {
      t_us: stamp ? nowUs() : 0,
      session_id: 'ses_01JBENCH0000000000000000000',
      response: 'x'.repeat(300),
      confidence: 0.87,
    },
    metadata: { trace_id: crypto.randomUUID(), correlation_id: null },
  });
  return { name: 'deliver', data: { id, url, secret, body }, opts };
}

async function waitGo() {
  return new Promise((resolve) => {
    let buf = '';
    let started = false;
    process.stdin.on('data', (chunk) => {
      buf += chunk.toString();
      if (!started && buf.includes('go\n')) {
        started = true;
        resolve();
      }
    });
    process.stdin.on('end', () => process.exit(0));
  });
}

async function main() {
  if (mode === 'enqueue') {
    const [jobs, batch] = rest.map(Number);
    const q = new Queue(name, { connection });
    await q.waitUntilReady();
    const t0 = performance.now();
    for (let i = 0; i < jobs; i += batch) {
      const n = Math.min(batch, jobs - i);
      await q.addBulk(Array.from({ length: n }, (_, k) => ({ name: 'noop', data: { n: i + k }, opts })));
    }
    const secs = (performance.now() - t0) / 1000;
    console.log(JSON.stringify({ enqueue_per_s: jobs / secs }));
    await q.close();
  } else if (mode === 'enqueue-deliver') {
    const [jobsText, url, secret] = rest;
    const jobs = Number(jobsText);
    const q = new Queue(name, { connection });
    await q.waitUntilReady();
    for (let i = 0; i < jobs; i += 500) {
      const n = Math.min(500, jobs - i);
      await q.addBulk(Array.from({ length: n }, (_, k) => deliveryJob(i + k, url, secret, false)));
    }
    console.log(JSON.stringify({ ok: true }));
    await q.close();
  } else if (mode === 'produce-paced') {
    const [rate, seconds] = rest.slice(0, 2).map(Number);
    const [url, secret] = rest.slice(2);
    const q = new Queue(name, { connection });
    await q.waitUntilReady();
    const total = Math.round(rate * seconds);
    const t0 = performance.now();
    let sent = 0;
    while (sent < total) {
      const due = Math.min(total, Math.floor(((performance.now() - t0) / 1000) * rate) + 1);
      const batch = [];
      for (; sent < due; sent++) batch.push(deliveryJob(sent, url, secret, true));
      if (batch.length) await q.addBulk(batch);
      await new Promise((r) => setTimeout(r, 2));
    }
    console.log(JSON.stringify({ sent }));
    await q.close();
  } else if (mode === 'work' || mode === 'deliver') {
    const concurrency = Number(rest[0]);
    const agent = new undici.Agent({ keepAliveTimeout: 30_000, connections: concurrency });
    const processor =
      mode === 'work'
        ? async () => {}
        : async (job) => {
            const { id, url, secret, body } = job.data;
            const ts = Math.floor(Date.now() / 1000);
            const sig = sign(secret, id, ts, body);
            const res = await agent.request({
              origin: new URL(url).origin,
              path: new URL(url).pathname,
              method: 'POST',
              body,
              headers: {
                'content-type': 'application/json',
                'x-webhook-signature': sig.legacy,
                'x-webhook-timestamp': String(ts),
                'x-webhook-id': 'wh_bench',
                'x-event-id': id,
                'webhook-id': id,
                'webhook-timestamp': String(ts),
                'webhook-signature': sig.standard,
              },
            });
            await res.body.dump();
            if (res.statusCode < 200 || res.statusCode >= 300) throw new Error(`HTTP ${res.statusCode}`);
          };
    const worker = new Worker(name, processor, { connection, concurrency, autorun: false });
    await worker.waitUntilReady();
    console.log('ready');
    await waitGo();
    worker.run();
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
