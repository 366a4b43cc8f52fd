// The read cache on a single Valkey node (test/support/read-cache-suite.ts says what is checked).

import { readCacheSuite } from '../support/read-cache-suite.ts';
import { VALKEY_URL } from '../support/services.ts';

await readCacheSuite('a Valkey node', VALKEY_URL);
