// The cluster project's servers: the single-node ones (topics, the registry) and the clusters beside them.
import { SERVERS, setupServers } from './global-setup.ts';

export default function setup(): Promise<() => Promise<void>> {
  return setupServers([...SERVERS, 'valkey-cluster', 'kafka-cluster']);
}
