// The backfill's inputs and outputs, without the replay engine in between (it has its own benchmark):
// - outputs: N synthetic training rows (58 features: half counts, half ratios) written as CSV (the baseline), as
//   Parquet (CSV staged, converted by the embedded ClickHouse), and loaded into a ClickHouse table from either;
// - the Kafka source: a generated log published under a fresh namespace (3 partitions per topic), read in full by
//   KafkaSource (fetch, Avro decode, timestamp merge), beside reading the same log from the event file.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KafkaSource } from '../src/backfill/kafka-source.ts';
import { fromEventFile } from '../src/backfill/sources.ts';
import { parquetConverter, writeTrainingTable } from '../src/backfill/training-clickhouse.ts';
import {
  ConvertingTrainingWriter,
  CsvTrainingWriter,
  type TrainingMeta,
  type TrainingWriter,
} from '../src/backfill/training-set.ts';
import { allTopics } from '../src/events/catalog.ts';
import { writeEventFile } from '../src/events/event-file.ts';
import { generate } from '../src/events/generator.ts';
import { Rng } from '../src/events/random.ts';
import { createRegistryClient } from '../src/events/registry.ts';
import { EventSerde } from '../src/events/serde.ts';
import { type AdImpression, EVENT_KINDS } from '../src/events/types.ts';
import { FeatureSet } from '../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../src/features/definitions.ts';
import { createKafka, ensureTopics, withAdmin } from '../src/kafka/client.ts';
import { KafkaLogProducer } from '../src/kafka/event-log.ts';
import { EventPublisher } from '../src/kafka/publish.ts';
import { openClickHouse } from '../src/offline/clickhouse.ts';
import { type Bench, type Row, SERVERS } from './lib.ts';

const features = new FeatureSet(DEFAULT_GROUPS);

export const backfillIoBench: Bench<'rows' | 'events'> = {
  name: 'backfill-io',
  description: 'training-set outputs (CSV, Parquet, ClickHouse table) in rows/s; the Kafka source in events/s',
  options: { rows: 200_000, events: 200_000 },
  async run({ options, log, meter }) {
    const dir = mkdtempSync(join(tmpdir(), 'bench-backfill-io-'));
    const rows: Row[] = [];
    const details: Record<string, unknown> = {};
    const ch = await openClickHouse({ dir: join(dir, 'ch') });
    try {
      // Outputs.
      const n = options.rows;
      const rng = new Rng(7);
      const columns = features.names.map((name, index) => ({ index, name }));
      const impressions = generate({ seed: 3, days: 1, impressionsPerDay: Math.min(n, 50_000) })
        .filter((r) => r.record.kind === 'impression')
        .map((r) => r.record.event as AdImpression);
      const vector = new Float64Array(columns.length);
      const meta = (m: Partial<TrainingMeta>): TrainingMeta => ({
        features: features.names,
        definitions_version: features.version,
        attribution_ms: 3600_000,
        allowed_lateness_ms: 3600_000,
        source: 'bench',
        rows: n,
        positives: 0,
        held_back: 0,
        first_event_time: null,
        last_event_time: null,
        ...m,
      });
      const write = async (w: TrainingWriter) => {
        for (let i = 0; i < n; i++) {
          for (let f = 0; f < vector.length; f++) vector[f] = f % 2 ? rng.int(500) : rng.next();
          await w.write({ impression: impressions[i % impressions.length] as AdImpression, label: 0, vector });
        }
        await w.close(meta({}));
      };
      const csv = join(dir, 'train.csv');
      const parquet = join(dir, 'train.parquet');
      const phases: [string, () => Promise<unknown>][] = [
        ['csv file', () => write(new CsvTrainingWriter(csv, columns))],
        ['parquet file', () => write(new ConvertingTrainingWriter(parquet, columns, parquetConverter(ch)))],
        [
          'table from csv',
          () => writeTrainingTable(ch, { table: 't_csv', runId: 'r', file: csv, format: 'csv', meta: meta({}) }),
        ],
        [
          'table from parquet',
          () =>
            writeTrainingTable(ch, {
              table: 't_parquet',
              runId: 'r',
              file: parquet,
              format: 'parquet',
              meta: meta({}),
            }),
        ],
      ];
      let csvRate = 0;
      for (const [name, phase] of phases) {
        log(`outputs: ${name} (${n} rows)`);
        const m = await meter(`backfill-io-${name.replaceAll(' ', '-')}`);
        await phase();
        const r = await m.stop();
        const rate = n / r.seconds;
        if (name === 'csv file') csvRate = rate;
        rows.push({ benchmark: 'backfill-io', metric: `${name}: rows/s`, value: rate, baseline: csvRate });
        details[name] = r;
      }

      // The Kafka source.
      const log0 = generate({ seed: 11, impressionsPerDay: options.events / 2.1, days: 2 });
      const events = log0.filter((r) => r.record.kind === 'impression' || r.record.kind === 'click').length;
      const file = join(dir, 'events.ndjson');
      await writeEventFile(file, log0);
      const ns = `bench-bfio-${Date.now()}.`;
      const kafka = createKafka(SERVERS.kafka);
      const serde = new EventSerde(createRegistryClient(SERVERS.registry));
      await serde.prepare(EVENT_KINDS);
      await withAdmin(kafka, SERVERS.kafka, (admin) => ensureTopics(admin, allTopics(ns), 3));
      log(`kafka source: publishing ${events} events`);
      const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
      await producer.connect();
      const publisher = new EventPublisher(new KafkaLogProducer(producer), serde, ns);
      for (const r of log0) await publisher.add(r);
      await publisher.flush();
      await producer.disconnect();
      // Rate over the whole pass, and from the first record on (a new consumer group waits for the broker's
      // group.initial.rebalance.delay.ms, 3 s by default, before it is assigned partitions).
      const pass = async (name: string, records: AsyncIterable<unknown>) => {
        log(`kafka source: ${name}`);
        const m = await meter(`backfill-io-${name.replaceAll(' ', '-')}`);
        const t0 = performance.now();
        let first = t0;
        let k = 0;
        for await (const _ of records) if (k++ === 0) first = performance.now();
        const r = await m.stop();
        const firstAfter = (first - t0) / 1000;
        details[name] = { ...r, records: k, firstRecordAfterSeconds: firstAfter };
        return { whole: k / r.seconds, streaming: k / (r.seconds - firstAfter) };
      };
      const fileRate = await pass('file source', fromEventFile(file));
      const source = new KafkaSource({ kafka, brokers: SERVERS.kafka, serde, namespace: ns });
      const kafkaRate = await pass('kafka source', source.open());
      rows.push(
        {
          benchmark: 'backfill-io',
          metric: 'kafka source (3+3 partitions): events/s',
          value: kafkaRate.whole,
          baseline: fileRate.whole,
        },
        {
          benchmark: 'backfill-io',
          metric: 'kafka source after its first record: events/s',
          value: kafkaRate.streaming,
          baseline: fileRate.streaming,
        },
      );
      details.kafkaUndecodable = source.bad.length;
      await withAdmin(kafka, SERVERS.kafka, (admin) => admin.deleteTopics({ topics: allTopics(ns) }));
    } finally {
      await ch.close();
      rmSync(dir, { recursive: true, force: true });
    }
    return { rows, details };
  },
};
