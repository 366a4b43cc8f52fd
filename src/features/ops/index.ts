// Every aggregation op, by the name definitions use. A new op: its file, and a line in each list below.
import { COUNT, type Count } from './count.ts';
import { DISTINCT, type Distinct } from './distinct.ts';
import { LAST_SEEN, type LastSeen } from './last-seen.ts';
import type { Op } from './op.ts';
import { SUM, type Sum } from './sum.ts';

export type Aggregation = Count | Sum | Distinct | LastSeen;

const OPS: { [K in Aggregation['op']]: Op<Extract<Aggregation, { op: K }>> } = {
  count: COUNT,
  sum: SUM,
  distinct: DISTINCT,
  last_seen: LAST_SEEN,
};

/** The op unit of an aggregation (or of an op's name). */
export function opOf(agg: Aggregation | Aggregation['op']): Op<Aggregation> {
  return OPS[typeof agg === 'string' ? agg : agg.op] as Op<Aggregation>;
}

export { type Count, count } from './count.ts';
export { type Distinct, distinct } from './distinct.ts';
export { type LastSeen, lastSeen } from './last-seen.ts';
export type { Finish, Merge, Op, SqlEvent, SqlWindow } from './op.ts';
export { type Sum, sum } from './sum.ts';
