import { defineConfig } from 'vitest/config';

// One set of real local servers serves every file of a project; files run one at a time so topics don't race, and
// the cluster project is a group of its own (groupOrder), so it never runs beside the integration one.
const servers = { fileParallelism: false, testTimeout: 60_000, hookTimeout: 120_000 };

export default defineConfig({
  test: {
    projects: [
      { test: { name: 'unit', include: ['test/unit/**/*.test.ts'], sequence: { groupOrder: 0 } } },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          ...servers,
          sequence: { groupOrder: 0 },
          globalSetup: ['test/support/global-setup.ts'],
        },
      },
      {
        // Valkey Cluster and a three-broker Kafka beside the single-node servers (`npm run test:cluster`).
        test: {
          name: 'cluster',
          include: ['test/cluster/**/*.test.ts'],
          ...servers,
          sequence: { groupOrder: 1 },
          globalSetup: ['test/support/cluster-setup.ts'],
        },
      },
    ],
  },
});
