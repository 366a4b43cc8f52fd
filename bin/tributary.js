#!/usr/bin/env node
// Runs the TypeScript CLI through tsx so `npx tributary` works from a clone without a build step. tsx's loader is
// registered in this process rather than in a child's, so a stop signal reaches the command itself: the stream
// finishes and commits its batch, serve its in-flight rankings (a wrapper process would die and orphan them).
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/main.ts');
