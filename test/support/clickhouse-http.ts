// A stand-in for a ClickHouse server's HTTP interface, answered by the embedded engine in this process, so that the
// server paths of src/offline/clickhouse.ts (request bodies, streamed results, query parameters, databases) run
// through @clickhouse/client's HTTP connection here, where no ClickHouse server can be installed. It is not a
// server: one process, no clusters, only what the client sends. Insert bodies are written to a file and read with
// file(), since the embedded engine takes only text through its API.
import { mkdtempSync, rmSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createChdbConnection } from 'chdb/connection';

/** URL parameters the client sends that are not settings. */
const NOT_SETTINGS = new Set(['query', 'query_id', 'database', 'session_id', 'role', 'default_format']);

export interface ClickHouseHttpStandIn {
  url: string;
  /** Statements run, in order (inserts as rewritten to read their body's file). */
  statements: string[];
  close(): Promise<void>;
}

async function bodyOf(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

const quote = (s: string) => `'${s.replaceAll('\\', '\\\\').replaceAll("'", "\\'")}'`;

/** Serves the embedded engine at `dir` (which this process may already have open) over HTTP on 127.0.0.1. */
export async function startClickHouseHttp(dir: string): Promise<ClickHouseHttpStandIn> {
  const bodies = mkdtempSync(join(tmpdir(), 'clickhouse-http-'));
  const statements: string[] = [];
  let n = 0;
  const server: Server = createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/ping') {
      res.end('Ok.\n');
      return;
    }
    const params = url.searchParams;
    const body = await bodyOf(req);
    let sql = params.get('query') ?? body.toString('utf8');
    let bodyFile: string | undefined;
    if (params.has('query') && body.length > 0) {
      // `INSERT ... FORMAT X` with the rows as the body: the same statement reading them from a file.
      const m = /^([\s\S]*?)\s*\bFORMAT\s+(\w+)\s*$/i.exec(sql);
      if (!m) throw new Error(`a body without FORMAT: ${sql}`);
      bodyFile = join(bodies, `${n++}.body`);
      await writeFile(bodyFile, body);
      sql = `${m[1]} SELECT * FROM file(${quote(bodyFile)}, ${quote(m[2] as string)})`;
    }
    statements.push(sql);
    const settings: Record<string, string> = {};
    const queryParams: Record<string, string> = {};
    for (const [k, v] of params) {
      if (k.startsWith('param_')) queryParams[k.slice(6)] = v;
      else if (!NOT_SETTINGS.has(k)) settings[k] = v;
    }
    const database = params.get('database');
    // A session per request: settings and USE stay with the request, as on a server.
    const conn = createChdbConnection({ path: resolve(dir) });
    try {
      const result = await conn.exec({
        query: database ? `USE \`${database}\`; ${sql}` : sql,
        query_params: queryParams,
        clickhouse_settings: settings,
      } as Parameters<typeof conn.exec>[0]);
      res.writeHead(200, { 'Content-Type': 'application/octet-stream' });
      result.stream.pipe(res);
    } catch (err) {
      // As a server words it, so the client rebuilds the same error (code, type, message).
      const e = err as Error & { code?: string; type?: string };
      res.writeHead(500, { 'X-ClickHouse-Exception-Code': e.code ?? '1' });
      res.end(`Code: ${e.code ?? 1}. DB::Exception: ${e.message}${e.type ? ` (${e.type})` : ''}`);
    } finally {
      await conn.close();
      if (bodyFile) rmSync(bodyFile, { force: true });
    }
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    statements,
    close: async () => {
      await new Promise<void>((ok) => server.close(() => ok()));
      rmSync(bodies, { recursive: true, force: true });
    },
  };
}
