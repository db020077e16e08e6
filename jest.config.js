// Three suites: unit (no Kafka, no Redis), integration and e2e (real Kafka and Redis, resolved by
// test/infra/global-setup.ts). Files: `*.test.ts` unit, `*.int.test.ts` integration, `*.e2e.test.ts` e2e.
const os = require('node:os');
const path = require('node:path');

const common = {
  rootDir: __dirname,
  testEnvironment: 'node',
  transform: {
    '^.+\\.ts$': ['@swc/jest', { jsc: { parser: { syntax: 'typescript' }, target: 'es2022' } }],
  },
  // Tests run against the sources, so no build is needed for unit and integration suites.
  moduleNameMapper: {
    '^@urs/simulator$': path.join(__dirname, 'test/simulator/src'),
    '^@urs/testkit$': path.join(__dirname, 'test/support'),
    '^@urs/([a-z-]+)$': path.join(__dirname, 'libs/$1/src'),
    // A package's entry points besides its index (e.g. `@urs/defender/rows`).
    '^@urs/([a-z-]+)/([a-z-]+)$': path.join(__dirname, 'libs/$1/src/$2'),
  },
  testPathIgnorePatterns: ['/node_modules/', '/dist/', '/.stack/'],
};

module.exports = {
  // Jest's default is one worker fewer than the cores: on two cores, one suite at a time. Most of the
  // integration and end-to-end suites' time is waiting (for brokers, cycles, a Kafka away on purpose), so two
  // side by side halve the run's time on two cores (15 to 8 minutes) at little cost to each suite's. Suites
  // keep apart by their own topic and key prefixes, and by their own ports (test/support/ports.ts).
  maxWorkers: Math.max(2, os.availableParallelism() - 1),
  projects: [
    {
      ...common,
      displayName: 'unit',
      testRegex: '^(?!.*\\.(int|e2e)\\.test\\.ts$).*\\.test\\.ts$',
      // Many unit suites start a simulator (TLS keys, a server) or a node child in `beforeAll`: beside another
      // worker on two cores that can pass Jest's default 5 s, which a slow machine is not a failure of.
      globals: { URS_TEST_TIMEOUT_MS: 30_000 },
      setupFilesAfterEnv: ['<rootDir>/test/infra/test-timeout.ts'],
    },
    {
      ...common,
      displayName: 'integration',
      testRegex: '\\.int\\.test\\.ts$',
      globalSetup: '<rootDir>/test/infra/global-setup.ts',
      globalTeardown: '<rootDir>/test/infra/global-teardown.ts',
      // Jest reads `testTimeout` only from the top-level config, so each project sets its own here.
      globals: { URS_TEST_TIMEOUT_MS: 60_000 },
      setupFilesAfterEnv: ['<rootDir>/test/infra/test-timeout.ts'],
    },
    {
      ...common,
      displayName: 'e2e',
      testRegex: '\\.e2e\\.test\\.ts$',
      globalSetup: '<rootDir>/test/infra/global-setup.ts',
      globalTeardown: '<rootDir>/test/infra/global-teardown.ts',
      globals: { URS_TEST_TIMEOUT_MS: 240_000 },
      setupFilesAfterEnv: ['<rootDir>/test/infra/test-timeout.ts'],
    },
  ],
};
