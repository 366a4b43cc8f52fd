// Open-loop load at a steady rate, run in a worker thread by bench/rank.ts: its own heap, so the benchmark
// process's garbage collections (its setup leaves a large heap) do not pause the clock and count as latency.
// Request i is due at start + i / rate, whatever earlier ones are doing (up to `connections` sockets; more wait
// for one), and its latency counts from when it was due, so a slow server is not flattered by sending less.
import { Agent, request } from 'node:http';
import { parentPort, workerData } from 'node:worker_threads';

export interface PacedLoad {
  url: string;
  bodies: string[];
  rate: number;
  seconds: number;
  connections: number;
}

export interface PacedResult {
  /** Milliseconds from due to answered, sorted. */
  latencies: number[];
  elapsedSeconds: number;
  non2xx: number;
  errors: number;
}

async function run(o: PacedLoad): Promise<PacedResult> {
  const agent = new Agent({ keepAlive: true, maxSockets: o.connections });
  const payloads = o.bodies.map((b) => Buffer.from(b));
  const post = (body: Buffer) =>
    new Promise<number>((resolve, reject) => {
      const req = request(
        o.url,
        { method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': body.length } },
        (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  const total = Math.round(o.rate * o.seconds);
  const latencies: number[] = [];
  let non2xx = 0;
  let errors = 0;
  const pending: Promise<void>[] = [];
  const start = performance.now();
  for (let sent = 0; sent < total; ) {
    const now = performance.now();
    for (; sent < total && start + (sent * 1000) / o.rate <= now; sent++) {
      const due = start + (sent * 1000) / o.rate;
      pending.push(
        post(payloads[sent % payloads.length] as Buffer).then(
          (status) => {
            latencies.push(performance.now() - due);
            if (status !== 200) non2xx++;
          },
          () => {
            errors++;
          },
        ),
      );
    }
    await new Promise((r) => setTimeout(r, 1));
  }
  await Promise.all(pending);
  const elapsedSeconds = (performance.now() - start) / 1000;
  agent.destroy();
  return { latencies: latencies.sort((a, b) => a - b), elapsedSeconds, non2xx, errors };
}

if (parentPort) parentPort.postMessage(await run(workerData as PacedLoad));
