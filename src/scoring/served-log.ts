// The served-vector log: a sampled record of what scoring used (request id, model version, time, each
// candidate's vector in definitions order), appended as NDJSON in batches off the request path, so served
// vectors can be compared with the backfill's. A file rather than ClickHouse's served_vectors, which is keyed by
// the impression's Kafka coordinates, not by request and candidate.
import { appendFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import type { AdRequest } from '../events/types.ts';
import type { Ranking } from './ranker.ts';

export interface ServedRecord {
  request_id: string;
  model_version: string;
  event_time: number;
  scored_time: number;
  features_defaulted: boolean;
  candidates: { ad_id: string; vector: number[] }[];
}

export interface ServedLogOptions {
  path: string;
  /** Share of rankings recorded, 0..1. */
  sampleRate: number;
  flushMs?: number;
  /** Records held before a write is started early. */
  maxPending?: number;
}

export class ServedLog {
  private pending: { ranking: Ranking; req: AdRequest; vectors: Float64Array }[] = [];
  private writing: Promise<void> = Promise.resolve();
  private readonly timer: NodeJS.Timeout;
  written = 0;

  constructor(
    private readonly options: ServedLogOptions,
    private readonly log: Logger,
    private readonly random: () => number = Math.random,
  ) {
    this.timer = setInterval(() => void this.flush(), options.flushMs ?? 1000);
    this.timer.unref();
  }

  /**
   * Keeps a sampled ranking for the next write; serialising happens there, not here. `vectors`: the candidates'
   * vectors one after another, in request order.
   */
  offer(ranking: Ranking, req: AdRequest, vectors: Float64Array): void {
    if (this.random() >= this.options.sampleRate) return;
    this.pending.push({ ranking, req, vectors });
    if (this.pending.length >= (this.options.maxPending ?? 256)) void this.flush();
  }

  flush(): Promise<void> {
    if (this.pending.length === 0) return this.writing;
    const batch = this.pending;
    this.pending = [];
    this.writing = this.writing.then(async () => {
      const text = batch.map((b) => `${JSON.stringify(recordOf(b.ranking, b.req, b.vectors))}\n`).join('');
      try {
        await appendFile(this.options.path, text);
        this.written += batch.length;
      } catch (err) {
        this.log.error({ err: (err as Error).message, lost: batch.length }, 'served-vector log write failed');
      }
    });
    return this.writing;
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.flush();
  }
}

function recordOf(ranking: Ranking, req: AdRequest, vectors: Float64Array): ServedRecord {
  const width = vectors.length / req.candidates.length;
  return {
    request_id: ranking.request_id,
    model_version: ranking.model_version,
    event_time: ranking.event_time,
    scored_time: ranking.scored_time,
    features_defaulted: ranking.features_defaulted,
    candidates: req.candidates.map((c, i) => ({
      ad_id: c.ad_id,
      vector: Array.from(vectors.subarray(i * width, (i + 1) * width)),
    })),
  };
}
