import type { Command } from '../command';

export const defenderCommand: Command = async (_args, io) => {
  io.stderr.write('urs defender: not built yet\n');
  return 2;
};
