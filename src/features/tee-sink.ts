import type { UpdateSink } from './update.ts';

/** Sends every update to two sinks (e.g. the batch to write and a local view to read from). */
export class TeeSink implements UpdateSink {
  constructor(
    private readonly a: UpdateSink,
    private readonly b: UpdateSink,
  ) {}

  incr(key: string, field: string, delta: number): void {
    this.a.incr(key, field, delta);
    this.b.incr(key, field, delta);
  }

  max(key: string, field: string, value: number): void {
    this.a.max(key, field, value);
    this.b.max(key, field, value);
  }

  sadd(key: string, field: string, member: string): void {
    this.a.sadd(key, field, member);
    this.b.sadd(key, field, member);
  }
}
