// Exactly-once on the Valkey Cluster: `tributary stream` processes killed and restarted write their state over three
// masters (test/support/exactly-once-suite.ts says what is checked).
import { exactlyOnceSuite } from '../support/exactly-once-suite.ts';
import { VALKEY_CLUSTER_URL } from '../support/services.ts';

await exactlyOnceSuite({
  name: 'a Valkey Cluster',
  tag: 'c',
  url: VALKEY_CLUSTER_URL,
  kills: Number(process.env.EXACTLY_ONCE_KILLS ?? 4),
  perDay: Number(process.env.EXACTLY_ONCE_PER_DAY ?? 1000),
});
