// `tributary demo` (npm start): the whole loop in one process on embedded defaults (demo-run.ts, loaded when the
// command runs: its stack is most of what a command's start would otherwise load).
import type { Command } from 'commander';
import type { Config } from '../config/config.ts';
import type { DemoOptions } from './demo-run.ts';

export function registerDemoCommand(program: Command, configOf: (cmd: Command) => Config): void {
  program
    .command('demo')
    .description(
      'run the whole loop in this process on embedded defaults (no servers), report, then serve /v1/rank and the console',
    )
    .option('--days <n>', 'days of generated traffic', '3')
    .option('--impressions-per-day <n>', 'impressions per day', '20000')
    .option('--candidates <n>', 'candidate ads per generated ad request', '20')
    .option(
      '--out <dir>',
      'where the demo keeps its log, offline store, training set and models (replaced)',
      '.data/demo',
    )
    .option('--port <port>', 'port for /v1/rank once the report is printed (0 = any free port)', '8080')
    .option('--console-port <port>', 'port for the web console once the report is printed (0 = any free port)', '8090')
    .option('--live-rate <n>', 'impressions per second of live traffic appended after the report (0 = none)', '2')
    .option('--no-serve', 'exit after the report instead of serving /v1/rank and the console')
    .addHelpText('after', '\nExamples:\n  npm start\n  tributary demo --days 2 --no-serve\n  tributary demo --port 0')
    .action(async (opts: DemoOptions, cmd: Command) => {
      const { runDemo } = await import('./demo-run.ts');
      await runDemo(configOf(cmd), opts);
    });
}
