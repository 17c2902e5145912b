// Server-Sent Events (`GET /v1/events/stream`) and the realtime WebSocket (`GET /v1/realtime`).
import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import {
  createPlinthClient,
  parseSse,
  PlinthError,
  unwrap,
  type PlinthClient,
  type PlinthObject,
  type WebSocketConstructor,
} from "../src/index.js";
import { baseUrl, newTenant } from "./helpers.js";

describe("events", () => {
  let client: PlinthClient;
  const type = { path: { object_type_id: "tasks" } };
  const create = async (title: string) =>
    await unwrap<PlinthObject>(client.POST("/v1/objects/{object_type_id}", { params: type, body: { properties: { title } } }));

  before(async () => {
    client = createPlinthClient({ baseUrl, apiKey: (await newTenant()).apiKey });
    await unwrap(client.POST("/v1/object-types", { body: { name: "tasks", additional_properties: true } }));
  });

  test("the event stream resumes after an event, then follows live", async () => {
    // The event of a first object, from the outbox.
    const first = await create("first");
    const recorded = await unwrap(client.GET("/v1/events/list", { params: { query: { resource_id: first.id } } }));
    const firstEvent = recorded.results[0];
    assert.ok(firstEvent);
    assert.equal(firstEvent.type, "object.created");

    // Resuming after it, the stream answers the second object whether it was made before the
    // stream opened (replayed from the outbox) or after (live); the third comes once the stream
    // is known to be open.
    const ending = new AbortController();
    const stream = client.events({ types: ["object.*"], lastEventId: firstEvent.id ?? "", signal: ending.signal });
    const next = stream.next();
    const second = await create("second");
    const secondEvent = await next;
    assert.equal(secondEvent.done, false);
    assert.equal(secondEvent.value?.type, "object.created");
    assert.deepEqual(secondEvent.value?.data.object, second);
    assert.equal(secondEvent.value?.data.object_type, "tasks");

    const third = await create("third");
    const thirdEvent = await stream.next();
    assert.equal(thirdEvent.value?.type, "object.created");
    assert.equal((thirdEvent.value?.data.object as PlinthObject).id, third.id);

    await unwrap(
      client.PATCH("/v1/objects/{object_type_id}/{object_id}", {
        params: { path: { ...type.path, object_id: third.id } },
        body: { properties: { title: "third, again" } },
      }),
    );
    const updated = await stream.next();
    assert.equal(updated.value?.type, "object.updated");
    assert.equal((updated.value?.data.object as PlinthObject).version, 2);

    // Breaking off closes the stream.
    await stream.return();
    ending.abort();
  });

  test("a refused credential on the stream is a PlinthError", async () => {
    const stranger = createPlinthClient({ baseUrl, apiKey: "plk_live_not-a-key" });
    await assert.rejects(stranger.events().next(), { name: "PlinthError", status: 401, code: "UNAUTHORIZED" });
  });

  test("realtime: subscribe to a channel and receive its events", async () => {
    const WebSocket = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket ?? (await import("ws")).WebSocket;
    const connection = await client.realtime({ WebSocket: WebSocket as WebSocketConstructor });
    try {
      await connection.subscribe("objects:tasks");
      await assert.rejects(connection.subscribe("no-such-channel"), (err: unknown) => {
        assert.ok(err instanceof PlinthError);
        assert.equal(err.code, "VALIDATION_FAILED");
        return true;
      });
      await connection.ping();

      const made = await create("live");
      for await (const frame of connection) {
        assert.equal(frame.channel, "objects:tasks");
        assert.equal(frame.event.type, "object.created");
        assert.deepEqual(frame.event.data.object, made);
        break;
      }

      await connection.unsubscribe("objects:tasks");
    } finally {
      connection.close();
    }
  });
});

describe("the SSE parser", () => {
  const streamOf = (...chunks: string[]) =>
    new ReadableStream<Uint8Array>({
      start(controller) {
        for (const chunk of chunks) controller.enqueue(new TextEncoder().encode(chunk));
        controller.close();
      },
    });
  const all = async (body: ReadableStream<Uint8Array>) => {
    const messages = [];
    for await (const message of parseSse(body)) messages.push(message);
    return messages;
  };

  test("fields, comments, multi-line data, CRLF and chunks split anywhere", async () => {
    const messages = await all(
      streamOf(": hello\n\nid: 1\nevent: a\ndata: {\"x\":\ndata:  1}\n\n", "id: 2\r", "\nda", "ta: two\r\n\r\ndata: three\n\n", "data: unfinished"),
    );
    assert.deepEqual(messages, [
      { id: "1", event: "a", data: '{"x":\n 1}' },
      { id: "2", event: "message", data: "two" },
      { id: "2", event: "message", data: "three" },
    ]);
  });
});
