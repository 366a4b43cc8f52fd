// The offline store's connection: a ClickHouse server when a URL is configured, else the embedded engine (chdb)
// in a local folder. Either way callers get the same @clickhouse/client ClickHouseClient.
//
// Embedded-engine constraints (chdb 3.4, engine 26.7; checked by hand and in test/unit/offline-clickhouse.test.ts):
// - One data directory per PROCESS. Several clients on the same dir in one process coexist (each has its own
//   session; closing one leaves the others working). A client on a different dir is refused while any client is
//   open ("only one active data directory per process"); after all are closed another dir can be opened.
// - One PROCESS per data directory. A second process opening a dir held by a live process fails at once
//   ("Cannot lock file <dir>/status. Another server instance in same directory is already running"). After the
//   holder exits, the next process sees everything it wrote (the data persists on disk).
// - `clickhouse_settings` on a chdb client are applied as `SET k = v` on the client's session and STAY SET for
//   later queries of that client (an HTTP server scopes them to the one request). Don't pass per-query settings
//   that must not leak, e.g. insert_deduplication_token: put them in the statement's SETTINGS clause instead.
// - The `database` option of createClient is ignored by the chdb connection; openClickHouse issues `USE` instead.
// - Insert bodies reach the engine as text (the connection decodes them as UTF-8 into the statement), so binary
//   formats can't be sent; `input()` gets no data. Results come back as bytes, any format.
// Hence files: the embedded engine runs in this process and reads or writes them itself (file()); a server's file()
// would touch the server's disk, so a server is sent them as request bodies and streams results back. That choice
// is made here only (insertNative, withLocalRows, selectIntoLocalFile), keyed on how the client was opened.

import { randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import { type ClickHouseClient, ClickHouseLogLevel, createClient } from '@clickhouse/client';
import { createChdbConnection } from 'chdb/connection';
import { ServiceUnreachableError } from '../config/unreachable.ts';

export interface OpenClickHouseOptions {
  /** A ClickHouse server (http(s)://user:pass@host:8123); unset = the embedded engine at `dir`. */
  url?: string;
  /** The embedded engine's data directory, created if missing. Ignored when `url` is set. */
  dir: string;
  /** Created if missing and made the client's current database; unset = the server's default database. */
  database?: string;
}

export class ClickHouseUnavailableError extends ServiceUnreachableError {}

type ClientConnection = NonNullable<NonNullable<Parameters<typeof createClient>[0]>['connection']>;

/** `url` with any password masked, for messages. */
function maskUrl(url: string): string {
  return url.replace(/\/\/([^:@/]+):([^@/]+)@/, '//$1:***@');
}

function quoteIdentifier(name: string): string {
  return `\`${name.replace(/\\/g, '\\\\').replace(/`/g, '\\`')}\``;
}

async function openServer(url: string, database: string | undefined): Promise<ClickHouseClient> {
  // The probe's own failure is reported by the error below; its logger would only repeat it as a WARN.
  const probe = createClient({ url, log: { level: ClickHouseLogLevel.OFF } });
  try {
    // select: true runs SELECT 1, so bad credentials fail here too rather than on the first real query.
    const ping = await probe.ping({ select: true });
    if (!ping.success) {
      const reason = ping.error.message || String(ping.error);
      throw new ClickHouseUnavailableError(
        `ClickHouse not reachable at URL: ${maskUrl(url)} (${reason}); pass --clickhouse or unset it to use the embedded engine`,
      );
    }
    if (database) await probe.command({ query: `CREATE DATABASE IF NOT EXISTS ${quoteIdentifier(database)}` });
  } finally {
    await probe.close();
  }
  return database ? createClient({ url, database }) : createClient({ url });
}

async function openEmbedded(dir: string, database: string | undefined): Promise<ClickHouseClient> {
  const path = resolve(dir);
  mkdirSync(path, { recursive: true });
  let client: ClickHouseClient;
  try {
    // chdb 3.4 types its connection against @clickhouse/client-common 1.23.0, while @clickhouse/client 1.23.1
    // bundles its own copy of those types; the runtime contract is the same.
    const chdb = createChdbConnection({ path });
    client = createClient({ connection: chdb as unknown as ClientConnection });
    embedded.add(client);
  } catch (err) {
    // A dir held by another process fails with only "Failed to create connection" here; the engine prints the
    // reason ("Cannot lock file <dir>/status") to stderr.
    throw new ClickHouseUnavailableError(
      `cannot open the embedded ClickHouse at ${path}: ${(err as Error).message}. ` +
        'Only one process can use a data directory at a time, and a process can use only one data directory.',
    );
  }
  if (database) {
    try {
      await client.command({ query: `CREATE DATABASE IF NOT EXISTS ${quoteIdentifier(database)}` });
      await client.command({ query: `USE ${quoteIdentifier(database)}` });
    } catch (err) {
      await client.close(); // don't keep the process bound to this dir
      throw err;
    }
  }
  return client;
}

/** A string as a SQL literal. */
export function sqlString(s: string): string {
  return `'${s.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

/** The clients openClickHouse made on the embedded engine. */
const embedded = new WeakSet<ClickHouseClient>();

export interface NativeInsert {
  table: string;
  columns: readonly string[];
  /** The rows as one block in Native format (native.ts), its columns in `columns`' order. */
  block: Buffer;
  settings: Record<string, string | number>;
}

/** Where this process hands the embedded engine the blocks it inserts (a file each, removed once inserted). */
let blockDir: string | undefined;
let blocks = 0;

function blockPath(): string {
  if (blockDir === undefined) {
    const dir = mkdtempSync(join(tmpdir(), 'tributary-blocks-'));
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
    blockDir = dir;
  }
  return join(blockDir, `${process.pid}-${blocks++}.native`);
}

/** Sends `body` as the data of `query` (an INSERT ... FORMAT X) to a server, and waits for it to be applied. */
async function sendBody(client: ClickHouseClient, query: string, body: Readable): Promise<void> {
  const result = await client.exec({ query, values: body });
  // The response body (empty for an INSERT) must be consumed to release the HTTP socket.
  result.stream.resume();
  await finished(result.stream);
}

/**
 * Inserts a Native block. A server gets it as the request body; the embedded engine takes only text through its
 * API, so it reads the block from a file (the engine reads its own binary format, no text to parse either way).
 * The settings apply to this statement only.
 */
export async function insertNative(client: ClickHouseClient, insert: NativeInsert): Promise<void> {
  const settings = Object.entries(insert.settings)
    .map(([k, v]) => `${k} = ${typeof v === 'number' ? v : sqlString(v)}`)
    .join(', ');
  const into = `INSERT INTO ${insert.table} (${insert.columns.join(', ')}) SETTINGS ${settings}`;
  if (embedded.has(client)) {
    const path = blockPath();
    await writeFile(path, insert.block);
    try {
      await client.command({ query: `${into} SELECT * FROM file(${sqlString(path)}, 'Native')` });
    } finally {
      await rm(path, { force: true });
    }
    return;
  }
  await sendBody(client, `${into} FORMAT Native`, Readable.from([insert.block]));
}

/** Rows in a file on this machine, as ClickHouse reads them. */
export interface LocalRows {
  path: string;
  /** A ClickHouse input format, e.g. CSVWithNames, RowBinary, Parquet. */
  format: string;
  /** The file's columns (`name Type, ...`). */
  structure: string;
  /** Settings for parsing the file, e.g. `precise_float_parsing = 1`. */
  settings?: string;
}

/**
 * Runs `use` with a SQL table expression over the rows of a local file, in the file's order. The embedded engine
 * reads the file itself; a server is sent it as an insert body into a scratch table in the client's database,
 * dropped afterwards (so every statement of `use` must reach the same server: point the URL at one node, not a
 * load balancer). Rows come back in insertion order by the scratch table's block numbers.
 */
export async function withLocalRows<T>(
  client: ClickHouseClient,
  rows: LocalRows,
  use: (from: string) => Promise<T>,
): Promise<T> {
  const settings = rows.settings ? ` SETTINGS ${rows.settings}` : '';
  if (embedded.has(client)) {
    const file = `file(${sqlString(resolve(rows.path))}, ${sqlString(rows.format)}, ${sqlString(rows.structure)})`;
    return use(`(SELECT * FROM ${file}${settings})`);
  }
  const scratch = quoteIdentifier(`tributary_scratch_${randomUUID().replaceAll('-', '')}`);
  await client.command({
    query: `CREATE TABLE ${scratch} (${rows.structure}) ENGINE = MergeTree ORDER BY tuple()
            SETTINGS enable_block_number_column = 1, enable_block_offset_column = 1`,
  });
  try {
    await sendBody(client, `INSERT INTO ${scratch}${settings} FORMAT ${rows.format}`, createReadStream(rows.path));
    return await use(`(SELECT * FROM ${scratch} ORDER BY _block_number, _block_offset)`);
  } finally {
    await client.command({ query: `DROP TABLE IF EXISTS ${scratch}` });
  }
}

/**
 * Writes the result of `select` into the local file `path` in `format`, replacing the file. The embedded engine
 * writes it itself; a server streams it back as the response body.
 */
export async function selectIntoLocalFile(
  client: ClickHouseClient,
  select: string,
  path: string,
  format: string,
): Promise<void> {
  if (embedded.has(client)) {
    await client.command({
      query: `INSERT INTO FUNCTION file(${sqlString(resolve(path))}, ${sqlString(format)}) ${select}
              SETTINGS engine_file_truncate_on_insert = 1`,
    });
    return;
  }
  const result = await client.exec({ query: `${select} FORMAT ${format}` });
  await pipeline(result.stream, createWriteStream(path));
}

/** A ClickHouse client for the offline store: the server at `url`, or the embedded engine at `dir`. */
export function openClickHouse(opts: OpenClickHouseOptions): Promise<ClickHouseClient> {
  return opts.url ? openServer(opts.url, opts.database) : openEmbedded(opts.dir, opts.database);
}
