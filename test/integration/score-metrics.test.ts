// `tributary score --metrics-port` on real Kafka, Schema Registry and Valkey, scraped while it runs: the rankings it
// publishes, their stage timings, the requests it dead-letters (by reason) and the model in service are counted there.
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { allTopics, topicOf } from '../../src/events/catalog.ts';
import { generate } from '../../src/events/generator.ts';
import { createRegistryClient } from '../../src/events/registry.ts';
import { EventSerde } from '../../src/events/serde.ts';
import { type AdRequest, EVENT_KINDS } from '../../src/events/types.ts';
import { FeatureSet } from '../../src/features/compile.ts';
import { DEFAULT_GROUPS } from '../../src/features/definitions.ts';
import { createKafka } from '../../src/kafka/client.ts';
import { KafkaEventLog } from '../../src/kafka/event-log.ts';
import { ModelRegistry } from '../../src/model/registry.ts';
import { replayRecords, trainAndRegister } from '../support/models.ts';
import { freePort, KAFKA_BROKERS, REGISTRY_URL, VALKEY_URL } from '../support/services.ts';
import { until } from '../support/streaming.ts';

const ns = `scm${Date.now()}.`;
const kafka = createKafka(KAFKA_BROKERS);
let stop: (() => void) | undefined;
afterAll(() => stop?.());

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** The exposition format's sample lines (`name{a="x",b="y"} value`); label values here hold no quotes or commas. */
function samples(text: string): Sample[] {
  return text
    .split('\n')
    .filter((line) => line && !line.startsWith('#'))
    .map((line) => {
      const [, name, labels, value] = /^(\w+)(?:\{(.*)\})? (\S+)$/.exec(line) ?? [];
      const pairs = [...(labels ?? '').matchAll(/(\w+)="([^"]*)"/g)].map(([, k, v]) => [k, v]);
      return { name: name as string, labels: Object.fromEntries(pairs), value: Number(value) };
    });
}

describe('tributary score --metrics-port', () => {
  it('counts rankings, stage timings, dead-lettered requests and the model while it runs', async () => {
    const features = new FeatureSet(DEFAULT_GROUPS);
    const log = generate({ seed: 8, days: 1, impressionsPerDay: 1500, candidatesPerRequest: 8 });
    const registry = new ModelRegistry(mkdtempSync(join(tmpdir(), 'score-metrics-models-')));
    const version = await trainAndRegister(registry, features, replayRecords(log), 1);
    await registry.promote(version);

    const serde = new EventSerde(createRegistryClient(REGISTRY_URL));
    await serde.prepare(EVENT_KINDS);
    const eventLog = new KafkaEventLog(kafka, KAFKA_BROKERS);
    await eventLog.ensureTopics(allTopics(ns), 2);
    const requests = log
      .filter((r) => r.record.kind === 'request')
      .slice(0, 6)
      .map((r) => r.record.event as AdRequest);
    const limit = Math.max(...requests.map((r) => r.candidates.length));
    const first = requests[0] as AdRequest;
    const tooMany = { ...first, request_id: 'too-many', candidates: Array(limit + 1).fill(first.candidates[0]) };
    const producer = kafka.producer();
    await producer.connect();
    await producer.send({
      topic: topicOf('request', ns),
      messages: [
        ...requests.map((r) => ({ key: r.request_id, value: serde.encode('request', r) })),
        { key: 'bad', value: Buffer.from('not avro at all') },
        { key: 'bad', value: serde.encode('request', tooMany) },
      ],
    });
    await producer.disconnect();

    const port = await freePort();
    const score = spawn(
      process.execPath,
      [
        ...[
          '--import',
          'tsx',
          'src/cli/main.ts',
          '--kafka',
          KAFKA_BROKERS.join(','),
          '--schema-registry',
          REGISTRY_URL,
        ],
        ...['--valkey', VALKEY_URL, '--namespace', ns, 'score', '--models', registry.dir],
        ...['--max-candidates', String(limit), '--metrics-port', String(port)],
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    score.stderr.on('data', (d) => {
      stderr += d;
    });
    const exited = new Promise<number | null>((done) => score.on('close', done));
    stop = () => score.kill('SIGKILL');

    const scrape = async (): Promise<Sample[]> => {
      const res = await fetch(`http://127.0.0.1:${port}/metrics`).catch(() => undefined);
      return res?.ok ? samples(await res.text()) : [];
    };
    let metrics: Sample[] = [];
    const total = (name: string, labels: Record<string, string> = {}) =>
      metrics
        .filter((m) => m.name === name && Object.entries(labels).every(([k, v]) => m.labels[k] === v))
        .reduce((s, m) => s + m.value, 0);
    await until(
      'score to rank and dead-letter every request',
      async () => {
        metrics = await scrape();
        return total('tributary_rankings_total') >= requests.length && total('tributary_rank_rejected_total') >= 2;
      },
      60_000,
    ).catch((err: Error) => {
      throw new Error(`${err.message}; stderr: ${stderr.slice(-500)}`);
    });
    expect(total('tributary_rankings_total', { features: 'store' })).toBe(requests.length);
    expect(total('tributary_rank_candidates_total')).toBe(requests.reduce((s, r) => s + r.candidates.length, 0));
    const reasons = metrics.filter((m) => m.name === 'tributary_rank_rejected_total').map((m) => m.labels.reason);
    expect(reasons.sort()).toEqual(['invalid request', 'unknown magic byte']);
    for (const stage of ['valkey', 'assembly', 'onnx'])
      expect(total('tributary_rank_stage_seconds_count', { stage }), stage).toBe(requests.length);
    expect(metrics.filter((m) => m.name === 'tributary_model_info')).toEqual([
      { name: 'tributary_model_info', labels: { version }, value: 1 },
    ]);

    score.kill('SIGTERM');
    expect(await exited, stderr).toBe(0);
    stop = undefined;
  }, 120_000);
});
