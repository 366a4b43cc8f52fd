import pino from 'pino';

/** Structured logs go to stderr so stdout stays for results a script can read. */
export const log = pino({ level: process.env.TRIBUTARY_LOG_LEVEL ?? 'info' }, pino.destination(2));
