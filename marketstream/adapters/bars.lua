-- Bars (OHLCV) on Redis: the rules of marketstream/core/bars.py, run by the seq authority.
-- Prepended to publish.lua and finalize.lua (one text each, loaded once).
--
-- State: hash BARS (KEYS of the script) symbol -> msgpack array of 5 bars, one per
-- interval below (0: none yet), each {start (s), open, high, low, close, volume, count,
-- final (0/1)}: the newest bar of that interval, open or final until the next one opens.
-- Final bars are also appended to the list LIST_PREFIX .. interval .. ':' .. symbol,
-- trimmed to the last `keep` (none with keep 0). The list keys are derived here: the
-- store runs on one Redis per prefix (not Redis Cluster), like its other per-symbol keys.
-- What a call changed is published once per symbol at its end, as the channel layer's
-- message {type = 'bars', s = symbol, b = {{interval, start, o, h, l, c, v, n, final}, ...}}.

local BAR_NAMES = {'1s', '5s', '1m', '5m', '1h'}
local BAR_SECONDS = {1, 5, 60, 300, 3600}
local bar_state = {}    -- symbol -> its 5 bars, read once per call
local bar_changed = {}  -- symbol -> {key -> true, [i] = {k, bar}}: each changed bar once, in order
local bar_order = {}    -- the symbols changed, in order
local bar_channel = {}  -- symbol -> where to publish its changes ('' = nowhere)

local function bar_load(hash, symbol)
  local state = bar_state[symbol]
  if state == nil then
    local raw = redis.call('HGET', hash, symbol)
    if raw then
      local ok, value = pcall(cmsgpack.unpack, raw)
      if ok and type(value) == 'table' and #value == 5 then state = value end
    end
    if state == nil then state = {0, 0, 0, 0, 0} end
    bar_state[symbol] = state
  end
  return state
end

local function bar_mark(symbol, k, bar)
  local changed = bar_changed[symbol]
  if changed == nil then
    changed = {}
    bar_changed[symbol] = changed
    bar_order[#bar_order + 1] = symbol
  end
  local key = k .. ':' .. bar[1]
  if not changed[key] then
    changed[key] = true
    changed[#changed + 1] = {k, bar}
  end
end

local function bar_final(symbol, k, bar, keep, list_prefix)
  bar[8] = 1
  if keep > 0 then
    local key = list_prefix .. BAR_NAMES[k] .. ':' .. symbol
    redis.call('RPUSH', key, cmsgpack.pack({bar[1], bar[2], bar[3], bar[4], bar[5], bar[6], bar[7]}))
    redis.call('LTRIM', key, -keep, -1)
  end
  bar_mark(symbol, k, bar)
end

-- one tick: `second` is its ts in whole seconds since the epoch
local function bar_tick(hash, symbol, second, price, size, keep, list_prefix)
  local state = bar_load(hash, symbol)
  for k = 1, 5 do
    local start = second - second % BAR_SECONDS[k]
    local bar = state[k]
    if bar ~= 0 and bar[1] == start and bar[8] ~= 1 then
      if price > bar[3] then bar[3] = price end
      if price < bar[4] then bar[4] = price end
      bar[5] = price
      bar[6] = bar[6] + size
      bar[7] = bar[7] + 1
      bar_mark(symbol, k, bar)
    elseif bar ~= 0 and start <= bar[1] then
      -- late: its bar is final, or older than the current one; it counts in no bar
    else
      if bar ~= 0 and bar[8] ~= 1 then bar_final(symbol, k, bar, keep, list_prefix) end
      bar = {start, price, price, price, price, size, 1, 0}
      state[k] = bar
      bar_mark(symbol, k, bar)
    end
  end
end

-- the open bars of `symbol` whose interval ended by `now` (seconds) become final
local function bar_finalize(hash, symbol, now, keep, list_prefix)
  local state = bar_load(hash, symbol)
  for k = 1, 5 do
    local bar = state[k]
    if bar ~= 0 and bar[8] ~= 1 and bar[1] + BAR_SECONDS[k] <= now then
      bar_final(symbol, k, bar, keep, list_prefix)
    end
  end
end

-- write back the changed symbols' bars and publish what changed; returns the number of bars changed
local function bar_flush(hash)
  local total = 0
  for _, symbol in ipairs(bar_order) do
    redis.call('HSET', hash, symbol, cmsgpack.pack(bar_state[symbol]))
    local changed = bar_changed[symbol]
    total = total + #changed
    local channel = bar_channel[symbol]
    if channel and channel ~= '' then
      local entries = {}
      for i, item in ipairs(changed) do
        local k, bar = item[1], item[2]
        entries[i] = {BAR_NAMES[k], bar[1], bar[2], bar[3], bar[4], bar[5], bar[6], bar[7], bar[8] == 1}
      end
      redis.call('PUBLISH', channel, cmsgpack.pack({type = 'bars', s = symbol, b = entries}))
    end
  end
  return total
end
