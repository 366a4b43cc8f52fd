// What scoring counts and times; exposed in Prometheus format at /metrics (and by `tributary score`).
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

const STAGE_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1];

export class ScoringMetrics {
  readonly registry = new Registry();

  constructor() {
    // The process's own: CPU, memory, event-loop lag, GC (what an operator reads first).
    collectDefaultMetrics({ register: this.registry });
  }

  /** Seconds per request in each stage: the Valkey read, vector assembly, the ONNX run. */
  readonly stage = new Histogram({
    name: 'tributary_rank_stage_seconds',
    help: 'Time per ranking spent in each stage (valkey, assembly, onnx)',
    labelNames: ['stage'],
    buckets: STAGE_BUCKETS,
    registers: [this.registry],
  });
  /** Whole /v1/rank requests, by status class (2xx, 4xx, 5xx): the rate, the errors and the latency alerts read. */
  readonly requests = new Histogram({
    name: 'tributary_rank_request_seconds',
    help: 'Time per POST /v1/rank request, from arrival to reply sent, by status class',
    labelNames: ['code'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });
  readonly rankings = new Counter({
    name: 'tributary_rankings_total',
    help: 'Rankings answered, by whether features came from the store or defaults (store slow or down)',
    labelNames: ['features'],
    registers: [this.registry],
  });
  readonly candidates = new Counter({
    name: 'tributary_rank_candidates_total',
    help: 'Candidates scored',
    registers: [this.registry],
  });
  readonly rejected = new Counter({
    name: 'tributary_rank_rejected_total',
    help: 'Requests refused (HTTP 4xx) or dead-lettered (score consumer), by reason class',
    labelNames: ['reason'],
    registers: [this.registry],
  });
  readonly modelRefusals = new Counter({
    name: 'tributary_model_refusals_total',
    help: 'Models not loaded: contract mismatch or unloadable file',
    registers: [this.registry],
  });
  readonly modelSwaps = new Counter({
    name: 'tributary_model_swaps_total',
    help: 'Models loaded and put in service',
    registers: [this.registry],
  });
  /** The read cache's own counts, when it is on (set by cli/scoring-commands.ts). */
  cacheStats: Readonly<Record<string, number>> | undefined;
  readonly readCache: Gauge = new Gauge({
    name: 'tributary_read_cache',
    help: 'Read cache counts since start: hits and misses (stored fields), invalidations, resets (reconnects)',
    labelNames: ['count'],
    registers: [this.registry],
    collect: () => {
      for (const [count, value] of Object.entries(this.cacheStats ?? {})) this.readCache.set({ count }, value);
    },
  });
  readonly modelInfo = new Gauge({
    name: 'tributary_model_info',
    help: 'The model in service (1 for its version)',
    labelNames: ['version'],
    // serve --workers: 1 for each version some worker serves (mid-swap, two), not a count of workers.
    aggregator: 'max',
    registers: [this.registry],
  });
}
