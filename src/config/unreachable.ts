// A configured server that does not answer: the CLI prints the message (which says what to do) and exits 3.
export class ServiceUnreachableError extends Error {}

/** "<name> not reachable at <where>: run `tributary services start <service>` or pass --<flag> (<cause>)". */
export function unreachable(name: string, where: string, service: string, flag: string, cause: unknown) {
  const reason = String((cause as Error)?.message ?? cause).split('\n', 1)[0];
  return new ServiceUnreachableError(
    `${name} not reachable at ${where}: run \`tributary services start ${service}\` or pass --${flag} (${reason})`,
  );
}
