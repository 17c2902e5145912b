// Typed calls through openapi-fetch: object types and objects, the list iterator over several
// pages, the envelope and PlinthError.
import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import { createPlinthClient, paginate, PlinthError, unwrap, type PlinthClient, type PlinthObject } from "../src/index.js";
import { baseUrl, newTenant } from "./helpers.js";

describe("objects through the typed client", () => {
  let client: PlinthClient;
  const type = { path: { object_type_id: "notes" } };

  before(async () => {
    client = createPlinthClient({ baseUrl, apiKey: (await newTenant()).apiKey });
    const created = await unwrap(client.POST("/v1/object-types", { body: { name: "notes" } }));
    assert.equal(created.name, "notes");
    assert.equal(created.display_name, "Notes");
    assert.match(created.id, /^ot_/);
    const property = await unwrap(
      client.POST("/v1/object-types/{object_type_id}/properties", {
        params: type,
        body: { name: "title", data_type: "string", is_required: true },
      }),
    );
    assert.equal(property.data_type, "string");
  });

  test("create, get, update, trash, purge, then 404", async () => {
    const created = await unwrap<PlinthObject>(
      client.POST("/v1/objects/{object_type_id}", { params: type, body: { properties: { title: "first" } } }),
    );
    assert.match(created.id, /^obj_/);
    assert.deepEqual(created.properties, { title: "first" });
    assert.equal(created.version, 1);
    assert.equal(created.is_deleted, false);

    const one = { path: { object_type_id: "notes", object_id: created.id } };
    const got = await unwrap<PlinthObject>(client.GET("/v1/objects/{object_type_id}/{object_id}", { params: one }));
    assert.deepEqual(got, created);

    const updated = await unwrap<PlinthObject>(
      client.PATCH("/v1/objects/{object_type_id}/{object_id}", { params: one, body: { properties: { title: "second" } } }),
    );
    assert.equal(updated.version, 2);
    assert.deepEqual(updated.properties, { title: "second" });

    // DELETE moves to the trash: the object is still there, marked deleted.
    const trashed = await unwrap(client.DELETE("/v1/objects/{object_type_id}/{object_id}", { params: one }));
    assert.deepEqual(trashed, { id: created.id, deleted: true });
    const inTrash = await unwrap<PlinthObject>(client.GET("/v1/objects/{object_type_id}/{object_id}", { params: one }));
    assert.equal(inTrash.is_deleted, true);

    // ?force=true purges it for good.
    const purged = await unwrap(
      client.DELETE("/v1/objects/{object_type_id}/{object_id}", { params: { ...one, query: { force: true } } }),
    );
    assert.deepEqual(purged, { id: created.id, deleted: true });

    // The raw openapi-fetch result: `error` is typed by the document (ErrorBody).
    const { data, error, response } = await client.GET("/v1/objects/{object_type_id}/{object_id}", { params: one });
    assert.equal(data, undefined);
    assert.equal(response.status, 404);
    assert.equal(error?.success, false);
    assert.equal(error?.error.code, "NOT_FOUND");
    assert.equal(error?.request_id, response.headers.get("X-Request-Id"));

    // The same through unwrap: a PlinthError with the contract's code.
    await assert.rejects(unwrap(client.GET("/v1/objects/{object_type_id}/{object_id}", { params: one })), (err: unknown) => {
      assert.ok(err instanceof PlinthError);
      assert.equal(err.status, 404);
      assert.equal(err.code, "NOT_FOUND");
      assert.match(err.request_id ?? "", /^req_/);
      return true;
    });
  });

  test("a validation error is a PlinthError with details per property", async () => {
    await assert.rejects(
      unwrap(client.POST("/v1/objects/{object_type_id}", { params: type, body: { properties: { title: "x", nope: 1 } } })),
      (err: unknown) => {
        assert.ok(err instanceof PlinthError);
        assert.equal(err.status, 422);
        assert.equal(err.code, "VALIDATION_FAILED");
        assert.ok(err.details?.["properties.nope"]?.length, JSON.stringify(err.error));
        return true;
      },
    );
    // A required property missing.
    await assert.rejects(
      unwrap(client.POST("/v1/objects/{object_type_id}", { params: type, body: { properties: {} } })),
      { name: "PlinthError", status: 422, code: "VALIDATION_FAILED" },
    );
  });

  test("the list iterator follows next_cursor over every page", async () => {
    const titles = ["a", "b", "c", "d", "e"];
    const ids: string[] = [];
    for (const title of titles) {
      const object = await unwrap<PlinthObject>(
        client.POST("/v1/objects/{object_type_id}", { params: type, body: { properties: { title } } }),
      );
      ids.push(object.id);
    }

    const cursors: (string | undefined)[] = [];
    const seen: string[] = [];
    for await (const item of paginate<PlinthObject>((cursor) => {
      cursors.push(cursor);
      return client.GET("/v1/objects/{object_type_id}/list", {
        params: { ...type, query: { limit: 2, sort: "created_at", ...(cursor ? { cursor } : {}) } },
      });
    })) {
      seen.push(item.id);
    }
    assert.deepEqual(seen, ids, "every object once, oldest first");
    assert.equal(cursors.length, 3, "pages of 2, 2 and 1");
    assert.equal(cursors[0], undefined);
    assert.ok(cursors.slice(1).every((c) => typeof c === "string" && c.length > 0));

    // Filters: the document names the parameter `filter[<property>][<op>]` literally, so a query
    // with real ones is built apart from the call (in an object literal there, tsc refuses them).
    const filter: Record<string, string> = { "filter[title][in]": "a,c,e" };
    const filtered = await unwrap<{ results: PlinthObject[]; total: number }>(
      client.GET("/v1/objects/{object_type_id}/list", { params: { ...type, query: { sort: "created_at", ...filter } } }),
    );
    assert.deepEqual(
      filtered.results.map((o) => o.properties.title),
      ["a", "c", "e"],
    );
    assert.equal(filtered.total, 3);

    // A typed list: the items are the document's ObjectType.
    const names: string[] = [];
    for await (const objectType of paginate((cursor) =>
      client.GET("/v1/object-types", { params: { query: { limit: 1, ...(cursor ? { cursor } : {}) } } }),
    )) {
      names.push(objectType.id, objectType.name ?? "");
    }
    assert.equal(names[1], "notes");
  });

  test("a wrong list parameter surfaces from the iterator", async () => {
    const pages = paginate(() => client.GET("/v1/object-types", { params: { query: { sort: "nope" } } }));
    await assert.rejects(pages.next(), { name: "PlinthError", status: 422, code: "VALIDATION_FAILED" });
  });
});

// Checked by tsc only: what the generated types refuse.
export function typeChecks(client: PlinthClient): void {
  // @ts-expect-error: no such route
  void client.GET("/v1/no-such-route");
  // @ts-expect-error: the path parameter is required
  void client.GET("/v1/objects/{object_type_id}/list", {});
  // @ts-expect-error: `name` is required to create an object type
  void client.POST("/v1/object-types", { body: { display_name: "x" } });
  // @ts-expect-error: the tier is an enumeration
  void client.POST("/v1/tenants", { body: { name: "x", tier: "platinum" } });
}
