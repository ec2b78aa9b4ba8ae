"""Buckets in Redis: many proxies, many machines. One Lua script per take, so a take is atomic.

Keys are ``<prefix><bucket key>``, hashes of ``tokens`` and ``updated``; a bucket untouched for a whole
window is full again, so each key expires after its window (plus a second) and Redis stays small.
Time comes from the caller's clock (passed to the script), so tests can drive it.
"""

from __future__ import annotations

from typing import Any

import redis

from regoguard.limits.store import StoreError, TakeResult
from regoguard.limits.token_bucket import EPSILON, BucketState, Spec, retry_after

# ARGV: now, epsilon, then per key: capacity, window, cost, strict(0/1), mode ("take" | "give"), calendar(0/1)
_SCRIPT = """
local now = tonumber(ARGV[1])
local eps = tonumber(ARGV[2])
local state = {}
local function load(key)
  if state[key] == nil then
    local v = redis.call('HMGET', key, 'tokens', 'updated')
    if v[1] then state[key] = {tonumber(v[1]), tonumber(v[2])} else state[key] = false end
  end
  return state[key]
end
local function available(key, cap, window, calendar)
  local s = load(key)
  if not s then return cap end
  if calendar then
    if math.floor(now / window) > math.floor(s[2] / window) then return cap end
    if s[1] > cap then return cap end
    return s[1]
  end
  local elapsed = now - s[2]
  if elapsed < 0 then elapsed = 0 end
  local t = s[1] + elapsed * cap / window
  if t > cap then t = cap end
  return t
end
local new = {}
local order = {}
for i = 1, #KEYS do
  local base = 2 + (i - 1) * 6
  local cap, window, cost = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
  local strict, mode, calendar = ARGV[base + 4] == '1', ARGV[base + 5], ARGV[base + 6] == '1'
  local key = KEYS[i]
  local t = available(key, cap, window, calendar)
  local stamp = now
  local prior = load(key)
  if calendar and prior and prior[2] > now then stamp = prior[2] end  -- a calendar window never moves back
  if mode == 'take' then
    local ok
    if strict then ok = cost < t - eps else ok = cost <= t + eps end
    if not ok then return {0, i - 1, string.format('%.17g', t)} end
    t = t - cost
  else
    t = t + cost
    if t > cap then t = cap end
  end
  state[key] = {t, stamp}
  if new[key] == nil then table.insert(order, key) end
  new[key] = math.ceil(window * 1000) + 1000
end
for _, key in ipairs(order) do
  redis.call('HSET', key, 'tokens', string.format('%.17g', state[key][1]), 'updated',
             string.format('%.17g', state[key][2]))
  redis.call('PEXPIRE', key, new[key])
end
return {1, -1, '0'}
"""


class RedisStore:
    def __init__(self, url: str, prefix: str = "regoguard:", timeout: float = 2.0) -> None:
        self.url = url
        self.prefix = prefix
        try:
            self._redis = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
            self._script = self._redis.register_script(_SCRIPT)
        except (redis.RedisError, ValueError) as exc:
            raise StoreError(f"redis {url}: {exc}") from exc

    def _run(self, items: list[tuple[str, Spec]], now: float, mode: str) -> Any:
        args: list[Any] = [repr(now), repr(EPSILON)]
        for _, spec in items:
            args += [repr(float(spec.capacity)), repr(float(spec.window)), repr(float(spec.cost)),
                     "1" if spec.strict else "0", mode, "1" if spec.calendar else "0"]
        try:
            return self._script(keys=[self.prefix + k for k, _ in items], args=args)
        except redis.RedisError as exc:
            raise StoreError(f"redis {self.url}: {exc}") from exc

    def pin_first_use(self, digests: dict[str, str]) -> dict[str, str]:
        """Pins live beside the buckets' prefix, not under it, so `state show` never reads them as buckets."""
        if not digests:
            return {}
        hash_key = f"regoguard-pins:{self.prefix}"
        try:
            pipe = self._redis.pipeline(transaction=True)
            for key, value in digests.items():
                pipe.hsetnx(hash_key, key, value)
            pipe.hmget(hash_key, list(digests))
            got = pipe.execute()[-1]
        except redis.RedisError as exc:
            raise StoreError(f"redis {self.url}: {exc}") from exc
        return {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in zip(digests, got, strict=True)}

    def take_all(self, items: list[tuple[str, Spec]], now: float) -> TakeResult:
        ok, index, tokens = self._run(items, now, "take")
        if ok == 1:
            return TakeResult(True)
        return TakeResult(False, int(index), retry_after(float(tokens), items[int(index)][1], now))

    def give_back_all(self, items: list[tuple[str, Spec]], now: float) -> None:
        self._run(items, now, "give")

    def snapshot(self, prefix: str = "") -> dict[str, BucketState]:
        out: dict[str, BucketState] = {}
        try:
            for raw in self._redis.scan_iter(match=glob_escape(self.prefix + prefix) + "*", count=500):
                key = raw.decode() if isinstance(raw, bytes) else raw
                tokens, updated = self._redis.hmget(key, "tokens", "updated")
                if tokens is not None and updated is not None:
                    out[key[len(self.prefix):]] = BucketState(float(tokens), float(updated))
        except redis.RedisError as exc:
            raise StoreError(f"redis {self.url}: {exc}") from exc
        return dict(sorted(out.items()))

    def reset(self, prefix: str = "") -> int:
        try:
            keys = list(self._redis.scan_iter(match=glob_escape(self.prefix + prefix) + "*", count=500))
            return int(self._redis.delete(*keys)) if keys else 0
        except redis.RedisError as exc:
            raise StoreError(f"redis {self.url}: {exc}") from exc

    def close(self) -> None:
        self._redis.close()


def glob_escape(text: str) -> str:
    """``text`` matched literally by a Redis SCAN pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
