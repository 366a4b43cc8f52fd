// Labels for training rows: an impression is positive when a click on it happened within the attribution window.
// A label is final only once the window has closed, i.e. the data reaches past the impression time + window.
import type { AdClick } from '../events/types.ts';

export class Labels {
  /** Earliest click time per impression id. */
  private readonly firstClick = new Map<string, number>();
  /** The latest event time seen anywhere: how far the data is known to reach. */
  horizon = Number.NEGATIVE_INFINITY;

  constructor(readonly attributionMs: number) {}

  observe(eventTime: number): void {
    if (eventTime > this.horizon) this.horizon = eventTime;
  }

  addClick(c: AdClick): void {
    this.observe(c.event_time);
    const prev = this.firstClick.get(c.impression_id);
    if (prev === undefined || c.event_time < prev) this.firstClick.set(c.impression_id, c.event_time);
  }

  /** Whether the impression's window has closed within the data (otherwise its row is held back). */
  isFinal(impressionTime: number): boolean {
    return impressionTime + this.attributionMs <= this.horizon;
  }

  label(impressionId: string, impressionTime: number): 0 | 1 {
    const t = this.firstClick.get(impressionId);
    return t !== undefined && t - impressionTime <= this.attributionMs ? 1 : 0;
  }
}
