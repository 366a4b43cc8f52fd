// One connection to Valkey for a command, or the unreachable-server error (exit 3) that says what to run.
import { type RedisOptions, Valkey } from 'iovalkey';
import { unreachable } from '../config/unreachable.ts';

/**
 * Connects (options are the client's; `lazyConnect` is forced so the first failure is caught here, not emitted
 * as an unhandled 'error' event). Later connection errors go to `onError`.
 */
export async function connectValkey(
  url: string,
  options: RedisOptions,
  onError: (err: Error) => void = () => {},
): Promise<Valkey> {
  const valkey = new Valkey(url, { ...options, lazyConnect: true });
  let failure: Error | undefined; // the first connection's failure is reported once, below
  const quiet = (err: Error) => {
    failure ??= err;
  };
  valkey.on('error', quiet);
  try {
    await valkey.connect();
  } catch (err) {
    valkey.disconnect();
    throw unreachable('Valkey', url, 'valkey', 'valkey', failure ?? err);
  }
  valkey.off('error', quiet);
  valkey.on('error', onError);
  return valkey;
}
