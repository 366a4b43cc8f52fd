// The local servers are real: each answers its own protocol on its own port, and restarts cleanly.
import { execFileSync, spawnSync } from 'node:child_process';
import { createClient } from '@clickhouse/client';
import { createChdbConnection } from 'chdb/connection';
import { Valkey } from 'iovalkey';
import { describe, expect, it } from 'vitest';
import { createKafka } from '../../src/kafka/client.ts';
import { KAFKA_BROKERS, REGISTRY_URL, VALKEY_URL } from '../support/services.ts';

const services = (...args: string[]) =>
  spawnSync('bash', ['scripts/services/services.sh', ...args], { encoding: 'utf8' });

describe('local services', () => {
  it('reports every service as running, and a second start is a no-op', () => {
    for (const name of ['kafka', 'valkey', 'registry']) {
      const status = services('status', name);
      expect(status.status, status.stdout + status.stderr).toBe(0);
      expect(status.stdout).toContain(`${name}: running`);
    }
    const again = services('start', 'valkey', 'kafka');
    expect(again.status).toBe(0);
    expect(again.stderr).toMatch(/already running/);
  });

  it('Kafka (KRaft) answers metadata and creates a topic with the asked partitions', async () => {
    const admin = createKafka(KAFKA_BROKERS).admin();
    await admin.connect();
    const topic = `svc-test-${Date.now()}`;
    execFileSync('bash', ['scripts/services/kafka.sh', 'create-topic', topic, '4']);
    const meta = await admin.fetchTopicMetadata({ topics: [topic] });
    expect(meta.topics[0]?.partitions).toHaveLength(4);
    await admin.deleteTopics({ topics: [topic] });
    await admin.disconnect();
  });

  it('Valkey stops and starts cleanly and speaks the protocol', async () => {
    expect(services('stop', 'valkey').status).toBe(0);
    expect(services('status', 'valkey').status).toBe(3);
    expect(services('start', 'valkey').status).toBe(0);
    const v = new Valkey(VALKEY_URL);
    const key = `{svc-test-${Date.now()}}:k`; // not a key any pipeline owns, and removed after
    await v.set(key, '1');
    expect(await v.incr(key)).toBe(2);
    await v.del(key);
    v.disconnect();
  });

  it('the Schema Registry answers the Confluent API', async () => {
    const res = await fetch(`${REGISTRY_URL}/subjects`);
    expect(res.status).toBe(200);
    expect(Array.isArray(await res.json())).toBe(true);
  });

  it('the embedded ClickHouse engine runs real SQL through @clickhouse/client', async () => {
    const ch = createClient({ connection: createChdbConnection({ path: ':memory:' }) } as never);
    const rs = await ch.query({
      query: 'SELECT version() AS v, sum(number) AS s FROM numbers(10)',
      format: 'JSONEachRow',
    });
    const [row] = (await rs.json()) as { v: string; s: string }[];
    expect(Number(row?.s)).toBe(45);
    expect(Number(row?.v.split('.')[0])).toBeGreaterThanOrEqual(25);
    await ch.close();
  });
});
