// `tributary features`: what is defined, and what an entity's features are right now.
import type { Command } from 'commander';
import { type Config, ConfigError } from '../config/config.ts';
import { FeatureSet } from '../features/compile.ts';
import { DEFAULT_GROUPS } from '../features/definitions.ts';
import { KEY_SEPARATOR, type KeyFields } from '../features/entities.ts';
import { connectValkey } from '../online/connect.ts';
import { ValkeyStore } from '../online/valkey-store.ts';

export function registerFeaturesCommand(program: Command, configOf: (cmd: Command) => Config): void {
  const cmd = program
    .command('features')
    .description('list the feature definitions, or read features from the online store');
  cmd
    .command('list', { isDefault: true })
    .description('every feature, in vector order, with the definitions version')
    .option('--json', 'print JSON')
    .action((opts: { json?: boolean }) => {
      const fs = new FeatureSet(DEFAULT_GROUPS);
      if (opts.json)
        return void process.stdout.write(
          `${JSON.stringify({ version: fs.version, features: fs.features }, null, 2)}\n`,
        );
      process.stdout.write(`definitions version ${fs.version}, ${fs.features.length} features\n`);
      for (const f of fs.features)
        process.stdout.write(`${f.name.padEnd(36)} ${f.kind.padEnd(10)} ${f.window.padEnd(4)} default ${f.default}\n`);
    });
  cmd
    .command('read')
    .description('read the vector for a user and an ad from Valkey, as scoring would')
    .requiredOption('--user <id>', 'user_id')
    .requiredOption('--ad <id>', 'ad_id')
    .option('--campaign <id>', 'campaign_id', '')
    .option('--advertiser <id>', 'advertiser_id', '')
    .option('--category <id>', 'category', '')
    .option('--publisher <id>', 'publisher_id', '')
    .option('--at <iso>', 'read time (default: now)')
    .addHelpText(
      'after',
      '\nExample:\n  tributary features read --valkey redis://127.0.0.1:6379 --user u-7 --ad ad-3 --campaign cmp-279 --at 2026-11-02T12:00:00Z',
    )
    .action(async (opts: Record<string, string>, sub: Command) => {
      const config = configOf(sub);
      if (!config.valkey)
        throw new ConfigError('features read needs the online store: pass --valkey redis://host:port');
      const at = opts.at ? Date.parse(opts.at) : Date.now();
      if (Number.isNaN(at)) throw new ConfigError(`--at "${opts.at}" is not a time`);
      for (const flag of ['user', 'ad', 'campaign', 'advertiser', 'category', 'publisher'])
        if (opts[flag]?.includes(KEY_SEPARATOR))
          throw new ConfigError(`--${flag} "${opts[flag]}" contains "${KEY_SEPARATOR}", which joins entity key fields`);
      const fs = new FeatureSet(DEFAULT_GROUPS);
      const valkey = await connectValkey(config.valkey, { enableAutoPipelining: true, maxRetriesPerRequest: 1 });
      try {
        const store = new ValkeyStore(valkey, {
          features: fs,
          namespace: config.namespace,
          ttlSeconds: 0,
          retentionMs: fs.retentionMs,
        });
        const ctx: KeyFields = {
          user_id: opts.user as string,
          ad_id: opts.ad as string,
          campaign_id: opts.campaign as string,
          advertiser_id: opts.advertiser as string,
          category: opts.category as string,
          publisher_id: opts.publisher as string,
        };
        const plan = fs.plan([ctx], at);
        const results = await store.read(plan.requests);
        const [v] = fs.assemble(plan, results);
        const out = Object.fromEntries(fs.names.map((n, i) => [n, v?.[i]]));
        // Entities with nothing stored in the windows read at `at` (their features are the defaults), as /v1/rank says.
        const unknown = new Set<string>();
        results.forEach((r, i) => {
          if (r.values.every((x) => x === null) && r.setCounts.every((n) => n === 0))
            unknown.add(fs.groups[plan.groupOf[i] as number]?.group.entity.name as string);
        });
        process.stdout.write(
          `${JSON.stringify({ at: new Date(at).toISOString(), version: fs.version, unknown: [...unknown], features: out }, null, 2)}\n`,
        );
        if (unknown.size === fs.groups.length)
          process.stderr.write(
            `tributary: nothing stored for these entities in the windows read at ${new Date(at).toISOString()} (every feature is its default): check the ids and --namespace, and pass --at a time within the streamed events${opts.at ? '' : ' (the default is now)'}\n`,
          );
      } finally {
        valkey.disconnect();
      }
    });
}
