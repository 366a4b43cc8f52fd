// What the stream service counts; exposed in Prometheus format.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

export class StreamMetrics {
  readonly registry = new Registry();
  readonly events = new Counter({
    name: 'tributary_stream_events_total',
    help: 'Events read, by topic and what became of them (applied, late, duplicate, invalid)',
    labelNames: ['topic', 'verdict'],
    registers: [this.registry],
  });
  readonly deadLetters = new Counter({
    name: 'tributary_stream_dead_letters_total',
    help: 'Events sent to the dead-letter topic, by reason class',
    labelNames: ['topic', 'reason'],
    registers: [this.registry],
  });
  readonly replays = new Counter({
    name: 'tributary_stream_replayed_events_total',
    help: 'Replayed dead letters read (tributary dead-letters replay), by topic and what became of them',
    labelNames: ['topic', 'verdict'],
    registers: [this.registry],
  });
  readonly batchSeconds = new Histogram({
    name: 'tributary_stream_batch_seconds',
    help: 'Time from fetch to committed checkpoint, per batch',
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });
  readonly sinkRetries = new Counter({
    name: 'tributary_stream_sink_retries_total',
    help: 'Failed sink writes that were retried (Valkey, ClickHouse or Kafka unavailable)',
    labelNames: ['sink'],
    registers: [this.registry],
  });
  readonly watermark = new Gauge({
    name: 'tributary_stream_watermark_seconds',
    help: 'Event-time watermark per partition (epoch seconds)',
    labelNames: ['topic', 'partition'],
    registers: [this.registry],
  });
}

/** "late: ..." -> "late"; "unknown schema id 7" -> "unknown schema id": a label with few values. */
export function reasonClass(reason: string): string {
  return reason.split(/[:\d]/, 1)[0]?.trim() || 'other';
}
