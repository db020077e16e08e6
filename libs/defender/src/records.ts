/**
 * `@urs/defender/records`: how the client reads Microsoft's device and vulnerability records, alone, for
 * `urs score`, which reads its input as the pipeline reads the API's answers. The package's index also loads
 * the client (its token source and HTTP client take ~0.2–0.4 s of CPU to load), which `urs score` never uses.
 */
export { listedMachine, parseMachine, parseVulnerability } from './schema';
export type { MachineRecord, ParseResult, Vulnerability } from './schema';
