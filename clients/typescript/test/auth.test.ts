// End users: sign-up, sign-in, calls with the access token, the refresh on a 401, refresh-token
// rotation (a used refresh token is refused, and ends the session), sign-out.
import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import { createPlinthClient, PlinthError, unwrap, type PlinthClient, type PlinthObject, type Tokens } from "../src/index.js";
import { baseUrl, newTenant, unique } from "./helpers.js";

const password = "correct horse battery staple";

describe("end-user sessions", () => {
  let tenant: Awaited<ReturnType<typeof newTenant>>;
  let service: PlinthClient;

  before(async () => {
    tenant = await newTenant();
    service = createPlinthClient({ baseUrl, apiKey: tenant.apiKey });
    // The owner recipe of docs/api.md: each user reaches the notes they created.
    await unwrap(service.POST("/v1/object-types", { body: { name: "notes", additional_properties: true } }));
    await unwrap(
      service.PUT("/v1/roles/{role_id}/permissions", {
        params: { path: { role_id: "authenticated" } },
        body: { permissions: ["objects.notes:*"] },
      }),
    );
    await unwrap(
      service.POST("/v1/object-types/{object_type_id}/policies", {
        params: { path: { object_type_id: "notes" } },
        body: {
          name: "owners",
          action: "all",
          condition_json: { property: "created_by", op: "eq", value: "$auth.user_id" },
        },
      }),
    );
    // A note of the service's own, which no user may see.
    await unwrap(service.POST("/v1/objects/{object_type_id}", { params: { path: { object_type_id: "notes" } }, body: { properties: { text: "the service's" } } }));
  });

  /** A client for the tenant's end users, and a new user signed up. */
  async function signedUp(): Promise<{ user: PlinthClient; email: string; changes: (Tokens | null)[]; refreshes: () => number }> {
    const changes: (Tokens | null)[] = [];
    let refreshes = 0;
    const user = createPlinthClient({
      baseUrl,
      tenant: tenant.slug,
      onSessionChange: (session) => changes.push(session),
      fetch: (request) => {
        if (new URL(request.url).pathname === "/v1/auth/refresh") refreshes += 1;
        return fetch(request);
      },
    });
    const email = `${unique("user")}@example.com`;
    const signedUp = await user.auth.signUp({ email, password });
    assert.equal(signedUp.user.email, email);
    assert.equal(signedUp.confirmation_sent, true);
    assert.equal(user.auth.session, null, "sign-up opens no session");
    return { user, email, changes, refreshes: () => refreshes };
  }

  test("sign in, call with the access token, refresh on a 401, reuse of a refresh token ends the session", async () => {
    const { user, email, changes, refreshes } = await signedUp();
    const tokens = await user.auth.signIn({ email, password });
    assert.ok("access_token" in tokens, "no second factor: tokens");
    assert.equal(tokens.token_type, "bearer");
    assert.match(tokens.refresh_token, /^rt_/);
    assert.deepEqual(user.auth.session, tokens);
    assert.deepEqual(changes, [tokens]);

    const me = await unwrap(user.GET("/v1/auth/user"));
    assert.equal(me.email, email);
    assert.equal(me.id, tokens.user.id);

    // The row policy at work: the user's note carries their id, and they see it alone.
    const note = await unwrap<PlinthObject>(
      user.POST("/v1/objects/{object_type_id}", { params: { path: { object_type_id: "notes" } }, body: { properties: { text: "mine" } } }),
    );
    assert.equal(note.created_by, me.id);
    const listed = await unwrap<{ results: PlinthObject[]; total: number }>(
      user.GET("/v1/objects/{object_type_id}/list", { params: { path: { object_type_id: "notes" } } }),
    );
    assert.deepEqual(
      listed.results.map((o) => o.id),
      [note.id],
    );
    assert.equal(listed.total, 1);

    // An access token the server refuses (as an expired one would be): the client refreshes
    // once with the refresh token and repeats the request.
    user.auth.setSession({ ...tokens, access_token: "not-a-valid-token" });
    const again = await unwrap(user.GET("/v1/auth/user"));
    assert.equal(again.id, me.id);
    assert.equal(refreshes(), 1);
    const rotated = user.auth.session;
    assert.ok(rotated);
    assert.notEqual(rotated.refresh_token, tokens.refresh_token, "refresh tokens rotate");
    assert.notEqual(rotated.access_token, "not-a-valid-token");
    assert.equal(rotated.session_id, tokens.session_id, "the same session");

    // The refresh token used once is refused...
    const anonymous = createPlinthClient({ baseUrl });
    await assert.rejects(
      unwrap(anonymous.POST("/v1/auth/refresh", { body: { refresh_token: tokens.refresh_token } })),
      { name: "PlinthError", status: 401, code: "UNAUTHORIZED" },
    );
    // ...and presenting it again ended the whole session, as a stolen token would: the current
    // access token is refused, its refresh fails, and the client forgets the session.
    await assert.rejects(unwrap(user.GET("/v1/auth/user")), { name: "PlinthError", status: 401, code: "UNAUTHORIZED" });
    assert.equal(refreshes(), 2);
    assert.equal(user.auth.session, null);
    assert.equal(changes.at(-1), null);
  });

  test("concurrent 401s refresh the session once", async () => {
    const { user, email, refreshes } = await signedUp();
    const tokens = await user.auth.signIn({ email, password });
    assert.ok("access_token" in tokens);
    user.auth.setSession({ ...tokens, access_token: "not-a-valid-token" });
    const answers = await Promise.all([1, 2, 3].map(() => unwrap(user.GET("/v1/auth/user"))));
    assert.deepEqual(
      answers.map((a) => a.email),
      [email, email, email],
    );
    assert.equal(refreshes(), 1);
  });

  test("sign out ends the session", async () => {
    const { user, email } = await signedUp();
    const tokens = await user.auth.signIn({ email, password });
    assert.ok("access_token" in tokens);
    await user.auth.signOut();
    assert.equal(user.auth.session, null);

    const withOldToken = createPlinthClient({ baseUrl, accessToken: tokens.access_token });
    await assert.rejects(unwrap(withOldToken.GET("/v1/auth/user")), { name: "PlinthError", status: 401, code: "UNAUTHORIZED" });
    await assert.rejects(unwrap(user.POST("/v1/auth/refresh", { body: { refresh_token: tokens.refresh_token } })), {
      name: "PlinthError",
      status: 401,
    });
  });

  test("a wrong password is a 401 and opens no session", async () => {
    const { user, email } = await signedUp();
    await assert.rejects(user.auth.signIn({ email, password: "not the password" }), (err: unknown) => {
      assert.ok(err instanceof PlinthError);
      assert.equal(err.status, 401);
      assert.equal(err.code, "UNAUTHORIZED");
      return true;
    });
    assert.equal(user.auth.session, null);
  });
});
