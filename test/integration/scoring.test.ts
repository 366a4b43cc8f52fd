// Scoring on a single Valkey node (test/support/scoring-suite.ts says what is checked).

import { scoringSuite } from '../support/scoring-suite.ts';
import { VALKEY_URL } from '../support/services.ts';

scoringSuite({ name: 'a Valkey node', url: VALKEY_URL, cluster: false });
