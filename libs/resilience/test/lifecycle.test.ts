import { closeAll } from '@urs/resilience';

describe('closeAll', () => {
  it('should close every resource in order even when one fails', async () => {
    const closed: string[] = [];
    const failures: string[] = [];
    await closeAll(
      [
        { name: 'consumer', close: async () => void closed.push('consumer') },
        {
          name: 'producer',
          close: async () => {
            throw new Error('broker gone');
          },
        },
        { name: 'redis', close: () => void closed.push('redis') },
      ],
      (name, error) => failures.push(`${name}: ${(error as Error).message}`),
    );
    expect(closed).toEqual(['consumer', 'redis']);
    expect(failures).toEqual(['producer: broker gone']);
  });
});
