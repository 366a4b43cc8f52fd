// Exactly-once on a single Valkey node (test/support/exactly-once-suite.ts says what is checked). CI runs a short
// version; the long one:
//   KILLS=25 PER_DAY=15000 npm run test:exactly-once
import { exactlyOnceSuite } from '../support/exactly-once-suite.ts';
import { VALKEY_URL } from '../support/services.ts';

await exactlyOnceSuite({
  name: 'a Valkey node',
  tag: 'n',
  url: VALKEY_URL,
  kills: Number(process.env.EXACTLY_ONCE_KILLS ?? 6),
  perDay: Number(process.env.EXACTLY_ONCE_PER_DAY ?? 1500),
});
