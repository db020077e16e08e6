// Applies the project's test timeout (jest.config.js `globals.URS_TEST_TIMEOUT_MS`, in milliseconds):
// Jest ignores `testTimeout` inside a project entry.
const timeoutMs = (globalThis as { URS_TEST_TIMEOUT_MS?: unknown }).URS_TEST_TIMEOUT_MS;
if (typeof timeoutMs === 'number') jest.setTimeout(timeoutMs);
