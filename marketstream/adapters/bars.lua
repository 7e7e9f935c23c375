-- Bars (OHLCV) on Redis: the rules of marketstream/core/bars.py, run by the seq authority.
-- Prepended to publish.lua and finalize.lua (one text each, loaded once), with the helpers
-- publish.lua uses too: call_each for its writes, str_head for its messages.
--
-- State: hash BARS (KEYS of the script) symbol -> msgpack array of 5 x 8 numbers, the
-- newest bar of each interval below (open, or final until the next one opens): for the
-- k-th interval (1 = 1s ... 5 = 1h), at (k - 1) * 8 + 1: start (s; 0: no bar yet), open,
-- high, low, close, volume, count, final (0/1). One flat array: reading and writing it
-- makes one Lua table per symbol and call, not six.
-- Final bars are also appended to the list LIST_PREFIX .. interval .. ':' .. symbol,
-- trimmed to the last `keep` (none with keep 0). The list keys are derived here: the
-- store runs on one Redis per prefix (not Redis Cluster), like its other per-symbol keys.
--
-- What a call changed is published once per symbol at its end, as the channel layer's
-- message {type = 'bars', s = symbol, b = the state above, c = {k, ...}: the intervals whose
-- open bar changed, f = {{k, start, o, h, l, c, v, n}, ...}: the bars made final, in order}.
-- The state is packed once for both the hash and the message.

local BAR_NAMES = {'1s', '5s', '1m', '5m', '1h'}
local BAR_SECONDS = {1, 5, 60, 300, 3600}
local bar_state = {}    -- symbol -> its 40 numbers, read once per call
local bar_open = {}     -- symbol -> {k -> true}: intervals whose open bar changed
local bar_finals = {}   -- symbol -> the bars made final, {k, start, o, h, l, c, v, n} each
local bar_order = {}    -- the symbols changed, in order (and symbol -> true)
local bar_channel = {}  -- symbol -> where to publish its changes ('' = nowhere)

local function bar_load(hash, symbol)
  local state = bar_state[symbol]
  if state == nil then
    local raw = redis.call('HGET', hash, symbol)
    if raw then
      local ok, value = pcall(cmsgpack.unpack, raw)
      if ok and type(value) == 'table' and #value == 40 then state = value end
    end
    if state == nil then
      state = {}
      for i = 1, 40 do state[i] = 0 end
    end
    bar_state[symbol] = state
    bar_open[symbol] = {}
    bar_finals[symbol] = {}
  end
  return state
end

local function bar_changed(symbol)
  if not bar_order[symbol] then
    bar_order[symbol] = true
    bar_order[#bar_order + 1] = symbol
  end
end

-- the bar of interval k (at `at` in the state) becomes final
local function bar_final(symbol, state, k, at, keep, list_prefix)
  state[at + 8] = 1
  local bar = {k, state[at + 1], state[at + 2], state[at + 3], state[at + 4], state[at + 5], state[at + 6], state[at + 7]}
  if keep > 0 then
    local key = list_prefix .. BAR_NAMES[k] .. ':' .. symbol
    redis.call('RPUSH', key, cmsgpack.pack({bar[2], bar[3], bar[4], bar[5], bar[6], bar[7], bar[8]}))
    redis.call('LTRIM', key, -keep, -1)
  end
  local finals = bar_finals[symbol]
  finals[#finals + 1] = bar
  bar_open[symbol][k] = nil
  bar_changed(symbol)
end

-- one tick: `second` is its ts in whole seconds since the epoch
local function bar_tick(hash, symbol, second, price, size, keep, list_prefix)
  local state = bar_load(hash, symbol)
  local open = bar_open[symbol]
  for k = 1, 5 do
    local at = (k - 1) * 8
    local start = second - second % BAR_SECONDS[k]
    local current = state[at + 1]
    if current == start and state[at + 8] ~= 1 then
      if price > state[at + 3] then state[at + 3] = price end
      if price < state[at + 4] then state[at + 4] = price end
      state[at + 5] = price
      state[at + 6] = state[at + 6] + size
      state[at + 7] = state[at + 7] + 1
      open[k] = true
    elseif current ~= 0 and start <= current then
      -- late: its bar is final, or older than the current one; it counts in no bar
    else
      if current ~= 0 and state[at + 8] ~= 1 then bar_final(symbol, state, k, at, keep, list_prefix) end
      state[at + 1], state[at + 2], state[at + 3], state[at + 4] = start, price, price, price
      state[at + 5], state[at + 6], state[at + 7], state[at + 8] = price, size, 1, 0
      open[k] = true
    end
  end
  bar_changed(symbol)
end

-- the open bars of `symbol` whose interval ended by `now` (seconds) become final
local function bar_finalize(hash, symbol, now, keep, list_prefix)
  local state = bar_load(hash, symbol)
  for k = 1, 5 do
    local at = (k - 1) * 8
    local start = state[at + 1]
    if start ~= 0 and state[at + 8] ~= 1 and start + BAR_SECONDS[k] <= now then
      bar_final(symbol, state, k, at, keep, list_prefix)
    end
  end
end

-- `command key args...` in as few calls as Lua's unpack allows (at most ARGS_PER_CALL
-- arguments a call, an even number: field-value pairs stay together)
local ARGS_PER_CALL = 1000
local function call_each(command, key, args)
  for first = 1, #args, ARGS_PER_CALL do
    redis.call(command, key, unpack(args, first, math.min(first + ARGS_PER_CALL - 1, #args)))
  end
end

-- msgpack's header of a str of n bytes
local function str_head(n)
  if n < 32 then return string.char(0xa0 + n) end
  if n < 256 then return string.char(0xd9, n) end
  return string.char(0xda, math.floor(n / 256), n % 256)
end

-- write back the changed symbols' bars and publish what changed; returns the bars made final
local function bar_flush(hash)
  local total = 0
  local fields = {}
  for _, symbol in ipairs(bar_order) do
    local packed = cmsgpack.pack(bar_state[symbol])
    fields[#fields + 1] = symbol
    fields[#fields + 1] = packed
    local finals = bar_finals[symbol]
    total = total + #finals
    local channel = bar_channel[symbol]
    if channel and channel ~= '' then
      -- `c` and an empty `f` are written as bytes: a msgpack array of small ints is its
      -- length (0x90 + n) and the ints themselves, and cmsgpack costs more than that here
      local open, changed = bar_open[symbol], {}
      for k = 1, 5 do
        if open[k] then changed[#changed + 1] = k end
      end
      local f = #finals > 0 and cmsgpack.pack(finals) or '\144'
      redis.call('PUBLISH', channel, '\133\164type\164bars\161s' .. str_head(#symbol) .. symbol .. '\161b' .. packed
        .. '\161c' .. string.char(0x90 + #changed, unpack(changed)) .. '\161f' .. f)
    end
  end
  call_each('HSET', hash, fields)
  return total
end
