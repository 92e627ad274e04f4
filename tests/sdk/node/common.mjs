// Targets shared by the Node SDK tests; tests/sdk/run.sh exports the URLs.
// builtin: `switchyard serve` with no config (in-process mock);
// routed-*: `switchyard serve --config` in front of a separate `switchyard mock` upstream.

const builtin = process.env.SWITCHYARD_BUILTIN_URL;
const routed = process.env.SWITCHYARD_ROUTED_URL;
if (!builtin || !routed) {
  throw new Error('SWITCHYARD_BUILTIN_URL and SWITCHYARD_ROUTED_URL are unset: run tests/sdk/run.sh');
}

export const targets = [
  { id: 'builtin', url: builtin, chat: 'mock/echo', lorem: 'mock/lorem', embed: 'mock/embed', provider: 'mock' },
  { id: 'routed-openai', url: routed, chat: 'chat-default', lorem: 'chat-lorem', embed: 'embed-default', provider: 'upstream' },
  { id: 'routed-anthropic', url: routed, chat: 'chat-anthropic', lorem: 'chat-anthropic-lorem', embed: null, provider: 'upstream-anthropic' },
];

export const anthropicSurface = process.env.SWITCHYARD_ANTHROPIC === '1';
export const anthropicSkipReason =
  'this switchyard build has no Anthropic caller surface (POST /v1/messages is not served)';

export const weatherSchema = {
  type: 'object',
  properties: {
    city: { type: 'string' },
    days: { type: 'integer' },
    unit: { type: 'string', enum: ['c', 'f'] },
  },
  required: ['city'],
};
