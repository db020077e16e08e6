import { parseCommandStats } from '../src/infra';
import { bufferedMessages } from '../src/pipeline';
import { parseStat, parseStatus } from '../src/procstat';
import { shortTopic } from '../src/report';
import { keyedBy } from '../src/scenario';

describe('parseCommandStats', () => {
  it('parseCommandStats should read calls per command', () => {
    const info =
      '# Commandstats\r\ncmdstat_get:calls=12,usec=30,usec_per_call=2.50\r\ncmdstat_evalsha:calls=3,usec=9\r\n';
    expect(parseCommandStats(info)).toEqual({ get: 12, evalsha: 3 });
  });
});

describe('parseStatus', () => {
  it('parseStatus should read peak and current RSS in MB', () => {
    expect(parseStatus('Name:\tnode\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n')).toEqual({
      peakRssMb: 200,
      rssMb: 100,
    });
  });
});

describe('parseStat', () => {
  it('parseStat should read user and system ticks and minor faults after a command name with spaces', () => {
    const stat = '1234 (node main) S 1 1234 1234 0 -1 4194560 1700 0 3 0 250 50 0 0 20 0 11 0 100 0 0';
    expect(parseStat(stat)).toEqual({ cpuSec: 3, systemCpuSec: 0.5, minorFaults: 1700 });
  });
});

describe('shortTopic', () => {
  it('shortTopic should drop the run prefix', () => {
    expect(shortTopic('bench-abc-fleet-1000-urs.device-batches')).toBe('urs.device-batches');
    expect(shortTopic('bench-abc-cycles-vms.risk-summary')).toBe('vms.risk-summary');
  });
});

describe('keyedBy', () => {
  it("keyedBy should take a tenant's own key and its devices' keys, and no other tenant's", () => {
    const key = (text: string): Buffer => Buffer.from(text);
    expect(keyedBy('t-warmup', key('t-warmup'))).toBe(true);
    expect(keyedBy('t-warmup', key('t-warmup/device-1'))).toBe(true);
    expect(keyedBy('t-warmup', key('t-warmup2'))).toBe(false);
    expect(keyedBy('t-warmup', key('t-0/device-1'))).toBe(false);
    expect(keyedBy('t-warmup', null)).toBe(false);
  });
});

describe('bufferedMessages', () => {
  it('bufferedMessages should add up the messages held by every consumer group of a process', () => {
    const metrics = [
      '# HELP urs_consumer_buffered_messages Messages held in memory and not yet finished.',
      '# TYPE urs_consumer_buffered_messages gauge',
      'urs_consumer_buffered_messages{group="a"} 2',
      'urs_consumer_buffered_messages{group="b"} 1',
      'urs_consumer_deferred_messages{group="a"} 7',
    ].join('\n');
    expect(bufferedMessages(metrics)).toBe(3);
    expect(bufferedMessages('urs_consumer_deferred_messages{group="a"} 7\n')).toBe(0);
  });
});
