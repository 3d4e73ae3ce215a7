/**
 * Where body mode keeps the refresh token (Node services, CLIs, mobile apps). Plug in the
 * platform keystore or a file with tight permissions; the default keeps it in memory and
 * loses it at exit. Browsers use cookie mode instead: there the refresh token lives in an
 * HttpOnly cookie and script never holds it (so never put it in localStorage).
 *
 * Every rotation replaces the token: the old one is spent at the gateway, and presenting
 * it again after the gateway's reuse grace window revokes the whole session. A store
 * shared by several clients (processes, tabs) must therefore be shared together with
 * their refresh lock (see `crossTab` in ClientOptions).
 */
export interface RefreshTokenStore {
  get: () => Promise<string | undefined>
  set: (token: string) => Promise<void>
  clear: () => Promise<void>
}

export function memoryRefreshTokenStore (): RefreshTokenStore {
  let token: string | undefined
  return {
    get: async () => token,
    set: async (value) => { token = value },
    clear: async () => { token = undefined },
  }
}
