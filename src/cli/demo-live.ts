// The demo's live traffic once its report is printed: a slow generator keeps appending impressions, clicks and ad
// requests to the file log at wall-clock time (the stream, still running, applies them) and ranks each ad request
// through the demo's own POST /v1/rank, so the console's pages move. Each hour replays one generated day compressed
// 24×: the generator's daily shape, late and duplicate deliveries, at a rate a laptop does not notice.
import type { Logger } from 'pino';
import type { Config } from '../config/config.ts';
import { generate } from '../events/generator.ts';
import type { AnyEvent } from '../events/types.ts';
import { EventPublisher } from '../kafka/publish.ts';
import type { EventLog } from '../streams/event-log.ts';
import { openSerde } from '../streams/open.ts';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

export interface LiveTrafficOptions {
  config: Config;
  eventLog: EventLog;
  /** The demo's /v1/rank base URL, and its token if any. */
  rankUrl: string;
  token?: string;
  /** Impressions per second on average (the generator's daily shape around it). */
  impressionsPerSecond: number;
  candidates: number;
  log: Logger;
}

/** Starts the traffic; the returned function stops it (and waits for the last sends). */
export async function startLiveTraffic(o: LiveTrafficOptions): Promise<() => Promise<void>> {
  const serde = await openSerde(o.config);
  const producer = o.eventLog.producer();
  await producer.connect();
  const publisher = new EventPublisher(producer, serde, o.config.namespace);
  let stopped = false;
  let wake: (() => void) | undefined;
  const sleep = (ms: number) =>
    new Promise<void>((done) => {
      const t = setTimeout(done, ms);
      wake = () => {
        clearTimeout(t);
        done();
      };
    });
  const rankings = new Set<Promise<void>>();

  const rank = (event: AnyEvent['event'] & { candidates?: unknown[] }) => {
    const body = JSON.stringify({
      request_id: (event as { request_id: string }).request_id,
      user_id: (event as { user_id: string }).user_id,
      publisher_id: (event as { publisher_id: string }).publisher_id,
      device: (event as { device: string }).device,
      os: (event as { os: string }).os,
      time: event.event_time,
      candidates: event.candidates,
    });
    const p = fetch(`${o.rankUrl}/v1/rank`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(o.token ? { authorization: `Bearer ${o.token}` } : {}) },
      body,
      signal: AbortSignal.timeout(5000),
    })
      .then(async (res) => {
        if (!res.ok) o.log.warn({ status: res.status, reason: await res.text() }, 'live ranking refused');
        else await res.arrayBuffer();
      })
      .catch((err: Error) => o.log.warn({ err: err.message }, 'live ranking failed'))
      .finally(() => rankings.delete(p));
    rankings.add(p);
  };

  const run = async () => {
    for (let hour = Math.floor(Date.now() / HOUR); !stopped; hour++) {
      const hourStart = hour * HOUR;
      const dayStart = Math.floor(hourStart / DAY) * DAY;
      const records = generate({
        seed: hour,
        start: dayStart,
        days: 1,
        impressionsPerDay: Math.max(1, Math.round(o.impressionsPerSecond * 3600)),
        candidatesPerRequest: o.candidates,
      });
      const at = (t: number) => hourStart + Math.round((t - dayStart) / 24);
      for (const { record, ingestTime } of records) {
        const due = at(ingestTime);
        if (due < Date.now() - 1000) continue; // this hour's part already past
        while (!stopped && due > Date.now()) {
          await publisher.flush();
          await sleep(Math.min(due - Date.now(), 1000));
        }
        if (stopped) break;
        const event = { ...record.event, event_time: at(record.event.event_time) } as AnyEvent['event'];
        if ('impression_time' in event) event.impression_time = at(event.impression_time);
        await publisher.add({ record: { kind: record.kind, event } as AnyEvent, ingestTime: due });
        if (record.kind === 'request') rank(event);
      }
    }
    await publisher.flush();
  };
  const running = run().catch((err: Error) => o.log.error({ err: err.message }, 'live traffic stopped'));
  return async () => {
    stopped = true;
    wake?.();
    await running;
    await Promise.all(rankings);
    await producer.disconnect();
  };
}
