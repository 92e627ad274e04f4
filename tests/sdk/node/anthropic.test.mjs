// The official `@anthropic-ai/sdk` Node SDK, unchanged, against switchyard's Anthropic surface.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import Anthropic from '@anthropic-ai/sdk';

import { anthropicSkipReason, anthropicSurface, targets, weatherSchema } from './common.mjs';

const skip = anthropicSurface ? false : anthropicSkipReason;
if (skip) console.log(`# anthropic node tests skipped: ${skip}`);

for (const t of targets) {
  describe(`anthropic node sdk → ${t.id}`, { skip }, () => {
    const client = new Anthropic({ baseURL: t.url, apiKey: 'sk-ant-sdk-test', maxRetries: 0, timeout: 15_000 });
    const user = (text) => [{ role: 'user', content: text }];

    test('messages.create plain', async () => {
      const { data: m, response } = await client.messages
        .create({ model: t.chat, max_tokens: 64, system: 'Be brief.', messages: user('hello node claude') })
        .withResponse();
      assert.equal(m.type, 'message');
      assert.equal(m.content[0].type, 'text');
      assert.equal(m.content[0].text, 'hello node claude');
      assert.equal(m.stop_reason, 'end_turn');
      assert.ok(m.usage.input_tokens > 0);
      assert.equal(response.headers.get('x-switchyard-provider'), t.provider);
    });

    test('messages.stream: text events and finalMessage', async () => {
      const stream = client.messages.stream({ model: t.chat, max_tokens: 64, messages: user('node stream text') });
      let text = '';
      stream.on('text', (d) => {
        text += d;
      });
      const final = await stream.finalMessage();
      assert.equal(text, 'node stream text');
      assert.equal(final.content[0].text, 'node stream text');
      assert.equal(final.stop_reason, 'end_turn');
      assert.ok(final.usage.output_tokens > 0);
    });

    test('messages.stream: tool_use input_json', async () => {
      const stream = client.messages.stream({
        model: t.chat,
        max_tokens: 128,
        messages: user('Rome'),
        tools: [{ name: 'get_weather', input_schema: weatherSchema }],
      });
      let partial = '';
      stream.on('inputJson', (d) => {
        partial += d;
      });
      const final = await stream.finalMessage();
      assert.deepEqual(JSON.parse(partial), { city: 'Rome', days: 1, unit: 'c' });
      const use = final.content.find((b) => b.type === 'tool_use');
      assert.equal(use.name, 'get_weather');
      assert.deepEqual(use.input, { city: 'Rome', days: 1, unit: 'c' });
      assert.equal(final.stop_reason, 'tool_use');
    });

    test('unknown model is NotFoundError', async () => {
      await assert.rejects(
        client.messages.create({ model: 'no-such-model-xyz', max_tokens: 8, messages: user('hi') }),
        (e) => e instanceof Anthropic.NotFoundError && e.status === 404,
      );
    });
  });
}
