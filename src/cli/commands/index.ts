/**
 * Every CLI command by name. The order of this table is the order of the
 * usage text, so audit and export, though one group, each keep their own
 * place in it.
 */
import type { Command } from '../command';
import { aniCommands } from './anis';
import { callCommands } from './call';
import { catalogCommands } from './catalog';
import { demoCommands } from './demo';
import { eventCommands } from './events';
import { idCommands } from './ids';
import { kamailioCommands } from './kamailio';
import { recordCommands } from './records';
import { saleCommands } from './sales';
import { sandboxCommands } from './sandbox';
import { tokenCommands } from './tokens';
import { topupCommands } from './topup';

export const commands: Record<string, Command> = {
  ...catalogCommands,
  ...idCommands,
  ...aniCommands,
  ...topupCommands,
  ...tokenCommands,
  audit: recordCommands.audit,
  ...saleCommands,
  ...sandboxCommands,
  export: recordCommands.export,
  archive: recordCommands.archive,
  ...demoCommands,
  ...eventCommands,
  ...callCommands,
  ...kamailioCommands,
};
