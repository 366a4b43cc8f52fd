// The read cache on the Valkey Cluster, a tracker per master (test/support/read-cache-suite.ts says what is checked).

import { readCacheSuite } from '../support/read-cache-suite.ts';
import { VALKEY_CLUSTER_URL } from '../support/services.ts';

await readCacheSuite('a Valkey Cluster', VALKEY_CLUSTER_URL);
