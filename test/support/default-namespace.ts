// The default (un-namespaced) pipeline belongs to the developer: the README's tour streams its topics, group and
// Valkey keys. Tests use namespaces of their own; this records what the default namespace holds before the tests
// and names whatever the tests changed in it, so a test that forgets its namespace fails the run.
import { Valkey } from 'iovalkey';
import { allTopics } from '../../src/events/catalog.ts';
import { createKafka } from '../../src/kafka/client.ts';
import { KAFKA_BROKERS, VALKEY_URL } from './services.ts';

/** The CLI's default consumer groups (`stream --group`, `score --group`), with no namespace before them. */
const DEFAULT_GROUPS = ['tributary-stream', 'tributary-score'];

export interface DefaultState {
  /** "topic/partition" -> end offset; a topic not created yet has no entries. */
  offsets: Map<string, string>;
  /** "group topic/partition" -> committed offset. */
  committed: Map<string, string>;
  /** Valkey keys of the default namespace (features and the default groups' checkpoints). */
  keys: Set<string>;
}

/** A key the un-namespaced pipeline owns: `tb:` features, and checkpoints of the default groups only. */
function isDefaultKey(key: string): boolean {
  if (!key.startsWith('tb:')) return false;
  const m = /^tb:\{(ckpt|seq)\|([^|}]*)/.exec(key);
  return m === null || DEFAULT_GROUPS.includes(m[2] as string);
}

export async function defaultState(): Promise<DefaultState> {
  const admin = createKafka(KAFKA_BROKERS, 'tributary-test-guard').admin();
  await admin.connect();
  const offsets = new Map<string, string>();
  const committed = new Map<string, string>();
  try {
    const existing = new Set(await admin.listTopics());
    const topics = allTopics().filter((t) => existing.has(t));
    for (const topic of topics) {
      for (const p of await admin.fetchTopicOffsets(topic)) offsets.set(`${topic}/${p.partition}`, p.high);
    }
    const groups = new Set((await admin.listGroups()).groups.map((g) => g.groupId));
    for (const groupId of DEFAULT_GROUPS.filter((g) => groups.has(g))) {
      for (const t of await admin.fetchOffsets({ groupId, topics })) {
        for (const p of t.partitions) committed.set(`${groupId} ${t.topic}/${p.partition}`, p.offset);
      }
    }
  } finally {
    await admin.disconnect();
  }
  const valkey = new Valkey(VALKEY_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
  const keys = new Set<string>();
  try {
    await valkey.connect();
    for await (const batch of valkey.scanStream({ match: 'tb:*', count: 1000 }) as AsyncIterable<string[]>) {
      for (const k of batch) if (isDefaultKey(k)) keys.add(k);
    }
  } finally {
    valkey.disconnect();
  }
  return { offsets, committed, keys };
}

/** What changed in the default namespace since `before`, one line per kind of change; empty = untouched. */
export function defaultChanges(before: DefaultState, after: DefaultState): string[] {
  const out: string[] = [];
  const grown: string[] = [];
  const created = new Set<string>();
  for (const [tp, high] of after.offsets) {
    if (!before.offsets.has(tp)) created.add(tp.slice(0, tp.lastIndexOf('/')));
    // Fewer messages than before is someone deleting the topic, not a test writing to it.
    const n = Number(high) - Number(before.offsets.get(tp) ?? '0');
    if (n > 0) grown.push(`${tp} +${n}`);
  }
  if (created.size > 0) out.push(`default topics created: ${[...created].join(', ')}`);
  if (grown.length > 0) out.push(`messages written to default topics: ${grown.join(', ')}`);
  const moved = [...after.committed].filter(([k, o]) => before.committed.get(k) !== o).map(([k, o]) => `${k}=${o}`);
  if (moved.length > 0) out.push(`default consumer groups committed: ${moved.join(', ')}`);
  const added = [...after.keys].filter((k) => !before.keys.has(k));
  if (added.length > 0) {
    out.push(`Valkey keys created without a namespace: ${added.slice(0, 5).join(', ')} (${added.length} in all)`);
  }
  return out;
}
