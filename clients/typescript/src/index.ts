// A small layer over openapi-fetch, typed by the generated `paths` of the Plinth API: credentials,
// end-user sessions with refresh on a 401, the envelope, keyset lists, Server-Sent Events and
// the realtime WebSocket. Everything else is the openapi-fetch client itself.
import createClient, { type Client } from "openapi-fetch";
import type { components, paths } from "./schema.js";

export type { components, operations, paths } from "./schema.js";
export type Schemas = components["schemas"];
export type Tokens = Schemas["Tokens"];
export type User = Schemas["User"];
export type MfaChallenge = Schemas["MfaChallenge"];
export type ErrorBody = Schemas["ErrorBody"];

/** An object of the data store as the server answers it (the OpenAPI document leaves it untyped). */
export interface PlinthObject {
  id: string;
  object_type_id: string;
  tenant_id: string;
  properties: Record<string, unknown>;
  version: number;
  created_by: string | null;
  is_deleted: boolean;
  deleted_at: string | null;
  created_at: string;
  updated_at: string;
}

/** An event as the stream and the realtime socket carry it. */
export interface PlinthEvent {
  id: string;
  type: string;
  tenant_id: string;
  created_at: string;
  timestamp: string;
  data: Record<string, unknown>;
}

// ---------------------------------------------------------------------------------------------
// The envelope

/** A failed answer: the envelope's `error`, with the HTTP status and the request id. */
export class PlinthError extends Error {
  override readonly name = "PlinthError";
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly request_id: string | undefined,
    /** The whole `error` object: `details`, `retry_after`, `confirm_token`, ... */
    readonly error: Record<string, unknown> = {},
  ) {
    super(message);
  }

  /** Messages per field, for `VALIDATION_FAILED` (`{"properties.email": ["..."]}`). */
  get details(): Record<string, string[]> | undefined {
    return isRecord(this.error.details) ? (this.error.details as Record<string, string[]>) : undefined;
  }

  /** Builds the error from an answer's status and (parsed) body, enveloped or not. */
  static from(status: number, body: unknown, requestId?: string | null): PlinthError {
    const envelope = isRecord(body) ? body : {};
    const error = isRecord(envelope.error) ? envelope.error : {};
    const code = typeof error.code === "string" ? error.code : `HTTP_${status}`;
    const message = typeof error.message === "string" ? error.message : typeof body === "string" && body ? body : `HTTP ${status}`;
    const id = typeof envelope.request_id === "string" ? envelope.request_id : (requestId ?? undefined);
    return new PlinthError(status, code, message, id, error);
  }
}

/** What an openapi-fetch call resolves to. */
export interface FetchResult {
  data?: unknown;
  error?: unknown;
  response: Response;
}

/** The `data` of a result's success envelope. */
export type Data<R> = R extends { data: infer E } ? (E extends { data: infer T } ? T : E) : never;

/** `T` when given (for the answers the document leaves untyped), else `Fallback`. */
type Given<T, Fallback> = [T] extends [never] ? Fallback : T;

/**
 * `data` of the success envelope, or throws a `PlinthError` for an error answer. The type is the
 * document's; `unwrap<PlinthObject>(...)` states it where the document has none (objects).
 */
export async function unwrap<T = never, R extends FetchResult = FetchResult>(result: R | Promise<R>): Promise<Given<T, Data<R>>> {
  const { data, error, response } = await result;
  if (!response.ok || error !== undefined) {
    throw PlinthError.from(response.status, error, response.headers.get("X-Request-Id"));
  }
  const body = isRecord(data) && data.success === true && "data" in data ? data.data : data;
  return body as Given<T, Data<R>>;
}

// ---------------------------------------------------------------------------------------------
// Keyset lists

/** The items of a list page's `results`. */
export type Item<R> = Data<R> extends { results: (infer T)[] } ? T : unknown;

/**
 * Every item of a list, page after page: `fetchPage(cursor)` asks for one page (`cursor` is
 * undefined for the first), and the iterator follows `next_cursor` until it is null. The item
 * type is the document's, or `T` (`paginate<PlinthObject>(...)`).
 */
export async function* paginate<T = never, R extends FetchResult = FetchResult>(
  fetchPage: (cursor: string | undefined) => Promise<R> | R,
): AsyncGenerator<Given<T, Item<R>>, void, undefined> {
  let cursor: string | undefined;
  for (;;) {
    const page = (await unwrap(fetchPage(cursor))) as { results?: Given<T, Item<R>>[]; next_cursor?: string | null };
    const results = page.results ?? [];
    yield* results;
    if (!page.next_cursor || results.length === 0) return;
    cursor = page.next_cursor;
  }
}

// ---------------------------------------------------------------------------------------------
// Server-Sent Events

/** One frame of a `text/event-stream`. */
export interface SseMessage {
  id?: string;
  event: string;
  data: string;
  retry?: number;
}

/** Parses a `text/event-stream` body into its messages (the WHATWG rules, without reconnection). */
export async function* parseSse(body: ReadableStream<Uint8Array>): AsyncGenerator<SseMessage, void, undefined> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let message: SseMessage = { event: "message", data: "" };
  let hasData = false;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let end: number;
      while ((end = buffer.search(/\r\n|\r|\n/)) >= 0) {
        // A lone `\r` at the very end may be the first half of `\r\n`: wait for more.
        if (buffer[end] === "\r" && end === buffer.length - 1) break;
        const line = buffer.slice(0, end);
        buffer = buffer.slice(end + (buffer.startsWith("\r\n", end) ? 2 : 1));
        if (line === "") {
          if (hasData) yield { ...message, data: message.data.slice(0, -1) };
          message = { event: "message", data: "", ...(message.id === undefined ? {} : { id: message.id }) };
          hasData = false;
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const value = colon < 0 ? "" : line.slice(colon + (line[colon + 1] === " " ? 2 : 1));
        if (field === "data") {
          message.data += `${value}\n`;
          hasData = true;
        } else if (field === "event") message.event = value;
        else if (field === "id" && !value.includes("\0")) message.id = value;
        else if (field === "retry" && /^\d+$/.test(value)) message.retry = Number(value);
      }
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
}

export interface EventStreamOptions {
  /** Event types or patterns (`object.*`); all when absent. */
  types?: string | string[] | undefined;
  /** Resume after this event id: the server replays what came after it first. */
  lastEventId?: string | undefined;
  /** Ends the stream. Breaking out of the loop ends it too. */
  signal?: AbortSignal | undefined;
}

// ---------------------------------------------------------------------------------------------
// Realtime

/** The part of the WebSocket API the realtime helper uses (browsers' `WebSocket`, or `ws`). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: "open" | "message" | "close" | "error", listener: (event: any) => void): void;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** A frame from the server: `welcome`, `subscribed`, `unsubscribed`, `pong`, `error`, `event`. */
export type RealtimeFrame =
  | { type: "event"; channel: string; event: PlinthEvent }
  | { type: "subscribed" | "unsubscribed"; channel: string }
  | { type: "pong" }
  | { type: "welcome"; connection_id: number; tenant_id: string }
  | { type: "error"; error: { code: string; message: string } };

export interface RealtimeOptions {
  /** The WebSocket class: defaults to `globalThis.WebSocket` (browsers, Node 22+). */
  WebSocket?: WebSocketConstructor | undefined;
  /**
   * The credential, sent as `?token=` (browsers cannot set headers on a WebSocket); defaults to
   * the client's (the session's access token, else `accessToken`, else `apiKey`). URLs may be
   * logged on the way: prefer a short-lived token from `POST /v1/token` to an API key.
   */
  token?: string | undefined;
}

/** One realtime connection. Iterate it for the `event` frames of the subscribed channels. */
export class RealtimeConnection implements AsyncIterable<RealtimeFrame & { type: "event" }> {
  #pending: { resolve: (frame: RealtimeFrame) => void; reject: (error: Error) => void }[] = [];
  #events: (RealtimeFrame & { type: "event" })[] = [];
  #waiting: (() => void) | undefined;
  #closed = false;
  /** The close code, once closed. */
  closeCode: number | undefined;

  constructor(readonly socket: WebSocketLike) {
    socket.addEventListener("message", (event: { data: unknown }) => {
      let frame: RealtimeFrame;
      try {
        frame = JSON.parse(String(event.data)) as RealtimeFrame;
      } catch {
        return;
      }
      this.#frame(frame);
    });
    socket.addEventListener("close", (event: { code?: number }) => {
      this.#closed = true;
      this.closeCode = event.code;
      for (const p of this.#pending.splice(0)) p.reject(new Error(`realtime connection closed (${event.code})`));
      this.#wake();
    });
  }

  #frame(frame: RealtimeFrame): void {
    if (frame.type === "event") {
      this.#events.push(frame);
      this.#wake();
    } else if (frame.type !== "welcome") {
      // The server answers the frames it is sent in order, so replies go to requests in order.
      const waiter = this.#pending.shift();
      if (frame.type === "error") waiter?.reject(new PlinthError(0, frame.error.code, frame.error.message, undefined, frame.error));
      else waiter?.resolve(frame);
    }
  }

  #wake(): void {
    const waiting = this.#waiting;
    this.#waiting = undefined;
    waiting?.();
  }

  #request(frame: object): Promise<RealtimeFrame> {
    if (this.#closed) return Promise.reject(new Error("realtime connection closed"));
    return new Promise((resolve, reject) => {
      this.#pending.push({ resolve, reject });
      this.socket.send(JSON.stringify(frame));
    });
  }

  /** Subscribes to a channel (`objects:<type>`, `objects:*`, `files[:<folder>]`, `events:<pattern>`). */
  async subscribe(channel: string): Promise<void> {
    await this.#request({ type: "subscribe", channel });
  }

  async unsubscribe(channel: string): Promise<void> {
    await this.#request({ type: "unsubscribe", channel });
  }

  async ping(): Promise<void> {
    await this.#request({ type: "ping" });
  }

  close(): void {
    this.socket.close(1000);
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<RealtimeFrame & { type: "event" }, void, undefined> {
    for (;;) {
      const next = this.#events.shift();
      if (next) yield next;
      else if (this.#closed) return;
      else await new Promise<void>((resolve) => (this.#waiting = resolve));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The client

export interface PlinthClientOptions {
  /** The server, such as `https://plinth.example.com`. */
  baseUrl: string;
  /** A service credential: an API key (`plk_live_...`), or the platform admin key. */
  apiKey?: string | undefined;
  /** A fixed access token (from `POST /v1/token`, or a tenant-signed JWT). */
  accessToken?: string | undefined;
  /** The tenant (id or slug), sent as `X-Tenant-ID`: for end-user sign-in, or the admin key. */
  tenant?: string | undefined;
  /** An end-user session to resume (as `onSessionChange` last gave it). */
  session?: Tokens | null | undefined;
  /** Called whenever the session changes (sign-in, refresh, sign-out): persist it here. */
  onSessionChange?: ((session: Tokens | null) => void) | undefined;
  fetch?: ((request: Request) => Promise<Response>) | undefined;
}

export type SignUp = Schemas["Signup"];
export type SignIn = Schemas["Login"];
export type SignedUp = Schemas["SignedUp"];

/** End-user sign-in: the session's tokens are kept and sent, and refreshed once on a 401. */
export interface PlinthAuth {
  /** The current session, or null. */
  readonly session: Tokens | null;
  /** Replaces the session (to restore one, or to forget it with null). */
  setSession(session: Tokens | null): void;
  /** `POST /v1/auth/signup`: opens no session (sign in next). */
  signUp(body: SignUp): Promise<SignedUp>;
  /** `POST /v1/auth/login`: keeps the tokens; answers the MFA challenge instead when one is due. */
  signIn(body: SignIn): Promise<Tokens | MfaChallenge>;
  /** `POST /v1/auth/refresh` with the current refresh token (each works once). */
  refresh(): Promise<Tokens>;
  /** `POST /v1/auth/logout`: ends the session on the server and forgets it. */
  signOut(): Promise<void>;
}

export type PlinthClient = Client<paths> & {
  auth: PlinthAuth;
  /** The events of `GET /v1/events/stream`, parsed, as they come. */
  events(options?: EventStreamOptions): AsyncGenerator<PlinthEvent, void, undefined>;
  /** Opens `GET /v1/realtime` and resolves once connected. */
  realtime(options?: RealtimeOptions): Promise<RealtimeConnection>;
};

export function createPlinthClient(options: PlinthClientOptions): PlinthClient {
  const baseUrl = options.baseUrl.replace(/\/+$/, "");
  const baseFetch = options.fetch ?? ((request: Request) => globalThis.fetch(request));
  const headers: Record<string, string> = options.tenant ? { "X-Tenant-ID": options.tenant } : {};
  let session = options.session ?? null;
  let refreshing: Promise<Tokens> | undefined;

  const setSession = (next: Tokens | null) => {
    session = next;
    options.onSessionChange?.(next);
  };
  const credential = () => session?.access_token ?? options.accessToken ?? options.apiKey;
  const withBearer = (request: Request, token: string | undefined) => {
    if (!token) return request;
    const next = new Request(request);
    next.headers.set("Authorization", `Bearer ${token}`);
    return next;
  };

  // The credential goes on every request that has none. A 401 to the session's access token
  // refreshes the session (one refresh at a time: refresh tokens rotate, and a used one ends the
  // session) and repeats the request once, with the new token.
  const authedFetch = async (request: Request): Promise<Response> => {
    if (request.headers.has("Authorization")) return baseFetch(request);
    const token = credential();
    const retry = session ? request.clone() : undefined;
    const response = await baseFetch(withBearer(request, token));
    if (response.status !== 401 || !retry || !session) return response;
    // Unless another request refreshed the session while this one was on its way.
    if (token === session.access_token) {
      try {
        await auth.refresh();
      } catch {
        return response;
      }
    }
    const current = session;
    if (!current) return response;
    await response.body?.cancel();
    return baseFetch(withBearer(retry, current.access_token));
  };

  const client = createClient<paths>({ baseUrl, fetch: authedFetch, headers });
  // Sign-in calls carry no session (an API key, when given, names the tenant).
  const plain = createClient<paths>({
    baseUrl,
    fetch: (request) => baseFetch(request.headers.has("Authorization") ? request : withBearer(request, options.apiKey)),
    headers,
  });

  const auth: PlinthAuth = {
    get session() {
      return session;
    },
    setSession,
    async signUp(body) {
      return unwrap(plain.POST("/v1/auth/signup", { body }));
    },
    async signIn(body) {
      const answer = await unwrap(plain.POST("/v1/auth/login", { body }));
      if ("access_token" in answer) setSession(answer);
      return answer;
    },
    refresh() {
      refreshing ??= (async () => {
        const refresh_token = session?.refresh_token;
        if (!refresh_token) throw new PlinthError(401, "UNAUTHORIZED", "no session to refresh", undefined);
        try {
          const tokens = await unwrap(plain.POST("/v1/auth/refresh", { body: { refresh_token } }));
          setSession(tokens);
          return tokens;
        } catch (error) {
          if (error instanceof PlinthError && error.status === 401) setSession(null);
          throw error;
        }
      })().finally(() => (refreshing = undefined));
      return refreshing;
    },
    async signOut() {
      const current = session;
      if (!current) return;
      try {
        await unwrap(plain.POST("/v1/auth/logout", { body: { refresh_token: current.refresh_token } }));
      } finally {
        setSession(null);
      }
    },
  };

  async function* events(opts: EventStreamOptions = {}): AsyncGenerator<PlinthEvent, void, undefined> {
    const types = Array.isArray(opts.types) ? opts.types.join(",") : opts.types;
    const { data, error, response } = await client.GET("/v1/events/stream", {
      params: {
        query: types ? { types } : {},
        header: opts.lastEventId ? { "Last-Event-ID": opts.lastEventId } : {},
      },
      parseAs: "stream",
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    if (!response.ok || !data) throw PlinthError.from(response.status, error, response.headers.get("X-Request-Id"));
    for await (const message of parseSse(data)) {
      if (message.data) yield JSON.parse(message.data) as PlinthEvent;
    }
  }

  async function realtime(opts: RealtimeOptions = {}): Promise<RealtimeConnection> {
    const WebSocketClass = opts.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WebSocketClass) throw new Error("no global WebSocket: pass one as `WebSocket` (such as the `ws` package's)");
    const url = new URL(`${baseUrl}/v1/realtime`);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const token = opts.token ?? credential();
    if (token) url.searchParams.set("token", token);
    const socket = new WebSocketClass(url.toString());
    const connection = new RealtimeConnection(socket);
    return new Promise((resolve, reject) => {
      socket.addEventListener("open", () => resolve(connection));
      socket.addEventListener("error", () => reject(new Error(`could not open ${url.origin}/v1/realtime`)));
      socket.addEventListener("close", (event: { code?: number }) =>
        reject(new Error(`realtime connection closed (${event.code}) before it opened`)),
      );
    });
  }

  return Object.assign(client, { auth, events, realtime });
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
