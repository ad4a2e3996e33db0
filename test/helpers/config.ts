import { ConfigError, parseConfig } from '../../api/config.js';

/** The ConfigError message for a config text (file name lab.yaml); throws if the config is accepted. */
export function configProblems(text: string): string {
  try {
    parseConfig(text, 'lab.yaml');
  } catch (error) {
    if (error instanceof ConfigError) return error.message;
    throw error;
  }
  throw new Error('the config was accepted');
}
