// `tributary demo` (npm start): the loop on embedded defaults, no servers. For now: generate traffic, replay it
// through the feature definitions into a point-in-time training set, and report. Streaming into the embedded
// stores, training and serving join as they land.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import { runBackfill } from '../backfill/run.ts';
import { fromEventFile } from '../backfill/sources.ts';
import { writeEventFile } from '../events/event-file.ts';
import { generate } from '../events/generator.ts';
import { FeatureSet } from '../features/compile.ts';
import { DEFAULT_GROUPS } from '../features/definitions.ts';
import { HOUR } from '../features/time.ts';

export function registerDemoCommand(program: Command): void {
  program
    .command('demo')
    .description('run the pipeline end to end on embedded defaults (no servers) and print a report')
    .option('--days <n>', 'days of generated traffic', '1')
    .option('--out <dir>', 'where to write the event log and training set (default: a temp folder)')
    .action(async (opts: { days: string; out?: string }) => {
      const dir = opts.out ?? mkdtempSync(join(tmpdir(), 'tributary-demo-'));
      const say = (s: string) => process.stdout.write(`${s}\n`);
      const t0 = performance.now();
      const log = generate({ days: Number(opts.days), impressionsPerDay: 20_000 });
      const events = join(dir, 'events.ndjson');
      await writeEventFile(events, log);
      const tGen = performance.now();
      say(`generated ${log.length} events (impressions, clicks; late, out-of-order, duplicates) -> ${events}`);
      const features = new FeatureSet(DEFAULT_GROUPS);
      const out = join(dir, 'training.csv');
      const meta = await runBackfill({
        features,
        open: () => fromEventFile(events),
        sourceName: `file:${events}`,
        out,
        attributionMs: HOUR,
        allowedLatenessMs: HOUR,
      });
      const seconds = (performance.now() - tGen) / 1000;
      say(
        `replayed through ${features.names.length} features (definitions ${features.version}) at ${Math.round(log.length / seconds)} events/s`,
      );
      say(
        `training set: ${meta.rows} rows, ${meta.positives} clicked (${((100 * meta.positives) / Math.max(1, meta.rows)).toFixed(2)}%), ${meta.held_back} held back (attribution window open) -> ${out}`,
      );
      say(
        `done in ${((performance.now() - t0) / 1000).toFixed(1)}s. Next: \`tributary features\`, \`tributary backfill --help\`; with servers: \`npm run services start\` and \`tributary stream --help\`.`,
      );
    });
}
