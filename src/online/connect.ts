// One connection to Valkey for a command, or the unreachable-server error (exit 3) that says what to run. A URL
// naming a node of a Valkey Cluster gives a Cluster client: the other nodes and the slots are learned from it.
import { Cluster, type Redis, type RedisOptions, Valkey } from 'iovalkey';
import { unreachable } from '../config/unreachable.ts';

/**
 * Connects (options are the client's; `lazyConnect` is forced so the first failure is caught here, not emitted
 * as an unhandled 'error' event). Later connection errors go to `onError`.
 */
export async function connectValkey(
  url: string,
  options: RedisOptions,
  onError: (err: Error) => void = () => {},
): Promise<Redis | Cluster> {
  let failure: Error | undefined; // the first connection's failure is reported once, below
  const quiet = (err: Error) => {
    failure ??= err;
  };
  const connect = async <C extends Redis | Cluster>(client: C): Promise<C> => {
    client.on('error', quiet);
    try {
      await client.connect();
    } catch (err) {
      client.disconnect();
      throw unreachable('Valkey', url, 'valkey', 'valkey', failure ?? err);
    }
    client.off('error', quiet);
    return client;
  };
  const node = await connect(new Valkey(url, { ...options, lazyConnect: true }));
  if (!(await clusterEnabled(node))) {
    node.on('error', onError);
    return node;
  }
  node.disconnect();
  const { enableAutoPipelining, ...redisOptions } = options;
  const { username, password, ...seed } = clusterSeed(url);
  const cluster = await connect(
    new Cluster([seed], {
      lazyConnect: true,
      enableAutoPipelining,
      redisOptions: { ...redisOptions, username, password },
    }),
  );
  cluster.on('error', onError);
  return cluster;
}

/**
 * The client rankings read through (a node's or, when `url` names a cluster node, a Cluster): no offline queue and
 * no per-command retries, so a ranking never waits for a reconnect (it uses defaults) while the client keeps
 * reconnecting in the background; concurrent rankings' reads leave in one write per tick. Never fails to start:
 * without Valkey it ranks on defaults until Valkey is there.
 */
export async function rankingClient(url: string): Promise<Redis | Cluster> {
  const nodeOptions = {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    connectTimeout: 1_000,
    retryStrategy: (attempt: number) => Math.min(attempt * 100, 2_000),
  };
  if (!(await isClusterNode(url))) return new Valkey(url, { enableAutoPipelining: true, ...nodeOptions });
  const { username, password, ...seed } = clusterSeed(url);
  const cluster = new Cluster([seed], {
    enableAutoPipelining: true,
    enableOfflineQueue: false,
    clusterRetryStrategy: nodeOptions.retryStrategy,
    redisOptions: { ...nodeOptions, username, password },
  });
  // A node's connection opens on its first command, which without an offline queue fails: open each as it is known.
  cluster.on('+node', (node: Redis) => {
    node.connect().catch(() => {});
  });
  return cluster;
}

/**
 * Whether `url` names a node of a Valkey Cluster (asked once, quickly); false when it cannot be asked now: a caller
 * that starts without Valkey (serve: defaults, flagged) treats it as a single node.
 */
export async function isClusterNode(url: string): Promise<boolean> {
  const probe = new Valkey(url, {
    lazyConnect: true,
    connectTimeout: 1_000,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  probe.on('error', () => {});
  try {
    await probe.connect();
    return await clusterEnabled(probe);
  } catch {
    return false;
  } finally {
    probe.disconnect();
  }
}

/** The node a URL names, as a Cluster client's seed (its credentials for every node). */
export function clusterSeed(url: string): { host: string; port: number; username?: string; password?: string } {
  const { hostname, port, username, password } = new URL(url);
  return {
    host: hostname,
    port: Number(port || 6379),
    username: decodeURIComponent(username) || undefined,
    password: decodeURIComponent(password) || undefined,
  };
}

/** Whether the node a client is connected to runs in cluster mode. */
async function clusterEnabled(node: Redis): Promise<boolean> {
  return /^cluster_enabled:1/m.test(await node.info('cluster'));
}
