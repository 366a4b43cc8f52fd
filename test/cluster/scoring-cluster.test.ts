// Scoring on the Valkey Cluster, read cache on (test/support/scoring-suite.ts says what is checked).

import { scoringSuite } from '../support/scoring-suite.ts';
import { VALKEY_CLUSTER_URL } from '../support/services.ts';

scoringSuite({ name: 'a Valkey Cluster', url: VALKEY_CLUSTER_URL, cluster: true });
