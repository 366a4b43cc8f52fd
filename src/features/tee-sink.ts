import type { Series } from './compile.ts';
import type { UpdateSink } from './update.ts';

/** Sends every update to two sinks (e.g. the batch to write and a local view to read from). */
export class TeeSink implements UpdateSink {
  constructor(
    private readonly a: UpdateSink,
    private readonly b: UpdateSink,
  ) {}

  update(key: string, series: Series, tile: number, value: number | string): void {
    this.a.update(key, series, tile, value);
    this.b.update(key, series, tile, value);
  }
}
