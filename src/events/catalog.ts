// Where each event kind lives: its Avro schema file, Kafka topic and registry subject (TopicNameStrategy).
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import avro from 'avsc';
import type { EventKind } from './types.ts';

export const SCHEMAS_DIR = join(dirname(fileURLToPath(import.meta.url)), '../../schemas');

interface KindInfo {
  schemaFile: string;
  topic: string;
}

export const KINDS: Record<EventKind, KindInfo> = {
  impression: { schemaFile: 'AdImpression.avsc', topic: 'ad_impressions' },
  click: { schemaFile: 'AdClick.avsc', topic: 'ad_clicks' },
  request: { schemaFile: 'AdRequest.avsc', topic: 'ad_requests' },
  scored: { schemaFile: 'ScoredRanking.avsc', topic: 'ad_rankings' },
};

/**
 * Topic names live under an optional namespace prefix (e.g. "staging."), so several pipelines (or test runs)
 * can share one Kafka cluster. Registry subjects do not: the schemas are the same.
 */
export function topicOf(kind: EventKind, namespace = ''): string {
  return `${namespace}${KINDS[kind].topic}`;
}

/** Bad events go here with the reason in headers and the original bytes as the value. */
export function deadLetterTopic(namespace = ''): string {
  return `${namespace}tributary_dead_letters`;
}

/**
 * The replay ledger: which dead letters `tributary dead-letters replay` has begun and finished sending back (one
 * partition, so its entries keep their order).
 */
export function deadLetterReplaysTopic(namespace = ''): string {
  return `${namespace}tributary_dead_letter_replays`;
}

export function allTopics(namespace = ''): string[] {
  return [...(Object.keys(KINDS) as EventKind[]).map((k) => topicOf(k, namespace)), deadLetterTopic(namespace)];
}

export function subjectFor(kind: EventKind): string {
  return `${KINDS[kind].topic}-value`;
}

export function schemaText(kind: EventKind, dir = SCHEMAS_DIR): string {
  return readFileSync(join(dir, KINDS[kind].schemaFile), 'utf8');
}

const typeCache = new Map<string, avro.Type>();

/** Parses an Avro schema once; logical types stay plain longs (epoch ms) so events stay plain objects. */
export function avroType(schema: string): avro.Type {
  let t = typeCache.get(schema);
  if (!t) {
    t = avro.Type.forSchema(JSON.parse(schema), { wrapUnions: false });
    typeCache.set(schema, t);
  }
  return t;
}
