// `tributary dead-letters list|show|replay`: the dead-letter topic without Kafka's tools, on Kafka or the file log.
import type { Command } from 'commander';
import { type Config, ConfigError } from '../config/config.ts';
import { deadLetterTopic } from '../events/catalog.ts';
import { BadEventError } from '../events/serde.ts';
import {
  type DeadLetter,
  type DeadLetterFilter,
  DeadLetterTally,
  type DeadLetterView,
  letterId,
  parseLetterId,
  readDeadLetter,
  readDeadLetters,
} from '../streams/dead-letter-reader.ts';
import { replayDeadLetters } from '../streams/dead-letter-replay.ts';
import { openEventLog, openSerde } from '../streams/open.ts';
import { log } from './log.ts';
import { durationOption, wholeOption } from './options.ts';

type ConfigOf = (cmd: Command) => Config;

interface FilterOptions {
  reason?: string;
  topic?: string;
  since?: string;
  letters?: string;
}

const say = (s: string) => process.stdout.write(`${s}\n`);
const iso = (t: number) => (t > 0 ? new Date(t).toISOString() : '-');

/** "1h" (that long ago) or an ISO-8601 time -> epoch ms. */
function sinceOption(value: string): number {
  if (/^\d+(\.\d+)?[a-z]+$/i.test(value)) return Date.now() - durationOption('--since', value);
  const t = Date.parse(value);
  if (Number.isNaN(t)) throw new ConfigError(`--since "${value}" is neither a duration (1h, 7d) nor an ISO-8601 time`);
  return t;
}

/** "0:12,1:3-9" -> the letters' ids (a range "p:a-b" names offsets a to b). */
function lettersOption(value: string): Set<string> {
  const ids = new Set<string>();
  for (const item of value.split(',').map((s) => s.trim())) {
    const range = /^(\d+):(\d+)-(\d+)$/.exec(item);
    if (range) {
      const [p, a, b] = [Number(range[1]), Number(range[2]), Number(range[3])];
      if (b < a || b - a > 1_000_000) throw new ConfigError(`--letters: "${item}" is not a range from low to high`);
      for (let o = a; o <= b; o++) ids.add(letterId(p, o));
      continue;
    }
    const one = parseLetterId(item);
    if (!one) throw new ConfigError(`--letters: "${item}" is not partition:offset (e.g. 0:12) or partition:from-to`);
    ids.add(letterId(one.partition, one.offset));
  }
  return ids;
}

function filterOf(o: FilterOptions): DeadLetterFilter {
  const f: DeadLetterFilter = {};
  if (o.reason !== undefined) f.reason = o.reason;
  if (o.topic !== undefined) f.topic = o.topic;
  if (o.since !== undefined) f.since = sinceOption(o.since);
  if (o.letters !== undefined) f.ids = lettersOption(o.letters);
  return f;
}

function withFilters(c: Command): Command {
  return c
    .option('--reason <text>', 'only this reason class (e.g. late, "unknown schema id") or reasons containing the text')
    .option('--topic <topic>', 'only letters from this source topic (with or without the namespace prefix)')
    .option('--since <when>', 'only letters dead-lettered since then: a duration ago (1h, 7d) or an ISO-8601 time')
    .option(
      '--letters <list>',
      'only these letters: partition:offset of the dead-letter topic, comma-separated (0:12,1:3-9)',
    );
}

function line(v: DeadLetterView): string {
  const marks = [
    v.replayed ? 'replayed' : '',
    v.replayOf ? `replay of ${v.replayOf}` : '',
    v.truncated ? 'truncated' : '',
  ]
    .filter(Boolean)
    .join(', ');
  return `${letterId(v.partition, v.offset).padEnd(9)} ${iso(v.time)}  from ${v.source.topic}/${v.source.partition}@${v.source.offset}  ${v.bytes} B${marks ? ` [${marks}]` : ''}\n      ${v.reason}`;
}

/** Text as UTF-8 when it reads as such, else the first bytes in hex. */
function preview(b: Buffer | null): { utf8?: string; hex?: string } {
  if (!b) return {};
  const text = b.toString('utf8');
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are exactly what is looked for
  if (!text.includes('\uFFFD') && !/[\u0000-\u0008\u000e-\u001f]/.test(text)) return { utf8: text.slice(0, 2000) };
  return { hex: b.subarray(0, 256).toString('hex') };
}

export function registerDeadLettersCommand(program: Command, configOf: ConfigOf): void {
  const dl = program
    .command('dead-letters')
    .description('list, inspect and replay the dead-letter topic (Kafka or the file log)');

  withFilters(
    dl
      .command('list')
      .description('dead letters by reason class and by source topic, with a few examples of each reason')
      .option('--examples <n>', 'examples per reason', '3')
      .option('--json', 'print JSON'),
  )
    .addHelpText(
      'after',
      `
Examples:
  tributary dead-letters list
  tributary dead-letters list --reason late --since 1h --json
  tributary dead-letters list --kafka 127.0.0.1:9092 --topic ad_clicks`,
    )
    .action(async (o: FilterOptions & { examples: string; json?: boolean }, cmd: Command) => {
      const config = configOf(cmd);
      const filter = filterOf(o);
      const tally = new DeadLetterTally(wholeOption('--examples', o.examples, 0));
      const eventLog = openEventLog(config, log);
      for await (const { view } of readDeadLetters(eventLog, config.namespace, filter)) tally.add(view);
      const reasons = tally.reasons();
      if (o.json) {
        say(JSON.stringify({ total: tally.total, reasons, topics: tally.topics() }, null, 2));
        return;
      }
      say(`${tally.total} dead letters in ${deadLetterTopic(config.namespace)} (${eventLog.where})`);
      if (tally.total === 0) return;
      say('\nby reason                           letters  replayed');
      for (const r of reasons)
        say(`${r.reasonClass.padEnd(34)} ${String(r.count).padStart(8)}  ${String(r.replayed).padStart(8)}`);
      say('\nby source topic                     letters  replayed');
      for (const t of tally.topics())
        say(`${t.topic.padEnd(34)} ${String(t.count).padStart(8)}  ${String(t.replayed).padStart(8)}`);
      for (const r of reasons) {
        say(`\n${r.reasonClass}:`);
        for (const v of r.examples) say(`  ${line(v)}`);
      }
    });

  dl.command('show <letter>')
    .description('one dead letter (partition:offset of the dead-letter topic): headers, source, reason, decoded bytes')
    .option('--json', 'print JSON')
    .addHelpText('after', '\nExamples:\n  tributary dead-letters show 0:12\n  tributary dead-letters show 2:0 --json')
    .action(async (letter: string, o: { json?: boolean }, cmd: Command) => {
      const config = configOf(cmd);
      const at = parseLetterId(letter);
      if (!at) throw new ConfigError(`"${letter}" is not partition:offset of the dead-letter topic (e.g. 0:12)`);
      const eventLog = openEventLog(config, log);
      const found = await readDeadLetter(eventLog, config.namespace, at.partition, at.offset);
      if (!found)
        throw new ConfigError(
          `no dead letter at ${letter} in ${deadLetterTopic(config.namespace)} (${eventLog.where})`,
        );
      const shown = await decoded(found, config);
      if (o.json) {
        say(JSON.stringify(shown, (_k, v) => (typeof v === 'bigint' ? String(v) : v), 2));
        return;
      }
      say(line(found.view));
      say(`headers  ${JSON.stringify(found.message.headers ?? {})}`);
      say(`key      ${found.message.key ? JSON.stringify(preview(found.message.key)) : '(none)'}`);
      if (shown.decoded)
        say(
          `decoded  schema id ${shown.decoded.schemaId} (${shown.decoded.schemaName})\n${JSON.stringify(shown.decoded.value, null, 2)}`,
        );
      else say(`not decoded: ${shown.undecodable}\n${JSON.stringify(shown.preview)}`);
    });

  withFilters(
    dl
      .command('replay')
      .description('send chosen dead letters back into their source partitions, each once, marked replay_of')
      .option('--all', 'every dead letter not replayed yet (no filter needed)')
      .option('--dry-run', 'print what would be replayed, send nothing')
      .option('--batch <n>', 'letters per step (ledger, records, ledger)', '500')
      .option('--json', 'print JSON'),
  )
    .addHelpText(
      'after',
      `
Fix the cause first (e.g. restart the stream with a larger --max-clock-skew or --allowed-lateness, register the
missing schema); the stream then judges each replayed record again, against its original log timestamp. A letter
already replayed is never sent again, also after a replay that crashed midway (see README, "Dead letters").
Run one replay at a time.

Examples:
  tributary dead-letters replay --reason "invalid impression" --dry-run
  tributary dead-letters replay --letters 0:12,1:3-9
  tributary dead-letters replay --topic ad_clicks --since 2h`,
    )
    .action(
      async (o: FilterOptions & { all?: boolean; dryRun?: boolean; batch: string; json?: boolean }, cmd: Command) => {
        const config = configOf(cmd);
        const filter = filterOf(o);
        const batch = wholeOption('--batch', o.batch, 1);
        if (!o.all && Object.keys(filter).length === 0)
          throw new ConfigError('say which letters to replay: --reason, --topic, --since, --letters, or --all');
        const eventLog = openEventLog(config, log);
        const letters: DeadLetter[] = [];
        for await (const d of readDeadLetters(eventLog, config.namespace, filter)) letters.push(d);
        const outcome = await replayDeadLetters(eventLog, config.namespace, letters, {
          dryRun: o.dryRun,
          batch,
          onProgress: o.json ? undefined : (n) => say(`sent ${n}`),
        });
        if (o.json) {
          say(JSON.stringify({ dryRun: o.dryRun === true, ...outcome }, null, 2));
        } else {
          if (o.dryRun) for (const v of outcome.sent) say(`would replay ${line(v)}`);
          for (const r of outcome.refused) say(`refused ${letterId(r.view.partition, r.view.offset)}: ${r.why}`);
          say(
            `${o.dryRun ? 'would replay' : 'replayed'} ${outcome.sent.length} of ${letters.length} dead letters (${outcome.already.length} replayed before, ${outcome.refused.length} refused)`,
          );
        }
        if (outcome.refused.length > 0) process.exitCode = 1;
      },
    );
}

interface Shown extends DeadLetterView {
  headers: Record<string, string>;
  decoded?: { schemaId: number; schemaName: string; value: unknown };
  undecodable?: string;
  preview?: { utf8?: string; hex?: string };
}

/** The letter with its value decoded through the registry where it can be, else a preview and why not. */
async function decoded(d: DeadLetter, config: Config): Promise<Shown> {
  const base: Shown = { ...d.view, headers: (d.message.headers ?? {}) as Record<string, string> };
  try {
    const serde = await openSerde(config);
    return { ...base, decoded: await serde.inspect(d.message.value) };
  } catch (err) {
    if (!(err instanceof BadEventError)) throw err;
    const why = d.view.truncated ? `${err.reason} (the letter holds only the head of the original)` : err.reason;
    return { ...base, undecodable: why, preview: preview(d.message.value) };
  }
}
