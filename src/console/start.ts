// Starts the console: its sampler and its HTTP server. Used by `tributary console` and by the demo, which hosts the
// console itself (the embedded stores live in the demo's process).
import { Sampler, type SamplerDeps } from './sampler.ts';
import { buildConsole, type ConsoleDeps } from './server.ts';

export interface StartConsoleOptions {
  port: number;
  host: string;
  /** The scoring token: POSTs (promote, roll back) need it; unset = read-only. */
  token?: string;
  /** Sampling period of the pipeline and the metrics (ms). */
  intervalMs?: number;
}

export interface RunningConsole {
  url: string;
  sampler: Sampler;
  close(): Promise<void>;
}

export async function startConsole(
  deps: Omit<ConsoleDeps, 'sampler'>,
  sampling: Omit<SamplerDeps, 'log'>,
  o: StartConsoleOptions,
): Promise<RunningConsole> {
  const sampler = new Sampler({ ...sampling, log: deps.log }, { intervalMs: o.intervalMs ?? 2000, keep: 180 });
  const app = await buildConsole({ ...deps, sampler }, { token: o.token });
  await sampler.sample(); // the first page load has a sample to show
  sampler.start();
  let url: string;
  try {
    url = await app.listen({ port: o.port, host: o.host });
  } catch (err) {
    await sampler.stop();
    throw err;
  }
  return {
    url,
    sampler,
    close: async () => {
      await sampler.stop();
      await app.close();
    },
  };
}
