// Open-loop load at a steady rate, run in a worker thread by bench/rank.ts: its own heap, so the benchmark
// process's garbage collections (its setup leaves a large heap) do not pause the clock and count as latency.
// Request i is due at start + i / rate, whatever earlier ones are doing (up to `connections` sockets; more wait
// for one), and its latency counts from when it was due, so a slow server is not flattered by sending less.
// Idle connections are taken in turn (first freed, first used), as many independent clients would spread over a
// server's workers: reusing the last one freed (node:http's default) sends nearly everything to one worker.
// HTTP/1.1 over plain sockets, each request's bytes made once: node:http cost this shared machine 0.28–0.33 ms of
// CPU per 100-candidate request, this 0.16–0.18 (measured against a stub server). Answers must carry
// Content-Length (Fastify's always do).
import { connect, type Socket } from 'node:net';
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
  /** Milliseconds from due to when this generator's loop came to it, sorted: its own lag, whether a connection was
   * free or not (a starved generator inflates latency). */
  sendLags: number[];
  elapsedSeconds: number;
  non2xx: number;
  errors: number;
}

const HEADER_END = Buffer.from('\r\n\r\n');

/** One keep-alive connection with at most one request in flight. */
class Connection {
  /** When the request in flight was due; NaN when idle. */
  due = Number.NaN;
  private head: Buffer | null = null;
  private status = 0;
  private remaining = -1;

  constructor(
    readonly socket: Socket,
    private readonly answered: (c: Connection, due: number, status: number) => void,
    private readonly failed: (c: Connection, err: Error) => void,
  ) {
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.data(chunk));
    socket.on('error', (err) => this.failed(this, err));
    socket.on('close', () => this.failed(this, new Error('connection closed')));
  }

  send(request: Buffer, due: number): void {
    this.due = due;
    this.socket.write(request);
  }

  private data(chunk: Buffer): void {
    if (this.remaining < 0) {
      const buf = this.head ? Buffer.concat([this.head, chunk]) : chunk;
      const end = buf.indexOf(HEADER_END);
      if (end < 0) {
        this.head = buf;
        return;
      }
      this.head = null;
      const head = buf.toString('latin1', 0, end);
      const length = /\r\ncontent-length: *(\d+)/i.exec(head);
      if (!length) {
        this.failed(this, new Error('answer without Content-Length'));
        return;
      }
      this.status = Number(head.slice(9, 12));
      this.remaining = Number(length[1]) - (buf.length - end - HEADER_END.length);
    } else this.remaining -= chunk.length;
    if (this.remaining > 0) return;
    this.remaining = -1;
    const due = this.due;
    this.due = Number.NaN;
    this.answered(this, due, this.status);
  }
}

async function run(o: PacedLoad): Promise<PacedResult> {
  const url = new URL(o.url);
  const requests = o.bodies.map((b) =>
    Buffer.concat([
      Buffer.from(
        `POST ${url.pathname} HTTP/1.1\r\nhost: ${url.host}\r\ncontent-type: application/json\r\n` +
          `content-length: ${Buffer.byteLength(b)}\r\n\r\n`,
      ),
      Buffer.from(b),
    ]),
  );
  const total = Math.round(o.rate * o.seconds);
  const latencies: number[] = [];
  const sendLags: number[] = [];
  let non2xx = 0;
  let errors = 0;
  let sent = 0;
  let settled = 0;
  let finish: () => void = () => {};
  const finished = new Promise<void>((resolve) => {
    finish = resolve;
  });
  const idle: Connection[] = [];
  const waiting: number[] = []; // due times of requests with no idle connection yet
  const next = (c: Connection) => {
    const due = waiting.shift();
    if (due === undefined) idle.push(c);
    else c.send(requests[sent++ % requests.length] as Buffer, due);
  };
  const settle = () => {
    if (++settled === total) finish();
  };
  const answered = (c: Connection, due: number, status: number) => {
    latencies.push(performance.now() - due);
    if (status !== 200) non2xx++;
    settle();
    next(c);
  };
  const failed = (c: Connection, err: Error) => {
    if (Number.isNaN(c.due)) return; // an idle socket closing at the end
    c.due = Number.NaN;
    errors++;
    settle();
    if (settled < total) throw err; // a broken connection mid-run: the phase's figures would mean nothing
  };
  for (let i = 0; i < o.connections; i++) {
    const socket = connect(Number(url.port), url.hostname);
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    idle.push(new Connection(socket, answered, failed));
  }
  const start = performance.now();
  for (let due = 0; due < total; ) {
    const now = performance.now();
    for (; due < total && start + (due * 1000) / o.rate <= now; due++) {
      const at = start + (due * 1000) / o.rate;
      sendLags.push(now - at);
      const c = idle.shift();
      if (c) c.send(requests[sent++ % requests.length] as Buffer, at);
      else waiting.push(at);
    }
    await new Promise((r) => setTimeout(r, 1));
  }
  await finished;
  const elapsedSeconds = (performance.now() - start) / 1000;
  for (const c of idle) c.socket.destroy();
  const sorted = (xs: number[]) => xs.sort((a, b) => a - b);
  return { latencies: sorted(latencies), sendLags: sorted(sendLags), elapsedSeconds, non2xx, errors };
}

if (parentPort) parentPort.postMessage(await run(workerData as PacedLoad));
