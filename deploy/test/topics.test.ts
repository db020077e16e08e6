// Each stage makes and describes only its own topics (services/<stage>/src/topics.ts), so that Kafka's ACLs may
// allow it those alone. Checked here against the topics each stage's code names, and the README's ACL table
// against both: a topic a stage starts to read or write cannot be missing from its list, or from the table.
import type { StageTopics, TopicAccess, TopicName } from '@urs/bus';
import { topicsConfig } from '@urs/config';
import { stageTopics as pollerTopics } from '../../services/poller/src/topics';
import { stageTopics as publisherTopics } from '../../services/publisher/src/topics';
import { stageTopics as registrarTopics } from '../../services/registrar/src/topics';
import { stageTopics as scorerTopics } from '../../services/scorer/src/topics';
import { stageTopics as vulnFetcherTopics } from '../../services/vuln-fetcher/src/topics';
import { read, sourcesOf, stages } from './repo';

const declared: Record<string, StageTopics> = {
  registrar: registrarTopics,
  poller: pollerTopics,
  'vuln-fetcher': vulnFetcherTopics,
  scorer: scorerTopics,
  publisher: publisherTopics,
};

/** Each topic's default name (`tenants` → `urs.tenants`). */
const defaultNames = topicsConfig({});
const topicNames = new Set(Object.keys(defaultNames));

/** The topics a stage's code names: `config.topics.tenants`, `deps.topics.dlq`, `topics.registration`. */
function topicsNamedBy(stage: string): string[] {
  const code = sourcesOf(`services/${stage}`).join('\n');
  const named = [...code.matchAll(/\btopics\.([A-Za-z]+)\b/g)].map((match) => match[1] as string);
  return [...new Set(named.filter((name) => topicNames.has(name)))].sort();
}

/** The ACL operations a topic's use takes; Create while the topic does not exist yet. */
function operationsOf(access: TopicAccess): string[] {
  const uses = { read: ['Read'], write: ['Write'], 'read-write': ['Read', 'Write'] }[access];
  return [...uses, 'Describe', 'Create'];
}

/** The rows of the README's "Kafka ACLs" table, by stage: its groups' cell and its topics' cell. */
function aclTable(): Map<string, { groups: string; topics: string }> {
  const readme = read('README.md');
  const start = readme.indexOf('### Kafka ACLs\n');
  expect(start).toBeGreaterThan(0);
  const section = readme.slice(start, readme.indexOf('\n#', start + 1));
  const rows = new Map<string, { groups: string; topics: string }>();
  for (const line of section.split('\n')) {
    const cells = line.split('|').map((cell) => cell.trim());
    // `| stage | groups | topics |` splits into ['', stage, groups, topics, ''].
    if (cells.length === 5 && stages.includes(cells[1] as string))
      rows.set(cells[1] as string, { groups: cells[2] as string, topics: cells[3] as string });
  }
  return rows;
}

describe("the stages' topics", () => {
  test('every stage should name its topics in its list, and the code should name topics', () => {
    expect(Object.keys(declared).sort()).toEqual([...stages].sort());
    expect(topicsNamedBy('publisher')).toContain('vmsRiskScores');
  });

  test.each(stages)("%s's list should be exactly the topics its code reads or writes", (stage) => {
    expect(Object.keys(declared[stage] ?? {}).sort()).toEqual(topicsNamedBy(stage));
  });

  test.each(stages)('%s should dead-letter, and make no other topic at start than its list', (stage) => {
    expect(declared[stage]?.dlq).toBe('write');
    const main = read(`services/${stage}/src/main.ts`);
    expect(main).toMatch(/^import \{ stageTopics \} from '\.\/topics';$/m);
    expect(main).toMatch(/runService\(\{\n {2}name: '[a-z-]+',\n {2}topics: stageTopics,\n/);
  });

  test("the README's ACL table should list every stage's topics with the operations its use takes", () => {
    const table = aclTable();
    expect([...table.keys()].sort()).toEqual([...stages].sort());
    for (const stage of stages) {
      const row = table.get(stage);
      const listed = Object.fromEntries(
        (row?.topics ?? '').split(';').map((entry) => {
          const match = /^\s*`([^`]+)` (.+)$/.exec(entry);
          return [match?.[1] ?? entry, (match?.[2] ?? '').split(',').map((op) => op.trim())];
        }),
      );
      const expected = Object.fromEntries(
        Object.entries(declared[stage] ?? {}).map(([name, access]) => [
          defaultNames[name as TopicName],
          operationsOf(access),
        ]),
      );
      expect([stage, listed]).toEqual([stage, expected]);
      // Its consumer groups: named after the stage (`urs.<stage>`, `urs.<stage>.…`), each with its operations.
      const groups = [...(row?.groups ?? '').matchAll(/`([^`]+)` \(([^)]*)\)/g)];
      expect(groups.length).toBeGreaterThan(0);
      for (const [, group, operations] of groups) {
        expect([stage, group?.startsWith(`urs.${stage}`)]).toEqual([stage, true]);
        expect([stage, group, operations]).toEqual([stage, group, expect.stringContaining('Read')]);
      }
    }
  });
});
