import type { Command } from '../command';

export const scoreCommand: Command = async (_args, io) => {
  io.stderr.write('urs score: not built yet\n');
  return 2;
};
