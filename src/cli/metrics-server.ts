// The Prometheus endpoint of the commands without an HTTP server of their own (`stream`, `score`): GET /metrics on
// its own port. The process's registry answers; a port that cannot be had is a usage mistake (exit 2), said at start.
import { createServer, type Server } from 'node:http';
import { Registry } from 'prom-client';
import { ConfigError } from '../config/config.ts';
import { wholeOption } from './options.ts';

/** Listens at host:port (`--metrics-port`, `--metrics-host`) once listening; unset port = no server. */
export async function serveMetrics(
  registries: Registry | Registry[],
  port: string | undefined,
  host: string,
): Promise<Server | undefined> {
  if (port === undefined) return undefined;
  const registry = Array.isArray(registries) ? Registry.merge(registries) : registries;
  const n = wholeOption('--metrics-port', port, 0);
  if (n > 65535) throw new ConfigError(`--metrics-port must be 0..65535, got "${port}"`);
  const server = createServer(async (req, res) => {
    if (req.method !== 'GET' || req.url?.split('?')[0] !== '/metrics') return void res.writeHead(404).end();
    try {
      const text = await registry.metrics();
      res.writeHead(200, { 'content-type': registry.contentType }).end(text);
    } catch (err) {
      res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${(err as Error).message}\n`);
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new ConfigError(`--metrics-port ${port} on ${host}: ${err.code ?? err.message}`)),
    );
    server.listen(n, host, () => resolve());
  });
  return server;
}
