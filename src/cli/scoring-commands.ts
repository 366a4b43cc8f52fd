// `tributary serve` (HTTP ranking) and `tributary score` (Kafka ranking): one scoring stack wired to the servers.
// The implementation is scoring-run.ts, loaded when one of them runs.
import type { Command } from 'commander';
import type { Config } from '../config/config.ts';

export function registerScoringCommands(program: Command, configOf: (cmd: Command) => Config): void {
  const scoringOptions = (c: Command) =>
    c
      .option('--models <dir>', 'model registry folder [env TRIBUTARY_MODELS_DIR] (default .data/models)')
      .option('--max-candidates <n>', 'most candidates per request [env TRIBUTARY_MAX_CANDIDATES] (default 500)')
      .option('--rank-timeout <ms>', 'longest wait for Valkey per ranking [env TRIBUTARY_RANK_TIMEOUT_MS] (default 50)')
      .option(
        '--read-cache <on|off>',
        "keep candidates' features in process, invalidated by Valkey [env TRIBUTARY_READ_CACHE] (default on)",
      )
      .option(
        '--sample-rate <r>',
        'share of rankings written to the served-vector log [env TRIBUTARY_SERVED_SAMPLE_RATE] (default 0)',
      )
      .option('--served-log <file>', 'served-vector log (NDJSON)', 'served-vectors.ndjson');

  scoringOptions(
    program
      .command('serve')
      .description('rank candidate ads over HTTP: POST /v1/rank, /healthz, /readyz, /metrics, /openapi.json')
      .option('--port <port>', 'port to listen on', '8080')
      .option('--host <host>', 'address to listen on', '127.0.0.1')
      .option('--token <token>', 'require Authorization: Bearer <token> on /v1/rank [env TRIBUTARY_SCORING_TOKEN]')
      .option('--body-limit <bytes>', 'largest request body', String(1 << 20))
      .option(
        '--workers <n>',
        'processes sharing the port, each its own Valkey connections, cache and model (about one per core)',
        '1',
      ),
  )
    .addHelpText(
      'after',
      '\nExample:\n  tributary serve --valkey redis://127.0.0.1:6379 --models .data/models --port 8080 --workers 2 \\\n' +
        '    --sample-rate 0.01\nWith --workers N each worker appends to its own served-vector log, FILE.<worker>.ndjson.',
    )
    .action(async (opts: Record<string, string>, cmd: Command) => {
      const { runServe } = await import('./scoring-run.ts');
      await runServe(configOf(cmd), opts);
    });

  scoringOptions(
    program
      .command('score')
      .description('rank AdRequest events from ad_requests and publish ScoredRanking events to ad_rankings')
      .option('--group <id>', 'consumer group id', 'tributary-score')
      .option('--concurrency <n>', 'rankings in flight at once', '16')
      .option('--metrics-port <port>', 'serve Prometheus metrics at http://HOST:PORT/metrics')
      .option('--metrics-host <host>', 'address the metrics listen on (0.0.0.0 for a scraper elsewhere)', '127.0.0.1'),
  )
    .addHelpText(
      'after',
      "\nThe metrics are those of serve's /metrics: rankings (by features source), stage timings, requests dead-lettered\n" +
        '(tributary_rank_rejected_total{reason}), the model in service.\n\nExample:\n' +
        '  tributary score --kafka 127.0.0.1:9092 --schema-registry http://127.0.0.1:8081/apis/ccompat/v7 \\\n' +
        '    --valkey redis://127.0.0.1:6379 --metrics-port 9465',
    )
    .action(async (opts: Record<string, string>, cmd: Command) => {
      const { runScore } = await import('./scoring-run.ts');
      await runScore(configOf(cmd), opts);
    });
}
