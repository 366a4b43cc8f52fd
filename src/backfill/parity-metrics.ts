// What the live parity check counts (served vectors recomputed from the log); exposed in Prometheus format.
import { Counter, Registry } from 'prom-client';

export class ParityMetrics {
  readonly registry = new Registry();
  readonly checked = new Counter({
    name: 'tributary_parity_checked_total',
    help: 'Served vectors recomputed from the log and compared, feature by feature',
    registers: [this.registry],
  });
  readonly mismatches = new Counter({
    name: 'tributary_parity_mismatches_total',
    help: 'Served feature values that differ from the value recomputed from the log, by feature',
    labelNames: ['feature'],
    registers: [this.registry],
  });
  readonly missing = new Counter({
    name: 'tributary_parity_missing_total',
    help: 'Sampled impressions the stream applied whose served vector was not recorded (stream without --record-served)',
    registers: [this.registry],
  });
}
