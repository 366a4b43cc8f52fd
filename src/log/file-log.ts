// The embedded event log: Kafka's model (topics, partitions, offsets, consumer groups' committed offsets) on local
// files, for running with no servers. Layout under the log's folder:
//   <topic>/<partition>.log           append-only records; a record's offset is its index in the file
//   __consumer_offsets/<group>.json   { "<topic>/<partition>": next offset }, replaced atomically
// Record: u32 body length | u32 crc32(body) | body, body = i64 timestamp | i32 key length (-1: null) | key |
// i32 value length (-1: null) | value | i32 headers length (0: none) | headers as JSON.
// The valid log ends at the first record that is cut short or fails its crc (a crash mid-append): readers stop
// there (a writer in another process may be mid-write), a writer truncates it away when it opens the partition.
// One writing process per log at a time; readers in other processes follow the tail.
import {
  closeSync,
  existsSync,
  fstatSync,
  fsyncSync,
  ftruncateSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import type { ReadMessage } from '../streams/event-log.ts';

export interface LogRecord {
  key: Buffer | null;
  value: Buffer | null;
  timestamp: number;
  headers?: Record<string, string>;
}

export type StoredMessage = ReadMessage;

const HEAD = 8;
/** Bytes read at a time when indexing a partition. */
const SCAN_CHUNK = 4 << 20;

class PartitionFile {
  /** Byte position of each record; positions.length = the next offset. */
  readonly positions: number[] = [];
  /** End of the last valid record. */
  end = 0;
  private writable = false;

  constructor(
    private readonly path: string,
    private fd: number,
  ) {}

  /** Indexes records appended since the last look (by this process or another), a chunk at a time. */
  refresh(): void {
    const size = fstatSync(this.fd).size;
    while (this.end < size) {
      const buf = Buffer.allocUnsafe(Math.min(size - this.end, SCAN_CHUNK));
      readSync(this.fd, buf, 0, buf.length, this.end);
      let at = 0;
      while (at + HEAD <= buf.length && at + HEAD + buf.readUInt32BE(at) <= buf.length) {
        const len = buf.readUInt32BE(at);
        if (crc32(buf.subarray(at + HEAD, at + HEAD + len)) !== buf.readUInt32BE(at + 4)) break;
        this.positions.push(this.end + at);
        at += HEAD + len;
      }
      if (at > 0) {
        this.end += at;
        continue;
      }
      // Nothing whole in this chunk: a record longer than a chunk, or the end of the valid log.
      if (buf.length < HEAD) return;
      const len = buf.readUInt32BE(0);
      if (len + HEAD <= buf.length || this.end + HEAD + len > size) return;
      const big = Buffer.allocUnsafe(HEAD + len);
      readSync(this.fd, big, 0, big.length, this.end);
      if (crc32(big.subarray(HEAD)) !== big.readUInt32BE(4)) return;
      this.positions.push(this.end);
      this.end += big.length;
    }
  }

  /** Opens for appending: whatever follows the last valid record (a torn write) is cut off first. */
  openForWrite(): void {
    if (this.writable) return;
    closeSync(this.fd);
    this.fd = openSync(this.path, 'r+');
    this.writable = true;
    this.refresh();
    if (fstatSync(this.fd).size > this.end) {
      ftruncateSync(this.fd, this.end);
      fsyncSync(this.fd);
    }
  }

  write(buf: Buffer, sizes: number[]): void {
    this.openForWrite();
    this.refresh(); // another process may have appended since
    writeSync(this.fd, buf, 0, buf.length, this.end);
    for (const s of sizes) {
      this.positions.push(this.end);
      this.end += s;
    }
  }

  sync(): void {
    fsyncSync(this.fd);
  }

  read(offset: number, maxRecords: number): StoredMessage[] {
    this.refresh();
    const last = Math.min(this.positions.length, offset + maxRecords);
    if (offset >= last) return [];
    const from = this.positions[offset] as number;
    const to = last < this.positions.length ? (this.positions[last] as number) : this.end;
    const buf = Buffer.allocUnsafe(to - from);
    readSync(this.fd, buf, 0, buf.length, from);
    const out: StoredMessage[] = [];
    let at = 0;
    for (let o = offset; o < last; o++) {
      const len = buf.readUInt32BE(at);
      out.push(decode(buf.subarray(at + HEAD, at + HEAD + len), o));
      at += HEAD + len;
    }
    return out;
  }

  close(): void {
    closeSync(this.fd);
  }
}

function lengthOf(b: Buffer | null): number {
  return b === null ? 0 : b.length;
}

function encode(r: LogRecord): Buffer {
  const headers = r.headers ? Buffer.from(JSON.stringify(r.headers)) : null;
  const len = 8 + 4 + lengthOf(r.key) + 4 + lengthOf(r.value) + 4 + lengthOf(headers);
  const buf = Buffer.allocUnsafe(HEAD + len);
  let at = HEAD;
  at = buf.writeBigInt64BE(BigInt(r.timestamp), at);
  for (const part of [r.key, r.value]) {
    at = buf.writeInt32BE(part === null ? -1 : part.length, at);
    if (part) at += part.copy(buf, at);
  }
  at = buf.writeInt32BE(lengthOf(headers), at);
  if (headers) headers.copy(buf, at);
  buf.writeUInt32BE(len, 0);
  buf.writeUInt32BE(crc32(buf.subarray(HEAD)), 4);
  return buf;
}

function decode(body: Buffer, offset: number): StoredMessage {
  const timestamp = body.readBigInt64BE(0);
  let at = 8;
  const part = () => {
    const n = body.readInt32BE(at);
    at += 4;
    if (n < 0) return null;
    at += n;
    return body.subarray(at - n, at);
  };
  const key = part();
  const value = part();
  const h = part();
  const m: StoredMessage = { offset: String(offset), timestamp: String(timestamp), key, value };
  if (h && h.length > 0) m.headers = JSON.parse(h.toString()) as Record<string, string>;
  return m;
}

export class FileLog {
  private readonly files = new Map<string, PartitionFile>();
  private waiters: (() => void)[] = [];

  constructor(readonly dir: string) {
    mkdirSync(join(dir, '__consumer_offsets'), { recursive: true });
  }

  /** Creates missing topics with `partitions` empty partitions; existing topics keep theirs. */
  ensureTopics(topics: string[], partitions: number): void {
    for (const topic of topics) {
      const d = join(this.dir, topic);
      if (existsSync(d)) continue;
      mkdirSync(`${d}.tmp`, { recursive: true });
      for (let p = 0; p < partitions; p++) writeFileSync(join(`${d}.tmp`, `${p}.log`), '');
      renameSync(`${d}.tmp`, d);
    }
  }

  /** Partition count of a topic; 0 when the topic does not exist. */
  partitions(topic: string): number {
    const d = join(this.dir, topic);
    if (!existsSync(d)) return 0;
    return readdirSync(d).filter((f) => /^\d+\.log$/.test(f)).length;
  }

  private file(topic: string, partition: number): PartitionFile {
    const id = `${topic}/${partition}`;
    let f = this.files.get(id);
    if (!f) {
      const path = join(this.dir, topic, `${partition}.log`);
      if (!existsSync(path)) throw new Error(`no partition ${id} in the file log at ${this.dir}`);
      f = new PartitionFile(path, openSync(path, 'r'));
      this.files.set(id, f);
    }
    return f;
  }

  /** Appends each batch to its partition, then fsyncs every partition written: durable when this returns. */
  append(batches: { topic: string; partition: number; records: LogRecord[] }[]): void {
    const written = new Set<PartitionFile>();
    for (const { topic, partition, records } of batches) {
      if (records.length === 0) continue;
      const bufs = records.map(encode);
      const f = this.file(topic, partition);
      f.write(
        Buffer.concat(bufs),
        bufs.map((b) => b.length),
      );
      written.add(f);
    }
    for (const f of written) f.sync();
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  /** Up to `maxRecords` records from `offset` on, in offset order (fewer or none at the tail). */
  read(topic: string, partition: number, offset: number, maxRecords: number): StoredMessage[] {
    return this.file(topic, partition).read(offset, maxRecords);
  }

  endOffset(topic: string, partition: number): number {
    const f = this.file(topic, partition);
    f.refresh();
    return f.positions.length;
  }

  /** Resolves on the next append in this process, or after `ms` (appends by other processes are polled). */
  appended(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.waiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  private offsetsPath(group: string): string {
    return join(this.dir, '__consumer_offsets', `${encodeURIComponent(group)}.json`);
  }

  committed(group: string): Record<string, number> {
    const p = this.offsetsPath(group);
    return existsSync(p) ? (JSON.parse(readFileSync(p, 'utf8')) as Record<string, number>) : {};
  }

  /** Records the group's next offsets ("topic/partition" -> offset), merged into what it had. */
  commit(group: string, offsets: Record<string, number>): void {
    const p = this.offsetsPath(group);
    writeFileSync(`${p}.tmp`, JSON.stringify({ ...this.committed(group), ...offsets }));
    renameSync(`${p}.tmp`, p);
  }

  /** Forgets the group's offsets: it starts again from the beginning. */
  resetGroup(group: string): void {
    rmSync(this.offsetsPath(group), { force: true });
  }

  close(): void {
    for (const f of this.files.values()) f.close();
    this.files.clear();
  }
}
