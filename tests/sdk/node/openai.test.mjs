// The official `openai` Node SDK, unchanged, against switchyard's OpenAI surface.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import OpenAI from 'openai';

import { targets, weatherSchema } from './common.mjs';

const weatherTool = {
  type: 'function',
  function: { name: 'get_weather', description: 'Weather for a city', parameters: weatherSchema },
};

for (const t of targets) {
  describe(`openai node sdk → ${t.id}`, () => {
    const client = new OpenAI({ baseURL: `${t.url}/v1`, apiKey: 'sk-sdk-test', maxRetries: 0, timeout: 15_000 });
    const user = (text) => [{ role: 'user', content: text }];

    test('chat plain', async () => {
      const { data: r, response } = await client.chat.completions
        .create({ model: t.chat, messages: user('hello from node') })
        .withResponse();
      assert.equal(r.object, 'chat.completion');
      assert.equal(r.choices[0].message.role, 'assistant');
      assert.equal(r.choices[0].message.content, 'hello from node');
      assert.equal(r.choices[0].finish_reason, 'stop');
      assert.ok(r.usage.prompt_tokens > 0);
      assert.equal(response.headers.get('x-switchyard-provider'), t.provider);
      assert.ok(response.headers.get('x-request-id'));
    });

    test('chat stream: text, and usage only when asked', async () => {
      const stream = await client.chat.completions.create({
        model: t.chat,
        messages: user('node streams words'),
        stream: true,
      });
      let text = '';
      let finish = null;
      for await (const chunk of stream) {
        assert.equal(chunk.usage ?? null, null, 'no usage chunk unless include_usage');
        for (const c of chunk.choices) {
          text += c.delta.content ?? '';
          finish = c.finish_reason ?? finish;
        }
      }
      assert.equal(text, 'node streams words');
      assert.equal(finish, 'stop');

      const withUsage = await client.chat.completions.create({
        model: t.lorem,
        messages: user('x'),
        max_tokens: 5,
        stream: true,
        stream_options: { include_usage: true },
      });
      const chunks = [];
      for await (const chunk of withUsage) chunks.push(chunk);
      const last = chunks.at(-1);
      assert.deepEqual(last.choices, []);
      assert.equal(last.usage.completion_tokens, 5);
      const words = chunks.flatMap((c) => c.choices.map((x) => x.delta.content ?? '')).join('');
      assert.equal(words.split(/\s+/).filter(Boolean).length, 5);
    });

    test('chat stream helper: finalChatCompletion', async () => {
      const runner = client.chat.completions.stream({ model: t.chat, messages: user('helper node') });
      let deltas = '';
      runner.on('content', (d) => {
        deltas += d;
      });
      const final = await runner.finalChatCompletion();
      assert.equal(deltas, 'helper node');
      assert.equal(final.choices[0].message.content, 'helper node');
    });

    test('streamed tool calls assemble into JSON arguments', async () => {
      const stream = await client.chat.completions.create({
        model: t.chat,
        messages: user('Lisbon'),
        tools: [weatherTool],
        stream: true,
      });
      const calls = new Map();
      let finish = null;
      for await (const chunk of stream) {
        for (const c of chunk.choices) {
          finish = c.finish_reason ?? finish;
          for (const d of c.delta.tool_calls ?? []) {
            const slot = calls.get(d.index) ?? { id: null, name: null, args: '' };
            slot.id ??= d.id ?? null;
            slot.name ??= d.function?.name ?? null;
            slot.args += d.function?.arguments ?? '';
            calls.set(d.index, slot);
          }
        }
      }
      assert.deepEqual([...calls.keys()], [0]);
      const call = calls.get(0);
      assert.ok(call.id);
      assert.equal(call.name, 'get_weather');
      assert.deepEqual(JSON.parse(call.args), { city: 'Lisbon', days: 1, unit: 'c' });
      assert.equal(finish, 'tool_calls');
    });

    test('tool call (non-streamed)', async () => {
      const r = await client.chat.completions.create({ model: t.chat, messages: user('Paris'), tools: [weatherTool] });
      const call = r.choices[0].message.tool_calls[0];
      assert.equal(call.function.name, 'get_weather');
      assert.deepEqual(JSON.parse(call.function.arguments), { city: 'Paris', days: 1, unit: 'c' });
    });

    test('embeddings: default base64 and float agree', { skip: t.embed ? false : 'anthropic upstream has no embeddings API' }, async () => {
      const b64 = await client.embeddings.create({ model: t.embed, input: ['one', 'two'] });
      const flt = await client.embeddings.create({ model: t.embed, input: ['one', 'two'], encoding_format: 'float' });
      assert.equal(b64.data.length, 2);
      for (let i = 0; i < 2; i++) {
        assert.equal(b64.data[i].embedding.length, 16);
        assert.equal(flt.data[i].embedding.length, 16);
        b64.data[i].embedding.forEach((x, j) => assert.ok(Math.abs(x - flt.data[i].embedding[j]) < 1e-6));
      }
      const norm = Math.hypot(...flt.data[0].embedding);
      assert.ok(Math.abs(norm - 1) < 1e-4);
    });

    test('models.list', async () => {
      const ids = [];
      for await (const m of client.models.list()) ids.push(m.id);
      assert.ok(ids.includes(t.chat), ids.join(','));
    });

    test('unknown model is NotFoundError', async () => {
      await assert.rejects(
        client.chat.completions.create({ model: 'no-such-model-xyz', messages: user('hi') }),
        (e) => e instanceof OpenAI.NotFoundError && e.status === 404,
      );
    });
  });
}
